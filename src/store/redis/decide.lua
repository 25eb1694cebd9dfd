-- plangate: check every limit of one request and charge them all, or none (one round trip).
--
-- State lives in hashes, one field per limit: a key's hash `{prefix|<key id>}` holds that key's
-- buckets, quotas and daily usage; `{prefix}|shared` holds the account and stage-method buckets
-- when they are not leased. One HMGET per hash reads every field, one HSET per hash writes them.
--
-- Redis Lua numbers are doubles, exact up to 2^53. Everything here stays below that:
--  * time arrives as whole seconds and nanoseconds (ARGV[1], ARGV[2]), so an elapsed time is
--    computed exactly from two small differences;
--  * each bucket counts in its own unit, 1/D token, chosen by plangate so that the refill per
--    nanosecond is a whole number (see store/redis.rs); levels never exceed the capacity.
--
-- ARGV[1], ARGV[2] = now (seconds, nanoseconds)
-- ARGV[3] = mode: "c" charge, "p" probe (check, charge nothing, report what was found),
--           "d" dry run (check, charge nothing, report what a charge would leave),
--           "r" refund (give the units back, no check: undoes a charge)
-- ARGV[4] = deadline in Redis's own time (TIME, in ms; 0: none): a script that runs later
--           (queued behind a slow command while plangate gave up and answered) charges
--           nothing and returns { -1 }.
-- ARGV[5] = ms a key hash is kept after its newest daily usage field is created
-- ARGV[6] = daily usage fields of days starting before this (Unix seconds) are deleted when a
--           new one is created
-- Then 7 ARGV per limit: key index (into KEYS), field, kind, p1, p2, p3, units
--   bucket "b": unit (D), refill per ns, capacity (burst × D)       value "level s n"
--   quota  "q": limit, window start (Unix s), legacy key index or 0   value "used start"
--   usage  "u": unused, unused, legacy key index or 0                  value "used"
-- A legacy key is a counter of the earlier one-key-per-counter layout (single node only): read
-- once when the field does not exist yet, so that an upgrade loses no count.
-- A field appears at most once (plangate merges the demands on one counter).
-- Returns { admitted (0/1), level or used of each limit before charging ... }.

local deadline = tonumber(ARGV[4])
if deadline > 0 then
  local t = redis.call("TIME")
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline then
    return { -1 }
  end
end

local now_s = tonumber(ARGV[1])
local now_n = tonumber(ARGV[2])
local mode = ARGV[3]
local keep_ms = tonumber(ARGV[5])
local prune_before = tonumber(ARGV[6])
local n = (#ARGV - 6) / 7

-- Lua 5.1 turns numbers into strings with 14 significant digits: format integers explicitly.
local function int(x) return string.format("%.0f", x) end

-- Every field of each hash, read with one HMGET per hash.
local fields = {}
local pos = {}
for i = 1, n do
  local a = 6 + (i - 1) * 7
  local k = tonumber(ARGV[a + 1])
  if not fields[k] then fields[k] = {} end
  local f = fields[k]
  f[#f + 1] = ARGV[a + 2]
  pos[i] = #f
end
local values = {}
for k, f in pairs(fields) do
  values[k] = redis.call("HMGET", KEYS[k], unpack(f))
end

local levels = {}
local admitted = 1
local fresh_usage = {}
for i = 1, n do
  local a = 6 + (i - 1) * 7
  local k = tonumber(ARGV[a + 1])
  local kind = ARGV[a + 3]
  local need = tonumber(ARGV[a + 7])
  local v = values[k][pos[i]]
  if kind == "b" then
    local unit = tonumber(ARGV[a + 4])
    local refill = tonumber(ARGV[a + 5])
    local cap = tonumber(ARGV[a + 6])
    local level = cap
    if v then
      local l, s, ns = string.match(v, "^(%S+) (%S+) (%S+)$")
      level = tonumber(l)
      if level > cap then level = cap end
      local elapsed = (now_s - tonumber(s)) * 1000000000 + (now_n - tonumber(ns))
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
    local limit = tonumber(ARGV[a + 4])
    local start = ARGV[a + 5]
    local legacy = tonumber(ARGV[a + 6])
    local used = 0
    if v then
      local u, s = string.match(v, "^(%S+) (%S+)$")
      if s == start then used = tonumber(u) end
    elseif legacy > 0 then
      used = tonumber(redis.call("GET", KEYS[legacy]) or "0")
    end
    levels[i] = used
    if used + need > limit then admitted = 0 end
  else
    local legacy = tonumber(ARGV[a + 6])
    local used = 0
    if v then
      used = tonumber(v)
    else
      fresh_usage[k] = true
      if legacy > 0 then used = tonumber(redis.call("GET", KEYS[legacy]) or "0") end
    end
    levels[i] = used
  end
end

if mode == "r" or (mode == "c" and admitted == 1) then
  local sign = 1
  if mode == "r" then sign = -1 end
  local writes = {}
  for i = 1, n do
    local a = 6 + (i - 1) * 7
    local k = tonumber(ARGV[a + 1])
    local kind = ARGV[a + 3]
    local units = tonumber(ARGV[a + 7]) * sign
    local value
    if kind == "b" then
      local unit = tonumber(ARGV[a + 4])
      local cap = tonumber(ARGV[a + 6])
      local left = levels[i] - units * unit
      if left > cap then left = cap end
      value = int(left) .. " " .. int(now_s) .. " " .. int(now_n)
    elseif kind == "q" then
      value = int(levels[i] + units) .. " " .. ARGV[a + 5]
    else
      local used = levels[i] + units
      if used < 0 then used = 0 end
      value = int(used)
    end
    if not writes[k] then writes[k] = {} end
    local w = writes[k]
    w[#w + 1] = ARGV[a + 2]
    w[#w + 1] = value
  end
  for k, w in pairs(writes) do
    redis.call("HSET", KEYS[k], unpack(w))
    if fresh_usage[k] and keep_ms > 0 then
      -- A new day for this key: keep the hash for the usage retention, and drop days past it.
      redis.call("PEXPIRE", KEYS[k], int(keep_ms))
      local names = redis.call("HKEYS", KEYS[k])
      local old = {}
      for _, f in ipairs(names) do
        local day = string.match(f, "^u|.*|(%d+)$")
        if day and tonumber(day) < prune_before then old[#old + 1] = f end
      end
      if #old > 0 then redis.call("HDEL", KEYS[k], unpack(old)) end
    end
  end
end

local out = { admitted }
for i = 1, n do out[i + 1] = levels[i] end
return out
