-- Append acknowledgements to the public stream, never one below an earlier one of the same
-- partition: a worker's late retry or a scheduler's re-acknowledgement read a while ago may
-- arrive after a newer acknowledgement, and is dropped (the newer one covers it).
-- KEYS[1] acknowledgement stream, KEYS[2] hash of the newest LSN published per partition
-- (named so that it shares the stream's cluster slot)
-- ARGV[1] approximate stream length kept, ARGV[2..] (storage, partition, lsn) triples
-- Returns how many were appended.
local stream, published = KEYS[1], KEYS[2]
local appended = 0
for i = 2, #ARGV, 3 do
  local storage, partition, lsn = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local id = storage .. '/' .. partition
  local newest = redis.call('HGET', published, id)
  if not newest or not lsn_less(lsn, newest) then
    redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], '*',
      'storage', storage, 'partition', partition, 'lsn', lsn)
    redis.call('HSET', published, id, lsn)
    appended = appended + 1
  end
end
return appended
