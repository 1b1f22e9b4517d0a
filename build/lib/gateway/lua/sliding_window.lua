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
-- the arithmetic stays in exact integers. One table holds every window's state (stride 7) and no function is
-- created per call: this runs once per request.

local floor = math.floor
local call = redis.call
local now_ms = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
if now_ms <= 0 then
    local t = call('TIME')
    now_ms = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
else
    now_ms = floor(now_ms)
end

-- A peek answers "would the next request pass?", so it is judged as a cost of 1.
local need = cost
if need <= 0 then
    need = 1
end

local n = #KEYS
-- Per window w, at s = 7 * (w - 1): limit, window_ms, index, current, previous, scaled weighted count, retry.
local st = {}
local allowed = 1

for w = 1, n do
    local limit = tonumber(ARGV[1 + 2 * w])
    local window_ms = tonumber(ARGV[2 + 2 * w])
    local now_i = floor(now_ms / window_ms)
    local left = window_ms - (now_ms - now_i * window_ms)

    local stored = call('HMGET', KEYS[w], 'i', 'c', 'p')
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
            -- floor_div(a, b) is written out (exact for integers: a rounded a / b only rounds up onto one).
            if p > 0 and c + need <= limit then
                local a = (limit - c - need) * window_ms - p * left
                local q = floor(a / p)
                if q * p > a then q = q - 1 end
                if -q < left then
                    wait = -q
                end
            end
            -- Otherwise in the next window, where c becomes the previous count and the current one is empty.
            if wait == nil then
                wait = left
                if c > 0 then
                    local a = (limit - need - c) * window_ms
                    local q = floor(a / c)
                    if q * c > a then q = q - 1 end
                    if -q > 0 then
                        wait = left - q
                    end
                end
            end
        end
    end
    local s = 7 * (w - 1)
    st[s + 1], st[s + 2], st[s + 3], st[s + 4], st[s + 5], st[s + 6], st[s + 7] =
        limit, window_ms, now_i, c, p, weighted, wait
end

local spend = 0
if allowed == 1 and cost > 0 then
    spend = cost
end

local result = {allowed}
for w = 1, n do
    local s = 7 * (w - 1)
    local limit, window_ms, index = st[s + 1], st[s + 2], st[s + 3]
    local a = limit * window_ms - st[s + 6] - spend * window_ms
    local remaining = floor(a / window_ms)
    if remaining * window_ms > a then remaining = remaining - 1 end
    if remaining < 0 then
        remaining = 0
    end
    local at = 4 * w - 2
    result[at], result[at + 1], result[at + 2], result[at + 3] =
        limit, remaining, window_ms - (now_ms - index * window_ms), st[s + 7]
    if spend > 0 then
        call('HSET', KEYS[w], 'i', index, 'c', st[s + 4] + spend, 'p', st[s + 5])
        call('PEXPIRE', KEYS[w], 2 * window_ms)
    end
end

return result
