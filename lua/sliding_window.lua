-- Sliding-window counter: decide ONE request against EVERY window of a rule. All times in milliseconds.
--
-- KEYS[i]   one hash per window: i = window index floor(now / window_ms), c = its count, p = the previous count
-- ARGV[1]   now_ms: explicit time (tests), or 0 to read the server clock with TIME
-- ARGV[2]   cost: what this request spends; 0 peeks (reports whether a cost of 1 would pass, spends nothing)
-- ARGV[2+2i-1], ARGV[2+2i]   limit_i, window_ms_i for KEYS[i]
--
-- The weighted count is p * (1 - elapsed / window_ms) + c. The request passes iff, in every window,
-- weighted + cost <= limit; then every window is debited, otherwise none (a refusal is never counted).
--
-- Returns a flat array of integers (Redis truncates Lua floats):
--   allowed (1/0), then per window: limit, remaining, reset_ms, retry_after_ms
--   remaining        floor(limit - weighted) after this request's debit, >= 0
--   reset_ms         ms until the current window ends
--   retry_after_ms   0 if this window lets the request pass, else ms until the weighted count has fallen enough
--                    for the cost to fit (no further traffic assumed); -1 if it never can (cost > limit)
--
-- Lua 5.1 (the embedded lupa engine) and Redis 7. Weighted counts are compared scaled by window_ms so that
-- the arithmetic stays in exact integers.

local floor = math.floor
local now_ms = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
if now_ms <= 0 then
    local t = redis.call('TIME')
    now_ms = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
else
    now_ms = floor(now_ms)
end

-- A peek answers "would the next request pass?", so it is judged as a cost of 1.
local need = cost
if need <= 0 then
    need = 1
end

-- Exact for integers: a correctly rounded a / b can only round up onto an integer, never below one.
local function floor_div(a, b)
    local q = floor(a / b)
    if q * b > a then
        q = q - 1
    end
    return q
end

local n = #KEYS
local limits, windows, index, current, previous, scaled, retry = {}, {}, {}, {}, {}, {}, {}
local allowed = 1

for w = 1, n do
    local limit = tonumber(ARGV[1 + 2 * w])
    local window_ms = tonumber(ARGV[2 + 2 * w])
    local now_i = floor(now_ms / window_ms)
    local left = window_ms - (now_ms - now_i * window_ms)

    local stored = redis.call('HMGET', KEYS[w], 'i', 'c', 'p')
    local stored_i = tonumber(stored[1])
    local c, p = 0, 0
    if stored_i == now_i then
        c = tonumber(stored[2]) or 0
        p = tonumber(stored[3]) or 0
    elseif stored_i == now_i - 1 then
        p = tonumber(stored[2]) or 0
    end

    -- The weighted count times window_ms, so that it stays an exact integer.
    local weighted = p * left + c * window_ms
    local wait = 0
    if weighted + need * window_ms > limit * window_ms then
        allowed = 0
        if need > limit then
            wait = -1
        else
            wait = nil
            -- Still in this window: p's weight shrinks until p * (left - t) + (c + need) * window_ms fits.
            if p > 0 and c + need <= limit then
                local t = -floor_div((limit - c - need) * window_ms - p * left, p)
                if t < left then
                    wait = t
                end
            end
            -- Otherwise in the next window, where c becomes the previous count and the current one is empty.
            if wait == nil then
                wait = left
                if c > 0 then
                    local s = -floor_div((limit - need - c) * window_ms, c)
                    if s > 0 then
                        wait = left + s
                    end
                end
            end
        end
    end
    limits[w], windows[w], index[w], current[w], previous[w], scaled[w], retry[w] =
        limit, window_ms, now_i, c, p, weighted, wait
end

local spend = 0
if allowed == 1 and cost > 0 then
    spend = cost
end

local result = {allowed}
for w = 1, n do
    local window_ms = windows[w]
    local remaining = floor_div(limits[w] * window_ms - scaled[w] - spend * window_ms, window_ms)
    if remaining < 0 then
        remaining = 0
    end
    local at = 4 * w - 2
    result[at], result[at + 1], result[at + 2], result[at + 3] =
        limits[w], remaining, window_ms - (now_ms - index[w] * window_ms), retry[w]
    if spend > 0 then
        redis.call('HSET', KEYS[w], 'i', index[w], 'c', current[w] + spend, 'p', previous[w])
        redis.call('PEXPIRE', KEYS[w], 2 * window_ms)
    end
end

return result
