// Scale-out and failover on loopback: two bridges (xmppd) and two edges on
// one Redis and one Prosody. A bridge killed with -9, a bridge stopped with
// SIGTERM, an edge killed, a bridge added: sessions come back on survivors
// without the phones logging in again, no user ever has two XMPP sessions
// (the fixed resource would make the server kick one: "conflict"), and chat
// works after.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import {
  itest, killHard, startRedis, startProsody, startXmppd, startEdge, connectPhone, startDesktop,
  randomCredKey, waitFor, sleep, redisCommand, PLAIN_RUN_ONLY,
} from '../harness/index.mjs';

const USERS = Array.from({ length: 8 }, (_, i) => [`u${i + 1}`, `pw-u${i + 1}`]);


async function topology(stack, { bridges = 2, edges = 2 } = {}) {
  const credKey = randomCredKey();
  const [redis, prosody] = await Promise.all([
    startRedis(stack),
    startProsody(stack, { users: [...USERS, ['desk', 'pw-desk']] }),
  ]);
  const xmppds = [];
  for (let i = 0; i < bridges; i++) {
    xmppds.push(await startXmppd(stack, {
      redisPort: redis.port, xmppPort: prosody.c2sPort, credKey, workers: 2,
      extraArgs: ['--bridge-id', `br${i}`], name: `imb-xmppd-br${i}`,
    }));
  }
  const edgeProcs = [];
  for (let i = 0; i < edges; i++) {
    edgeProcs.push(await startEdge(stack, { redisPort: redis.port, credKey, extraArgs: ['--edge-id', `ed${i}`] }));
  }
  await sleep(1200); // edges read the worker list every second
  const desk = await startDesktop(stack, { port: prosody.c2sPort, user: 'desk', pass: 'pw-desk', domain: 'localhost' });
  return { credKey, redis, prosody, xmppds, edges: edgeProcs, desk };
}

/** Log in every user; phone i on edge i % edges. Returns {user: phone}. */
async function loginAll(stack, topo) {
  const phones = {};
  await Promise.all(USERS.map(async ([u, pw], i) => {
    const p = await connectPhone(stack, topo.edges[i % topo.edges.length].port, u);
    await p.login(`${u}@localhost`, pw);
    phones[u] = p;
  }));
  // The edges log login_ok before the welcome; the pipe may lag a little.
  await waitFor(() => USERS.every(([u]) => workerOf(topo, u)), { timeout: 3000 });
  return phones;
}

/** Which worker holds each user's session, from the edges' login lines. */
function workerOf(topo, user) {
  const re = new RegExp(`(?:login_ok|relogin_ok) dev=\\S+ jid=${user}@localhost worker=(\\S+)`, 'g');
  let last = null;
  for (const e of topo.edges) for (const m of e.stderr.matchAll(re)) last = m[1];
  return last;
}

async function chatBothWays(topo, phones, users, tag) {
  for (const u of users) {
    const ack = await phones[u].msg('desk@localhost', `${tag} from ${u}`, { timeout: 10000 });
    assert.equal(ack.t, 'ack', `${u}: ${JSON.stringify(ack)}`);
    await topo.desk.nextMessage({ body: `${tag} from ${u}` }, 5000);
    await topo.desk.send(`${u}@localhost`, `${tag} to ${u}`);
    await phones[u].next({ t: 'msg', body: `${tag} to ${u}` }, 10000);
  }
}

function noConflicts(topo) {
  for (const x of topo.xmppds) assert.doesNotMatch(x.stderr, /reason=conflict/, 'a user had two XMPP sessions');
}

/** Every phone of users is still connected; a closed one is named with what
 *  it heard last and what the services logged about its user, so that a
 *  failure in a CI log says why. */
function stillConnected(topo, phones, users = Object.keys(phones)) {
  const closed = users.filter((u) => phones[u].isClosed);
  const why = closed.map((u) => {
    const frames = phones[u].frames.slice(-3).map((f) => JSON.stringify(f)).join(' ');
    const lines = [...topo.edges, ...topo.xmppds]
      .flatMap((p) => p.stderr.split('\n').filter((l) => l.includes(`${u}@`) || l.includes('CRIT') || l.includes('ERROR')))
      .slice(-8).join(' | ');
    return `${u} closed at ${phones[u].closeInfo?.at}: last frames ${frames}; logs: ${lines}`;
  });
  assert.deepEqual(closed, [], `phones closed: ${why.join(' ;; ')}`);
}

