// Delivery guarantees (docs/ARCHITECTURE.md, "Guarantees"): sequence numbers,
// the inbox, resume after a drop (same edge or another), acks that trim,
// lost windows told explicitly, resent client ids never sent twice.
import assert from 'node:assert/strict';
import { itest, startBridge, startEdge, connectPhone, sleep, waitFor, userKey, httpGet, httpAddr, metricValue } from '../harness/index.mjs';
import { redisSubscriber } from '../harness/redis.mjs';

/** Wait for `n` msg frames on phone p; returns them in arrival order. */
async function msgs(p, n, timeout = 5000) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await p.next({ t: 'msg' }, timeout));
  return out;
}

itest('desktop -> phone: seq numbers, resume on another edge gets exactly the rest, in order', async (t, stack) => {
  const b = await startBridge(stack, { xmppdArgs: ['--resume-window', '30'] });
  const edge2 = await startEdge(stack, { redisPort: b.redis.port, credKey: b.credKey });
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  assert.equal(alice.sync.seq, 0);
  const epoch0 = alice.sync.epoch;

  for (let i = 1; i <= 3; i++) await bob.send('alice@localhost', `m${i}`);
  // The first numbered message is preceded by a sync frame with the epoch.
  const sync1 = await alice.next({ t: 'sync' });
  assert.match(sync1.epoch, /^[0-9a-f]{12}$/);
  const first = await msgs(alice, 3);
  assert.deepEqual(first.map((f) => f.body), ['m1', 'm2', 'm3']);
  assert.deepEqual(first.map((f) => f.seq), [1, 2, 3]);
  // Ack up to 2 only, then drop the socket without logging out.
  alice.send({ t: 'ack', seq: 2 });
  await sleep(200);
  alice.destroy();

  // Messages while the phone is away: the XMPP session stays (resume window).
  for (let i = 4; i <= 6; i++) await bob.send('alice@localhost', `m${i}`);
  await bob.sync();
  // Stored (m3 unacked + m4..m6) before the phone comes back, however slow
  // the machine: this test is about the replay, not a race with it.
  await waitFor(async () => Number(await b.redis.command('ZCARD', userKey('inbox', 'alice@localhost'))) >= 4,
    { timeout: 5000, what: 'm4..m6 stored' });
  // With no phone attached the bridge reads for the user: it never tells
  // the server it is inactive (Prosody then held messages back for seconds).
  assert.equal(b.xmppd.lines().some((l) => /csi jid=alice@localhost state=inactive/.test(l)), false,
    'no phone attached: the session stays active');

  // Resume through the other edge, saying where we are: seq 3 of that epoch.
  const again = await connectPhone(stack, edge2.port, 'alice-again');
  await again.login('alice@localhost', b.pass('alice'), { epoch: sync1.epoch, seq: 3 });
  const rest = again.pending().filter((f) => f.t === 'msg');
  assert.deepEqual(rest.map((f) => f.body), ['m4', 'm5', 'm6'], 'exactly the rest');
  assert.deepEqual(rest.map((f) => f.seq), [4, 5, 6]);
  assert.equal(again.sync.seq, 6);
  assert.equal(again.sync.epoch, sync1.epoch);
  assert.ok(!again.sync.missed, JSON.stringify(again.sync));
  // (The bridge's log line may reach us a moment after the phone's frames.)
  await waitFor(() => /session_reused/.test(b.xmppd.stderr), { timeout: 3000, what: 'the XMPP session was reused, not reopened' });

  // A phone with no position gets everything not acked (3..6), none missed.
  const fresh = await b.loginPhone('alice', 'alice-fresh');
  assert.deepEqual(fresh.pending().filter((f) => f.t === 'msg').map((f) => f.body), ['m3', 'm4', 'm5', 'm6']);
  assert.ok(!fresh.sync.missed, JSON.stringify(fresh.sync));
  // Live messages continue the sequence.
  await bob.send('alice@localhost', 'm7');
  const live = await again.next({ t: 'msg', body: 'm7' });
  assert.equal(live.seq, 7);
});

