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

local ZERO, ONE = 0, 1
local MAX = 'ffffffffffffffff'
local SMALL = 4503599627370496 -- 2^52
local SETTLED_MEMORY_MS = 86400000
local meta, acct, res, lease = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix = string.sub(meta, 1, -5) -- 'hg1:{R}:'

if tonumber('10000000000000', 16) ~= SMALL or string.format('%x', SMALL) ~= '10000000000000' then
  return redis.error_reply('hopgate: this Redis build cannot hold 64-bit integers in its Lua')
end

-- A value is a number when below 2^52 (doubles hold it, and a sum of two such values),
-- else its 16 hex digits. num() reads the hex form stored and sent; hex() writes it.
local function num(h)
  if string.sub(h, 1, 3) == '000' then return tonumber(h, 16) end
  return h
end
local function hex(v)
  if type(v) == 'number' then return string.format('%016x', v) end
  return v
end

-- -1, 0 or 1 as `a` is below, equal to or above `b`.
local function cmp(a, b)
  local x, y = a, b
  if type(a) ~= 'number' or type(b) ~= 'number' then
    a, b = hex(a), hex(b)
    if a == b then return 0 end
    x, y = tonumber(string.sub(a, 1, 8), 16), tonumber(string.sub(b, 1, 8), 16)
    if x == y then
      x, y = tonumber(string.sub(a, 9, 16), 16), tonumber(string.sub(b, 9, 16), 16)
    end
  end
  if x < y then return -1 elseif x > y then return 1 end
  return 0
end

-- a + b, or nil when the sum passes 2^64 - 1.
local function add(a, b)
  if type(a) == 'number' and type(b) == 'number' then
    local s = a + b
    if s < SMALL then return s end
    return hex(s)
  end
  a, b = hex(a), hex(b)
  local out, carry = {}, 0
  for i = 13, 1, -4 do
    local s = tonumber(string.sub(a, i, i + 3), 16) + tonumber(string.sub(b, i, i + 3), 16) + carry
    carry = math.floor(s / 65536)
    out[(i + 3) / 4] = string.format('%04x', s % 65536)
  end
  if carry > 0 then return nil end
  return num(table.concat(out))
end

-- a - b, or ZERO when b > a.
local function sub(a, b)
  if cmp(b, a) >= 0 then return ZERO end
  if type(a) == 'number' then return a - b end
  a, b = hex(a), hex(b)
  local out, borrow = {}, 0
  for i = 13, 1, -4 do
    local s = tonumber(string.sub(a, i, i + 3), 16) - tonumber(string.sub(b, i, i + 3), 16) - borrow
    if s < 0 then s = s + 65536; borrow = 1 else borrow = 0 end
    out[(i + 3) / 4] = string.format('%04x', s)
  end
  return num(table.concat(out))
end

local function sat(a, b) return add(a, b) or MAX end
local function max(a, b) if cmp(a, b) >= 0 then return a end return b end
local function min(a, b) if cmp(a, b) <= 0 then return a end return b end

-- The root's clock and retention for a gate step at `now` by a process keeping nonces
-- `window` seconds (SPEC §5.8): the threshold clock - retention never moves back, so a
-- longer window takes effect only as far as the clock has passed the old threshold.
local function raised(now, window)
  local clock0 = num(redis.call('HGET', meta, 'clock') or '0000000000000000')
  local retention0 = num(redis.call('HGET', meta, 'retention') or '0000000000000000')
  local clock = max(clock0, now)
  return clock, max(retention0, min(window, sub(clock, sub(clock0, retention0))))
end

-- Seconds `v` as a whole number for PX / PEXPIRE, at most 2^32.
local function secs(v)
  if type(v) == 'number' then return math.min(v, 4294967296) end
  return 4294967296
end

-- The accounts this call read, by id (cap, spent, reserved, overrun, expires; false
-- when absent), and those it changed; the reservations it made: all read once and
-- written once, by flush().
local cache, dirty, made, leased = {}, {}, {}, {}

local function load(id, cap)
  local a = cache[id]
  if a == nil then
    local v = redis.call('HGET', acct, id)
    a = false
    if v then
      a = {}
      for f = 1, 5 do a[f] = num(string.sub(v, 16 * f - 15, 16 * f)) end
    end
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

-- HSET / ZADD `key` with `args` (field-value or score-member pairs), 512 at a time.
local function put(cmd, key, args)
  for i = 1, #args, 512 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 511, #args)))
  end
end

