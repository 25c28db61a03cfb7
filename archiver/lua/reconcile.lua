-- Move a partition forward to what the archive already holds, after its state was lost.
-- Never moves it backwards. Holes in the archive above the old position become recorded gaps.
-- KEYS[1] partition hash, KEYS[2] gap list, KEYS[3] announcement marks
-- ARGV[1] last archived lsn, ARGV[2] gaps kept, ARGV[3..] holes as 'expected actual' pairs
-- Returns {1 if changed else 0, the previous next lsn or ''}
local key, gaps_key, marks_key = KEYS[1], KEYS[2], KEYS[3]
local last, max_gaps = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local nxt = redis.call('HGET', key, 'next')
local target = lsn_incr(last)
if nxt and not lsn_less(nxt, target) then
  return {0, nxt}
end
if not nxt then
  redis.call('HSET', key, 'high', last, 'token', 0, 'created_ms', ms(now))
else
  local high = redis.call('HGET', key, 'high')
  if lsn_less(high, last) then
    redis.call('HSET', key, 'high', last)
  end
end
for i = 3, #ARGV do
  local expected, actual = string.match(ARGV[i], '^(%d+) (%d+)$')
  -- Only what lies above the old position is news; a hole straddling it starts there.
  if nxt and lsn_less(expected, nxt) then
    expected = nxt
  end
  if lsn_less(expected, actual) then
    redis.call('RPUSH', gaps_key, expected .. ' ' .. actual .. ' ' .. ms(now))
    redis.call('HINCRBY', key, 'gaps_total', 1)
  end
end
redis.call('LTRIM', gaps_key, -max_gaps, -1)
redis.call('HSET', key, 'next', target, 'acked', last, 'attempts', 0, 'progress_ms', ms(now))
-- Whoever held the old position is fenced off.
redis.call('HDEL', key, 'inflight', 'lease_until', 'last_error')
refresh_oldest(key, marks_key, now)
return {1, nxt or ''}
