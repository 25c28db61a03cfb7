-- Acknowledge handled notifications and trim them from the stream, which holds only unhandled
-- ones. Everything below the newest handled one is handled too (they are handled in stream
-- order), except what is still pending in the group: another scheduler (a paused leader that
-- woke up) may have read it and not applied it yet. The trim stops below that.
-- KEYS[1] notification stream; ARGV[1] consumer group, ARGV[2] the ID just above the newest
-- handled one, ARGV[3..] the handled IDs.
-- Returns the number of entries trimmed.
local function id_less(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if a_ms ~= b_ms then
    return tonumber(a_ms) < tonumber(b_ms)
  end
  return tonumber(a_seq) < tonumber(b_seq)
end

local stream, group = KEYS[1], ARGV[1]
local bound = ARGV[2]
for i = 3, #ARGV, 1000 do
  redis.call('XACK', stream, group, unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local pending = redis.call('XPENDING', stream, group)
if pending[1] > 0 and id_less(pending[2], bound) then
  bound = pending[2]
end
return redis.call('XTRIM', stream, 'MINID', bound)
