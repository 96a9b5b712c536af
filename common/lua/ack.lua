-- ack.lua: a phone has every envelope up to a seq (common/inbox.c,
-- inbox_ack). Moves the device's cursor, drops what every device seen
-- lately has, and publishes one "acked" envelope to the user's session
-- naming the messages acked for the first time that asked for a receipt.
--
-- KEYS[1] seq hash ("acked": the highest seq any device acked, so receipts
--         go out once, at the first)
-- KEYS[2] inbox zset    KEYS[3] cursor hash (device -> "<seq> <ms>")
-- ARGV[1] upto    ARGV[2] device label    ARGV[3] now (ms)
-- ARGV[4] how long an unseen device holds messages back (ms)
-- ARGV[5] the session's channel    ARGV[6] the user's JID
-- Returns the seq up to which envelopes were dropped.
local upto = tonumber(ARGV[1])
local now = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
redis.call('HSET', KEYS[3], ARGV[2], upto .. ' ' .. now)
redis.call('PEXPIRE', KEYS[3], ttl)
local top = tonumber(redis.call('HGET', KEYS[1], 'acked') or '0')
local rr = {}
if upto > top then
  for _, p in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. top, upto)) do
    local ok, d = pcall(cjson.decode, p)
    if ok and type(d) == 'table' and d.rr == true and type(d.from) == 'string'
        and type(d.id) == 'string' then
      rr[#rr + 1] = {to = d.from, id = d.id}
    end
  end
  redis.call('HSET', KEYS[1], 'acked', upto)
end
-- Keep what a device seen lately has not acked yet; forget devices unseen
-- for longer than ttl.
local low = upto
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  local a, b = string.match(all[i + 1], '^(%d+) (%d+)$')
  if a and now - tonumber(b) < ttl then
    if tonumber(a) < low then low = tonumber(a) end
  else
    redis.call('HDEL', KEYS[3], all[i])
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', low)
if #rr > 0 then
  redis.call('PUBLISH', ARGV[5],
             cjson.encode({v = 1, type = 'acked', from = ARGV[6], rr = rr}))
end
return low
