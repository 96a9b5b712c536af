-- lease_release.lua: give the lease up, only if it is exactly the caller's
-- (common/lease.c, lease_release).
--
-- KEYS[1] lease    ARGV[1] "<owner> <token>"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
