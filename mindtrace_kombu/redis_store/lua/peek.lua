-- The next ready messages in delivery order, left where they are (expired leases are released
-- first: their messages are ready again). Returns (score, payload) pairs.
-- KEYS: the six queue keys (lib.lua)    ARGV[1]: how many at most
exists_or_error()
if release_expired(now_ms()) > 0 then keep_ttl() end
local ready = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local found = {}
for i = 1, #ready, 2 do
  found[#found + 1] = ready[i + 1]
  found[#found + 1] = redis.call('HGET', KEYS[3], ready[i])
end
return found
