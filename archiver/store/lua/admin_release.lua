-- Break a partition's lease for an operator. The token is bumped, so the holder is fenced off:
-- it can neither advance the partition nor acknowledge anything. The sweep grants it again.
-- KEYS[1] partition hash, KEYS[2] audit list; ARGV[1] actor, ARGV[2] reason
-- Returns {1, released lsn} or {0, why not}.
local key = KEYS[1]
local f = redis.call('HMGET', key, 'next', 'inflight', 'token')
if not f[1] then
  return {0, 'no state for this partition'}
end
if not f[2] then
  return {0, 'nothing is in flight'}
end
redis.call('HINCRBY', key, 'token', 1)
end_grant(key)
audit(KEYS[2], now_ms(), 'release', ARGV[1], ARGV[2], {lsn = f[2], fenced_token = f[3]})
return {1, f[2]}
