-- Pause or resume a partition for an operator. A paused partition is never claimed; an entry
-- already in flight still finishes.
-- KEYS[1] partition hash, KEYS[2] audit list
-- ARGV[1] '1' to pause, '0' to resume; ARGV[2] actor, ARGV[3] reason
-- Returns {1, ''} when done, {0, why not} when the precondition does not hold.
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then
  return {0, 'no state for this partition'}
end
local paused = redis.call('HGET', key, 'paused') == '1'
local action = 'resume'
if ARGV[1] == '1' then
  if paused then
    return {0, 'already paused'}
  end
  action = 'pause'
  redis.call('HSET', key, 'paused', '1')
else
  if not paused then
    return {0, 'not paused'}
  end
  redis.call('HDEL', key, 'paused')
end
audit(KEYS[2], now_ms(), action, ARGV[2], ARGV[3], {})
return {1, ''}
