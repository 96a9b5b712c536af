-- resume_store.lua: keep the password a session opened with, sealed under
-- the session's resume token (common/resume.h), so that an edge can open
-- the session again on another worker without keeping the password
-- itself. Only the holder of the user's lease writes it (fence.lua); an
-- empty sealed text only renews the time it is kept.
--
-- KEYS[1] lease    KEYS[2] fence    KEYS[3] resume
-- ARGV[1] "<owner> <token>"    ARGV[2] sealed text, or ""    ARGV[3] ms kept
if not imb_owns(KEYS[1], KEYS[2], ARGV[1]) then
  return 0
end
if ARGV[2] == '' then
  return redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return 1
