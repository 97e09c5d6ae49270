-- The live members of a Kombu exchange's binding table; the expired ones are dropped.
-- KEYS[1]: a binding table (Namespace.binding)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms())
return redis.call('ZRANGE', KEYS[1], 0, -1)
