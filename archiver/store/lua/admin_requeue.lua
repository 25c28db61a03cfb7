-- Grant a partition's next entry again now, for an operator: clears a conflict or stop mark
-- and the retry backoff, and fences off any holder. The caller sends the task.
-- KEYS[1] partition hash, KEYS[2] audit list; ARGV[1] lease ms, ARGV[2] actor, ARGV[3] reason
-- Returns {1, lsn, token} or {0, why not}.
local key = KEYS[1]
local f = redis.call('HMGET', key, 'next', 'high', 'paused', 'conflicted', 'inflight', 'token',
  'stopped')
local nxt, high = f[1], f[2]
if not nxt then
  return {0, 'no state for this partition'}
end
if f[3] == '1' then
  return {0, 'paused: resume it first'}
end
if lsn_less(high, nxt) then
  return {0, 'nothing to archive: every announced entry is archived'}
end
local now = now_ms()
move_on(key)
redis.call('HDEL', key, 'conflicted', 'stopped')
redis.call('HSET', key, 'attempts', 0)
local c = claim(key, now, tonumber(ARGV[1]))
audit(KEYS[2], now, 'requeue', ARGV[2], ARGV[3], {
  lsn = nxt, was_conflicted = f[4] == '1', was_stopped = f[7] == '1',
  fenced_token = f[5] and f[6] or false
})
return {1, c[1], c[2]}
