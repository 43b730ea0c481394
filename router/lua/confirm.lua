-- confirm: record the outcome of a dispatch, only while its fence is the lesson's current one.
-- KEYS[1] lesson:<id> hash  KEYS[2] dispatch:pending zset
-- ARGV[1] lesson id  ARGV[2] fence  ARGV[3] done | failed  ARGV[4] dispatch id
-- A failed dispatch is left claimable at once (by the next join or the reconciler).
local cur = redis.call('HMGET', KEYS[1], 'fence', 'dispatch_fence')
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[2] then return 0 end
if ARGV[3] == 'done' then
  redis.call('HSET', KEYS[1], 'dispatch_state', 'done', 'dispatch_id', ARGV[4])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], 'dispatch_at', 0)
  redis.call('ZADD', KEYS[2], 0, ARGV[1])
end
return 1
