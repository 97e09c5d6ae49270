-- Declare a queue unless it exists; return the stored spec {type, max}.
-- KEYS: meta    ARGV: type ('fifo', 'stack', 'priority'), max_priority ('' unless priority)
if redis.call('HSETNX', KEYS[1], 'type', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'max', ARGV[2], 'seq', 0)
end
return redis.call('HMGET', KEYS[1], 'type', 'max')
