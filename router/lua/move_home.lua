-- move_home: compare-and-set of a lesson's home pool (lesson-home:<id>).
-- KEYS[1] lesson-home:<id>  ARGV[1] expected pool  ARGV[2] new pool
-- Returns the home after the call (ARGV[2] when this caller moved it).
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] or not cur then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return cur
