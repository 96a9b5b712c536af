// bench/stubbridge.mjs - a stand-in for imb-xmppd with no XMPP behind it,
// for two benches only: (1) logging in many more phones than real XMPP
// sessions allow, to measure the edge's cost per logged-in idle phone, and
// (3) the raw "edge -> Redis -> edge" path next to Socket.IO's Redis adapter.
//
// It speaks the documented bus (docs/ARCHITECTURE.md) exactly as a worker
// does, so the edges run only their existing code paths:
//   - registers itself in <prefix>:workers every second;
//   - answers every `login` on <prefix>:w:<id> with `login_ok` on the
//     edge's channel (no password check: there is no XMPP server);
//   - for every `chat` an edge publishes on <prefix>:x:<jid>, runs the
//     same Lua script as xmppd's inbox_deliver (next seq, store in the
//     inbox, PUBLISH on <prefix>:p:<to>) and publishes `ack` for the id on
//     <prefix>:p:<from> (xmppd acks once the XMPP server confirmed).
// Usage: node stubbridge.mjs --redis-port P [--prefix imb] [--id stub-w0]
import { createClient } from 'redis';
import crypto from 'node:crypto';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const port = Number(args['redis-port']);
const prefix = args.prefix ?? 'imb';
const id = args.id ?? 'stub-w0';
if (!port) { console.error('stubbridge: --redis-port required'); process.exit(2); }

// Copied from common/inbox.c (DELIVER): the same atomic seq + store + publish.
const DELIVER =
  "local e=redis.call('HGET',KEYS[1],'epoch') " +
  "if not e then e=ARGV[5] redis.call('HSET',KEYS[1],'epoch',e) end " +
  "local s=redis.call('HINCRBY',KEYS[1],'seq',1) " +
  "local p='{\"seq\":'..s..',\"epoch\":\"'..e..'\",'..ARGV[2] " +
  "redis.call('ZADD',KEYS[2],s,p) " +
  "redis.call('ZREMRANGEBYRANK',KEYS[2],0,-(tonumber(ARGV[4])+1)) " +
  "redis.call('PEXPIRE',KEYS[2],ARGV[3]) " +
  "redis.call('PEXPIRE',KEYS[1],tonumber(ARGV[3])*10) " +
  "return {s,redis.call('PUBLISH',ARGV[1],p)}";

const url = `redis://127.0.0.1:${port}`;
const cmd = createClient({ url });
const sub = cmd.duplicate();
cmd.on('error', (e) => console.error('stubbridge redis:', e.message));
sub.on('error', (e) => console.error('stubbridge redis sub:', e.message));
await cmd.connect();
await sub.connect();

const users = new Set();
let logins = 0; let chats = 0;
const register = () => cmd.hSet(`${prefix}:workers`, id, `${Date.now() + 5000} ${users.size} 100000000`).catch(() => {});
await register();
const regTimer = setInterval(register, 1000);

await sub.subscribe(`${prefix}:w:${id}`, (msg) => {
  let e;
  try { e = JSON.parse(msg); } catch { return; }
  if (e.type !== 'login') return;
  users.add(e.jid);
  logins++;
  cmd.publish(`${prefix}:e:${e.edge}`, JSON.stringify({
    v: 1, type: 'login_ok', ts: Date.now(), jid: e.jid, edge: e.edge, dev: e.dev, worker: id,
  })).catch(() => {});
});

const sha = await cmd.scriptLoad(DELIVER);
await sub.pSubscribe(`${prefix}:x:*`, (msg) => {
  let e;
  try { e = JSON.parse(msg); } catch { return; }
  if (e.type !== 'chat') return;
  chats++;
  const to = String(e.to).toLowerCase();
  const env = JSON.stringify({ v: 1, type: 'chat', ts: Date.now(), from: `${e.from}/phone`, to, body: e.body, id: e.id });
  cmd.evalSha(sha, {
    keys: [`${prefix}:seq:${to}`, `${prefix}:inbox:${to}`],
    arguments: [`${prefix}:p:${to}`, env.slice(1), '86400000', '1000', crypto.randomBytes(6).toString('hex')],
  }).catch((err) => console.error('stubbridge deliver:', err.message));
  cmd.publish(`${prefix}:p:${e.from}`, JSON.stringify({
    v: 1, type: 'ack', ts: Date.now(), to: e.from, ids: [e.id], edge: e.edge, dev: e.dev,
  })).catch(() => {});
});

console.error(`stubbridge ready id=${id}`);
const stop = async () => {
  clearInterval(regTimer);
  setTimeout(() => process.exit(0), 500).unref();
  console.error(`stubbridge exit logins=${logins} chats=${chats}`);
  try { await cmd.hDel(`${prefix}:workers`, id); } catch { /* ignore */ }
  try { await sub.quit(); await cmd.quit(); } catch { /* ignore */ }
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
