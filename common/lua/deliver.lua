-- deliver.lua: store envelopes for one user under the next sequence numbers
-- and publish them, atomically, so the numbers, the stored copies and the
-- PUBLISH can never disagree (common/inbox.c, inbox_deliver). One call
-- carries every envelope a bridge has for the user in one loop turn: the
-- cost in Redis is per call, nearly not per envelope.
--
-- Every key is the user's, "<prefix>:<kind>:{<jid>}" (common/keys.h): one
-- hash tag, so one Redis Cluster slot. The deployment's push list is not
-- touched here: the push envelopes come back in the reply, and the caller
-- publishes and queues them (common/inbox.c).
--
-- KEYS[1] seq hash {epoch, seq, aid}    KEYS[2] inbox zset (score = seq)
-- KEYS[3] the user's lease    KEYS[4] its fence
-- KEYS[5] cursor hash (inbox_ack): "~rr" = newest seq asking for a receipt
-- ARGV[1] the channels of the edges holding the user's phones, separated
--         by spaces, or '' (none attached)   ARGV[2] inbox ttl (ms)
-- ARGV[3] envelopes kept at most        ARGV[4] a fresh epoch, used only if
--         the user has none yet
-- ARGV[5] the writer's lease "<owner> <token>" (fence.lua runs first)
-- ARGV[6] the epoch the writer last stored under, or '' (any)
-- ARGV[7] the XMPP server's archive id of the newest message, or ''
-- ARGV[8] the position (1-based) of the last envelope asking for a
--         delivery receipt, or ''
-- ARGV[9] the highest seq the writer stored under ARGV[6] (0: none)
-- ARGV[10], ARGV[11], ...: per envelope, its JSON minus the '{', then a
--          push envelope or ''
-- Publishes the stored envelope, or a JSON array of them when there are
-- several, on each of those channels. Returns {first seq, receivers of the
-- PUBLISHes, epoch, {push envelopes, with seq and unread}}; {-1, 0, gone}
-- and no write when the writer no longer owns the user (gone: 'lost' or
-- 'back' when its numbering went too, as below, else ''); {-2, 0, 'lost'}
-- and no write when the user's numbering is not the one the writer knew
-- (Redis lost it): the writer first stores again what may have gone with
-- it. {-2, counter, 'back'} when the numbering is the writer's but its
-- counter is below a seq the writer stored in it (Redis came back with an
-- older copy: an older snapshot, a replica promoted before it had the last
-- writes): phones hold those seqs already and would drop new messages
-- numbered again under them. The user moves at once to a new epoch
-- (renumber.lua: what the inbox holds renumbered from 1), and the writer
-- stores again what it stored lately, as for a lost one: phones resync on
-- the new epoch and drop by id what they have.
--
-- (Whole-line comments only: the build drops them and joins the lines.)
if not imb_owns(KEYS[3], KEYS[4], ARGV[5]) then
-- Fenced. Whether the numbering the writer stored under is gone too (or
-- went back) decides what it hands the owner first (xmppd/worker.c).
  local gone = ''
  if ARGV[6] ~= '' then
    local h = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
    if h[1] ~= ARGV[6] then
      gone = 'lost'
    elseif tonumber(h[2] or '0') < tonumber(ARGV[9]) then
      gone = 'back'
    end
  end
  return {-1, 0, gone}
end
-- (One HMGET: each redis.call costs the script more than the command.)
local h = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local e = h[1]
if ARGV[6] ~= '' and e ~= ARGV[6] then
  return {-2, 0, 'lost'}
end
if ARGV[6] ~= '' then
  local cur = tonumber(h[2] or '0')
  if cur < tonumber(ARGV[9]) then
    imb_renumber(KEYS[1], KEYS[2], KEYS[5], ARGV[4])
    return {-2, cur, 'back'}
  end
end
if not e then
  e = ARGV[4]
  redis.call('HSET', KEYS[1], 'epoch', e)
end
-- Numbers become text with string.format('%d'): Lua's own conversion (a
-- concatenation, tostring) and Redis's of a number argument format a
-- double ('%.14g', '%.17g'), which showed in Redis's profile.
local n = (#ARGV - 9) / 2
local last = redis.call('HINCRBY', KEYS[1], 'seq', string.format('%d', n))
local first = last - n + 1
local z, out = {}, {}
for i = 1, n do
  local s = string.format('%d', first + i - 1)
  local p = '{"seq":' .. s .. ',"epoch":"' .. e .. '",' .. ARGV[8 + 2 * i]
  z[2 * i - 1] = s
  z[2 * i] = p
  out[i] = p
end
redis.call('ZADD', KEYS[2], unpack(z))
-- The XMPP server's archive id of the newest message stored: after a lost
-- session the bridge asks the archive for what came after it.
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'aid', ARGV[7])
end
-- A receipt is owed once a phone acks this one (ack.lua tells the session).
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[5], '~rr', string.format('%d', first + tonumber(ARGV[8]) - 1))
end
-- The count limit, enforced every eighth of it: fetch.lua never hands out
-- more than the limit, and the zset holds at most an eighth more.
local max = tonumber(ARGV[3])
local step = math.max(1, math.floor(max / 8))
if last > max and math.floor(last / step) ~= math.floor((first - 1) / step) then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', last - max))
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
-- The counter lives ten times longer than the inbox, so an idle user keeps
-- the epoch across long silences.
redis.call('PEXPIRE', KEYS[1], string.format('%d', tonumber(ARGV[2]) * 10))
local r, msg = 0, out[1]
if n > 1 then
  msg = '[' .. table.concat(out, ',') .. ']'
end
for ch in string.gmatch(ARGV[1], '%S+') do
  r = r + redis.call('PUBLISH', ch, msg)
end
-- A push envelope: one per stored message, whichever bridge stored it (only
-- for a user whose phones are all away: not the hot path).
local card
local pushes = {}
for i = 1, n do
  local q = ARGV[9 + 2 * i]
  if q ~= '' then
    q = cjson.decode(q)
    q.seq = first + i - 1
-- What waited for the phone when this one came: the batch's later ones
-- not counted.
    card = card or redis.call('ZCARD', KEYS[2])
    q.unread = card - n + i
    pushes[#pushes + 1] = cjson.encode(q)
  end
end
return {first, r, e, pushes}
