-- Job records' state changes, a batch per call. KEYS: one record per job ('save' with an index:
-- the queue's job index first; 'index': the index only); a record's pub/sub channel is its key
-- .. ':done'. On Redis Cluster a call's records share one slot, and 'save' goes without the index
-- (another slot), which 'index' then updates.
-- ARGV[1] op, ARGV[2] TTL (ms), then
--   save:   queue, status, '1' if KEYS[1] is the index else '0', then (job id, job data,
--           attempts) per job                                                 returns #jobs
--   index:  the job ids                                                       returns #ids
--   start:  started_at      returns per job the attempt count; -1 cancelled, 0 no record
--   finish: the k column names, then per job: status and k values ('' clears)  returns #jobs
--   cancel: -               (one job) returns 1 done, 0 not queued
local op, ttl = ARGV[1], tonumber(ARGV[2])
if op == 'save' then
  local now = now_ms()
  local index = nil
  if ARGV[5] == '1' then index = KEYS[1] end
  local first = index and 2 or 1
  for i = first, #KEYS do
    local at = 3 * (i - first) + 6
    save_record(KEYS[i], index, ARGV[at], ARGV[3], ARGV[4], 'job', ARGV[at + 1], ARGV[at + 2], ttl, now)
  end
  if index then keep_index(index, ttl, now, true) end
  return #KEYS - first + 1
end
if op == 'index' then
  local now = now_ms()
  for i = 3, #ARGV do redis.call('ZADD', KEYS[1], 'NX', now, ARGV[i]) end
  keep_index(KEYS[1], ttl, now, true)
  return #ARGV - 2
end
if op == 'start' then
  local found = {}
  for i, key in ipairs(KEYS) do
    local status = redis.call('HGET', key, 'status')
    if not status then
      found[i] = 0
    elseif status == 'cancelled' then
      found[i] = -1
    else
      redis.call('HSET', key, 'status', 'running', 'started_at', ARGV[3])
      redis.call('PEXPIRE', key, ttl)
      found[i] = redis.call('HINCRBY', key, 'attempts', 1)
    end
  end
  return found
end
if op == 'cancel' then
  if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 0 end
  redis.call('HSET', KEYS[1], 'status', 'cancelled')
  redis.call('PUBLISH', KEYS[1] .. ':done', 'cancelled')
  return 1
end
local k = tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    local at = 4 + k + (i - 1) * (k + 1)
    local status = ARGV[at]
    local set, clear = {'status', status}, {}
    for j = 1, k do
      local value = ARGV[at + j]
      if value == '' then
        clear[#clear + 1] = ARGV[3 + j]
      else
        set[#set + 1] = ARGV[3 + j]
        set[#set + 1] = value
      end
    end
    redis.call('HSET', key, unpack(set))
    if #clear > 0 then redis.call('HDEL', key, unpack(clear)) end
    redis.call('PEXPIRE', key, ttl)
    if status == 'completed' or status == 'failed' or status == 'cancelled' then
      redis.call('PUBLISH', key .. ':done', status)
    end
  end
end
return #KEYS
