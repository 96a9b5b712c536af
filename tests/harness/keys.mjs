// The names of a user's Redis keys, as common/keys.c makes them:
// "<prefix>:<kind>:{<id>}", the id with '{', '}' and '%' written %7B, %7D,
// %25, so every key of one user carries one Redis Cluster hash tag. And the
// slot Redis Cluster gives a key (CRC16/XMODEM of its tag, mod 16384).

/** "<prefix>:<kind>:{<id>}" (kind: lease, fence, seq, inbox, cursor, acked,
 * pres, rooms, lf:u, lf:ip, lf:d). */
export function userKey(kind, id, prefix = 'imb') {
  return `${prefix}:${kind}:{${id.replace(/[{}%]/g, (c) => ({ '{': '%7B', '}': '%7D', '%': '%25' })[c])}}`;
}

/** The kinds of keys that name one user, address or device. */
export const USER_KINDS = ['lease', 'fence', 'seq', 'inbox', 'cursor', 'acked', 'pres', 'rooms',
  'lf:u', 'lf:ip', 'lf:d'];

function crc16(buf) {
  let crc = 0;
  for (const b of buf) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** Redis Cluster's slot of key (a string, UTF-8, or a Buffer). */
export function keySlot(key) {
  const b = Buffer.isBuffer(key) ? key : Buffer.from(key, 'utf8');
  const open = b.indexOf(0x7b);
  if (open >= 0) {
    const close = b.indexOf(0x7d, open + 1);
    if (close > open + 1) return crc16(b.subarray(open + 1, close)) & 16383;
  }
  return crc16(b) & 16383;
}
