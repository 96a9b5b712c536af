-- fetch.lua: envelopes after a seq, for a phone catching up (common/inbox.c,
-- inbox_fetch).
--
-- KEYS[1] seq hash    KEYS[2] inbox zset
-- ARGV[1] after (seq)    ARGV[2] how many at most
-- Returns {epoch or '', the newest seq, {envelopes}}.
local e = redis.call('HGET', KEYS[1], 'epoch') or ''
local s = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
return {e, s, redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf',
                         'LIMIT', 0, ARGV[2])}
