-- Claim an Idempotency-Key for one request body. Times in milliseconds.
--
-- KEYS[1]  the claim key: one per caller and Idempotency-Key
-- ARGV[1]  fingerprint: a hash of the request body
-- ARGV[2]  ttl_ms: how long the claim holds while the first request runs (the database row is the durable record)
--
-- Returns {1, fingerprint} when this call claimed the key: go ahead and create.
-- Returns {0, stored_fingerprint} when a request with the same key came first: the caller answers 422 if the
-- fingerprints differ, else replays the stored response (409 while the first request is still running).

local key = KEYS[1]
local fingerprint = ARGV[1]
local ttl_ms = ARGV[2]

if redis.call('SET', key, fingerprint, 'NX', 'PX', ttl_ms) then
    return {1, fingerprint}
end
return {0, redis.call('GET', key) or ''}
