-- KEYS[1] fleet hash. Returns the ms left in the current fleet pause (0 when none).
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'until_ms')) or 0
local left = until_ms - now_ms()
if left > 0 then
  return left
end
return 0
