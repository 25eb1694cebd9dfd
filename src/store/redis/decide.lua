-- plangate: check every limit of one request and charge them all, or none (one round trip).
--
-- State lives in hashes (see store/redis/layout.rs): a key's hash `{prefix|<key id>}` holds one
-- record per plan (`r|<plan>`: the plan's throttle, quota and today's usage of that key), its
-- per-method throttles (`m|<plan>|<method>`) and its past days' usage (`u|<plan>|<day>`);
-- `{prefix}|shared` holds the account and stage-method buckets when they are not leased. One
-- HMGET per hash reads every field of a decision, one HSET per hash writes them.
--
-- Redis Lua numbers are doubles, exact up to 2^53. Everything here stays below that:
--  * time arrives as whole seconds and nanoseconds, so an elapsed time is computed exactly
--    from two small differences;
--  * each bucket counts in its own unit, 1/D token, chosen by plangate so that the refill per
--    nanosecond is a whole number (see store/redis.rs); levels never exceed the capacity.
-- Values are kept as little-endian doubles (struct.pack): measured cheaper than decimal text,
-- which Lua must match and format.
--
-- ARGV[1], ARGV[2] = now (seconds, nanoseconds)
-- ARGV[3] = mode: "c" charge, "p" probe (check, charge nothing, report what was found),
--           "d" dry run (check, charge nothing; plangate reports what a charge would leave),
--           "r" refund (give the units back, no check: undoes a charge),
--           "s" set (a record's quota used count := its quota units, signed; UpdateUsage),
--           "l" lease (take tokens of a shared bucket in a batch; see below)
-- ARGV[4] = deadline in Redis's own time (TIME, in ms; 0: none): a script that runs later
--           (queued behind a slow command while plangate gave up and answered) charges
--           nothing and returns { -1 }.
-- ARGV[5] = ms a key's hash is kept after a day's usage is first written
-- ARGV[6] = past days' usage fields of days starting before this (Unix seconds) are deleted
--           when a new day begins
-- Then 4 ARGV per limit: key index (into KEYS), field, kind ("b" a bucket, "r" a plan's record
-- of one key), parameters. Parameters and stored values are little-endian doubles, packed in
-- these layouts (store/redis/layout.rs `values` names the same, a test holds them together):
--
-- layout: bucket = level, s, ns, unit
-- layout: bucket_v1 = level, s, ns
-- layout: bucket_params = unit, refill, capacity, units
-- layout: record = level, s, ns, used, window_start, used_today, day, unit
-- layout: record_v1 = level, s, ns, used, window_start, used_today, day
-- layout: record_params = unit, refill, capacity, bucket_units, limit, window_start, window_end, quota_units, quota_legacy, day, usage_units, usage_legacy
-- layout: lease_params = unit, refill, capacity, want, give
--
--   bucket: unit D (1/D token), refill per ns and capacity (burst × D) in those units; a level
--           and the time (s, ns) it was stored at, and the unit the level counts in (a throttle
--           changed since counted in another: its tokens carry over, rounded down). A `_v1`
--           value, stored before the unit was, counts in the unit of the request that reads it.
--   record: a plan's throttle (unit 0: none), quota (limit < 0: none; used within the window
--           starting at window_start, Unix s; a request's window ends at window_end) and
--           today's usage (day < 0: not counted; used_today within the day starting at day,
--           Unix s). Any part may be absent. A stored window or day later than the request's
--           (its replica's clock is behind) is the one the request counts in.
--   A legacy index points into KEYS at a counter of the earlier one-key-per-counter layout
--   (single node only), read once when the record does not exist yet: an upgrade loses no
--   count. 0: none.
-- A field appears at most once (plangate merges the demands on one counter).
-- Returns { admitted (0/1), then per limit: "b" its level; "r" level, used, used today }, all
-- before this request.

local deadline = tonumber(ARGV[4])
if deadline > 0 then
  local t = redis.call("TIME")
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline then
    return { -1 }
  end
end

local tonumber, floor, pack, unpack_s = tonumber, math.floor, struct.pack, struct.unpack
local BUCKET = "<dddd"
local BUCKET_V1 = "<ddd"
local BUCKET_PARAMS = "<dddd"
local RECORD = "<dddddddd"
local RECORD_V1 = "<ddddddd"
local RECORD_PARAMS = "<dddddddddddd"
local LEASE_PARAMS = "<ddddd"
local now_s = tonumber(ARGV[1])
local now_n = tonumber(ARGV[2])
local mode = ARGV[3]
local n = (#ARGV - 6) / 4

-- A stored bucket: level, s, ns, and the unit of its level.
local function bucket_read(v, unit)
  if #v == 24 then
    local l, s, ns = unpack_s(BUCKET_V1, v)
    return l, s, ns, unit
  end
  return unpack_s(BUCKET, v)
end

-- A bucket's level at now, from its stored level (counted in `lunit`; 0: never throttled, so
-- full) and time (v: whether it was stored; a bucket never seen is full).
local function refilled(v, l, s, ns, lunit, refill, cap, unit)
  if not v or lunit <= 0 then return cap end
  local level = l
  if lunit ~= unit then
    -- The throttle changed since: the tokens the level held, in this unit.
    local tokens = l / lunit
    if tokens * unit >= cap then level = cap else level = floor(tokens * unit) end
  end
  if level > cap then level = cap end
  local elapsed = (now_s - s) * 1000000000 + (now_n - ns)
  if elapsed > 0 and refill > 0 and level < cap then
    -- Nanoseconds to full, rounded up, computed without overflowing 2^53.
    local missing = cap - level
    local to_full = floor(missing / refill)
    if to_full * refill < missing then to_full = to_full + 1 end
    if elapsed >= to_full then return cap end
    level = level + elapsed * refill
  end
  return level
end

-- When a level is stored: now, or the time (s, ns) it was found stored at when that is later
-- (a value not found yet is "found at now"). Replicas' clocks differ, and a request's now is
-- taken before its script is queued: stored time never runs backwards, or a later call would
-- refill the same interval a second time.
local function stored_at(s, ns)
  if s > now_s or (s == now_s and ns > now_n) then return s, ns end
  return now_s, now_n
end

-- The one admission rule: a throttle (unit > 0) has `units` tokens in its level, a quota
-- (limit >= 0) room for `qunits` more.
local function admits(level, unit, units, used, limit, qunits)
  return (unit <= 0 or level >= units * unit) and (limit < 0 or used + qunits <= limit)
end

local function legacy(index)
  if index > 0 then return tonumber(redis.call("GET", KEYS[index]) or "0") end
  return 0
end

-- A record found as `v` (nil: none yet), for the request's parameters: the throttle's level,
-- the quota's used count and today's usage at now, then the stored parts
-- (level, s, ns, used, window start, usage, day), then the window and day the request counts in.
local function record_read(v, unit, refill, cap, qstart, qend, qlegacy, day, ulegacy)
  local l, s, ns, u, ws, du, d, lu = cap, now_s, now_n, 0, -1, 0, -1, unit
  local level, used, today = cap, 0, 0
  if v then
    if #v == 56 then
      l, s, ns, u, ws, du, d = unpack_s(RECORD_V1, v)
    else
      l, s, ns, u, ws, du, d, lu = unpack_s(RECORD, v)
    end
    -- A window or day later than the request's was stored by a replica whose clock is ahead:
    -- the request counts in it. (Counting in its own would restart the stored count, and the
    -- next request of the faster clock would restart this one: counts lost at every change.)
    -- A window that starts before the request's ends is not later: the plan's period changed.
    if qstart >= 0 and ws >= qend then qstart = ws end
    if day >= 0 and d > day then day = d end
    if ws == qstart then used = u end
    if d == day then today = du end
  else
    used = legacy(qlegacy)
    if day >= 0 then today = legacy(ulegacy) end
  end
  if unit > 0 then level = refilled(v, l, s, ns, lu, refill, cap, unit) end
  return level, used, today, l, s, ns, u, ws, du, d, lu, qstart, day
end

-- A record's new value after `sign` × the request's units (1: a charge, -1: a refund; nil: set
-- the quota's used count to `qunits`). Parts the request does not name keep their stored
-- values. Also returns the field and value of the day the record leaves (or nil), and whether a
-- new day begins.
local function record_write(f, sign, level, used, today, l, s, ns, u, ws, du, d, lu,
                            unit, cap, bunits, limit, qstart, qunits, day, uunits)
  local old_field, old_value, new_day = nil, nil, false
  if not sign then
    u, ws = qunits, qstart
  else
    if unit > 0 then
      l = level - sign * bunits * unit
      s, ns = stored_at(s, ns)
      if l > cap then l = cap end
    end
  end
  -- A level written now counts in this throttle's unit.
  if unit > 0 and sign then lu = unit end
  if sign then
    if limit >= 0 then u, ws = used + sign * qunits, qstart end
    if day >= 0 then
      if d ~= day then
        new_day = true
        if du > 0 then
          -- The record's last day goes to its own field, kept for reports.
          old_field = "u|" .. string.sub(f, 3) .. "|" .. string.format("%.0f", d)
          old_value = string.format("%.0f", du)
        end
      end
      du, d = today + sign * uunits, day
      if du < 0 then du = 0 end
    end
  end
  return pack(RECORD, l, s, ns, u, ws, du, d, lu), old_field, old_value, new_day
end

-- A new day for key `k`: keep its hash for the usage retention, and drop days past it.
local function new_day_of(k)
  local keep_ms = tonumber(ARGV[5])
  if keep_ms <= 0 then return end
  redis.call("PEXPIRE", KEYS[k], string.format("%.0f", keep_ms))
  local prune_before = tonumber(ARGV[6])
  local old = {}
  for _, f in ipairs(redis.call("HKEYS", KEYS[k])) do
    local d = string.match(f, "^u|.*|(%d+)$")
    if d and tonumber(d) < prune_before then old[#old + 1] = f end
  end
  if #old > 0 then redis.call("HDEL", KEYS[k], unpack(old)) end
end

-- A lease of a shared bucket (store/redis/lease.rs): one "b" entry whose parameters are
-- `lease_params`: the bucket, the units wanted and the units given back. The bucket is refilled to now, the units
-- given back are added (up to the capacity), then up to the units wanted are taken. Returns
-- { units granted, level left }.
if mode == "l" then
  local f = ARGV[8]
  local unit, refill, cap, want, give = unpack_s(LEASE_PARAMS, ARGV[10])
  local v = redis.call("HGET", KEYS[1], f)
  local level, s, ns = cap, now_s, now_n
  if v then
    local l, lu
    l, s, ns, lu = bucket_read(v, unit)
    level = refilled(v, l, s, ns, lu, refill, cap, unit)
  end
  s, ns = stored_at(s, ns)
  level = level + give
  if level > cap then level = cap end
  local grant = want
  if grant > level then grant = level end
  level = level - grant
  if grant > 0 or give > 0 then
    redis.call("HSET", KEYS[1], f, pack(BUCKET, level, s, ns, unit))
  end
  return { grant, level }
end

-- The common case, without the general case's tables (measured 6.7 → 4.0 µs of Redis CPU per
-- call): one plan's record of one key, charged.
if n == 1 and mode == "c" and ARGV[9] == "r" then
  local f = ARGV[8]
  local v = redis.call("HGET", KEYS[1], f)
  local unit, refill, cap, bunits, limit, qstart, qend, qunits, qlegacy, day, uunits, ulegacy =
    unpack_s(RECORD_PARAMS, ARGV[10])
  local level, used, today, l, s, ns, u, ws, du, d, lu
  level, used, today, l, s, ns, u, ws, du, d, lu, qstart, day =
    record_read(v, unit, refill, cap, qstart, qend, qlegacy, day, ulegacy)
  if not admits(level, unit, bunits, used, limit, qunits) then
    return { 0, level, used, today }
  end
  local value, old_field, old_value, new_day = record_write(f, 1, level, used, today,
    l, s, ns, u, ws, du, d, lu, unit, cap, bunits, limit, qstart, qunits, day, uunits)
  if old_field then
    redis.call("HSET", KEYS[1], f, value, old_field, old_value)
  else
    redis.call("HSET", KEYS[1], f, value)
  end
  if new_day then new_day_of(1) end
  return { 1, level, used, today }
end

-- Every field of each hash, read with one HMGET per hash.
local fields = {}
local pos = {}
for i = 1, n do
  local a = 6 + (i - 1) * 4
  local k = tonumber(ARGV[a + 1])
  local f = fields[k]
  if not f then f = {}; fields[k] = f end
  f[#f + 1] = ARGV[a + 2]
  pos[i] = #f
end
local values = {}
for k, f in pairs(fields) do
  values[k] = redis.call("HMGET", KEYS[k], unpack(f))
end

local out = { 1 }
local admitted = 1
-- Per limit: what was found (a record: its levels, then its stored parts).
local state = {}
for i = 1, n do
  local a = 6 + (i - 1) * 4
  local v = values[tonumber(ARGV[a + 1])][pos[i]]
  if ARGV[a + 3] == "b" then
    local unit, refill, cap, units = unpack_s(BUCKET_PARAMS, ARGV[a + 4])
    local level, s, ns = cap, now_s, now_n
    if v then
      local l, lu
      l, s, ns, lu = bucket_read(v, unit)
      level = refilled(v, l, s, ns, lu, refill, cap, unit)
    end
    out[#out + 1] = level
    state[i] = { level, stored_at(s, ns) }
    if not admits(level, unit, units, 0, -1, 0) then admitted = 0 end
  else
    local unit, refill, cap, bunits, limit, qstart, qend, qunits, qlegacy, day, _, ulegacy =
      unpack_s(RECORD_PARAMS, ARGV[a + 4])
    local st = { record_read(v, unit, refill, cap, qstart, qend, qlegacy, day, ulegacy) }
    out[#out + 1] = st[1]
    out[#out + 1] = st[2]
    out[#out + 1] = st[3]
    state[i] = st
    if not admits(st[1], unit, bunits, st[2], limit, qunits) then admitted = 0 end
  end
end
out[1] = admitted

if mode == "r" or mode == "s" or (mode == "c" and admitted == 1) then
  local sign = 1
  if mode == "r" then sign = -1 end
  if mode == "s" then sign = nil end
  local writes = {}
  local new_day = {}
  for i = 1, n do
    local a = 6 + (i - 1) * 4
    local k = tonumber(ARGV[a + 1])
    local w = writes[k]
    if not w then w = {}; writes[k] = w end
    local f = ARGV[a + 2]
    local value
    if ARGV[a + 3] == "b" then
      local unit, _, cap, units = unpack_s(BUCKET_PARAMS, ARGV[a + 4])
      local st = state[i]
      local left = st[1] - (sign or 0) * units * unit
      if left > cap then left = cap end
      value = pack(BUCKET, left, st[2], st[3], unit)
    else
      local unit, _, cap, bunits, limit, _, _, qunits, _, _, uunits =
        unpack_s(RECORD_PARAMS, ARGV[a + 4])
      local st = state[i]
      local old_field, old_value, fresh
      value, old_field, old_value, fresh = record_write(f, sign, st[1], st[2], st[3],
        st[4], st[5], st[6], st[7], st[8], st[9], st[10], st[11],
        unit, cap, bunits, limit, st[12], qunits, st[13], uunits)
      if old_field then
        w[#w + 1] = old_field
        w[#w + 1] = old_value
      end
      if fresh then new_day[k] = true end
    end
    w[#w + 1] = f
    w[#w + 1] = value
  end
  for k, w in pairs(writes) do
    redis.call("HSET", KEYS[k], unpack(w))
    if mode == "s" then
      local keep_ms = tonumber(ARGV[5])
      if keep_ms > 0 then
        redis.call("PEXPIRE", KEYS[k], string.format("%.0f", keep_ms), "NX")
      end
    elseif new_day[k] then
      new_day_of(k)
    end
  end
end

return out
