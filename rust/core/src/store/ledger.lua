-- hopgate's ledger steps on one root, for Redis (SPEC §5.8, layout in §5.9).
--
-- One script, one root: KEYS[1..4] are the root's meta, acct, res and lease keys
-- (all under the hash tag {R}, so a Redis Cluster keeps them in one slot); ARGV[1]
-- names the step. Redis runs a script whole and alone, so each step is atomic.
--
-- u64 values are 16 lower-case hex digits. Lua numbers are doubles, exact only to
-- 2^53, so values below 2^52 are summed and compared as numbers, larger ones in 16-bit
-- limbs and 32-bit halves. Comparisons never use Lua's own string order: it is strcoll,
-- and in some locales (da_DK: "aa" sorts as a letter after "z") hex strings would not
-- sort by value. The numbers need a 64-bit build (tonumber(_, 16) is strtoul, %x takes
-- a long): the script refuses to run on any other, and the gate then allows nothing.

local ZERO = '0000000000000000'
local MAX = 'ffffffffffffffff'
local SETTLED_MEMORY_MS = 86400000
local meta, acct, res, lease = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix = string.sub(meta, 1, -5) -- 'hg1:{R}:'

if tonumber('10000000000000', 16) ~= 4503599627370496 or string.format('%x', 4503599627370496) ~= '10000000000000' then
  return redis.error_reply('hopgate: this Redis build cannot hold 64-bit integers in its Lua')
end

-- True when the hex u64 `a` is below 2^52: doubles hold it, and a sum of two such values.
local function small(a) return string.sub(a, 1, 3) == '000' end

-- -1, 0 or 1 as the hex u64 `a` is below, equal to or above `b`.
local function cmp(a, b)
  if a == b then return 0 end
  local x, y
  if small(a) and small(b) then
    x, y = tonumber(a, 16), tonumber(b, 16)
  else
    x, y = tonumber(string.sub(a, 1, 8), 16), tonumber(string.sub(b, 1, 8), 16)
    if x == y then
      x, y = tonumber(string.sub(a, 9, 16), 16), tonumber(string.sub(b, 9, 16), 16)
    end
  end
  if x < y then return -1 end
  return 1
end

-- a + b, or nil when the sum passes 2^64 - 1.
local function add(a, b)
  if small(a) and small(b) then
    return string.format('%016x', tonumber(a, 16) + tonumber(b, 16))
  end
  local out, carry = {}, 0
  for i = 13, 1, -4 do
    local s = tonumber(string.sub(a, i, i + 3), 16) + tonumber(string.sub(b, i, i + 3), 16) + carry
    carry = math.floor(s / 65536)
    out[(i + 3) / 4] = string.format('%04x', s % 65536)
  end
  if carry > 0 then return nil end
  return table.concat(out)
end

-- a - b, or ZERO when b > a.
local function sub(a, b)
  if cmp(b, a) >= 0 then return ZERO end
  if small(a) then
    return string.format('%016x', tonumber(a, 16) - tonumber(b, 16))
  end
  local out, borrow = {}, 0
  for i = 13, 1, -4 do
    local s = tonumber(string.sub(a, i, i + 3), 16) - tonumber(string.sub(b, i, i + 3), 16) - borrow
    if s < 0 then s = s + 65536; borrow = 1 else borrow = 0 end
    out[(i + 3) / 4] = string.format('%04x', s)
  end
  return table.concat(out)
end

local function sat(a, b) return add(a, b) or MAX end
local function max(a, b) if cmp(a, b) >= 0 then return a end return b end
local function min(a, b) if cmp(a, b) <= 0 then return a end return b end

-- The root's clock and retention for a gate step at `now` by a process keeping nonces
-- `window` seconds (SPEC §5.8): the threshold clock - retention never moves back, so a
-- longer window takes effect only as far as the clock has passed the old threshold.
local function raised(now, window)
  local clock0 = redis.call('HGET', meta, 'clock') or ZERO
  local retention0 = redis.call('HGET', meta, 'retention') or ZERO
  local clock = max(clock0, now)
  return clock, max(retention0, min(window, sub(clock, sub(clock0, retention0))))
