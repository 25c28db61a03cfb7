-- KEYS[1] partition hash; ARGV[1] lsn, ARGV[2] token, ARGV[3] lease ms, ARGV[4] (optional) who
-- holds it, kept with the token so that a newer grant shows no stale holder.
-- Returns 1 while the grant is current, 0 when its holder has been fenced off.
-- A renewal also proves the task was sent.
if not holds(KEYS[1], ARGV[1], ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'lease_until', ms(now_ms() + tonumber(ARGV[3])), 'dispatched', ARGV[2])
if ARGV[4] then
  redis.call('HSET', KEYS[1], 'holder', ARGV[2] .. ' ' .. ARGV[4])
end
return 1