itest('SIGTERM of a bridge hands its users over; a new bridge takes logins', { timeout: 90000 }, async (t, stack) => {
  const topo = await topology(stack);
  const phones = await loginAll(stack, topo);
  const onBr0 = USERS.map(([u]) => u).filter((u) => workerOf(topo, u)?.startsWith('br0-'));
  const t0 = Date.now();
  const r = await topo.xmppds[0].stop({ signal: 'SIGTERM', timeout: 5000 });
  assert.equal(r.code, 0, 'graceful exit');
  await waitFor(() => onBr0.every((u) => workerOf(topo, u)?.startsWith('br1-')), { timeout: 10000, interval: 100 });
  t.diagnostic(`${onBr0.length} sessions handed over in ${Date.now() - t0} ms`);
  stillConnected(topo, phones);
  await chatBothWays(topo, phones, USERS.map(([u]) => u), 'after-drain');

  // A new bridge joins without restarting anything and gets new sessions.
  const br2 = await startXmppd(stack, {
    redisPort: topo.redis.port, xmppPort: topo.prosody.c2sPort, credKey: topo.credKey, workers: 2,
    extraArgs: ['--bridge-id', 'br2'], name: 'imb-xmppd-br2',
  });
  assert.ok(br2.running);
  await sleep(1500);
  for (const [u] of USERS) {
    phones[u].send({ t: 'logout' });
    await phones[u].expect({ t: 'bye' });
  }
  await sleep(500);
  const again = await loginAll(stack, topo);
  const onBr2 = USERS.map(([u]) => u).filter((u) => workerOf(topo, u)?.startsWith('br2-'));
  t.diagnostic(`after br2 joined: ${onBr2.length} of ${USERS.length} new sessions on it`);
  assert.ok(onBr2.length > 0, 'the new bridge takes logins');
  await chatBothWays(topo, again, USERS.map(([u]) => u).slice(0, 3), 'after-join');
  noConflicts(topo);
});

itest('kill -9 of an edge: phones reconnect to the other edge and resume the same session', { timeout: 90000 }, async (t, stack) => {
  const topo = await topology(stack);
  const phones = await loginAll(stack, topo);
  const onEd0 = USERS.map(([u], i) => (i % 2 === 0 ? u : null)).filter(Boolean);
  const before = onEd0.map((u) => workerOf(topo, u));
  await killHard(topo.edges[0]);
  for (const u of onEd0) await phones[u].waitClose(5000);
  // The load balancer sends them to the surviving edge.
  const t0 = Date.now();
  for (const u of onEd0) {
    const p = await connectPhone(stack, topo.edges[1].port, `${u}-back`);
    await p.login(`${u}@localhost`, `pw-${u}`);
    phones[u] = p;
  }
  t.diagnostic(`${onEd0.length} phones back through the other edge in ${Date.now() - t0} ms`);
  // Same worker, the session was reused (resume window), not reopened.
  assert.deepEqual(onEd0.map((u) => workerOf(topo, u)), before);
  // (The bridge's log line may reach us a moment after the phone's welcome.)
  const reused = () => topo.xmppds.map((x) => (x.stderr.match(/session_reused/g) || []).length).reduce((a, b) => a + b, 0);
  await waitFor(() => reused() >= onEd0.length, { timeout: 3000 }).catch(() => {});
  assert.ok(reused() >= onEd0.length, `sessions reused: ${reused()}`);
  await chatBothWays(topo, phones, onEd0, 'after-edge-kill');
  noConflicts(topo);
});

itest('messages a dying worker had taken from the server are recovered from the archive', { timeout: 90000 }, async (t, stack) => {
  const topo = await topology(stack);
  const p = await connectPhone(stack, topo.edges[0].port, 'u1');
  await p.login('u1@localhost', 'pw-u1');
  await topo.desk.send('u1@localhost', 'before');
  const m1 = await p.next({ t: 'msg', body: 'before' });
  p.send({ t: 'ack', seq: m1.seq });
  // Freeze the worker holding u1's session, let the server hand it a
  // message, then kill it: the message dies in its socket buffer.
  const wid = workerOf(topo, 'u1');
  const all = topo.xmppds.map((x) => x.stderr).join('\n');
  const pid = Number(new RegExp(`worker_ready worker=${wid.replace('.', '\\.')} pid=(\\d+)`).exec(all)[1]);
  process.kill(pid, 'SIGSTOP');
  await topo.desk.send('u1@localhost', 'lost in a dead socket?');
  await topo.desk.sync();
  await sleep(300);
  process.kill(pid, 'SIGKILL');
  const m2 = await p.next({ t: 'msg', body: 'lost in a dead socket?' }, 20000);
  assert.equal(m2.seq, m1.seq + 1);
  await waitFor(() => /mam_catch_up jid=u1@localhost/.test(topo.xmppds.map((x) => x.stderr).join('\n')), { timeout: 3000 });
  await sleep(500);
  assert.equal(p.pending().filter((f) => f.t === 'msg').length, 0, 'no duplicate');
  assert.equal(p.isClosed, false);
});

