-- Note that the task for grant ARGV[1] was sent, unless a newer grant has been made since.
-- KEYS[1] partition hash. Returns 1 if noted.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'dispatched', ARGV[1])
return 1
