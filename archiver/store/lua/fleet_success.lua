-- A success halves the next fleet pause, down to the minimum.
-- KEYS[1] fleet hash; ARGV[1] minimum ms. Returns the next pause in ms.
local min_ms = tonumber(ARGV[1])
local wait = tonumber(redis.call('HGET', KEYS[1], 'wait_ms'))
if not wait or wait <= min_ms then
  return min_ms
end
wait = math.max(math.floor(wait / 2), min_ms)
redis.call('HSET', KEYS[1], 'wait_ms', ms(wait))
return wait
