-- Settle, renew, restore and take, in one round trip:
--   1. acknowledge ARGV acks (in-flight members of this lease): their messages leave;
--   2. requeue ARGV requeues: back to ready, first in line;
--   3. release every lease of this queue whose deadline has passed;
--   4. take up to `count` ready messages: in flight under `lease`, or for good when lease is '';
--   5. renew the lease (deadline = now + lease_ms) while it holds messages here, else drop it.
-- Returns {member, payload, ...}; member = "<lease>|<score>|<id>" (score tells redelivery).
-- KEYS: the six queue keys (lib.lua)
-- ARGV: lease, lease_ms, count, number of acks, number of requeues, acks..., requeues...
exists_or_error()
local lease, lease_ms, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local acks, requeues = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 6, 5 + acks do
  if redis.call('ZREM', KEYS[6], ARGV[i]) == 1 then
    redis.call('HDEL', KEYS[3], string.sub(ARGV[i], #lease + 19))
  end
end
for i = 6 + acks, 5 + acks + requeues do put_back(ARGV[i], #lease) end
local now = now_ms()
release_expired(now)
local out = {}
if count > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], count)
  for i = 1, #popped, 2 do
    local id, score = popped[i], tonumber(popped[i + 1])
    local payload = redis.call('HGET', KEYS[3], id)
    if payload then
      local member = member_of(lease, score, id)
      if lease == '' then
        redis.call('HDEL', KEYS[3], id)
      else
        redis.call('ZADD', KEYS[6], 0, member)
      end
      out[#out + 1] = member
      out[#out + 1] = payload
    end
  end
  trim_tokens()
end
if lease ~= '' then
  local held = redis.call('ZRANGEBYLEX', KEYS[6], '[' .. lease .. '|', '(' .. lease .. '}', 'LIMIT', 0, 1)
  if #held > 0 then
    redis.call('ZADD', KEYS[5], now + lease_ms, lease)
  else
    redis.call('ZREM', KEYS[5], lease)
  end
end
keep_ttl()
return out
