-- Worker heartbeat (the one way a worker writes its liveness into its pool).
-- KEYS[1] worker:<id> hash   KEYS[2] workers:seen zset   KEYS[3] workers:load zset
-- ARGV: worker_id, capacity, state, epoch, region, active
-- The time is Redis's own TIME, so routers and workers never compare clocks of their own.
-- Returns {now_ms, 1 if the worker's hash was there before (0: Redis lost its data)}.
local existed = redis.call('EXISTS', KEYS[1])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1],
  'capacity', ARGV[2], 'state', ARGV[3], 'epoch', ARGV[4], 'region', ARGV[5],
  'active', ARGV[6], 'seen_ms', now_ms)
redis.call('ZADD', KEYS[2], now_ms, ARGV[1])
-- load (active + reserved) is kept by the router's assign/release; a new worker starts at 0.
redis.call('ZADD', KEYS[3], 'NX', 0, ARGV[1])
return {now_ms, existed}