end

-- The accounts this call read, by id (cap, spent, reserved, overrun, expires; false
-- when absent), and those it changed: read once, written once by flush().
local cache, dirty = {}, {}

local function load(id, cap)
  local a = cache[id]
  if a == nil then
    local v = redis.call('HGET', acct, id)
    a = v and { string.sub(v, 1, 16), string.sub(v, 17, 32), string.sub(v, 33, 48), string.sub(v, 49, 64), string.sub(v, 65, 80) } or false
    cache[id] = a
  end
  if not a then return { cap, ZERO, ZERO, ZERO, ZERO } end
  return { a[1], a[2], a[3], a[4], a[5] }
end

local function exists(id) load(id, ZERO) return cache[id] ~= false end

local function store(id, a)
  if not dirty[id] then dirty[id] = true; dirty[#dirty + 1] = id end
  cache[id] = a
end

local function flush()
  local args = {}
  for _, id in ipairs(dirty) do
    args[#args + 1] = id
    args[#args + 1] = table.concat(cache[id])
    if #args >= 512 then redis.call('HSET', acct, unpack(args)); args = {} end
  end
  if #args > 0 then redis.call('HSET', acct, unpack(args)) end
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Settles reservation `rid` as `kind` ('C', 'R' or 'F'), charging `charged` for a
-- commit; returns 'now', or what an earlier settlement left ('C', 'R', 'F', or '').
local function settle(rid, kind, charged)
  local v = redis.call('HGET', res, rid)
  if not v then
    return redis.call('GET', prefix .. 'done:' .. rid) or ''
  end
  local amount = string.sub(v, 1, 16)
  local charge = ZERO
  if kind == 'C' then charge = charged elseif kind == 'F' then charge = amount end
  for i = 17, #v, 64 do
    local id = string.sub(v, i, i + 63)
    if exists(id) then
      local a = load(id, ZERO)
      a[3] = sub(a[3], amount)
      a[2] = sat(a[2], charge)
      a[4] = sat(a[4], sub(charge, amount))
      store(id, a)
    end
  end
  redis.call('HDEL', res, rid)
  redis.call('ZREM', lease, rid)
  redis.call('SET', prefix .. 'done:' .. rid, kind, 'PX', SETTLED_MEMORY_MS)
  return 'now'
end

-- Forfeits the reservations of this root whose lease ended before `ms`.
local function sweep(ms)
  local due = redis.call('ZRANGEBYSCORE', lease, '-inf', '(' .. ms, 'LIMIT', 0, 256)
  for _, rid in ipairs(due) do settle(rid, 'F', ZERO) end
end

-- The root's keys live until `retention` seconds after its clock passes the latest
-- not_after of its accounts (`until`), or for ever while `until` is MAX.
local function expire(clock, retention, untl)
  for _, k in ipairs({ meta, acct, res, lease }) do
    if untl == MAX then
      redis.call('PERSIST', k)
    else
      local ttl = tonumber(sat(sub(untl, clock), sat(retention, '0000000000000001')), 16)
      redis.call('PEXPIRE', k, math.min(ttl, 4294967296) * 1000)
    end
  end
end

-- Reserves `amount` on ids/caps (expiries exps) after checking room; true if done.
local function reserve(ids, caps, exps, amount, rid, deadline)
  local rows = {}
  for j = 1, #ids do
    local a = load(ids[j], caps[j])
    local total = add(a[2], a[3])
    total = total and add(total, amount)
    if not total or cmp(total, a[1]) > 0 then return false end
    rows[j] = a
  end
  for j = 1, #ids do
    local a = rows[j]
    a[3] = add(a[3], amount)
    a[5] = max(a[5], exps[j])
    store(ids[j], a)
  end
  redis.call('HSET', res, rid, amount .. table.concat(ids))
  redis.call('ZADD', lease, deadline, rid)
  return true
end

local step = ARGV[1]
local ms = now_ms()
sweep(ms)
local result

if step == 'admit' then
  -- ARGV: 'admit', now, retention, lease_ms, n, then per request: ts, amount, rid, k,
  -- and k times (id, cap, expires); KEYS[4 + i] is request i's nonce key.
  local clock, retention = raised(ARGV[2], ARGV[3])
  -- A root whose accounts were written without `until` (by another writer) never expires
  -- early: MAX until a step sets it.
  local untl = redis.call('HGET', meta, 'until') or (redis.call('EXISTS', acct) == 1 and MAX or ZERO)
  local deadline = ms + tonumber(ARGV[4])
  local codes = {}
  local p = 6
  for i = 1, tonumber(ARGV[5]) do
    local ts, amount, rid, k = ARGV[p], ARGV[p + 1], ARGV[p + 2], tonumber(ARGV[p + 3])
    local ids, caps, exps = {}, {}, {}
    for j = 1, k do
      local q = p + 4 + 3 * (j - 1)
      ids[j], caps[j], exps[j] = ARGV[q], ARGV[q + 1], ARGV[q + 2]
    end
    p = p + 4 + 3 * k
    local nonce = KEYS[4 + i]
    local code = 0
    if redis.call('EXISTS', nonce) == 1 or cmp(sat(ts, retention), clock) < 0 then
      code = 16
    else
      for j = 1, k do
        if cmp(exps[j], clock) <= 0 then code = 17 end
      end
      if code == 0 and not reserve(ids, caps, exps, amount, rid, deadline) then code = 17 end
    end
    if code == 0 then
      for j = 1, k do untl = max(untl, exps[j]) end
      -- Remembered until ts + retention < clock could hold: ts + retention + 1 - clock seconds.
      local ttl = tonumber(sub(sat(sat(ts, retention), '0000000000000001'), clock), 16)
      redis.call('SET', nonce, ts, 'PX', math.min(ttl, 4294967296) * 1000, 'NX')
    end
    codes[i] = code
  end
  redis.call('HSET', meta, 'clock', clock, 'retention', retention, 'until', untl)
  result = codes
elseif step == 'reserve' then
  -- ARGV: 'reserve', amount, rid, lease_ms, k, then k times (id, cap).
  local ids, caps, exps = {}, {}, {}
  for j = 1, tonumber(ARGV[5]) do
    ids[j], caps[j], exps[j] = ARGV[4 + 2 * j], ARGV[5 + 2 * j], MAX
  end
  result = 17
  if reserve(ids, caps, exps, ARGV[2], ARGV[3], ms + tonumber(ARGV[4])) then
    redis.call('HSET', meta, 'until', MAX)
    result = 0
  end
elseif step == 'settle' then
  -- ARGV: 'settle', rid, kind, charged.
  result = settle(ARGV[2], ARGV[3], ARGV[4])
elseif step == 'seen' then
  -- ARGV: 'seen', now, retention, ts; KEYS[5] is the nonce key.
  local clock, retention = raised(ARGV[2], ARGV[3])
  result = 0
  if redis.call('EXISTS', KEYS[5]) == 1 or cmp(sat(ARGV[4], retention), clock) < 0 then result = 1 end
else
  return redis.error_reply('hopgate: unknown ledger step ' .. tostring(step))
end
flush()
-- The root's keys expire together (see expire()), after every step that may have
-- written one of them.
if redis.call('HEXISTS', meta, 'until') == 1 then
  expire(redis.call('HGET', meta, 'clock') or ZERO, redis.call('HGET', meta, 'retention') or ZERO,
    redis.call('HGET', meta, 'until'))
end
return result
