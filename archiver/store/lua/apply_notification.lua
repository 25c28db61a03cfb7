-- Fold a watermark notification (low, high) into one partition and claim its next entry.
-- KEYS[1] partition hash, KEYS[2] partition gap list, KEYS[3] announcement marks
-- ARGV[1] low, ARGV[2] high, ARGV[3] lease ms, ARGV[4] gaps kept, ARGV[5] mark resolution ms,
-- ARGV[6] where an unknown partition starts: the low of the first of the notifications folded
-- into this one (so that folding changes nothing: a gap between them is still a gap)
-- Returns {outcome, reacknowledge lsn or '', claimed lsn or '', token, gap expected lsn or ''}
local key, gaps_key, marks_key = KEYS[1], KEYS[2], KEYS[3]
local low, high = ARGV[1], ARGV[2]
local lease_ms, max_gaps = tonumber(ARGV[3]), tonumber(ARGV[4])
local resolution_ms = tonumber(ARGV[5])
local now = now_ms()

local f = redis.call('HMGET', key, 'next', 'high', 'acked')
local nxt, known_high, acked = f[1], f[2], f[3]
local outcome, gap_expected = 'applied', ''

if not nxt then
  nxt, known_high = ARGV[6] or low, high
  redis.call('HSET', key, 'next', nxt, 'high', high, 'token', 0, 'attempts', 0,
    'created_ms', ms(now), 'progress_ms', ms(now))
  add_mark(marks_key, high, now, resolution_ms)
  refresh_oldest(key, marks_key, now)
end
do
  if lsn_less(high, nxt) then
    return {'stale', acked or '', '', 0, ''}
  end
  if lsn_less(nxt, low) then
    outcome, gap_expected = 'gap', nxt
    redis.call('RPUSH', gaps_key, nxt .. ' ' .. low .. ' ' .. ms(now))
    redis.call('LTRIM', gaps_key, -max_gaps, -1)
    redis.call('HINCRBY', key, 'gaps_total', 1)
    redis.call('HSET', key, 'next', low, 'attempts', 0)
    -- The entry in flight is gone from the producer: its holder is fenced off.
    move_on(key)
  end
  if lsn_less(known_high, high) then
    redis.call('HSET', key, 'high', high)
    add_mark(marks_key, high, now, resolution_ms)
  end
  -- The oldest waiting entry changes only when the partition moved on (a gap) or had been
  -- caught up; a higher mark over waiting entries leaves it be.
  if outcome == 'gap' or (lsn_less(known_high, high) and lsn_less(known_high, nxt)) then
    refresh_oldest(key, marks_key, now)
  end
end

local c = claim(key, now, lease_ms)
if c then
  return {outcome, '', c[1], c[2], gap_expected}
end
return {outcome, '', '', 0, gap_expected}
