-- Acknowledge handled notifications and trim the stream, which then holds only notifications
-- not handled yet. An entry is handled once the group delivered it and it was acknowledged:
-- the trim keeps everything still pending (another scheduler, a paused leader that woke up,
-- may have read it and not applied it yet) and everything not delivered yet.
-- KEYS[1] notification stream; ARGV[1] consumer group, ARGV[2..] the handled IDs.
-- Returns the number of entries trimmed.
local function parse_id(id)
  local ms_part, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms_part), tonumber(seq)
end

local stream, group = KEYS[1], ARGV[1]
for i = 2, #ARGV, 1000 do
  redis.call('XACK', stream, group, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local pending = redis.call('XPENDING', stream, group)
local bound
if pending[1] > 0 then
  bound = pending[2]
else
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local fields = {}
    for j = 1, #info, 2 do
      fields[info[j]] = info[j + 1]
    end
    if fields['name'] == group then
      local ms_part, seq = parse_id(fields['last-delivered-id'])
      bound = string.format('%d-%d', ms_part, seq + 1)
    end
  end
end
if not bound then
  return 0
end
return redis.call('XTRIM', stream, 'MINID', bound)
