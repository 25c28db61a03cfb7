-- Note a failed attempt; the holder keeps its grant while it waits to retry.
-- KEYS[1] partition hash; ARGV[1] lsn, ARGV[2] token, ARGV[3] error, ARGV[4] hold ms
-- Returns the number of failed attempts at this LSN, or -1 when fenced off.
local key = KEYS[1]
if not holds(key, ARGV[1], ARGV[2]) then
  return -1
end
local now = now_ms()
redis.call('HSET', key, 'last_error', ARGV[3], 'error_ms', ms(now),
  'lease_until', ms(now + tonumber(ARGV[4])))
return redis.call('HINCRBY', key, 'attempts', 1)
