-- Record that an LSN is durably archived, and optionally claim the next one.
-- KEYS[1] partition hash, KEYS[2] announcement marks
-- ARGV[1] lsn, ARGV[2] token, ARGV[3] lease ms, ARGV[4] claim next (1/0)
-- Returns {0} when fenced off, {1} when committed, {1, next lsn, token} when it also claimed.
local key, lsn = KEYS[1], ARGV[1]
if not holds(key, lsn, ARGV[2]) then
  return {0}
end
local now = now_ms()
redis.call('HSET', key, 'acked', lsn, 'next', lsn_incr(lsn), 'attempts', 0, 'progress_ms', ms(now))
move_on(key)
refresh_oldest(key, KEYS[2], now)
if ARGV[4] == '1' then
  local c = claim(key, now, tonumber(ARGV[3]))
  if c then
    return {1, c[1], c[2]}
  end
end
return {1}
