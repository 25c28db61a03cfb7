-- One mirror's progress on one partition (see archiver/core/mirror_progress.py, which a test
-- holds this script to). KEYS[1] the hash <prefix>:mirror:<name>:{<storage>/<partition>}.
-- ARGV[1] the operation: claim, advance, extend, fail, conflict, stop, release, resume; then
-- its arguments.
-- Fields: through, attempts, last_error, retry_ms, conflict, holder, lease_until.
-- Returns 1 if the operation applied, 0 if it was refused.
local key = KEYS[1]
local op = ARGV[1]
local now = now_ms()

local function held(token)
  return redis.call('HGET', key, 'holder') == token
end

if op == 'claim' then
  local token, ttl = ARGV[2], tonumber(ARGV[3])
  if redis.call('HEXISTS', key, 'conflict') == 1 then
    return 0
  end
  local retry = tonumber(redis.call('HGET', key, 'retry_ms') or '')
  if retry ~= nil and retry > now then
    return 0
  end
  local holder = redis.call('HGET', key, 'holder')
  local until_ms = tonumber(redis.call('HGET', key, 'lease_until') or '')
  if holder and until_ms ~= nil and until_ms > now then
    return 0
  end
  redis.call('HSET', key, 'holder', token, 'lease_until', ms(now + ttl))
  return 1
elseif op == 'advance' then
  local token, lsn, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
  if not held(token) then
    return 0
  end
  local through = redis.call('HGET', key, 'through')
  if not through or lsn_less(through, lsn) then
    redis.call('HSET', key, 'through', lsn)
  end
  redis.call('HSET', key, 'attempts', '0', 'lease_until', ms(now + ttl))
  redis.call('HDEL', key, 'last_error', 'retry_ms')
  return 1
elseif op == 'extend' then
  local lsn, previous = ARGV[2], ARGV[3]
  local through = redis.call('HGET', key, 'through')
  if previous == '' or not through or lsn_less(through, previous) then
    return 0
  end
  if through and not lsn_less(through, lsn) then
    return 0
  end
  redis.call('HSET', key, 'through', lsn)
  return 1
elseif op == 'fail' then
  local token, err, delay = ARGV[2], ARGV[3], tonumber(ARGV[4])
  if not held(token) then
    return 0
  end
  redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSET', key, 'last_error', err, 'retry_ms', ms(now + delay))
  redis.call('HDEL', key, 'holder', 'lease_until')
  return 1
elseif op == 'conflict' then
  local token, message = ARGV[2], ARGV[3]
  if not held(token) then
    return 0
  end
  redis.call('HSET', key, 'conflict', message)
  redis.call('HDEL', key, 'holder', 'lease_until')
  return 1
elseif op == 'stop' then
  if redis.call('HEXISTS', key, 'conflict') == 1 then
    return 0
  end
  redis.call('HSET', key, 'conflict', ARGV[2])
  return 1
elseif op == 'release' then
  if not held(ARGV[2]) then
    return 0
  end
  redis.call('HDEL', key, 'holder', 'lease_until')
  return 1
elseif op == 'resume' then
  local changed = redis.call('HEXISTS', key, 'conflict') == 1
    or redis.call('HEXISTS', key, 'retry_ms') == 1
    or tonumber(redis.call('HGET', key, 'attempts') or '0') > 0
  redis.call('HDEL', key, 'conflict', 'last_error', 'retry_ms')
  redis.call('HSET', key, 'attempts', '0')
  if changed then
    return 1
  end
  return 0
end
return redis.error_reply('unknown operation ' .. tostring(op))
