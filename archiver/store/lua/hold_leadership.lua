-- Take or keep the scheduler leader lease.
-- KEYS[1] leader key; ARGV[1] our identity, ARGV[2] ttl ms. Returns 1 if we hold it.
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
