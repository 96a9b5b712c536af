-- deliver.lua: store one envelope for a user under the next sequence number
-- and publish it, atomically, so the number, the stored copy and the PUBLISH
-- can never disagree (common/inbox.c, inbox_deliver).
--
-- KEYS[1] seq hash {epoch, seq, aid}    KEYS[2] inbox zset (score = seq)
-- KEYS[3] push list    KEYS[4] the user's lease    KEYS[5] its fence
-- ARGV[1] the user's channel            ARGV[2] envelope JSON minus its '{'
-- ARGV[3] inbox ttl (ms)                ARGV[4] envelopes kept at most
-- ARGV[5] a fresh epoch, used only if the user has none yet
-- ARGV[6] push envelope, or ''          ARGV[7] push channel
-- ARGV[8] the push list's last index kept
-- ARGV[9] the XMPP server's archive id of the message, or ''
-- ARGV[10] the writer's lease "<owner> <token>" (fence.lua runs first)
-- ARGV[11] the epoch the writer last stored under, or '' (any)
-- Returns {seq, receivers of the PUBLISH, epoch}; {-1, 0} and no write when
-- the writer no longer owns the user; {-2, 0} and no write when the user's
-- numbering is not the one the writer knew (Redis lost it): the writer first
-- stores again what may have gone with it.
--
-- (Whole-line comments only: the build drops them and joins the lines.)
if not imb_owns(KEYS[4], KEYS[5], ARGV[10]) then
  return {-1, 0}
end
local e = redis.call('HGET', KEYS[1], 'epoch')
if ARGV[11] ~= '' and e ~= ARGV[11] then
  return {-2, 0}
end
if not e then
  e = ARGV[5]
  redis.call('HSET', KEYS[1], 'epoch', e)
end
local s = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local p = '{"seq":' .. s .. ',"epoch":"' .. e .. '",' .. ARGV[2]
redis.call('ZADD', KEYS[2], s, p)
-- The XMPP server's archive id of the newest message stored: after a lost
-- session the bridge asks the archive for what came after it.
if ARGV[9] ~= '' then
  redis.call('HSET', KEYS[1], 'aid', ARGV[9])
end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[4]) + 1))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
-- The counter lives ten times longer than the inbox, so an idle user keeps
-- the epoch across long silences.
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 10)
local n = redis.call('PUBLISH', ARGV[1], p)
-- A push envelope: one per stored message, whichever bridge stored it.
if ARGV[6] ~= '' then
  local q = cjson.decode(ARGV[6])
  q.seq = s
  q.unread = redis.call('ZCARD', KEYS[2])
  local t = cjson.encode(q)
  redis.call('PUBLISH', ARGV[7], t)
  redis.call('LPUSH', KEYS[3], t)
  redis.call('LTRIM', KEYS[3], 0, ARGV[8])
end
return {s, n, e}
