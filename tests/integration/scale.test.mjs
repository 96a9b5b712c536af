// Scale-out on loopback, as deployed: haproxy (deploy/haproxy.cfg, mode tcp,
// health checks) in front of two edges, two bridges of two workers each, one
// Redis, one Prosody. 52 phone users chat with desktop users across all
// edges; then a bridge is killed, an edge is killed, a bridge is added, a
// bridge and an edge are drained. After each: no user has two XMPP sessions,
// sessions are back within the bound, and everyone can chat.
import assert from 'node:assert/strict';
import {
  itest, killHard, startRedis, startProsody, startXmppd, startEdge, startHaproxy, connectPhone,
  startDesktop, randomCredKey, waitFor, sleep,
} from '../harness/index.mjs';

const N = 52;
const USERS = Array.from({ length: N }, (_, i) => `s${i + 1}`);
const DESKS = ['d1', 'd2', 'd3', 'd4'];
const desk = (u) => DESKS[Number(u.slice(1)) % DESKS.length];


itest('52 phones through haproxy over 2 edges and 2 bridges: balance, kill, add, drain', { timeout: 240000 }, async (t, stack) => {
  const credKey = randomCredKey();
  const [redis, prosody] = await Promise.all([
    startRedis(stack),
    startProsody(stack, { users: [...USERS, ...DESKS].map((u) => [u, `pw-${u}`]) }),
  ]);
  const bridge = (id) => startXmppd(stack, {
    redisPort: redis.port, xmppPort: prosody.c2sPort, credKey, workers: 2,
    extraArgs: ['--bridge-id', id], name: `imb-xmppd-${id}`,
  });
  const bridges = { br0: await bridge('br0'), br1: await bridge('br1') };
  const edge = (id, listen = '127.0.0.1:0') => startEdge(stack, {
    redisPort: redis.port, credKey, name: `imb-edge-${id}`,
    extraArgs: ['--edge-id', id, '--listen', listen, '--max-unauth-per-ip', '10000'],
  });
  const edges = [await edge('ed0'), await edge('ed1')];
  const ha = await startHaproxy(stack, { servers: edges.map((e) => e.port) });
  await sleep(1200);
  const desktops = Object.fromEntries(await Promise.all(DESKS.map(async (d) => [d, await startDesktop(stack, {
    port: prosody.c2sPort, user: d, pass: `pw-${d}`, domain: 'localhost',
  })])));
  const report = [];
  const note = (s) => { report.push(s); t.diagnostic(s); };

  // Where each user's session is, from every edge's log (the last word wins).
  const allEdgeLogs = () => Object.values(stack.procs).filter((p) => p.name.startsWith('imb-edge')).map((p) => p.stderr).join('\n');
  const workerOf = (u) => {
    let last = null;
    for (const m of allEdgeLogs().matchAll(new RegExp(`(?:login_ok|relogin_ok) dev=\\S+ jid=${u}@localhost worker=(\\S+)`, 'g'))) last = m[1];
    return last;
  };
  const noConflicts = () => {
    for (const p of stack.procs) if (p.name.startsWith('imb-xmppd')) assert.doesNotMatch(p.stderr, /reason=conflict/, `${p.name}: a user had two sessions`);
  };

  // Phones log in through haproxy.
  const phones = {};
  const loginVia = async (u) => {
    const p = await connectPhone(stack, ha.port, u);
    await p.login(`${u}@localhost`, `pw-${u}`);
    phones[u] = p;
  };
  let t0 = Date.now();
  for (let i = 0; i < N; i += 13) await Promise.all(USERS.slice(i, i + 13).map(loginVia));
  note(`${N} phones logged in through haproxy in ${Date.now() - t0} ms`);
  await waitFor(() => USERS.every((u) => workerOf(u)), { timeout: 3000 });
  const perEdge = (await ha.states());
  note(`haproxy sessions per edge: ${Object.entries(perEdge).map(([k, v]) => `${k}=${v.stot}`).join(' ')}`);
  assert.ok(Object.values(perEdge).every((v) => v.stot >= N / 2 - 2), JSON.stringify(perEdge));

  // Balance: sessions per worker within ±20 % of even.
  const counts = {};
  for (const u of USERS) counts[workerOf(u)] = (counts[workerOf(u)] ?? 0) + 1;
  note(`sessions per worker: ${JSON.stringify(counts)}`);
  assert.equal(Object.keys(counts).length, 4);
  for (const c of Object.values(counts)) assert.ok(Math.abs(c - N / 4) <= 0.2 * N / 4, `uneven: ${JSON.stringify(counts)}`);

  let round = 0;
  const chatAll = async (label) => {
    round++;
    const t1 = Date.now();
    await Promise.all(USERS.map(async (u) => {
      const ack = await phones[u].msg(`${desk(u)}@localhost`, `${label} ${u}`, { id: `${u}-r${round}`, timeout: 15000 });
      assert.equal(ack.t, 'ack', `${u}: ${JSON.stringify(ack)}`);
    }));
    for (const u of USERS) await desktops[desk(u)].nextMessage({ body: `${label} ${u}` }, 10000);
    for (const u of USERS) await desktops[desk(u)].send(`${u}@localhost`, `${label} back ${u}`);
    await Promise.all(USERS.map((u) => phones[u].next({ t: 'msg', body: `${label} back ${u}` }, 15000)));
    note(`${label}: ${N} messages each way delivered in ${Date.now() - t1} ms`);
  };
  await chatAll('start');

  // Kill -9 a bridge: its users come back on br1, phones untouched.
  const onBr0 = USERS.filter((u) => workerOf(u).startsWith('br0-'));
  t0 = Date.now();
  await killHard(bridges.br0);
  await waitFor(() => onBr0.every((u) => workerOf(u).startsWith('br1-')), { timeout: 12000, interval: 100 });
  note(`kill -9 br0: ${onBr0.length} sessions back on br1 in ${Date.now() - t0} ms (bound: lease 10 s + 2 s)`);
  assert.ok(USERS.every((u) => !phones[u].isClosed));
  noConflicts();
  await chatAll('after-bridge-kill');

  // Kill -9 an edge: its phones reconnect through haproxy and resume.
  const ed0Port = edges[0].port;
  await killHard(edges[0]);
  const dropped = USERS.filter((u) => phones[u]);
  await sleep(300);
  const closed = dropped.filter((u) => phones[u].isClosed);
  t0 = Date.now();
  for (let i = 0; i < closed.length; i += 13) await Promise.all(closed.slice(i, i + 13).map(loginVia));
  note(`kill -9 ed0: ${closed.length} phones reconnected through haproxy in ${Date.now() - t0} ms`);
  assert.ok(closed.length >= N / 2 - 2, `phones on the killed edge: ${closed.length}`);
  noConflicts();
  await chatAll('after-edge-kill');

  // A new bridge joins and takes new sessions without restarting anything.
  bridges.br2 = await bridge('br2');
  await sleep(1500);
  const movers = USERS.slice(0, 12);
  for (const u of movers) { phones[u].send({ t: 'logout' }); await phones[u].expect({ t: 'bye' }); }
  await sleep(500);
  await Promise.all(movers.map(loginVia));
  const onBr2 = movers.filter((u) => workerOf(u).startsWith('br2-')).length;
  note(`bridge br2 added: ${onBr2} of ${movers.length} new sessions went to it`);
  assert.ok(onBr2 >= 1, `new sessions on br2: ${onBr2}`);

  // Drain br1 (SIGTERM): its users move to br2, phones untouched.
  const onBr1 = USERS.filter((u) => workerOf(u).startsWith('br1-'));
  t0 = Date.now();
  const r = await bridges.br1.stop({ signal: 'SIGTERM', timeout: 8000 });
  assert.equal(r.code, 0);
  await waitFor(() => onBr1.every((u) => workerOf(u).startsWith('br2-')), { timeout: 12000, interval: 100 });
  note(`drain br1: ${onBr1.length} sessions handed to br2 in ${Date.now() - t0} ms`);
  noConflicts();
  await chatAll('after-bridge-drain');

  // Bring an edge back on ed0's port, then drain ed1: its phones are told,
  // come back through haproxy to the other edge and resume.
  edges[0] = await edge('ed2', `127.0.0.1:${ed0Port}`);
  await waitFor(async () => (await ha.states()).edge1?.status === 'UP', { timeout: 15000, what: 'ed2 UP' });
  const r2 = await edges[1].stop({ signal: 'SIGTERM', timeout: 8000 });
  assert.equal(r2.code, 0);
  const told = USERS.filter((u) => phones[u].frames.some((f) => f.t === 'bye' && f.reason === 'shutdown'));
  await sleep(300);
  const gone = USERS.filter((u) => phones[u].isClosed);
  t0 = Date.now();
  for (let i = 0; i < gone.length; i += 13) await Promise.all(gone.slice(i, i + 13).map(loginVia));
  note(`drain ed1: ${told.length} phones told (bye shutdown), ${gone.length} back through haproxy in ${Date.now() - t0} ms`);
  assert.ok(told.length >= 1);
  noConflicts();
  await chatAll('after-edge-drain');
  console.log(report.join('\n'));
});
