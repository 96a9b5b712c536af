// A bridge that stops hands its users over without a second session (issue
// of a CI run: failover.test.mjs's "SIGTERM of a bridge hands its users
// over" once found a phone closed with session_ended right after its user
// had moved to another bridge).
//
// The interleaving, made deterministic here:
//  1. The user's worker wA stops: it releases the lease and sends
//     session_end; the edge re-logs the user onto wB, the other worker of
//     the same bridge, still in the edge's worker list and not stopping yet.
//  2. wB opens session S1 (lease taken, TCP connected, SASL under way) and
//     only then handles its own SIGTERM: session_close_all releases S1's
//     lease and sends session_end, but session_close lets S1 finish its
//     login (close_deferred: libstrophe's SASL state) before the stream goes.
//  3. The edge re-logs the user onto the other bridge: S2 takes the free
//     lease, binds the same resource, goes online: relogin_ok.
//  4. S1's login, slower (here: its server's SASL answer held by a relay;
//     in CI: a loaded machine), ends now: it binds the resource, Prosody
//     (conflict_resolve kick_old) kicks S2, which was online: session_end
//     "conflict", and the edge closes the phone.
// It failed (the phone closed, "your XMPP session was replaced") while
// session_close_all (xmppd/session.c) handed a user over (lease release +
// session_end) at once, though that user's session, closed with
// close_deferred, could still bind its resource; without the relay (only a
// 5 ms SIGTERM skew) the same close happened in 1 run of 8. Now such a
// session hands its user over once its stream is gone.
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  itest, startBridge, startRedis, startProsody, startXmppd, startEdge, connectPhone,
  randomCredKey, waitFor, sleep,
} from '../harness/index.mjs';

/** A TCP relay to the XMPP server; once armed, the first connection whose
 *  client starts SASL has what the server says held until release(). */
