-- Shared helpers, prepended to every script.
-- LSNs are unsigned 64-bit integers: they are kept as decimal strings, because Lua numbers are
-- doubles and lose precision above 2^53. Times are Redis's clock, in ms.
--
-- A partition's hash (<prefix>:partition:{<storage>/<partition>}), the fields the scripts share:
--   next            the LSN to archive next (only ever moves forward)
--   high            the producer's high-water mark (only ever moves forward)
--   acked           the newest LSN acknowledged to the producer
--   inflight        the LSN granted to a worker; absent when no grant is live
--   token           fencing token, bumped at every grant and by every fence; a caller whose
--                   token is not current may change nothing
--   lease_until     when the grant ends unless renewed
--   claimed_ms      when the grant was made
--   dispatched      the token whose task was sent (a grant with another is an orphan when old)
--   grant_lsn, grants  the LSN of the latest grants and how many it had (after the first, an
--                   earlier attempt may have written its archive)
--   holder          "<token> <host:pid>" of the attempt running the grant
--   attempts        failed attempts at next; last_error, error_ms: the latest failure
--   entry_failures  failures of the entry itself; stopped = '1' once there were enough
--   paused, conflicted, stopped  '1' while set: no grants are made
--   gaps_total      gaps recorded (the newest are listed in the gaps key)
--   created_ms, progress_ms, oldest_ms  when the partition was first seen, last moved, and
--                   when its oldest waiting entry was announced

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function ms(n)
  return string.format('%d', n)
end

-- a < b for canonical decimal strings (no sign, no leading zeros)
local function lsn_less(a, b)
  if #a ~= #b then
    return #a < #b
  end
  return a < b
end

local function lsn_incr(a)
  local i = #a
  while i > 0 do
    local d = string.byte(a, i) - 48
    if d < 9 then
      return string.sub(a, 1, i - 1) .. string.char(d + 49) .. string.rep('0', #a - i)
    end
    i = i - 1
  end
  return '1' .. string.rep('0', #a)
end

-- The grant ends: nothing is in flight. The token stays, so its holder stays fenced off.
local function end_grant(key)
  redis.call('HDEL', key, 'inflight', 'lease_until')
end

-- The partition moves past its entry (archived, skipped, reconciled): the grant ends, and the
-- entry's failures go with it.
local function move_on(key)
  redis.call('HDEL', key, 'inflight', 'lease_until', 'last_error', 'entry_failures')
end

-- Grant the partition's next LSN when it has work and no live grant.
-- Returns {lsn, token} or false. An expired grant is taken over: the token bump fences it.
-- With orphan_ms, so is a grant whose task was never marked as sent (its sender died between
-- claiming and sending) once it is that old.
local function claim(key, now, lease_ms, orphan_ms)
  local f = redis.call('HMGET', key, 'next', 'high', 'inflight', 'lease_until', 'paused',
    'conflicted', 'stopped')
  local nxt, high, inflight, lease_until = f[1], f[2], f[3], f[4]
  if not nxt or f[5] == '1' or f[6] == '1' or f[7] == '1' or lsn_less(high, nxt) then
    return false
  end
  if inflight and lease_until and tonumber(lease_until) > now then
    if not orphan_ms then
      return false
    end
    local g = redis.call('HMGET', key, 'token', 'dispatched', 'claimed_ms')
    if g[1] == g[2] or not g[3] or now - tonumber(g[3]) < orphan_ms then
      return false
    end
  end
  local token = redis.call('HINCRBY', key, 'token', 1)
  redis.call('HSET', key, 'inflight', nxt, 'lease_until', ms(now + lease_ms), 'claimed_ms', ms(now))
  -- How many grants this LSN has had: after the first, an earlier attempt may have written.
  if redis.call('HGET', key, 'grant_lsn') == nxt then
    redis.call('HINCRBY', key, 'grants', 1)
  else
    redis.call('HSET', key, 'grant_lsn', nxt, 'grants', 1)
  end
  return {nxt, token}
end

-- True while (lsn, token) is the partition's current grant.
local function holds(key, lsn, token)
  local f = redis.call('HMGET', key, 'inflight', 'token')
  return f[1] == lsn and f[2] == token
end

-- Announcement marks: a short list of 'high ms' pairs, oldest first, saying when the newest
-- entry was announced. From them the age of the oldest entry not yet archived is known without
-- a timestamp per entry.
local MAX_MARKS = 32

local function add_mark(marks_key, high, now, resolution_ms)
  local last = redis.call('LINDEX', marks_key, -1)
  if last then
    local last_ms = string.match(last, ' (%d+)$')
    if now - tonumber(last_ms) < resolution_ms or redis.call('LLEN', marks_key) >= MAX_MARKS then
      -- Widen the newest mark: its time is older than the entries it now covers, so the age
      -- reported errs on the old side, never the young one.
      redis.call('LSET', marks_key, -1, high .. ' ' .. last_ms)
      return
    end
  end
  redis.call('RPUSH', marks_key, high .. ' ' .. ms(now))
end

-- Drop the marks of archived entries and note when the oldest waiting entry was announced
-- (hash field oldest_ms; absent when nothing waits).
local function refresh_oldest(key, marks_key, now)
  local f = redis.call('HMGET', key, 'next', 'high')
  local nxt, high = f[1], f[2]
  if lsn_less(high, nxt) then
    redis.call('DEL', marks_key)
    redis.call('HDEL', key, 'oldest_ms')
    return
  end
  while true do
    local first = redis.call('LINDEX', marks_key, 0)
    if not first then
      break
    end
    local mark_high, mark_ms = string.match(first, '^(%d+) (%d+)$')
    if not lsn_less(mark_high, nxt) then
      redis.call('HSET', key, 'oldest_ms', mark_ms)
      return
    end
    redis.call('LPOP', marks_key)
  end
  -- No mark covers the waiting entries (state rebuilt without them): count from now.
  redis.call('HSETNX', key, 'oldest_ms', ms(now))
end

-- Append an operator's action to the partition's audit trail; the newest 50 are kept.
local function audit(audit_key, now, action, actor, reason, detail)
  redis.call('RPUSH', audit_key, cjson.encode({
    at_ms = ms(now), action = action, actor = actor, reason = reason, detail = detail
  }))
  redis.call('LTRIM', audit_key, -50, -1)
end
