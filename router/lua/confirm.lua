-- confirm: record the outcome of a dispatch, only while its fence is the lesson's current one.
-- KEYS[1] lesson:<id> hash  KEYS[2] dispatch:pending zset
-- ARGV[1] lesson id  ARGV[2] fence  ARGV[3] done | failed  ARGV[4] dispatch id
-- done: LiveKit took the dispatch. The claim stays in dispatch:pending (scored now) until the
--   worker reports the avatar live (config/lua/session.lua); one not live within the lease is
--   dispatched again (LiveKit accepts a dispatch it then cannot place). A worker that already
--   reported live (it can be faster than this confirm) stays live.
-- failed: the claim is left claimable at once (by the next join or the reconciler).
local cur = redis.call('HMGET', KEYS[1], 'fence', 'dispatch_fence', 'dispatch_state')
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[2] then return 0 end
if cur[3] == 'live' then return 1 end
if ARGV[3] == 'done' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[1], 'dispatch_state', 'done', 'dispatch_id', ARGV[4],
             'dispatch_at', now)
  redis.call('ZADD', KEYS[2], now, ARGV[1])
else
  redis.call('HSET', KEYS[1], 'dispatch_at', 0)
  redis.call('ZADD', KEYS[2], 0, ARGV[1])
end
return 1
