-- session: a worker reports its avatar session of a lesson, only under the lesson's current fence.
-- KEYS[1] lesson:<id> hash  KEYS[2] dispatch:pending zset  KEYS[3] worker:<id>:lessons set
-- KEYS[4] workers:load zset  KEYS[5] worker:<id> hash
-- ARGV[1] lesson id  ARGV[2] fence  ARGV[3] worker id  ARGV[4] live | lost | adopt
-- ARGV[5] pool  ARGV[6] voice agent identity or ""
-- live:  the avatar is in the room; the dispatch is confirmed and never retried.
-- lost:  the session ended but the lesson did not (its room is still there, e.g. LiveKit
--        restarted or the avatar was displaced): the claim is reopened at once, so the
--        reconciler (or the learner's next join) dispatches the avatar again.
-- adopt: the lesson is missing (Redis lost its data): write it back as this worker's, live,
--        under the fence the session runs with. Fences issued later are above it (assign.lua
--        draws them from Redis's clock), so a later move still supersedes it.
-- Returns 'ok', 'adopted', or 'superseded' when the lesson's current fence or worker is another
-- (or it was released, for live/lost): that worker must leave the room.
local h = redis.call('HMGET', KEYS[1], 'worker', 'fence', 'dispatch_fence', 'dispatch_state')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[4] == 'adopt' and not h[1] then
  redis.call('HSET', KEYS[1], 'worker', ARGV[3], 'fence', ARGV[2], 'pool', ARGV[5],
             'epoch', redis.call('HGET', KEYS[5], 'epoch') or '0', 'assigned_at', now,
             'dispatch_fence', ARGV[2], 'dispatch_state', 'live', 'live_at', now,
             'adopted_at', now)
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'voice_agent_identity', ARGV[6]) end
  redis.call('SADD', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[4], redis.call('SCARD', KEYS[3]), ARGV[3])
  return 'adopted'
end
if h[1] ~= ARGV[3] or h[2] ~= ARGV[2] then return 'superseded' end
if ARGV[4] == 'live' then
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
