-- KEYS[1] partition hash; ARGV[1] lease ms
-- Returns {lsn, token} or an empty list.
local c = claim(KEYS[1], now_ms(), tonumber(ARGV[1]))
if c then
  return c
end
return {}
