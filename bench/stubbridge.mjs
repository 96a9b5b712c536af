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
import fs from 'node:fs';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const port = Number(args['redis-port']);
const prefix = args.prefix ?? 'imb';
const id = args.id ?? 'stub-w0';
if (!port) { console.error('stubbridge: --redis-port required'); process.exit(2); }

// The very script xmppd runs (common/lua/fence.lua then deliver.lua, loaded
// as they are: Redis skips the comments).
const lua = (name) => fs.readFileSync(new URL(`../common/lua/${name}`, import.meta.url), 'utf8');
const DELIVER = `${lua('fence.lua')}\n${lua('deliver.lua')}`;

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
    keys: [`${prefix}:seq:${to}`, `${prefix}:inbox:${to}`, `${prefix}:pushq`,
      `${prefix}:lease:${to}`, `${prefix}:fence:${to}`],
    // (No push envelope: a phone of the bench is always connected. No lease:
    // the stub holds none, and the fence lets a writer through when nobody does.)
    arguments: [`${prefix}:p:${to}`, env.slice(1), '86400000', '1000',
      crypto.randomBytes(6).toString('hex'), '', `${prefix}:push`, '9999', '', `${id} 0`, ''],
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
