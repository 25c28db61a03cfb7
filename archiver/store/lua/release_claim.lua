-- Give up a grant that was never acted on (its task could not be sent), so the partition can
-- be claimed again at once.
-- KEYS[1] partition hash; ARGV[1] lsn, ARGV[2] token. Returns 1 if released, 0 if not held.
if not holds(KEYS[1], ARGV[1], ARGV[2]) then
  return 0
end
end_grant(KEYS[1])
return 1
