-- Every message the lease holds in this queue goes back, first in line, in original order
-- (a consumer closing, or giving back what it prefetched). Returns how many.
-- KEYS: the six queue keys (lib.lua)    ARGV: lease
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local released = release(ARGV[1])
keep_ttl()
return released
