-- plangate: check every limit of one request and charge them all, or none (one round trip).
--
-- Redis Lua numbers are doubles, exact up to 2^53. Everything here stays below that:
--  * time arrives as whole seconds and nanoseconds (ARGV[1], ARGV[2]), so an elapsed time is
--    computed exactly from two small differences;
--  * each bucket counts in its own unit, 1/D token, chosen by plangate so that the refill per
--    nanosecond is a whole number (see store/redis.rs); levels never exceed the capacity.
--
-- ARGV[3] = hits (0: check one unit, charge nothing; -N: check N units, charge nothing),
-- ARGV[4] = TTL slack in ms,
-- ARGV[5] = deadline in Redis's own time (TIME, in ms; 0: none): a script that runs later
--           (queued behind a slow command while plangate gave up and answered) charges
--           nothing and returns { -1 }.
-- Then 5 ARGV per limit, in KEYS order (the last: this limit's own units, 0 for ARGV[3]'s):
--   bucket: "b", unit (D), refill per ns, capacity (burst × D), units
--   quota:  "q", limit, ms from now to the window's end, unused, units
--   usage:  "u", unused, ms to keep it, unused, units (a daily usage count; never refuses)
-- A key appears at most once (plangate merges the demands on one counter).
-- (TTLs are relative: plangate's clock, not Redis's, says what time it is.)
-- Returns { admitted (0/1), level or used of each limit before charging ... }.

local deadline = tonumber(ARGV[5])
if deadline > 0 then
  local t = redis.call("TIME")
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline then
    return { -1 }
  end
end

local now_s = tonumber(ARGV[1])
local now_n = tonumber(ARGV[2])
local hits = tonumber(ARGV[3])
local slack = tonumber(ARGV[4])
local need = hits
if need == 0 then need = 1 end
if need < 0 then need = -need end

-- Lua 5.1 turns numbers into strings with 14 significant digits: format integers explicitly.
local function int(x) return string.format("%.0f", x) end

local levels = {}
local admitted = 1
-- This limit's units: its own, else the request's.
local function need_of(a)
  local own = tonumber(ARGV[a + 5])
  if own > 0 then return own end
  return need
end
local function hits_of(a)
  local own = tonumber(ARGV[a + 5])
  if own > 0 then return own end
  return hits
end

for i = 1, #KEYS do
  local a = 5 + (i - 1) * 5
  local kind = ARGV[a + 1]
  local need = need_of(a)
  if kind == "b" then
    local unit = tonumber(ARGV[a + 2])
    local refill = tonumber(ARGV[a + 3])
    local cap = tonumber(ARGV[a + 4])
    local st = redis.call("HMGET", KEYS[i], "l", "s", "n")
    local level = cap
    if st[1] then
      level = tonumber(st[1])
      if level > cap then level = cap end
      local elapsed = (now_s - tonumber(st[2])) * 1000000000 + (now_n - tonumber(st[3]))
      if elapsed > 0 and refill > 0 and level < cap then
        -- Nanoseconds to full, rounded up, computed without overflowing 2^53.
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
    levels[i] = level
    if level < need * unit then admitted = 0 end
  elseif kind == "q" then
    local limit = tonumber(ARGV[a + 2])
    local used = tonumber(redis.call("GET", KEYS[i]) or "0")
    levels[i] = used
    if used + need > limit then admitted = 0 end
  else
    levels[i] = tonumber(redis.call("GET", KEYS[i]) or "0")
  end
end

if admitted == 1 and hits > 0 then
  for i = 1, #KEYS do
    local a = 5 + (i - 1) * 5
    local hits = hits_of(a)
    if ARGV[a + 1] == "b" then
      local unit = tonumber(ARGV[a + 2])
      local refill = tonumber(ARGV[a + 3])
      local cap = tonumber(ARGV[a + 4])
      local left = levels[i] - hits * unit
      redis.call("HSET", KEYS[i], "l", int(left), "s", int(now_s), "n", int(now_n))
      -- Expire once full again: an absent bucket is a full one.
      local ttl = slack
      if refill > 0 then
        ttl = math.floor((cap - left) / refill / 1000000) + slack
      else
        ttl = 0
      end
      if ttl > 0 then
        redis.call("PEXPIRE", KEYS[i], int(ttl))
      else
        redis.call("PERSIST", KEYS[i])
      end
    else
      -- A quota or usage counter.
      redis.call("INCRBY", KEYS[i], int(hits))
      redis.call("PEXPIRE", KEYS[i], int(tonumber(ARGV[a + 3]) + slack))
    end
  end
end

local out = { admitted }
for i = 1, #KEYS do out[i + 1] = levels[i] end
return out
