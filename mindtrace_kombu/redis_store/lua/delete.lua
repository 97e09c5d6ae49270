-- Delete the queue with its messages; with if_empty ('1'), refuse (NOT_EMPTY) while it holds
-- ready or in-flight messages. Returns how many messages were dropped.
-- KEYS: the six queue keys (lib.lua)    ARGV: if_empty
exists_or_error()
local held = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[6])
if ARGV[1] == '1' and held > 0 then error({err = 'NOT_EMPTY'}) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
return held
