-- unacked.lua: the envelopes no phone of the user acked yet (common/inbox.c,
-- inbox_unacked): a session that takes a user over learns from them which
-- delivery receipts it still owes. Once per session, never per message.
--
-- KEYS[1] inbox zset    KEYS[2] cursor hash ("~top": the highest seq acked)
-- ARGV[1] how many at most
-- Returns {the highest seq acked, {envelopes after it}}.
local top = tonumber(redis.call('HGET', KEYS[2], '~top') or '0') or 0
return {top, redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. top, '+inf', 'LIMIT', 0, ARGV[1])}
