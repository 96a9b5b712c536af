-- fence.lua: the ownership check of every script that writes on a user's
-- behalf (common/lease.h); the C side puts it in front of those scripts.
-- A writer names itself as "<owner> <token>", the lease it took. It still
-- owns the user when the lease is exactly that, or when the lease is gone
-- (lapsed, or lost with Redis) and no token was given out since its own.
--
-- (Whole-line comments only: the build drops them and joins the lines.)
local function imb_owns(lease_key, fence_key, holder)
  local cur = redis.call('GET', lease_key)
  if cur then
    return cur == holder
  end
  local t = tonumber(string.match(holder, ' (%d+)$') or '0')
  return tonumber(redis.call('GET', fence_key) or '0') <= t
end
