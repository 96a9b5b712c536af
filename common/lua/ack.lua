-- ack.lua: a phone has every envelope up to a seq (common/inbox.c,
-- inbox_ack). Moves the device's cursor and drops what every device seen
-- lately has. When the acks pass a message that asked for a delivery
-- receipt (deliver.lua marks the newest such seq), tells the user's session
-- how far the phones got: it holds what the receipts need. No JSON is read
-- here: an ack costs Redis a handful of commands whatever the messages.
--
-- KEYS[1] inbox zset    KEYS[3] seq hash (the user's epoch)
-- KEYS[2] cursor hash: device label -> "<seq> <ms>", "~top" the highest
--         seq any device acked (so the session hears of each seq once),
--         "~rr" the newest seq that asked for a receipt, "~exp" when (ms,
--         the acking edge's clock) this script last set the hash's TTL
-- ARGV[1] upto    ARGV[2] device label    ARGV[3] now (ms)
-- ARGV[4] how long an unseen device holds messages back (ms)
-- KEYS[4] the user's lease: "<worker> <token>", the worker holding the
--         session, whose channel is ARGV[5] .. <worker>
-- ARGV[5] the worker channels' prefix ("<prefix>:w:")    ARGV[6] the user's JID
-- ARGV[7] the epoch upto belongs to: an ack of another numbering (Redis
--         lost the one the phone knew, and numbers anew) changes nothing
-- Returns the seq up to which envelopes were dropped, or -1 for an ack of
-- another numbering, or of a seq the counter never gave (Redis came back
-- with an older copy of it: deliver.lua then abandons the numbering).
local h = redis.call('HMGET', KEYS[3], 'epoch', 'seq')
local upto = tonumber(ARGV[1])
if h[1] ~= ARGV[7] or upto > tonumber(h[2] or '0') then
  return -1
end
local now = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
-- (Numbers go back to Redis as the text they came in, or through
-- string.format('%d'): a Lua number formats as a double, at a cost.)
local top, rr, exp, low, low_text = 0, 0, 0, upto, ARGV[1]
local gone = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local f = all[i]
  if f == '~top' then
    top = tonumber(all[i + 1]) or 0
  elseif f == '~rr' then
    rr = tonumber(all[i + 1]) or 0
  elseif f == '~exp' then
    exp = tonumber(all[i + 1]) or 0
  elseif f ~= ARGV[2] then
-- Keep what a device seen lately has not acked yet; forget devices unseen
-- for longer than ttl.
    local a, b = string.match(all[i + 1], '^(%d+) (%d+)$')
    if a and now - tonumber(b) < ttl then
      if tonumber(a) < low then low, low_text = tonumber(a), a end
    else
      gone[#gone + 1] = f
    end
  end
end
if #gone > 0 then
  redis.call('HDEL', KEYS[2], unpack(gone))
end
-- The hash's TTL is set again once a quarter of it has gone since this
-- script last set it ("~exp", written by the same HSET), not at every ack:
-- it always has three quarters of ttl left. A clock behind "~exp" (another
-- edge's) sets it too.
local w = {KEYS[2], ARGV[2], ARGV[1] .. ' ' .. ARGV[3]}
if upto > top then
  w[#w + 1] = '~top'
  w[#w + 1] = ARGV[1]
end
local stale = now < exp or now - exp >= ttl / 4
if stale then
  w[#w + 1] = '~exp'
  w[#w + 1] = ARGV[3]
end
redis.call('HSET', unpack(w))
if stale then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', low_text)
local holder = upto > top and rr > top and redis.call('GET', KEYS[4])
if holder then
  redis.call('PUBLISH', ARGV[5] .. string.match(holder, '^(%S+)'),
             '{"v":1,"type":"acked","from":' .. cjson.encode(ARGV[6]) ..
             ',"upto":' .. ARGV[1] .. ',"after":' .. string.format('%d', top) .. '}')
end
return low
