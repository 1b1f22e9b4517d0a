-- The embedded engine's key-value store: the part of Redis that the lua/ scripts use, in Lua tables.
-- Loaded once by gateway/engines/embedded.py with (SWEEP_EVERY, SWEEP_BATCH); returns the module table
-- {eval, command, load, flush, size, stored}. Not a Redis script: it is never sent to Redis.
-- Replies are tagged tuples (NIL, INT, BULK, ARRAY, STATUS, ERROR, NESTED) so that one crossing carries them.
local SWEEP_EVERY, SWEEP_BATCH = ...
local floor, format, upper, select, type, tonumber = math.floor, string.format, string.upper, select, type, tonumber
local NIL, INT, BULK, ARRAY, STATUS, ERROR, NESTED = 0, 1, 2, 3, 4, 5, 6

local now_us, now_ms = 0, 0
local vals, types, expires = {}, {}, {}
local calls, cursor = 0, nil
local scripts, envs = {}, {}

local WRONGTYPE = 'WRONGTYPE Operation against a key holding the wrong kind of value'
local NOT_INT = 'ERR value is not an integer or out of range'
local OK = {ok = 'OK'}

local function fail(msg) error({err = msg}, 0) end

-- Redis turns number arguments into strings; integers print without an exponent.
local function str(v)
    local t = type(v)
    if t == 'string' then return v end
    if t == 'number' then
        if v == floor(v) and v > -1e15 and v < 1e15 then return format('%d', v) end
        for digits = 15, 17 do
            local s = format('%.' .. digits .. 'g', v)
            if tonumber(s) == v then return s end
        end
    end
    fail('ERR Lua redis lib command arguments must be strings or integers')
end

local function int(v)
    local n = tonumber(v)
    if n == nil or n ~= floor(n) then fail(NOT_INT) end
    return n
end

local function drop(key) vals[key], types[key], expires[key] = nil, nil, nil end

-- The live type of `key`, or nil once it has expired (lazy expiry).
local function kind(key)
    local t = types[key]
    if t ~= nil then
        local e = expires[key]
        if e ~= nil and e <= now_ms then drop(key); return nil end
    end
    return t
end

local function expect(key, want)
    local t = kind(key)
    if t ~= nil and t ~= want then fail(WRONGTYPE) end
    return t ~= nil
end

local function sweep()
    for _ = 1, SWEEP_BATCH do
        local key, at = next(expires, cursor)
        if key == nil then cursor = nil; return end
        if at <= now_ms then drop(key) end
        cursor = key
    end
end

local C = {}

function C.TIME()
    local sec = floor(now_us / 1000000)
    return {str(sec), str(now_us - sec * 1000000)}
end

function C.GET(key)
    key = str(key)
    if not expect(key, 'string') then return false end
    return vals[key]
end

function C.SET(key, value, ...)
    key, value = str(key), str(value)
    local nx, xx, keepttl, ttl = false, false, false, nil
    local i, n = 1, select('#', ...)
    while i <= n do
        local opt = upper(str((select(i, ...))))
        if opt == 'NX' then nx = true
        elseif opt == 'XX' then xx = true
        elseif opt == 'KEEPTTL' then keepttl = true
        elseif (opt == 'PX' or opt == 'EX') and i < n then
            i = i + 1
            ttl = int((select(i, ...)))
            if ttl <= 0 then fail("ERR invalid expire time in 'set' command") end
            if opt == 'EX' then ttl = ttl * 1000 end
        else fail('ERR syntax error') end
        i = i + 1
    end
    local exists = kind(key) ~= nil
    if (nx and exists) or (xx and not exists) then return false end
    vals[key], types[key] = value, 'string'
    if ttl ~= nil then expires[key] = now_ms + ttl elseif not keepttl then expires[key] = nil end
    return OK
end

function C.DEL(...)
    local n = 0
    for i = 1, select('#', ...) do
        local key = str((select(i, ...)))
        if kind(key) ~= nil then drop(key); n = n + 1 end
    end
    return n
end

function C.EXISTS(...)
    local n = 0
    for i = 1, select('#', ...) do
        if kind(str((select(i, ...)))) ~= nil then n = n + 1 end
    end
    return n
end

function C.INCRBY(key, by)
    key = str(key)
    local n = 0
    if expect(key, 'string') then n = int(vals[key]) end
    n = n + int(by)
    vals[key], types[key] = str(n), 'string'
    return n
