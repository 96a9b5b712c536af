-- push_offline.lua: a push envelope for a message the XMPP server stored
-- offline after the session closed (XEP-0357; common/inbox.c,
-- inbox_push_offline). "unread" is what waits in the inbox plus what the
-- server stored since the session closed (the seq hash's "offline", reset
-- by the next session).
--
-- KEYS[1] seq hash    KEYS[2] inbox zset    KEYS[3] push list
-- ARGV[1] push channel    ARGV[2] push envelope    ARGV[3] list's last index
-- Returns the offline count.
local n = redis.call('HINCRBY', KEYS[1], 'offline', 1)
local q = cjson.decode(ARGV[2])
q.unread = redis.call('ZCARD', KEYS[2]) + n
local t = cjson.encode(q)
redis.call('PUBLISH', ARGV[1], t)
redis.call('LPUSH', KEYS[3], t)
redis.call('LTRIM', KEYS[3], 0, ARGV[3])
return n