itest('the sync frame carries the epoch; a phone with a stale epoch is told reset', async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  await bob.send('alice@localhost', 'hello');
  const m = await alice.next({ t: 'msg' });
  assert.equal(m.seq, 1);
  const { epoch: liveEpoch } = await alice.next({ t: 'sync' });
  alice.send({ t: 'logout' });
  await alice.expect({ t: 'bye' });

  const p2 = await b.phone('alice-2');
  await p2.login('alice@localhost', b.pass('alice'));
  const epoch = p2.sync.epoch;
  assert.equal(epoch, liveEpoch);
  // Not acked, so still in the inbox: replayed.
  assert.deepEqual(p2.pending().filter((f) => f.t === 'msg').map((f) => f.body), ['hello']);
  p2.send({ t: 'ack', seq: 1 });
  p2.send({ t: 'logout' });
  await p2.expect({ t: 'bye' });

  // Acked: a phone that says so gets nothing again.
  const p3 = await b.phone('alice-3');
  await p3.login('alice@localhost', b.pass('alice'), { epoch, seq: 1 });
  assert.equal(p3.pending().filter((f) => f.t === 'msg').length, 0);
  assert.equal(p3.sync.seq, 1);
  assert.ok(!p3.sync.reset);
  p3.send({ t: 'logout' });
  await p3.expect({ t: 'bye' });

  // A stale epoch (the counter was lost and remade): reset, said explicitly.
  const p4 = await b.phone('alice-4');
  await p4.login('alice@localhost', b.pass('alice'), { epoch: 'deadbeef0000', seq: 40 });
  assert.equal(p4.sync.reset, true, JSON.stringify(p4.sync));
  assert.equal(p4.sync.epoch, epoch);
});

itest('a window trimmed by inbox_max is reported as missed', async (t, stack) => {
  const b = await startBridge(stack, { xmppdArgs: ['--inbox-max', '2', '--resume-window', '30'] });
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  alice.destroy(); // away, session kept
  await sleep(200);
  for (let i = 1; i <= 5; i++) await bob.send('alice@localhost', `n${i}`);
  await bob.sync();
  await sleep(300);
  const p = await b.phone('alice-back');
  // It had seen nothing (seq 0; no epoch yet): 1..3 were pushed out.
  await p.login('alice@localhost', b.pass('alice'), { seq: 0 });
  const got = p.pending().filter((f) => f.t === 'msg');
  assert.deepEqual(got.map((f) => f.body), ['n4', 'n5']);
  assert.equal(p.sync.missed, 3, JSON.stringify(p.sync));
  assert.equal(p.sync.seq, 5);
});

itest('phone -> desktop: a resent client id is acked again but delivered once', async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  assert.deepEqual(await alice.msg('bob@localhost', 'only once', { id: 'dup-1' }), { t: 'ack', id: 'dup-1' });
  await bob.nextMessage({ body: 'only once' });
  // The phone did not see the ack (say), resends on a new connection.
  alice.destroy();
  const again = await b.loginPhone('alice', 'alice-again');
  assert.deepEqual(await again.msg('bob@localhost', 'only once', { id: 'dup-1' }), { t: 'ack', id: 'dup-1' });
  // Twice in a burst, before any ack: still one copy.
  again.sendMsg('bob@localhost', 'burst', 'dup-2');
  again.sendMsg('bob@localhost', 'burst', 'dup-2');
  await again.next({ t: 'ack', id: 'dup-2' });
  await again.next({ t: 'ack', id: 'dup-2' });
  await bob.nextMessage({ body: 'burst' });
  await bob.sync();
  await sleep(300);
  await assert.rejects(bob.nextMessage({ body: 'only once' }, 500), 'no second copy of dup-1');
  await assert.rejects(bob.nextMessage({ body: 'burst' }, 500), 'no second copy of dup-2');
});

itest('an ack beyond what was delivered is refused', async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  alice.send({ t: 'ack', seq: 99 });
  const e = await alice.expect({ t: 'error' });
  assert.equal(e.code, 'bad_frame');
  assert.match(e.msg, /seq/);
});

