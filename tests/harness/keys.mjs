// The names of a user's Redis keys, as common/keys.c makes them:
// "<prefix>:<kind>:{<id>}", the id with '{', '}' and '%' written %7B, %7D,
// %25, so every key of one user carries one Redis Cluster hash tag. And the
// slot Redis Cluster gives a key (CRC16/XMODEM of its tag, mod 16384).

/** "<prefix>:<kind>:{<id>}" (kind: lease, fence, seq, inbox, cursor, acked,
 * pres, rooms, resume, lf:u, lf:ip, lf:d). */
export function userKey(kind, id, prefix = 'imb') {
  return `${prefix}:${kind}:{${id.replace(/[{}%]/g, (c) => ({ '{': '%7B', '}': '%7D', '%': '%25' })[c])}}`;
}

/** The kinds of keys that name one user, address or device. */
export const USER_KINDS = ['lease', 'fence', 'seq', 'inbox', 'cursor', 'acked', 'pres', 'rooms', 'resume',
  'lf:u', 'lf:ip', 'lf:d'];

// The slot: the cluster harness's (one CRC16 for the whole harness).
export { keySlot } from './rediscluster.mjs';
