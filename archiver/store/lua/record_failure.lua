-- Note a failed attempt; the holder keeps its grant while it waits to retry.
-- KEYS[1] partition hash; ARGV[1] lsn, ARGV[2] token, ARGV[3] error, ARGV[4] hold ms,
-- ARGV[5] (optional) a failure of the entry itself: stop the partition after this many.
-- Returns {failed attempts at this LSN, 1 if the partition is now stopped else 0}, or {-1, 0}
-- when fenced off.
local key = KEYS[1]
if not holds(key, ARGV[1], ARGV[2]) then
  return {-1, 0}
end
local now = now_ms()
redis.call('HSET', key, 'last_error', ARGV[3], 'error_ms', ms(now))
local attempts = redis.call('HINCRBY', key, 'attempts', 1)
local stop_after = tonumber(ARGV[5])
if stop_after and redis.call('HINCRBY', key, 'entry_failures', 1) >= stop_after then
  -- Retrying an entry that cannot be archived only hides it: an operator has to look.
  redis.call('HSET', key, 'stopped', '1')
  end_grant(key)
  return {attempts, 1}
end
redis.call('HSET', key, 'lease_until', ms(now + tonumber(ARGV[4])))
return {attempts, 0}
