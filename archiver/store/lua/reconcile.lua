-- Move a partition forward to what the archive already holds, after its state was lost.
-- Never moves it backwards, and never past an object the caller did not verify: it verified
-- every object from ARGV[4] up to ARGV[1]. Holes in the archive above the old position become
-- recorded gaps, the one between the old position and the first verified object included.
-- A conflicted, stopped or paused partition is left as it is: it is an operator's to look at.
-- KEYS[1] partition hash, KEYS[2] gap list, KEYS[3] announcement marks
-- ARGV[1] last verified lsn, ARGV[2] gaps kept, ARGV[3] first verified lsn,
-- ARGV[4] verified from (every object from this lsn on was verified),
-- ARGV[5..] holes between verified objects as 'expected actual' pairs
-- Returns {1 if changed else 0, the previous next lsn or '', why not changed or ''}
local key, gaps_key, marks_key = KEYS[1], KEYS[2], KEYS[3]
local last, max_gaps, first, checked_from = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local now = now_ms()
local f = redis.call('HMGET', key, 'next', 'high', 'conflicted', 'stopped', 'paused')
local nxt, high = f[1], f[2]
if f[3] == '1' then
  return {0, nxt, 'conflicted'}
end
if f[4] == '1' then
  return {0, nxt, 'stopped'}
end
if f[5] == '1' then
  return {0, nxt, 'paused'}
end
local target = lsn_incr(last)
if nxt and not lsn_less(nxt, target) then
  return {0, nxt, ''}
end
if nxt and lsn_less(nxt, checked_from) then
  -- The position moved below what was verified since it was read: verify again.
  return {0, nxt, 'moved'}
end
if not nxt then
  redis.call('HSET', key, 'high', last, 'token', 0, 'created_ms', ms(now))
elseif lsn_less(high, last) then
  redis.call('HSET', key, 'high', last)
end
local holes = {}
if nxt and lsn_less(nxt, first) then
  holes[1] = nxt .. ' ' .. first
end
for i = 5, #ARGV do
  holes[#holes + 1] = ARGV[i]
end
for _, hole in ipairs(holes) do
  local expected, actual = string.match(hole, '^(%d+) (%d+)$')
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
redis.call('HINCRBY', key, 'token', 1)
move_on(key)
refresh_oldest(key, marks_key, now)
return {1, nxt or '', ''}
