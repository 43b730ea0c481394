-- assign: give a lesson a worker of this pool, or keep the one it has (affinity).
-- Also the reconciler's move (ARGV[8] = the dead worker it expects the lesson to be on).
-- KEYS[1] lesson:<id> hash  KEYS[2] workers:load zset  KEYS[3] workers:seen zset
-- KEYS[4] fence counter     KEYS[5] dispatch:pending zset
-- ARGV[1] lesson id  ARGV[2] heartbeat ttl ms  ARGV[3] pool name  ARGV[4] min fence
-- ARGV[5] key prefix "{pool:R}:" (worker keys are built from it; same hash slot)
-- ARGV[6] dispatch lease ms  ARGV[7] voice agent identity or ""  ARGV[8] expected worker or ""
-- ARGV[9] "1": when the lesson's worker is dead and this pool is full, evict the lesson (the
--         caller spills it to another pool); "0": leave it where it is (retried later)
-- ARGV[10] ms: how fresh the lesson's current worker's heartbeat must be for it to keep the
--         lesson (default the ttl): shorter for a worker whose Redis connection is gone (the
--         disconnect grace), longer just after Redis came back (its heartbeats could not land)
-- ARGV[11] the lesson's output ("video" | "visemes") or "": kept on the lesson like the voice
-- ARGV[12] the lesson's avatar (asset id) or "": kept on the lesson like the voice
-- Returns {status, worker, fence, must_dispatch, changed, live}; status: ok | full | skip.
-- must_dispatch = 1 for exactly one caller per fence (it holds the dispatch claim), until the
-- worker reports the avatar live, or while the claim (dispatching, or dispatched and not yet
-- live) is younger than the lease. live = 1 when the fence's avatar is in the room.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lesson_key, load_key, seen_key, fence_key, pending_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lesson_id, ttl, pool, min_fence, prefix, lease, voice, expect =
  ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]),
  ARGV[7], ARGV[8]
local evict = ARGV[9] ~= '0'
local current_ttl = tonumber(ARGV[10] or '') or ttl
local output = ARGV[11] or ''
local avatar = ARGV[12] or ''

local function fresh(w, within)
  local seen = redis.call('ZSCORE', seen_key, w)
  return seen and tonumber(seen) >= now - (within or ttl)
end

-- the lesson's worker still runs it: heartbeat fresh, not stopped, and the same process
-- (epoch) it was given to: a worker restarted under the same id lost its jobs. A draining
-- worker keeps the lessons it has.
local function alive(w, lesson_epoch, within)
  if not fresh(w, within) then return false end
  local h = redis.call('HMGET', prefix .. 'worker:' .. w, 'state', 'epoch')
  if h[1] == 'stopped' then return false end
  return (not lesson_epoch) or h[2] == lesson_epoch
end

local function claim(fence)
  local h = redis.call('HMGET', lesson_key, 'dispatch_fence', 'dispatch_state', 'dispatch_at')
  if tonumber(h[1]) == fence then
    if h[2] == 'live' then return 0 end
    if (tonumber(h[3]) or 0) > now - lease then return 0 end  -- pending or done, within the lease
  end
  redis.call('HSET', lesson_key, 'dispatch_fence', string.format('%.0f', fence),
             'dispatch_state', 'pending',
             'dispatch_at', now)
  redis.call('ZADD', pending_key, now, lesson_id)
  return 1
end

local function resync(w)  -- load score = lessons actually assigned
  local n = redis.call('SCARD', prefix .. 'worker:' .. w .. ':lessons')
  redis.call('ZADD', load_key, 'XX', n, w)
end

local cur = redis.call('HMGET', lesson_key, 'worker', 'fence', 'epoch')
local old_worker, old_fence, old_epoch = cur[1], tonumber(cur[2]) or 0, cur[3]

if expect ~= '' then
  if old_worker ~= expect then
    -- already moved (another replica) or released; make sure the dead worker's set forgets it
    if not old_worker then
      redis.call('SREM', prefix .. 'worker:' .. expect .. ':lessons', lesson_id)
    end
    return {'skip', old_worker or '', old_fence, 0, 0}
  end
  if alive(old_worker, old_epoch, current_ttl) then return {'skip', old_worker, old_fence, 0, 0} end
elseif old_worker and alive(old_worker, old_epoch, current_ttl) then
  if voice ~= '' then redis.call('HSET', lesson_key, 'voice_agent_identity', voice) end
  if output ~= '' then redis.call('HSET', lesson_key, 'output', output) end
  if avatar ~= '' then redis.call('HSET', lesson_key, 'avatar', avatar) end
  local must = claim(old_fence)
  local live = redis.call('HGET', lesson_key, 'dispatch_state') == 'live' and 1 or 0
  return {'ok', old_worker, old_fence, must, 0, live}
end

-- least-loaded serving worker under capacity; stale or stopped ones leave the candidates
local chosen = nil
local cands = redis.call('ZRANGE', load_key, 0, -1)
for _, w in ipairs(cands) do
  if not fresh(w) then
    redis.call('ZREM', load_key, w)
  else
    local h = redis.call('HMGET', prefix .. 'worker:' .. w, 'state', 'capacity', 'drain')
    if h[1] == 'stopped' then
      redis.call('ZREM', load_key, w)
    elseif h[1] == 'serving' and h[3] ~= '1' then
      local n = redis.call('SCARD', prefix .. 'worker:' .. w .. ':lessons')
      if n < (tonumber(h[2]) or 0) then chosen = w break end
    end
  end
end

if not chosen then
  if old_worker and evict then
    -- its worker is dead and this pool is full: evict, so the caller can spill elsewhere
    redis.call('SREM', prefix .. 'worker:' .. old_worker .. ':lessons', lesson_id)
    resync(old_worker)
    redis.call('DEL', lesson_key)
    redis.call('ZREM', pending_key, lesson_id)
  end
  return {'full', '', old_fence, 0, 0}
end

-- Fences never repeat, even after Redis lost its data (a restart without its append-only
-- file): none is issued below Redis's clock in microseconds, which only moves on. (Fences are
-- integers under 2^53; written with %.0f, as Lua would print them with 14 digits.)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fence = redis.call('INCR', fence_key)
local floor = math.max(min_fence, old_fence, now_us)
if fence <= floor then
  fence = floor + 1
  redis.call('SET', fence_key, string.format('%.0f', fence))
end
if old_worker then
  redis.call('SREM', prefix .. 'worker:' .. old_worker .. ':lessons', lesson_id)
  resync(old_worker)
end
redis.call('HSET', lesson_key, 'worker', chosen, 'fence', string.format('%.0f', fence), 'pool', pool,
           'assigned_at', now,
           'epoch', redis.call('HGET', prefix .. 'worker:' .. chosen, 'epoch') or '0')
if voice ~= '' then redis.call('HSET', lesson_key, 'voice_agent_identity', voice) end
if output ~= '' then redis.call('HSET', lesson_key, 'output', output) end
if avatar ~= '' then redis.call('HSET', lesson_key, 'avatar', avatar) end
redis.call('SADD', prefix .. 'worker:' .. chosen .. ':lessons', lesson_id)
resync(chosen)
return {'ok', chosen, fence, claim(fence), 1, 0}
