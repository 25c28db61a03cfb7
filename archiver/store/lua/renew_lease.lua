-- KEYS[1] partition hash; ARGV[1] lsn, ARGV[2] token, ARGV[3] lease ms, ARGV[4] (optional) who
-- starts an attempt under the grant, kept with the token so that a newer grant shows no stale
-- holder. A renewal also proves the task was sent.
-- Returns 0 when the holder has been fenced off, 1 while the grant is current, and 2 (only
-- when an attempt starts) when no earlier attempt at this LSN can have written an archive:
-- the LSN's first grant, first start, no failure, and the partition has archived before.
local key = KEYS[1]
if not holds(key, ARGV[1], ARGV[2]) then
  return 0
end
redis.call('HSET', key, 'lease_until', ms(now_ms() + tonumber(ARGV[3])), 'dispatched', ARGV[2])
if not ARGV[4] then
  return 1
end
local f = redis.call('HMGET', key, 'holder', 'grants', 'attempts', 'acked')
local started_before = f[1] and string.match(f[1], '^(%d+) ') == ARGV[2]
redis.call('HSET', key, 'holder', ARGV[2] .. ' ' .. ARGV[4])
if not started_before and f[2] == '1' and (not f[3] or f[3] == '0') and f[4] then
  return 2
end
return 1