// A phone's message is acked once the XMPP server answered a ping sent
// after it; a worker pings in rounds at most ping_delay_ms apart, one ping
// per session covering all it sent since. A message after a quiet spell is
// pinged at once; a burst waits for the next round, and only its acks wait.
itest('acks from the bridge: a lone message pinged at once, a burst proven by one ping in the next round (ping_delay_ms); the messages never wait', async (t, stack) => {
  const ROUND = 1000;
  const http = ['--http-listen', '127.0.0.1:0'];
  const b = await startBridge(stack, { xmppdArgs: ['--ping-delay-ms', String(ROUND), ...http] });
  const bridge = httpAddr(b.xmppd);
  const pings = async () => {
    const text = (await httpGet(bridge, '/metrics')).text;
    return [0, 1].reduce((a, w) => a + (metricValue(text, `imb_xmppd_pings_total{worker="${w}"}`) ?? 0), 0);
  };
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  // Quiet for longer than a round (the login's own traffic pings nothing).
  await sleep(ROUND + 200);
  const before = await pings();

  const t0 = Date.now();
  assert.deepEqual(await alice.msg('bob@localhost', 'lone', { id: 'lone-1' }), { t: 'ack', id: 'lone-1' });
  const lone = Date.now() - t0;
  await bob.nextMessage({ body: 'lone' });

  // A burst right after: the round that pinged 'lone' is not over, so the
  // messages go at once and their acks wait for the next round.
  const t1 = Date.now();
  const ids = [];
  for (let i = 1; i <= 10; i++) {
    ids.push(`burst-${i}`);
    alice.sendMsg('bob@localhost', `burst ${i}`, `burst-${i}`);
    await sleep(10);
  }
  for (let i = 1; i <= 10; i++) await bob.nextMessage({ body: `burst ${i}` });
  const delivered = Date.now() - t1;
  await alice.next({ t: 'ack', id: ids[0] }, ROUND + 5000);
  const firstAck = Date.now() - t0;
  for (const id of ids.slice(1)) await alice.next({ t: 'ack', id }, ROUND + 5000);
  const acked = Date.now() - t1;
  // The workers report to the supervisor once a second.
  let after;
  await waitFor(async () => (after = await pings()) >= before + 2, { timeout: 5000, what: 'pings counted' });
  await sleep(1200);
  after = await pings();
  t.diagnostic(`lone message acked after ${lone} ms; burst of 10 (sent ${t1 - t0} ms after it): at the desktop after ${delivered} ms, acked after ${acked} ms (the first ${firstAck} ms after the lone one); pings ${after - before}`);
  assert.ok(lone < ROUND, `the lone message did not wait for a round (${lone} ms)`);
  assert.ok(delivered < ROUND, `the burst reached the desktop without waiting for the round (${delivered} ms)`);
  // The lone message's ping went after t0: the next round is no earlier
  // than a round after it.
  assert.ok(firstAck >= ROUND - 50, `the burst's acks waited for the next round (${firstAck} ms after the lone message)`);
  assert.equal(after - before, 2, 'one ping for the lone message, one for the whole burst');
});

// Messages the server has but no ping has proven yet when the session
// closes (a logout right after them, within a round): the close pings
// first, so their ids are remembered as the server's, and the phone's
// resend after its next login is acked, not sent to the desktop again.
itest('phone -> desktop: messages not yet proven when the phone logs out are proven by the close; their resend after the next login is not sent again', async (t, stack) => {
  const ROUND = 1000;
  const b = await startBridge(stack, { xmppdArgs: ['--ping-delay-ms', String(ROUND)] });
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  // A ping round starts: what comes next waits up to ROUND for its ping.
  await alice.msg('bob@localhost', 'first', { id: 'lo-0' });
  await bob.nextMessage({ body: 'first' });
  for (let i = 1; i <= 3; i++) alice.sendMsg('bob@localhost', `unproven ${i}`, `lo-${i}`);
  for (let i = 1; i <= 3; i++) await bob.nextMessage({ body: `unproven ${i}` });
  const early = alice.pending().filter((f) => f.t === 'ack').length;
  alice.send({ t: 'logout' });
  await alice.expect({ t: 'bye' });
  await b.xmppd.waitForLines(/session_close jid=alice@localhost reason=logout/, { timeout: 5000 });
  await sleep(300);

  // The phone never saw acks for them (it logged out first): it resends.
  const again = await b.loginPhone('alice', 'alice-again');
  const acks = [];
  for (let i = 1; i <= 3; i++) acks.push(await again.msg('bob@localhost', `unproven ${i}`, { id: `lo-${i}` }));
  assert.deepEqual(acks, [1, 2, 3].map((i) => ({ t: 'ack', id: `lo-${i}` })));
  await bob.sync();
  await sleep(500);
  const twice = [];
  for (let i = 1; i <= 3; i++) {
    try { await bob.nextMessage({ body: `unproven ${i}` }, 300); twice.push(i); } catch { /* none: right */ }
  }
  t.diagnostic(`acks before the logout: ${early} of 3; resent after the next login: 3, acked 3, reached the desktop again: ${twice.length}`);
  assert.deepEqual(twice, [], 'no message reached the desktop twice');
});

