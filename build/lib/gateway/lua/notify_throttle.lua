-- Hook throttle: a fixed window that starts at the first event it counts. Times in milliseconds.
--
-- KEYS[1]  the counter: one per hook and value of the throttled event field
-- ARGV[1]  limit: events let through per window
-- ARGV[2]  window_ms
--
-- Returns {allowed (1/0), count in this window including this event}.

local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window_ms = ARGV[2]

local count = redis.call('INCR', key)
if count == 1 then
    redis.call('PEXPIRE', key, window_ms)
end
if count > limit then
    return {0, count}
end
return {1, count}
