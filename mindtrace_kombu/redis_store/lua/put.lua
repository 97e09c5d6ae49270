-- Put messages; returns how many. Priorities above the queue's max_priority are capped.
-- KEYS: the six queue keys (lib.lua)    ARGV: (payload, priority) per message
exists_or_error()
local spec = redis.call('HMGET', KEYS[1], 'type', 'max')
local kind, max = spec[1], tonumber(spec[2]) or 0
local count = #ARGV / 2
local seq = redis.call('HINCRBY', KEYS[1], 'seq', count) - count
local tokens = {}
for i = 1, #ARGV, 2 do
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
return count
