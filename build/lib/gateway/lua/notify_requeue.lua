-- Take a received message off a channel's stream and park it in the channel's delayed set (a retry with
-- backoff, or a wait for an open breaker), in one step so it is never lost nor doubled. Times in milliseconds.
-- Redis only: the embedded engine has no streams (its queue is a SQLite table, gateway/notify/queue/sqlite.py).
--
-- KEYS[1]  the channel's stream
-- KEYS[2]  the channel's delayed set (score: due time)
-- ARGV[1]  consumer group
-- ARGV[2]  stream entry id
-- ARGV[3]  due_ms: epoch milliseconds
-- ARGV[4]  member: "<unique id>|<job>"
--
-- Returns 1.

local stream, delayed = KEYS[1], KEYS[2]
local group, entry, due_ms, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

redis.call('ZADD', delayed, due_ms, member)
redis.call('XACK', stream, group, entry)
redis.call('XDEL', stream, entry)
return 1
