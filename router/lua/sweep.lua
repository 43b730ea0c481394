-- sweep: the reconciler's look at one pool.
-- KEYS[1] workers:load zset  KEYS[2] workers:seen zset  KEYS[3] dispatch:pending zset
-- ARGV[1] heartbeat ttl ms  ARGV[2] key prefix "{pool:R}:"  ARGV[3] dispatch lease ms
-- ARGV[4] max stale claims returned  ARGV[5] grace ms for a disconnected worker
-- ARGV[6..] workers whose Redis connection was seen to disappear (router/liveness.py)
-- Dead = heartbeat older than the ttl, or state stopped, or disconnected and silent for the
-- grace: a killed process's connection closes at once, so its lessons move without waiting
-- out the ttl. A live worker whose epoch changed
-- since the last sweep (restarted under the same id: its jobs are gone) is returned with the
-- dead ones; assign moves only its lessons of the old epoch. Dead workers with lessons are returned
-- (their lessons must move); dead ones without lessons are forgotten. A live worker's load score
-- is reset to its real lesson count (a heartbeat re-adds a dropped worker at 0).
-- Returns {dead workers, stale dispatch claims, live workers, serving capacity, serving load}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl, prefix, lease = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local grace = tonumber(ARGV[5] or '0')
local disconnected = {}
for i = 6, #ARGV do disconnected[ARGV[i]] = true end
local known, order = {}, {}
local seen = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #seen, 2 do
  known[seen[i]] = tonumber(seen[i + 1]); table.insert(order, seen[i])
end
for _, w in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if known[w] == nil then known[w] = -1; table.insert(order, w) end
end
local dead, live, cap, used = {}, 0, 0, 0
for _, w in ipairs(order) do
  local wk = prefix .. 'worker:' .. w
  local h = redis.call('HMGET', wk, 'state', 'capacity', 'drain', 'epoch', 'lessons_epoch')
  local n = redis.call('SCARD', wk .. ':lessons')
  local gone = grace > 0 and disconnected[w] and known[w] < now - grace
  if known[w] < now - ttl or h[1] == 'stopped' or gone then
    if n > 0 then
      table.insert(dead, w)
      redis.call('ZREM', KEYS[1], w)
    else
      redis.call('ZREM', KEYS[1], w)
      redis.call('ZREM', KEYS[2], w)
    end
  else
    live = live + 1
    if h[4] and h[5] ~= h[4] then
      if h[5] and n > 0 then table.insert(dead, w) end
      redis.call('HSET', wk, 'lessons_epoch', h[4])
    end
    redis.call('ZADD', KEYS[1], n, w)
    if h[1] == 'serving' and h[3] ~= '1' then
      cap = cap + (tonumber(h[2]) or 0)
      used = used + n
    end
  end
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. (now - lease),
                         'LIMIT', 0, tonumber(ARGV[4]))
return {dead, stale, live, cap, used}
