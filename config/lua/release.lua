-- release: end a lesson's assignment, only with its current fence.
-- KEYS[1] lesson:<id> hash  KEYS[2] workers:load zset  KEYS[3] dispatch:pending zset
-- ARGV[1] lesson id  ARGV[2] fence  ARGV[3] key prefix "{pool:R}:"
-- Returns {status, current fence}; status: ok | stale | missing.
local cur = redis.call('HMGET', KEYS[1], 'worker', 'fence')
if not cur[1] then return {'missing', 0} end
if cur[2] ~= ARGV[2] then return {'stale', tonumber(cur[2])} end
local set = ARGV[3] .. 'worker:' .. cur[1] .. ':lessons'
redis.call('SREM', set, ARGV[1])
redis.call('ZADD', KEYS[2], 'XX', redis.call('SCARD', set), cur[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return {'ok', tonumber(cur[2])}