// Routing (docs/ARCHITECTURE.md, "Routing"): an edge holds one Redis
// subscription whatever its number of users, a worker one whatever its
// number of sessions; the bridge publishes a user's envelopes on the
// channels of the edges that hold the user's phones, and stops once the
// last phone of the user leaves an edge.
itest('routing: one subscription per edge and per worker; a user on two edges gets everything on both; an edge the user left gets nothing more', async (t, stack) => {
  const b = await startBridge(stack, { xmppdArgs: ['--resume-window', '30'] });
  const [ch1] = await b.redis.command('PUBSUB', 'CHANNELS', 'imb:e:*');
  const edge2 = await startEdge(stack, { redisPort: b.redis.port, credKey: b.credKey });
  await waitFor(async () => (await b.redis.command('PUBSUB', 'CHANNELS', 'imb:e:*')).length === 2, { what: 'edge 2 subscribed' });
  const ch2 = (await b.redis.command('PUBSUB', 'CHANNELS', 'imb:e:*')).find((c) => c !== ch1);
  const tap = await redisSubscriber(stack, b.redis.port, 'imb:e:*');
  const bob = await b.desktop('bob');
  const users = ['alice', 'carol', 'dave'].filter((u) => b.pass(u));
  const phones = [];
  for (const u of users) phones.push(await b.loginPhone(u));
  const alice2 = await connectPhone(stack, edge2.port, 'alice-on-edge-2');
  await alice2.login('alice@localhost', b.pass('alice'));

  // Redis holds no subscription per user: one channel per edge, one per
  // worker (and each process's bus heartbeat).
  const all = await b.redis.command('PUBSUB', 'CHANNELS', 'imb:*');
  t.diagnostic(`${users.length + 1} phones on 2 edges: channels ${JSON.stringify(all.filter((c) => !c.startsWith('imb:bus:')))}`);
  assert.deepEqual(all.filter((c) => c.includes('@')), [], 'no channel names a user');
  assert.equal(all.filter((c) => c.startsWith('imb:e:')).length, 2);
  assert.equal(all.filter((c) => c.startsWith('imb:w:')).length, 2);

  // Both of alice's phones get every message, each edge once.
  for (let i = 1; i <= 3; i++) await bob.send('alice@localhost', `both ${i}`);
  const [a1, a2] = [phones[0], alice2];
  assert.deepEqual((await msgs(a1, 3)).map((f) => f.body), ['both 1', 'both 2', 'both 3']);
  assert.deepEqual((await msgs(alice2, 3)).map((f) => f.body), ['both 1', 'both 2', 'both 3']);
  const bodiesOn = (ch) => tap.messages.filter(([c]) => c === ch)
    .flatMap(([, p]) => [JSON.parse(p)].flat()).filter((e) => e.type === 'chat' && e.to === 'alice@localhost').map((e) => e.body);
  assert.deepEqual(bodiesOn(ch1), ['both 1', 'both 2', 'both 3']);
  assert.deepEqual(bodiesOn(ch2), ['both 1', 'both 2', 'both 3']);

  // Alice's phone on edge 2 goes away: edge 2 gets nothing more for her.
  alice2.destroy();
  await b.xmppd.waitForLines(/device_detach jid=alice@localhost .*devices=1/, { timeout: 5000 });
  await bob.send('alice@localhost', 'edge 1 only');
  assert.equal((await a1.next({ t: 'msg' })).body, 'edge 1 only');
  await sleep(300);
  assert.deepEqual(bodiesOn(ch1).slice(3), ['edge 1 only']);
  assert.deepEqual(bodiesOn(ch2), ['both 1', 'both 2', 'both 3'], 'nothing published to an edge the user left');
  t.diagnostic(`envelopes on edge 1: ${tap.messages.filter(([c]) => c === ch1).length}, on edge 2: ${tap.messages.filter(([c]) => c === ch2).length}`);
});

// What an edge sends to a worker that no longer holds the user (its session
// moved while the edge still named the old worker) is passed on to the
// worker the lease names: injected here as such a stale envelope on the
// other worker's channel.
itest('routing: a chat that reaches a worker not holding the user is passed on to the holder', async (t, stack) => {
  const b = await startBridge(stack, { workers: 2 });
  const logins = await redisSubscriber(stack, b.redis.port, 'imb:w:*');
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  const [, raw] = await logins.next((c, p) => p.includes('"login"') && p.includes('alice@localhost'));
  const { edge, dev } = JSON.parse(raw);
  const holder = String(await b.redis.command('GET', userKey('lease', 'alice@localhost'))).split(' ')[0];
  const workers = Object.keys(Object.fromEntries(
    (await b.redis.command('HGETALL', 'imb:workers')).flatMap((v, i, a) => (i % 2 ? [] : [[v, a[i + 1]]]))));
  const other = workers.find((w) => w !== holder);
  assert.ok(holder && other, `workers ${workers}, holder ${holder}`);
  const env = { v: 1, type: 'chat', ts: Date.now(), from: 'alice@localhost', to: 'bob@localhost', body: 'through the old worker', id: 'relay-1', edge, dev };
  assert.equal(await b.redis.command('PUBLISH', `imb:w:${other}`, JSON.stringify(env)), 2, 'the stale worker and this test');
  const m = await bob.nextMessage((x) => x.body === 'through the old worker');
  assert.equal(m.from.split('/')[0], 'alice@localhost');
  await alice.next({ t: 'ack', id: 'relay-1' });
  t.diagnostic(`holder ${holder}, stale worker ${other}: passed on once, delivered to bob, acked to the phone`);
});
