-- KEYS[1] partition hash; ARGV[1] lsn, ARGV[2] token, ARGV[3] lease ms
-- Returns 1 while the grant is current, 0 when its holder has been fenced off.
-- A renewal also proves the task was sent.
if not holds(KEYS[1], ARGV[1], ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'lease_until', ms(now_ms() + tonumber(ARGV[3])), 'dispatched', ARGV[2])
return 1
