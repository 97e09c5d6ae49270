-- Drop the ready messages (in-flight ones stay); returns how many. O(ready messages).
-- KEYS: the six queue keys (lib.lua)    ARGV: none
exists_or_error()
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
for i = 1, #ids, 1000 do
  redis.call('HDEL', KEYS[3], unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('DEL', KEYS[2], KEYS[4])
return #ids
