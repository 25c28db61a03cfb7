-- Stop a partition whose archive object holds other bytes than its entry: it is never replaced.
-- KEYS[1] partition hash; ARGV[1] lsn, ARGV[2] token, ARGV[3] error.
-- Returns 1 if marked, 0 when the caller was fenced off.
if not holds(KEYS[1], ARGV[1], ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'conflicted', '1', 'last_error', ARGV[3], 'error_ms', ms(now_ms()))
end_grant(KEYS[1])
return 1
