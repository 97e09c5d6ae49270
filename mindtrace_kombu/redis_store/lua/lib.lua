-- Shared by every queue script (prepended at load time). All keys of one queue share a hash tag.
-- KEYS[1] meta      hash   type, max (max_priority), seq (publish counter)
-- KEYS[2] ready     zset   message id -> score (lowest first)
-- KEYS[3] bodies    hash   message id -> stored payload (ready and in flight)
-- KEYS[4] wake      list   one token per ready message, for consumers blocked in BRPOP
-- KEYS[5] leases    zset   lease id -> deadline (ms, server clock) of leases holding messages
-- KEYS[6] inflight  zset   all scores 0; member "<lease>|<score, 16 digits>|<id>", by lease
--
-- score = (255 - priority) * 2^45 + (0 if returned else 2^44) + order, exact in a double;
-- order is the publish sequence (fifo, priority) or 2^44 - 1 - sequence (stack). A message
-- that returns (requeue, released or expired lease) keeps its order and loses the 2^44 bit:
-- first in line among its priority, in original order.
local FLAG = 17592186044416
local BAND = 35184372088832

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function returned_score(score)
  local band = math.floor(score / BAND) * BAND
  local rest = score - band
  if rest >= FLAG then rest = rest - FLAG end
  return band + rest
end

local function member_of(lease, score, id)
  return lease .. '|' .. string.format('%016.0f', score) .. '|' .. id
end

-- Put one in-flight member back to ready, first in line; false if it was not in flight.
local function put_back(member, lease_len)
  if redis.call('ZREM', KEYS[6], member) == 0 then return false end
  local score = tonumber(string.sub(member, lease_len + 2, lease_len + 17))
  local id = string.sub(member, lease_len + 19)
  if redis.call('HEXISTS', KEYS[3], id) == 1 then
    redis.call('ZADD', KEYS[2], returned_score(score), id)
    redis.call('LPUSH', KEYS[4], '1')
  end
  return true
end

-- Every message of a lease back to ready (first in line, original order); the lease is gone.
local function release(lease)
  local lo, hi = '[' .. lease .. '|', '(' .. lease .. '}'
  local members = redis.call('ZRANGEBYLEX', KEYS[6], lo, hi)
  for _, member in ipairs(members) do put_back(member, #lease) end
  redis.call('ZREM', KEYS[5], lease)
  return #members
end

-- Release the leases whose deadline has passed (a few per call; the rest on the next one).
local function release_expired(now)
  local restored = 0
  for _, lease in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, 8)) do
    restored = restored + release(lease)
  end
  return restored
end

-- Drop wake-up tokens beyond the number of ready messages (consumers that did not BRPOP).
local function trim_tokens()
  local ready = redis.call('ZCARD', KEYS[2])
  if ready == 0 then
    redis.call('DEL', KEYS[4])
  elseif redis.call('LLEN', KEYS[4]) > ready then
    redis.call('LTRIM', KEYS[4], 0, ready - 1)
  end
end

local function exists_or_error()
  if redis.call('EXISTS', KEYS[1]) == 0 then error({err = 'NOT_FOUND'}) end
end

-- A queue whose meta key expires (Kombu's x-expires, RedisStore.expire): the keys this script
-- created or refilled expire with it, so no key of the queue outlives the others.
local function keep_ttl()
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    for i = 2, 6 do redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end

-- Write a job record (a hash in the job's own slot): the job under `field` ('job': the encoded
-- job; 'payload': the message payload holding it), queue, status, attempts; the outcome columns a
-- worker wrote are cleared, the last error kept (a retry waits with it). A record new to its
-- queue's index (new to Redis when `index` is nil: on Redis Cluster the index is in another slot,
-- written by record.lua's 'index') gets its creation time there and in the hash. It expires ttl
-- ms after its last write; call keep_index once per batch.
local function save_record(key, index, id, queue, status, field, data, attempts, ttl, now)
  local new
  if index then
    new = redis.call('ZADD', index, 'NX', now, id) == 1
  else
    new = redis.call('HEXISTS', key, 'created') == 0
  end
  if new then
    redis.call('HSET', key, field, data, 'queue', queue, 'status', status, 'attempts', attempts, 'created', now)
  else
    redis.call('HDEL', key, 'job', 'payload', 'started_at', 'completed_at', 'output', 'dead_lettered')
    redis.call('HSET', key, field, data, 'queue', queue, 'status', status, 'attempts', attempts)
  end
  redis.call('PEXPIRE', key, ttl)
end

-- A queue's job index expires with its last record; with `prune`, entries older than the TTL
-- (their records are gone) are dropped.
local function keep_index(index, ttl, now, prune)
  if prune then redis.call('ZREMRANGEBYSCORE', index, '-inf', now - ttl) end
  redis.call('PEXPIRE', index, ttl)
end
