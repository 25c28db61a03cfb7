-- KEYS[1] leader key; ARGV[1] our identity. Returns 1 if we held it and let it go.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