end
function C.DECRBY(key, by) return C.INCRBY(key, -int(by)) end
function C.INCR(key) return C.INCRBY(key, 1) end
function C.DECR(key) return C.INCRBY(key, -1) end

function C.PEXPIRE(key, ms)
    key, ms = str(key), int(ms)
    if kind(key) == nil then return 0 end
    if ms <= 0 then drop(key) else expires[key] = now_ms + ms end
    return 1
end
function C.EXPIRE(key, s) return C.PEXPIRE(key, int(s) * 1000) end

function C.PTTL(key)
    key = str(key)
    if kind(key) == nil then return -2 end
    local e = expires[key]
    if e == nil then return -1 end
    return e - now_ms
end
function C.TTL(key)
    local ms = C.PTTL(key)
    if ms < 0 then return ms end
    return floor((ms + 500) / 1000)
end

local function hash(key, create)
    if not expect(key, 'hash') then
        if not create then return nil end
        vals[key], types[key] = {}, 'hash'
    end
    return vals[key]
end

function C.HGET(key, field)
    local h = hash(str(key), false)
    return h and h[str(field)] or false
end

function C.HMGET(key, ...)
    local h = hash(str(key), false) or {}
    -- Built by the constructor, then filled in place: one allocation of the right size, not one per growth.
    local out = {...}
    for i = 1, #out do out[i] = h[str(out[i])] or false end
    return out
end

function C.HSET(key, ...)
    local n = select('#', ...)
    if n == 0 or n % 2 ~= 0 then fail("ERR wrong number of arguments for 'hset' command") end
    local h, added, pairs_ = hash(str(key), true), 0, {...}
    for i = 1, n, 2 do
        local field = str(pairs_[i])
        if h[field] == nil then added = added + 1 end
        h[field] = str(pairs_[i + 1])
    end
    return added
end

