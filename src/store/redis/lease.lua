-- plangate: lease tokens of a shared bucket (the account or a stage method), so that a replica
-- spends them locally instead of touching this one hot field on every request.
--
-- KEYS[1] = the shared hash; ARGV: now (seconds, nanoseconds), field, unit (D), refill per ns,
-- capacity, units wanted, units given back. The bucket is refilled to now, the units given back
-- are added (up to the capacity), then up to the units wanted are taken.
-- Returns { units granted, level left }.

local now_s = tonumber(ARGV[1])
local now_n = tonumber(ARGV[2])
local field = ARGV[3]
local refill = tonumber(ARGV[5])
local cap = tonumber(ARGV[6])
local want = tonumber(ARGV[7])
local give = tonumber(ARGV[8])

local function int(x) return string.format("%.0f", x) end

local level = cap
local v = redis.call("HGET", KEYS[1], field)
if v then
  local l, s, ns = string.match(v, "^(%S+) (%S+) (%S+)$")
  level = tonumber(l)
  if level > cap then level = cap end
  local elapsed = (now_s - tonumber(s)) * 1000000000 + (now_n - tonumber(ns))
  if elapsed > 0 and refill > 0 and level < cap then
    local missing = cap - level
    local to_full = math.floor(missing / refill)
    if to_full * refill < missing then to_full = to_full + 1 end
    if elapsed >= to_full then
      level = cap
    else
      level = level + elapsed * refill
    end
  end
end
level = level + give
if level > cap then level = cap end
local grant = want
if grant > level then grant = level end
level = level - grant
if grant > 0 or give > 0 then
  redis.call("HSET", KEYS[1], field, int(level) .. " " .. int(now_s) .. " " .. int(now_n))
end
return { grant, level }
