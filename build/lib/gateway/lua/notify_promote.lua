-- Move the due members of a channel's delayed set onto its stream. Times in milliseconds. Redis only.
--
-- KEYS[1]  the channel's delayed set (score: due time, member "<unique id>|<job>")
-- KEYS[2]  the channel's stream
-- ARGV[1]  now_ms: epoch milliseconds (the gateway's clock, the one that computed the due times)
-- ARGV[2]  limit: members moved per call at most
--
-- Returns the number of members moved.

local delayed, stream = KEYS[1], KEYS[2]
local now_ms, limit = ARGV[1], tonumber(ARGV[2])

local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now_ms, 'LIMIT', 0, limit)
for _, member in ipairs(due) do
    local bar = string.find(member, '|', 1, true)
    redis.call('XADD', stream, '*', 'job', string.sub(member, bar + 1))
    redis.call('ZREM', delayed, member)
end
return #due
