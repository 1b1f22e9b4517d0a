-- Release an Idempotency-Key claim whose request failed before it was recorded, so a retry can go ahead.
--
-- KEYS[1]  the claim key
-- ARGV[1]  fingerprint: only the claim made for this body is released
--
-- Returns 1 if the claim was released, 0 if it was not ours (or had expired).

local key = KEYS[1]
local fingerprint = ARGV[1]

if redis.call('GET', key) == fingerprint then
    return redis.call('DEL', key)
end
return 0