function C.HGETALL(key)
    local out = {}
    for field, value in pairs(hash(str(key), false) or {}) do
        out[#out + 1] = field
        out[#out + 1] = value
    end
    return out
end

function C.HINCRBY(key, field, by)
    local h = hash(str(key), true)
    field = str(field)
    local n = int(h[field] or 0) + int(by)
    h[field] = str(n)
    return n
end

function C.HDEL(key, ...)
    key = str(key)
    local h, n = hash(key, false), 0
    if h == nil then return 0 end
    for i = 1, select('#', ...) do
        local field = str((select(i, ...)))
        if h[field] ~= nil then h[field] = nil; n = n + 1 end
    end
    if next(h) == nil then drop(key) end
    return n
end

-- Lists keep head/tail indices so pushes and pops at either end are O(1).
local function list(key, create)
    if not expect(key, 'list') then
        if not create then return nil end
        vals[key], types[key] = {head = 1, tail = 0}, 'list'
    end
    return vals[key]
end

local function push(key, left, ...)
    local l = list(str(key), true)
    for i = 1, select('#', ...) do
        local value = str((select(i, ...)))
        if left then l.head = l.head - 1; l[l.head] = value else l.tail = l.tail + 1; l[l.tail] = value end
    end
    return l.tail - l.head + 1
end
function C.LPUSH(key, ...) return push(key, true, ...) end
function C.RPUSH(key, ...) return push(key, false, ...) end

local function pop(key, left, count)
    key = str(key)
    local l = list(key, false)
    if l == nil then return false end
    local n = count and int(count) or 1
    local out = {}
    while #out < n and l.head <= l.tail do
        local at = left and l.head or l.tail
        out[#out + 1] = l[at]
        l[at] = nil
        if left then l.head = l.head + 1 else l.tail = l.tail - 1 end
    end
    if l.head > l.tail then drop(key) end
    if count == nil then return out[1] end
    return out
end
function C.LPOP(key, count) return pop(key, true, count) end
function C.RPOP(key, count) return pop(key, false, count) end

function C.LLEN(key)
    local l = list(str(key), false)
    return l and (l.tail - l.head + 1) or 0
end

function C.LRANGE(key, start, stop)
    local l, out = list(str(key), false), {}
    if l == nil then return out end
    local len = l.tail - l.head + 1
    start, stop = int(start), int(stop)
    if start < 0 then start = len + start end
    if stop < 0 then stop = len + stop end
    if start < 0 then start = 0 end
    if stop >= len then stop = len - 1 end
    for i = start, stop do out[#out + 1] = l[l.head + i] end
    return out
end

for name, fn in pairs(C) do C[name:lower()] = fn end

local function dispatch(cmd, ...)
    local fn = C[cmd]
    if fn == nil then
        if type(cmd) ~= 'string' then fail('ERR Please specify at least one argument for this redis lib call') end
        fn = C[upper(cmd)]
        if fn == nil then fail(format("ERR the embedded engine does not support the redis command '%s'", cmd)) end
    end
    return fn(...)
end

local redis = {
    LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
    call = dispatch,
    log = function() end,
    error_reply = function(msg) return {err = msg} end,
    status_reply = function(msg) return {ok = msg} end,
}
function redis.pcall(...)
    local ok, res = pcall(dispatch, ...)
    if ok then return res end
    if type(res) == 'table' then return res end
    return {err = tostring(res)}
end

-- Only what Redis scripts see; globals cannot be created, as in Redis.
local sandbox = {
    redis = redis, string = string, math = math, table = table, tonumber = tonumber, tostring = tostring,
    type = type, pairs = pairs, ipairs = ipairs, next = next, select = select, unpack = unpack, error = error,
    pcall = pcall, assert = assert, setmetatable = setmetatable, getmetatable = getmetatable,
    rawget = rawget, rawset = rawset, rawequal = rawequal,
}
local env_meta = {
    __index = sandbox,
    __newindex = function(_, name) error('Script attempted to create global variable ' .. tostring(name), 2) end,
}

local function trunc(v)
    if v >= 0 then return floor(v) end
    return -floor(-v)
end

-- A script's result as Redis would reply it (and redis-py read it): numbers truncate, false is nil, true is 1.
local function reply(res)
    local t = type(res)
    if t ~= 'table' then
        if res == nil or res == false then return NIL end
        if t == 'string' then return BULK, res end
        if t == 'boolean' then return INT, 1 end
        return INT, trunc(res)
    end
    if res.err ~= nil then return ERROR, tostring(res.err) end
    if res.ok ~= nil then return STATUS, tostring(res.ok) end
    local n, nested = #res, false
    for i = 1, n do
        local v = res[i]
        t = type(v)
        if t == 'number' then
            if v ~= floor(v) then res[i] = trunc(v) end
        elseif t == 'boolean' then
            if v then res[i] = 1 else res[i] = nil end
        elseif t == 'table' then
            nested = true
            res[i] = {reply(v)}
        end
    end
    if nested then return NESTED, res, n end
    return ARRAY, unpack(res, 1, n)
end

local function reason(e)
    if type(e) == 'table' and e.err ~= nil then return tostring(e.err) end
    return tostring(e)
end

local function clock(us)
    now_us, now_ms = us, floor(us / 1000)
    calls = calls + 1
    if calls >= SWEEP_EVERY then
        calls = 0
        if not pcall(sweep) then cursor = nil end  -- the cursor key vanished in a rehash: start over
    end
end

local M = {}

function M.load(sha, source, name)
    local fn, err = loadstring(source, '@' .. name)
    if fn == nil then return err end
    local env = setmetatable({}, env_meta)
    setfenv(fn, env)
    scripts[sha], envs[sha] = fn, env
    return nil
end

function M.eval(sha, us, nkeys, ...)
    clock(us)
    local fn, env = scripts[sha], envs[sha]
    if fn == nil then return ERROR, 'NOSCRIPT No matching script.' end
    -- Each table built by a constructor, at its size: growing them an element at a time reallocates each.
    local keys, argv = {...}, {select(nkeys + 1, ...)}
    for i = #keys, nkeys + 1, -1 do keys[i] = nil end
    rawset(env, 'KEYS', keys)
    rawset(env, 'ARGV', argv)
    local ok, res = pcall(fn)
    if not ok then return ERROR, reason(res) end
    return reply(res)
end

function M.command(us, ...)
    clock(us)
    local ok, res = pcall(dispatch, ...)
    if not ok then return ERROR, reason(res) end
    return reply(res)
end

function M.flush() vals, types, expires, cursor = {}, {}, {}, nil end

function M.size(us)
    now_us, now_ms = us, floor(us / 1000)
    local n = 0
    for key in pairs(types) do
        local e = expires[key]
        if e == nil or e > now_ms then n = n + 1 end
    end
    return n
end

function M.stored() local n = 0; for _ in pairs(types) do n = n + 1 end; return n end

return M