async function holdingRelay(stack, targetPort) {
  const st = { armed: false, held: null };
  const server = net.createServer((c) => {
    const up = net.connect(targetPort, '127.0.0.1');
    const me = { holding: false, queue: [], released: false, after: '' };
    me.release = () => {
      me.holding = false;
      me.released = true;
      for (const d of me.queue) c.write(d);
      me.queue = [];
    };
    c.on('data', (d) => {
      const s = d.toString();
      if (st.armed && !st.held && s.includes('<auth')) {
        me.holding = true;
        st.held = me;
      }
      if (me.released) me.after += s;
      up.write(d);
    });
    up.on('data', (d) => { if (me.holding) me.queue.push(d); else c.write(d); });
    for (const [a, b] of [[c, up], [up, c]]) {
      a.on('end', () => b.end());
      a.on('error', () => b.destroy());
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  stack.onCleanup('holding-relay', () => server.close());
  return { port: server.address().port, state: st, arm() { st.armed = true; } };
}

itest('a worker stopped while it opens a session for a moving user must not kick the user\'s new session', { timeout: 60000 }, async (t, stack) => {
  const credKey = randomCredKey();
  const [redis, prosody] = await Promise.all([
    startRedis(stack),
    startProsody(stack, { users: [['u1', 'pw-u1']] }),
  ]);
  const relay = await holdingRelay(stack, prosody.c2sPort);
  const br0 = await startXmppd(stack, {
    redisPort: redis.port, xmppPort: relay.port, credKey, workers: 2,
    extraArgs: ['--bridge-id', 'br0'], name: 'imb-xmppd-br0',
  });
  const edge = await startEdge(stack, { redisPort: redis.port, credKey, extraArgs: ['--edge-id', 'ed0'] });
  await sleep(1200);
  const phone = await connectPhone(stack, edge.port, 'u1');
  await phone.login('u1@localhost', 'pw-u1');
  await waitFor(() => /login_ok dev=\S+ jid=u1@localhost worker=br0-/.test(edge.stderr), { timeout: 3000 });
  const wA = /login_ok dev=\S+ jid=u1@localhost worker=(\S+)/.exec(edge.stderr)[1];
  const pids = Object.fromEntries([...br0.stderr.matchAll(/worker_ready worker=(\S+) pid=(\d+)/g)]
    .map((m) => [m[1], Number(m[2])]));
  const wB = Object.keys(pids).find((w) => w !== wA);
  t.diagnostic(`u1 on ${wA}; the other worker ${wB}`);

  // The two workers of br0 get SIGTERM at different times (the supervisor,
  // held still, neither forwards signals nor restarts the worker that exits).
  br0.unclean = true;
  process.kill(br0.pid, 'SIGSTOP');
  stack.onCleanup('br0-supervisor', () => { try { process.kill(br0.pid, 'SIGKILL'); } catch {} });
  relay.arm();
  process.kill(pids[wA], 'SIGTERM');
  // 1-2: the edge moves u1 to wB, whose session S1 starts SASL (held).
  await waitFor(() => relay.state.held, { timeout: 5000, what: `${wB} started SASL for u1` });
  // The other bridge joins; the edge lists it within a second.
  const br1 = await startXmppd(stack, {
    redisPort: redis.port, xmppPort: prosody.c2sPort, credKey, workers: 2,
    extraArgs: ['--bridge-id', 'br1'], name: 'imb-xmppd-br1',
  });
  await sleep(1300);
  const t0 = Date.now();
  process.kill(pids[wB], 'SIGTERM');
  // 3: u1 re-opened on br1 (a fixed bridge may instead hold the user until
  // S1's stream is gone: then nothing comes, and S1 is let go after 400 ms,
  // within wB's 500 ms of grace).
  const moved = () => /relogin_ok dev=\S+ jid=u1@localhost worker=br1-/.test(edge.stderr);
  await waitFor(() => moved() || Date.now() - t0 > 400, { timeout: 3000, interval: 5 });
  t.diagnostic(`u1 ${moved() ? 'on br1' : 'not moved yet'} ${Date.now() - t0} ms after ${wB}'s SIGTERM`);
  // 4: S1's login ends.
  relay.state.held.release();
  await waitFor(() => moved() || phone.isClosed, { timeout: 5000, interval: 10, what: 'u1 on br1' });
  await sleep(800);
  const lines = [edge, br0, br1]
    .flatMap((p) => p.stderr.split('\n').filter((l) => /u1@|worker_stopping|relogin|login_worker_missing/.test(l)))
    .sort();
  for (const l of lines) t.diagnostic(l);
  t.diagnostic(`what ${wB}'s S1 sent after the release: ${relay.state.held.after.replace(/\s+/g, ' ').slice(0, 300)}`);
  assert.equal(phone.isClosed, false,
    `the phone was closed; last frames: ${phone.frames.slice(-3).map((f) => JSON.stringify(f)).join(' ')}`);
  assert.doesNotMatch(br1.stderr, /session_lost jid=u1@localhost reason=conflict/);
  assert.ok(moved(), 'u1 re-logged onto br1');
});


itest('a session_end from a worker the user has left is ignored; one from its worker moves the user', async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  const line = /login_ok dev=\S+ jid=alice@localhost worker=(\S+)/;
  await waitFor(() => line.test(b.edge.stderr), { timeout: 3000, what: 'the login line' });
  const worker = line.exec(b.edge.stderr)[1];
  const edgeId = /listening addr=\S+ edge=(\S+)/.exec(b.edge.stderr)[1];
  const end = (from) => b.redis.command('PUBLISH', `imb:e:${edgeId}`, JSON.stringify({
    v: 1, type: 'session_end', to: 'alice@localhost', reason: 'moved', worker: from,
  }));
  // Late news from a worker alice left (say, one that was frozen).
  assert.equal(Number(await end('elsewhere-w0.0')), 1);
  await waitFor(() => /session_end_stale jid=alice@localhost worker=elsewhere-w0.0/.test(b.edge.stderr),
    { timeout: 3000, what: 'session_end_stale' });
  assert.doesNotMatch(b.edge.stderr, /relogin jid=alice@localhost/, 'no re-login for a stale session_end');
  const bob = await b.desktop('bob');
  await bob.send('alice@localhost', 'still here');
  await alice.next({ t: 'msg', body: 'still here' });
  // From the worker holding her session: the edge re-opens it.
  await end(worker);
  await waitFor(() => /relogin jid=alice@localhost why=moved/.test(b.edge.stderr), { timeout: 3000, what: 'the re-login' });
  await waitFor(() => /relogin_ok dev=\S+ jid=alice@localhost/.test(b.edge.stderr), { timeout: 10000, what: 'relogin_ok' });
  assert.equal(alice.isClosed, false);
  await bob.send('alice@localhost', 'after the move');
  await alice.next({ t: 'msg', body: 'after the move' });
});
