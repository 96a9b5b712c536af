-- acked.lua: client ids the XMPP server confirmed for a user, the filter
-- that keeps a phone's resend from being delivered twice (xmppd/session.c,
-- acked_store). Written only by the user's owner: fence.lua runs first.
--
-- KEYS[1] acked zset (score = ms)    KEYS[2] the user's lease    KEYS[3] its fence
-- ARGV[1] the writer's lease "<owner> <token>"    ARGV[2] now (ms)
-- ARGV[3] ids kept at most    ARGV[4..] the ids
-- Returns how many ids were added, or -1 (nothing written) when the writer
-- no longer owns the user.
if not imb_owns(KEYS[2], KEYS[3], ARGV[1]) then
  return -1
end
for i = 4, #ARGV do
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i])
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
redis.call('EXPIRE', KEYS[1], 86400)
return #ARGV - 3