local function flush()
  local args = {}
  for _, id in ipairs(dirty) do
    local a = cache[id]
    args[#args + 1] = id
    args[#args + 1] = hex(a[1]) .. hex(a[2]) .. hex(a[3]) .. hex(a[4]) .. hex(a[5])
  end
  put('HSET', acct, args)
  put('HSET', res, made)
  put('ZADD', lease, leased)
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
  local amount = num(string.sub(v, 1, 16))
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
      redis.call('PEXPIRE', k, secs(sat(sub(untl, clock), sat(retention, ONE))) * 1000)
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
  made[#made + 1] = rid
  made[#made + 1] = hex(amount) .. table.concat(ids)
  leased[#leased + 1] = deadline
  leased[#leased + 1] = rid
  return true
end

local step = ARGV[1]
local ms = now_ms()
sweep(ms)
local result

if step == 'admit' then
  -- ARGV: 'admit', now, retention, lease_ms, n, m, then m accounts (id, cap, expires),
  -- then per request: ts, amount, rid, k, and k places in the accounts (1-based);
  -- KEYS[4 + i] is request i's nonce key.
  local clock, retention = raised(num(ARGV[2]), num(ARGV[3]))
  -- A root whose accounts were written without `until` (by another writer) never expires
  -- early: MAX until a step sets it.
  local untl = redis.call('HGET', meta, 'until')
  if untl then untl = num(untl) elseif redis.call('EXISTS', acct) == 1 then untl = MAX else untl = ZERO end
  local deadline = ms + tonumber(ARGV[4])
  local codes = {}
  local a_ids, a_caps, a_exps = {}, {}, {}
  local p = 7
  for j = 1, tonumber(ARGV[6]) do
    a_ids[j], a_caps[j], a_exps[j] = ARGV[p], num(ARGV[p + 1]), num(ARGV[p + 2])
    p = p + 3
  end
  for i = 1, tonumber(ARGV[5]) do
    local ts, amount, rid, k = num(ARGV[p]), num(ARGV[p + 1]), ARGV[p + 2], tonumber(ARGV[p + 3])
    local ids, caps, exps = {}, {}, {}
    for j = 1, k do
      local place = tonumber(ARGV[p + 3 + j])
      ids[j], caps[j], exps[j] = a_ids[place], a_caps[place], a_exps[place]
    end
    p = p + 4 + k
    local nonce = KEYS[4 + i]
    local code = 0
    -- Remembered until ts + retention < clock could hold: ts + retention + 1 - clock seconds.
    local ttl = sub(sat(sat(ts, retention), ONE), clock)
    if ttl == ZERO or not redis.call('SET', nonce, hex(ts), 'PX', secs(ttl) * 1000, 'NX') then
      code = 16
    else
      for j = 1, k do
        if cmp(exps[j], clock) <= 0 then code = 17 end
      end
      if code == 0 and not reserve(ids, caps, exps, amount, rid, deadline) then code = 17 end
      if code == 0 then
        for j = 1, k do untl = max(untl, exps[j]) end
      else
        redis.call('DEL', nonce) -- set just above, by this request
      end
    end
    codes[i] = code
  end
  redis.call('HSET', meta, 'clock', hex(clock), 'retention', hex(retention), 'until', hex(untl))
  result = codes
elseif step == 'reserve' then
  -- ARGV: 'reserve', amount, rid, lease_ms, k, then k times (id, cap).
  local ids, caps, exps = {}, {}, {}
  for j = 1, tonumber(ARGV[5]) do
    ids[j], caps[j], exps[j] = ARGV[4 + 2 * j], num(ARGV[5 + 2 * j]), MAX
  end
  result = 17
  if reserve(ids, caps, exps, num(ARGV[2]), ARGV[3], ms + tonumber(ARGV[4])) then
    redis.call('HSET', meta, 'until', MAX)
    result = 0
  end
elseif step == 'settle' then
  -- ARGV: 'settle', rid, kind, charged.
  result = settle(ARGV[2], ARGV[3], num(ARGV[4]))
elseif step == 'seen' then
  -- ARGV: 'seen', now, retention, ts; KEYS[5] is the nonce key.
  local clock, retention = raised(num(ARGV[2]), num(ARGV[3]))
  result = 0
  if redis.call('EXISTS', KEYS[5]) == 1 or cmp(sat(num(ARGV[4]), retention), clock) < 0 then result = 1 end
else
  return redis.error_reply('hopgate: unknown ledger step ' .. tostring(step))
end
flush()
-- The root's keys expire together (see expire()), after every step that may have
-- written one of them.
local untl = redis.call('HGET', meta, 'until')
if untl then
  expire(num(redis.call('HGET', meta, 'clock') or '0000000000000000'),
    num(redis.call('HGET', meta, 'retention') or '0000000000000000'), num(untl))
end
return result
