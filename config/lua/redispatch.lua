-- redispatch: a worker has just registered with LiveKit. A dispatch LiveKit received for it
-- while it was not registered (LiveKit restarting, or the worker starting) was dropped, so
-- every lesson of this worker whose dispatch is not confirmed live is reopened at once: the
-- router's reconciler dispatches it again on its next pass instead of after the lease (LiveKit
-- answers a dispatch for an agent with no worker as taken, 'done', then drops it). A
-- dispatch that did arrive makes the repeat a duplicate, which the worker refuses (same fence).
-- KEYS[1] worker:<id>:lessons set  KEYS[2] dispatch:pending zset
-- ARGV[1] worker id  ARGV[2] the pool's key prefix ({pool:R}:), for the lessons' hashes
-- Returns the number of lessons reopened.
local n = 0
for _, lesson in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[2] .. 'lesson:' .. lesson
  local h = redis.call('HMGET', key, 'worker', 'fence', 'dispatch_fence', 'dispatch_state')
  if h[1] == ARGV[1] and h[4] ~= 'live' and h[4] and tonumber(h[3]) == tonumber(h[2]) then
    redis.call('HSET', key, 'dispatch_state', 'pending', 'dispatch_at', 0)
    redis.call('ZADD', KEYS[2], 0, lesson)
    n = n + 1
  end
end
return n
