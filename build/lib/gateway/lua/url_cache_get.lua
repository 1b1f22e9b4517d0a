-- Shared link cache read: the cached entry of one short code. No times involved.
--
-- KEYS[1]   the code's cache key, a string written by the gateway with SET ... EX
--
-- Returns the entry as stored, or false (a nil reply) when it is absent or expired.
-- A plain GET, sent as a script so that it rides the engine's deadline-bounded, auto-pipelined path
-- like every other call on the request path.
--
-- Lua 5.1 (the embedded lupa engine) and Redis 7.

local entry_key = KEYS[1]

return redis.call('GET', entry_key)