/** How many times each of needles occurs in the writable memory of pid
 * (heap, anonymous mappings, stacks), read through /proc/<pid>/mem; and
 * the bytes read. */
function memoryHolds(pid, needles) {
  const counts = Object.fromEntries(needles.map((n) => [n, 0]));
  let bytes = 0;
  const fd = fs.openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const line of fs.readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      const m = /^([0-9a-f]+)-([0-9a-f]+) rw/.exec(line);
      if (!m || /\[(vvar|vsyscall)\]/.test(line)) continue;
      const start = BigInt(`0x${m[1]}`), len = Number(BigInt(`0x${m[2]}`) - start);
      const buf = Buffer.alloc(len);
      let got = 0;
      try { got = fs.readSync(fd, buf, 0, len, start); } catch { continue; }
      bytes += got;
      const region = buf.subarray(0, got);
      for (const n of needles) {
        for (let i = region.indexOf(n); i >= 0; i = region.indexOf(n, i + 1)) counts[n]++;
      }
    }
  } finally { fs.closeSync(fd); }
  return { counts, bytes };
}

// (The first kill -9 here is the basic failover promise; the rest is what
// makes it possible without the edge keeping passwords: common/resume.h.)
itest('kill -9 of a bridge: its users come back on the survivor without logging in again, by resume token; the edges hold no password; a token whose sealed password is gone makes the phone log in again', { timeout: 120000 }, async (t, stack) => {
  const topo = await topology(stack);
  const phones = await loginAll(stack, topo);
  // A wrong password typed is a secret too.
  const wrong = 'Wrong-Pw-7731-zq';
  const bad = await connectPhone(stack, topo.edges[0].port, 'bad');
  assert.equal((await bad.tryLogin('u1@localhost', wrong)).code, 'auth_failed');
  const secrets = [...USERS.map(([, pw]) => pw), wrong];
  const scan = (when) => {
    if (PLAIN_RUN_ONLY) return; // (ASan keeps what jansson frees, unwiped)
    for (const e of topo.edges) {
      const { counts, bytes } = memoryHolds(e.pid, secrets);
      const found = Object.entries(counts).filter(([, n]) => n > 0);
      t.diagnostic(`${when}: edge ${e.pid}: ${(bytes / 1048576).toFixed(1)} MiB read, ` +
        `${secrets.length} passwords looked for, ${found.length} found ${JSON.stringify(Object.fromEntries(found))}`);
      assert.deepEqual(found, [], `the edge's memory holds passwords (${when})`);
    }
  };
  scan('logged in'); // (before any traffic could overwrite what was freed)
  await chatBothWays(topo, phones, USERS.map(([u]) => u), 'before');
  scan('after a chat');

  // Redis holds the sealed passwords, one per user, none readable.
  const keys = String(await redisCommand(topo.redis.port, ['KEYS', 'imb:resume:*'])).split(',').filter(Boolean);
  assert.equal(keys.length, USERS.length, `one sealed password per user: ${keys}`);
  for (const k of keys) {
    const v = String(await redisCommand(topo.redis.port, ['GET', k]));
    for (const pw of secrets) assert.ok(!v.includes(pw) && !v.includes(Buffer.from(pw).toString('base64')));
  }

  // kill -9 of a bridge: its users' sessions open on the other with their
  // tokens; the phones notice nothing.
  const onBr0 = USERS.map(([u]) => u).filter((u) => workerOf(topo, u)?.startsWith('br0-'));
  const onBr1 = USERS.map(([u]) => u).filter((u) => workerOf(topo, u)?.startsWith('br1-'));
  t.diagnostic(`sessions: br0=${onBr0.length} br1=${onBr1.length}`);
  assert.ok(onBr0.length > 0 && onBr1.length > 0, 'logins spread over both bridges');
  const t0 = Date.now();
  await killHard(topo.xmppds[0]);
  // Lease time (10 s default) + 2 s is the promise.
  await waitFor(() => onBr0.every((u) => workerOf(topo, u)?.startsWith('br1-')), { timeout: 12000, interval: 100 });
  t.diagnostic(`${onBr0.length} sessions re-established on br1 in ${Date.now() - t0} ms`);
  stillConnected(topo, phones);
  await chatBothWays(topo, phones, USERS.map(([u]) => u), 'moved');
  scan('after a move');
  const br1 = topo.xmppds[1].stderr;
  assert.equal((br1.match(/ resume_lost /g) ?? []).length, 0);

  // A third bridge; then the sealed passwords of half the users go (Redis
  // restarted without them, say) and br1 is killed: those users' phones
  // are told to log in again (error unavailable, bye session_ended), the
  // others move without noticing; all chat after.
  topo.xmppds.push(await startXmppd(stack, {
    redisPort: topo.redis.port, xmppPort: topo.prosody.c2sPort, credKey: topo.credKey, workers: 2,
    extraArgs: ['--bridge-id', 'br2'], name: 'imb-xmppd-br2',
  }));
  await sleep(1200);
  const all = USERS.map(([u]) => u);
  const gone = all.filter((_, i) => i % 2 === 0), kept = all.filter((_, i) => i % 2 === 1);
  for (const u of gone) await redisCommand(topo.redis.port, ['DEL', `imb:resume:{${u}@localhost}`]);
  await killHard(topo.xmppds[1]);
  for (const u of gone) {
    await phones[u].next({ t: 'bye', reason: 'session_ended' }, 15000);
    assert.ok(phones[u].frames.some((f) => f.t === 'error' && f.code === 'unavailable'), `${u} heard why`);
  }
  await waitFor(() => kept.every((u) => workerOf(topo, u)?.startsWith('br2-')), { timeout: 12000, interval: 100 });
  stillConnected(topo, phones, kept);
  const pw = new Map(USERS);
  for (const u of gone) {
    phones[u] = await connectPhone(stack, topo.edges[0].port, `${u}-again`);
    await phones[u].login(`${u}@localhost`, pw.get(u));
  }
  await chatBothWays(topo, phones, all, 'after');
  const lost = (topo.xmppds[2].stderr.match(/ resume_lost /g) ?? []).length;
  t.diagnostic(`resume tokens: ${onBr0.length} sessions moved with them; then ${kept.length} moved, ` +
    `${gone.length} found their sealed password gone (${lost} resume_lost) and logged in again`);
  assert.ok(lost >= gone.length);
  scan('at the end');
  noConflicts(topo);
});

