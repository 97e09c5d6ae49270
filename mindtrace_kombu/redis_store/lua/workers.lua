-- The worker registry: a hash of worker id -> "<deadline ms>|<info JSON>" (server clock).
-- KEYS[1]: the registry (Namespace.workers)
-- ARGV[1] op, then
--   announce: worker id, info, time to live (ms)      returns 1
--   forget:   worker id                               returns 1 if it was listed
--   list:     -     drops the lapsed entries, returns the infos of the others
local op = ARGV[1]
if op == 'announce' then
  redis.call('HSET', KEYS[1], ARGV[2], (now_ms() + tonumber(ARGV[4])) .. '|' .. ARGV[3])
  return 1
end
if op == 'forget' then return redis.call('HDEL', KEYS[1], ARGV[2]) end
local now, live, entries = now_ms(), {}, redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local cut = string.find(entries[i + 1], '|', 1, true)
  if tonumber(string.sub(entries[i + 1], 1, cut - 1)) < now then
    redis.call('HDEL', KEYS[1], entries[i])
  else
    live[#live + 1] = string.sub(entries[i + 1], cut + 1)
  end
end
return live
