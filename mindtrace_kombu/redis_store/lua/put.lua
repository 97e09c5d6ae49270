-- Put messages; returns how many. Priorities above the queue's max_priority are capped.
-- KEYS: the six queue keys (lib.lua); with job records also the queue's job index, then one
--       record key per message -- or, on Redis Cluster, where the records live in other slots
--       and were written before, no record key: the index alone is updated
-- ARGV: (payload, priority) per message; with job records then the TTL (ms), the queue name, the
--       time (ms) and (job id, attempts, job data) per message, recorded QUEUED (save_record) with
--       the job data, or with the payload as the job when the data is ''; the index is pruned once
--       per 64 messages published to the queue
exists_or_error()
local spec = redis.call('HMGET', KEYS[1], 'type', 'max')
local kind, max = spec[1], tonumber(spec[2]) or 0
local records = #KEYS > 6
local count = records and (#ARGV - 3) / 5 or #ARGV / 2
local seq = redis.call('HINCRBY', KEYS[1], 'seq', count) - count
local first = seq
local tokens = {}
for i = 1, 2 * count, 2 do
  seq = seq + 1
  local priority, order = 0, seq
  if kind == 'priority' then
    priority = math.max(0, math.min(tonumber(ARGV[i + 1]) or 0, max))
  elseif kind == 'stack' then
    order = FLAG - 1 - seq
  end
  local id = string.format('%.0f', seq)
  redis.call('HSET', KEYS[3], id, ARGV[i])
  redis.call('ZADD', KEYS[2], (255 - priority) * BAND + FLAG + order, id)
  tokens[#tokens + 1] = '1'
end
redis.call('LPUSH', KEYS[4], unpack(tokens))
keep_ttl()
if records then
  local base, ttl, now = 2 * count, tonumber(ARGV[2 * count + 1]), tonumber(ARGV[2 * count + 3])
  for j = 1, count do
    local at = base + 1 + 3 * j
    if #KEYS == 7 then
      redis.call('ZADD', KEYS[7], 'NX', now, ARGV[at])
    else
      local field, data = 'job', ARGV[at + 2]
      if data == '' then field, data = 'payload', ARGV[2 * j - 1] end
      save_record(KEYS[7 + j], KEYS[7], ARGV[at], ARGV[base + 2], 'queued', field, data, ARGV[at + 1], ttl, now)
    end
  end
  keep_index(KEYS[7], ttl, now, math.floor(first / 64) ~= math.floor(seq / 64))
end
return count
