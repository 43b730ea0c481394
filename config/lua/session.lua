-- session: a worker reports its avatar session of a lesson, only under the lesson's current fence.
-- KEYS[1] lesson:<id> hash  KEYS[2] dispatch:pending zset
-- ARGV[1] lesson id  ARGV[2] fence  ARGV[3] worker id  ARGV[4] live | lost | check
-- live:  the avatar is in the room; the dispatch is confirmed and never retried.
-- lost:  the session ended but the lesson did not (its room is still there, e.g. LiveKit
--        restarted or the avatar was displaced): the claim is reopened at once, so the
--        reconciler (or the learner's next join) dispatches the avatar again.
-- check: only the fence test.
-- Returns 'ok', or 'superseded' when the lesson's current fence or worker is another (or the
-- lesson was released): that worker must leave the room.
local h = redis.call('HMGET', KEYS[1], 'worker', 'fence', 'dispatch_fence', 'dispatch_state')
if h[1] ~= ARGV[3] or h[2] ~= ARGV[2] then return 'superseded' end
if ARGV[4] == 'live' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[1], 'dispatch_fence', ARGV[2], 'dispatch_state', 'live',
             'live_at', now)
  redis.call('ZREM', KEYS[2], ARGV[1])
elseif ARGV[4] == 'lost' then
  if h[3] == ARGV[2] and h[4] == 'pending' then return 'ok' end  -- already being dispatched
  redis.call('HSET', KEYS[1], 'dispatch_fence', ARGV[2], 'dispatch_state', 'pending',
             'dispatch_at', 0)
  redis.call('ZADD', KEYS[2], 0, ARGV[1])
end
return 'ok'
