-- Add a Kombu exchange binding, or raise its deadline (never lower it); expired ones are dropped.
-- KEYS[1]: a binding table (Namespace.binding)
-- ARGV: the member (routing key, pattern, queue), its lifetime in ms ('' for a queue without
--       x-expires: no deadline)
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local deadline = '+inf'
if ARGV[2] ~= '' then deadline = now + tonumber(ARGV[2]) end
redis.call('ZADD', KEYS[1], 'GT', deadline, ARGV[1])
