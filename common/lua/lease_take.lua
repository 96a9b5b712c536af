-- lease_take.lua: take or renew the lease on a user's session
-- (common/lease.c, lease_take).
--
-- KEYS[1] lease "<owner> <token>" (PX)
-- KEYS[2] fence: the last token given (kept a day)
-- ARGV[1] owner (a worker id)    ARGV[2] lease time (ms)
-- ARGV[3] the token the caller's session holds, or '' for a new session
-- Returns {holder, token, pttl}: the holder after the call ('' when the
-- caller's session lost the user to a later token), its token, and for
-- another holder the ms its lease has left.
--
-- Tokens only grow: the next is above the last given and above the server's
-- clock in microseconds, so a Redis that lost the fence key still never gives
-- a token an older session holds.
local cur = redis.call('GET', KEYS[1])
local held = ARGV[3]
if cur then
  local o, t = string.match(cur, '^(%S+) (%d+)$')
  if o == ARGV[1] and (held == '' or t == held) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {o, t, 0}
  end
  return {o or '', t or '0', redis.call('PTTL', KEYS[1])}
end
local f = tonumber(redis.call('GET', KEYS[2]) or '0')
if held ~= '' and f > tonumber(held) then
  return {'', string.format('%.0f', f), 0}
end
local t = held
if held == '' then
  local now = redis.call('TIME')
  local us = tonumber(now[1]) * 1000000 + tonumber(now[2])
  t = string.format('%.0f', math.max(f + 1, us))
  redis.call('SET', KEYS[2], t, 'PX', 86400000)
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. t, 'PX', ARGV[2])
return {ARGV[1], t, 0}
