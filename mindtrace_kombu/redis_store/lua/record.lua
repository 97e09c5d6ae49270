-- A job record's state change; returns the record's attempt count (start, finish), -1 when a
-- start finds the job cancelled, 1/0 for cancel (done/not queued).
-- KEYS[1] the job's record   KEYS[2] its queue's job index (written only when the record is new)
-- ARGV: op ('save'|'start'|'finish'|'cancel'), TTL (ms), done channel, job id, queue, status,
--       job data, attempts (used when the record is new, or by 'save')
local op, ttl = ARGV[1], tonumber(ARGV[2])
local current = redis.call('HMGET', KEYS[1], 'status', 'attempts')
local status, stored = current[1], tonumber(current[2])
if op == 'cancel' then
  if status ~= 'queued' then return 0 end
  redis.call('HSET', KEYS[1], 'status', 'cancelled')
  redis.call('PUBLISH', ARGV[3], 'cancelled')
  return 1
end
local attempts = tonumber(ARGV[8])
if op == 'start' then
  if status == 'cancelled' then return -1 end
  if status then attempts = stored + 1 end
elseif op == 'finish' and status then
  attempts = stored
end
save_record(KEYS[1], KEYS[2], ARGV[4], ARGV[5], ARGV[6], ARGV[7], attempts, ttl, now_ms())
if ARGV[6] == 'completed' or ARGV[6] == 'failed' or ARGV[6] == 'cancelled' then
  redis.call('PUBLISH', ARGV[3], ARGV[6])
end
return attempts
