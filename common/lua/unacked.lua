-- unacked.lua: the envelopes no phone of the user acked yet (common/inbox.c,
-- inbox_unacked): a session that takes a user over learns from them which
-- delivery receipts it still owes. Once per session, never per message.
--
-- KEYS[1] inbox zset    KEYS[2] cursor hash ("~top": the highest seq acked,
--         "~rr": the newest seq that asked for a receipt)
-- ARGV[1] how many at most
-- Returns {the highest seq acked, {envelopes after it}}; none when no
-- receipt is owed (the common case: a session start reads nothing).
local c = redis.call('HMGET', KEYS[2], '~top', '~rr')
local top = tonumber(c[1] or '0') or 0
if (tonumber(c[2] or '0') or 0) <= top then
  return {top, {}}
end
return {top, redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. top, '+inf', 'LIMIT', 0, ARGV[1])}
