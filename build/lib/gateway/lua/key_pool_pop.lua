-- Key pool pop: take up to N pre-generated short codes from the head of the pool list. No times involved.
--
-- KEYS[1]   the pool: a list of codes that the filler appends with RPUSH
-- ARGV[1]   how many codes to take at most (1 or more)
--
-- Returns {remaining, code_1, ..., code_n}, n <= ARGV[1]:
--   remaining   the pool's length after the pop, so the caller knows when to wake the filler without
--               asking again
--   code_i      the codes taken, oldest first; none when the pool is empty (the caller then makes one
--               itself from the database sequence, so an empty pool is never an error)
--
-- Lua 5.1 (the embedded lupa engine) and Redis >= 6.2 (LPOP with a count).

local pool = KEYS[1]
local wanted = tonumber(ARGV[1])

local codes = redis.call('LPOP', pool, wanted)
local remaining = redis.call('LLEN', pool)
local reply = {remaining}
if codes then
    for i = 1, #codes do
        reply[i + 1] = codes[i]
    end
end
return reply
