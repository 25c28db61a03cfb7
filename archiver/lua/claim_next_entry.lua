-- KEYS[1] partition hash; ARGV[1] lease ms, ARGV[2] (optional) orphan ms: also take over a
-- grant whose task was never marked as sent, once it is that old.
-- Returns {lsn, token} or an empty list.
local c = claim(KEYS[1], now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]))
if c then
  return c
end
return {}
