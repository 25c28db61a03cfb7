-- KEYS[1] partition hash; ARGV[1] lease ms, ARGV[2] (optional) orphan ms: also take over a
-- grant whose task was never marked as sent, once it is that old.
-- Returns {lsn, token} when it claimed; {'', ms} when a live grant holds the partition, with
-- when to look again (server clock: the lease's end, or sooner when the grant could become an
-- orphan); an empty list when there is nothing to claim (no work, paused, conflicted or
-- stopped).
local key = KEYS[1]
local now = now_ms()
local orphan_ms = tonumber(ARGV[2])
local c = claim(key, now, tonumber(ARGV[1]), orphan_ms)
if c then
  return c
end
local f = redis.call('HMGET', key, 'next', 'high', 'inflight', 'lease_until', 'paused',
  'conflicted', 'token', 'dispatched', 'claimed_ms', 'stopped')
if not f[1] or f[5] == '1' or f[6] == '1' or f[10] == '1' or lsn_less(f[2], f[1]) or not f[3] then
  return {}
end
local again = tonumber(f[4]) or now
if orphan_ms and f[7] ~= f[8] and f[9] then
  again = math.min(again, tonumber(f[9]) + orphan_ms)
end
return {'', ms(math.max(again, now))}
