-- Pause the whole fleet after a failure, so that a sick object store is not hammered.
-- Failures during a pause share it; each new pause is twice the last, up to the maximum.
-- KEYS[1] fleet hash; ARGV[1] minimum ms, ARGV[2] maximum ms
-- Returns the ms left in the pause.
local key = KEYS[1]
local min_ms, max_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local f = redis.call('HMGET', key, 'wait_ms', 'until_ms')
local wait, until_ms = tonumber(f[1]) or min_ms, tonumber(f[2]) or 0
if until_ms > now then
  return until_ms - now
end
redis.call('HSET', key, 'until_ms', ms(now + wait), 'wait_ms', ms(math.min(wait * 2, max_ms)))
return wait
