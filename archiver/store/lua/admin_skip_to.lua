-- Move a partition forward past entries that will never be archived, for an operator: a
-- manual gap. Any holder is fenced off. Acknowledgements do not move: nothing skipped is
-- acknowledged, but once LSN is, the producer may delete everything below it.
-- KEYS[1] partition hash, KEYS[2] gap list, KEYS[3] announcement marks, KEYS[4] audit list
-- ARGV[1] lsn, ARGV[2] gaps kept, ARGV[3] actor, ARGV[4] reason
-- Returns {1, previous next lsn} or {0, why not}.
local key, gaps_key, marks_key = KEYS[1], KEYS[2], KEYS[3]
local target = ARGV[1]
local f = redis.call('HMGET', key, 'next', 'high', 'token')
local nxt, high = f[1], f[2]
if not nxt then
  return {0, 'no state for this partition'}
end
if not lsn_less(nxt, target) then
  return {0, 'LSN ' .. target .. ' is not above the next LSN to archive, ' .. nxt}
end
if lsn_less(lsn_incr(high), target) then
  return {0, 'LSN ' .. target .. ' is beyond the newest announced entry + 1 (' .. high .. ' + 1)'}
end
local now = now_ms()
redis.call('RPUSH', gaps_key, nxt .. ' ' .. target .. ' ' .. ms(now) .. ' manual')
redis.call('LTRIM', gaps_key, -tonumber(ARGV[2]), -1)
redis.call('HINCRBY', key, 'gaps_total', 1)
redis.call('HINCRBY', key, 'token', 1)
redis.call('HSET', key, 'next', target, 'attempts', 0, 'progress_ms', ms(now))
move_on(key)
redis.call('HDEL', key, 'conflicted', 'stopped')
refresh_oldest(key, marks_key, now)
audit(KEYS[4], now, 'skip-to', ARGV[3], ARGV[4], {from = nxt, to = target, fenced_token = f[3]})
return {1, nxt}
