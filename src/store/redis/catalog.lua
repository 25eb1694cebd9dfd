-- One write of the runtime catalog (see src/store/catalog.rs): applied only if the head is
-- still the one the write was prepared against; then its records are set (or removed: an empty
-- value), the write is appended to the log, and the head moves on.
--
-- KEYS[1] the head (a number), KEYS[2] the records (a hash), KEYS[3] the log (a stream)
-- ARGV[1] the head expected, ARGV[2] how many writes the log keeps (about),
-- ARGV[3] the log entry: the names the write changes (JSON), then names and values.
-- Returns {1, new head} when applied, {0, head} when stale.
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
if head ~= tonumber(ARGV[1]) then
  return {0, head}
end
head = head + 1
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], head .. '-0', 'w', ARGV[3])
redis.call('SET', KEYS[1], head)
return {1, head}
