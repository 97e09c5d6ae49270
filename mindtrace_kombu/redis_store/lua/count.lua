-- Ready messages, after releasing expired leases (their messages are ready again).
-- KEYS: the six queue keys (lib.lua)    ARGV: none
exists_or_error()
if release_expired(now_ms()) > 0 then keep_ttl() end
return redis.call('ZCARD', KEYS[2])
