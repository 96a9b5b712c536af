-- push_offline.lua: a push envelope for a message the XMPP server stored
-- offline after the session closed (XEP-0357; common/inbox.c,
-- inbox_push_offline). "unread" is what waits in the inbox plus what the
-- server stored since the session closed (the seq hash's "offline", reset
-- by the next session). The caller publishes and queues the envelope: the
-- push list is the deployment's, not the user's (one slot per script).
--
-- KEYS[1] seq hash    KEYS[2] inbox zset (the user's: one hash tag)
-- ARGV[1] push envelope
-- Returns the push envelope with "unread".
local n = redis.call('HINCRBY', KEYS[1], 'offline', 1)
local q = cjson.decode(ARGV[1])
q.unread = redis.call('ZCARD', KEYS[2]) + n
return cjson.encode(q)
