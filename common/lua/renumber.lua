-- renumber.lua: move a user to a new numbering, for deliver.lua when the
-- counter went back under what its writer stored (Redis came back with an
-- older copy). Phones that knew the old epoch get sync with reset and
-- replay the new one from 1 (PROTOCOL.md section 8: after a reset the seqs
-- start again from 1). What the inbox still holds (the older copy's
-- messages no phone acked then) stays, renumbered 1..n in order under the
-- new epoch; the counter goes on from n. Device cursors count nothing of
-- the new numbering yet (each keeps when it was seen), and the receipt
-- marks go: the writer forgets the receipts it owed by seq.
--
-- (Whole-line comments only: the build drops them and joins the lines.)
local function imb_renumber(seq_key, inbox_key, cursor_key, fresh)
  local ttl = redis.call('PTTL', inbox_key)
  local old = redis.call('ZRANGE', inbox_key, 0, -1)
  redis.call('DEL', inbox_key)
  local n, z = 0, {}
  for _, m in ipairs(old) do
    local rest = string.match(m, '^{"seq":%d+,"epoch":"[^"]*",(.*)$')
    if rest then
      n = n + 1
      z[#z + 1] = n
      z[#z + 1] = '{"seq":' .. n .. ',"epoch":"' .. fresh .. '",' .. rest
      if #z >= 1000 then
        redis.call('ZADD', inbox_key, unpack(z))
        z = {}
      end
    end
  end
  if #z > 0 then
    redis.call('ZADD', inbox_key, unpack(z))
  end
  if n > 0 and ttl > 0 then
    redis.call('PEXPIRE', inbox_key, ttl)
  end
  redis.call('HSET', seq_key, 'epoch', fresh, 'seq', n)
  local cur = redis.call('HGETALL', cursor_key)
  redis.call('HDEL', cursor_key, '~top', '~rr')
  for i = 1, #cur, 2 do
    local ms = string.match(cur[i + 1], '^%d+ (%d+)$')
    if string.sub(cur[i], 1, 1) ~= '~' and ms then
      redis.call('HSET', cursor_key, cur[i], '0 ' .. ms)
    end
  end
  return n
end