/** A TCP relay to the XMPP server that, once the client starts SASL
 * (`<auth`), holds what the server says until release(): a login caught
 * half way. clientAfter: what the client sent after the release. */
async function saslHoldingRelay(stack, targetPort) {
  const st = { sawAuth: false, holding: false, held: [], released: false, clientAfter: '' };
  const server = net.createServer((c) => {
    const up = net.connect(targetPort, '127.0.0.1');
    c.on('data', (d) => {
      const s = d.toString();
      if (!st.sawAuth && s.includes('<auth')) st.sawAuth = st.holding = true;
      if (st.released) st.clientAfter += s;
      up.write(d);
    });
    up.on('data', (d) => { if (st.holding) st.held.push([c, d]); else c.write(d); });
    for (const [a, b] of [[c, up], [up, c]]) {
      a.on('end', () => b.end());
      a.on('error', () => b.destroy());
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  stack.onCleanup('sasl-relay', () => server.close());
  return {
    port: server.address().port,
    state: st,
    release() {
      st.holding = false;
      st.released = true;
      for (const [c, d] of st.held) c.write(d);
      st.held = [];
    },
  };
}

itest('SIGTERM of a bridge while a session logs in: the login ends before its stream goes, and the bridge exits clean', { timeout: 60000 }, async (t, stack) => {
  // libstrophe frees its SASL state only when the server answers the
  // exchange: a stream torn down half way leaked it (an ASan run of the
  // cluster test caught 58 bytes at a bridge's exit).
  const credKey = randomCredKey();
  const [redis, prosody] = await Promise.all([startRedis(stack), startProsody(stack, { users: [['u1', 'pw-u1']] })]);
  const relay = await saslHoldingRelay(stack, prosody.c2sPort);
  const xmppd = await startXmppd(stack, { redisPort: redis.port, xmppPort: relay.port, credKey, workers: 1 });
  const edge = await startEdge(stack, { redisPort: redis.port, credKey });
  await sleep(1200);
  const phone = await connectPhone(stack, edge.port, 'u1');
  phone.send({ t: 'login', v: 1, jid: 'u1@localhost', pass: 'pw-u1' });
  await waitFor(() => relay.state.sawAuth, { timeout: 10000, what: 'the bridge started SASL' });
  const stopped = xmppd.stop({ signal: 'SIGTERM', timeout: 5000 });
  await sleep(150);
  relay.release();
  const r = await stopped;
  assert.equal(r.code, 0, 'clean exit');
  assert.match(xmppd.stderr, /session_close jid=u1@localhost reason=bridge_shutdown state=connecting/);
  t.diagnostic(`after the server's held answer the bridge sent: ${relay.state.clientAfter.replace(/\s+/g, ' ').slice(0, 200)}`);
  assert.match(relay.state.clientAfter, /<response/, 'the bridge finished SASL before closing');
  assert.match(relay.state.clientAfter, /xmpp-bind/, 'and the login (resource binding)');
});
