// Restarts and outages: Redis restarted mid-session, XMPP server down, no
// bridge, clean shutdown on SIGTERM/SIGINT.
import assert from 'node:assert/strict';
import {
  itest, startBridge, startRedis, startProsody, startEdge, startXmppd, connectPhone,
  randomCredKey, sleep, uniqueId,
} from '../harness/index.mjs';

/** Phone sends msgs until one is acked (bounded); returns the ack's body. */
async function sendUntilAcked(phone, to, tag, { deadlineMs = 12000, every = 500 } = {}) {
  const deadline = Date.now() + deadlineMs;
  const answers = [];
  for (let i = 1; Date.now() < deadline; i++) {
    const id = uniqueId('r');
    const body = `${tag} ${i}`;
    phone.sendMsg(to, body, id);
    try {
      const f = await phone.next((x) => (x.t === 'ack' || x.t === 'error') && x.id === id,
        Math.max(100, Math.min(2000, deadline - Date.now())));
      answers.push(f);
      if (f.t === 'ack') return body;
    } catch (e) {
      if (phone.isClosed) throw new Error(`phone connection closed during the outage; answers: ${JSON.stringify(answers)}`);
      answers.push({ timeout: id });
    }
    await sleep(every);
  }
  throw new Error(`no ack within ${deadlineMs} ms; answers: ${JSON.stringify(answers)}`);
}

itest('Redis restart mid-session: both services reconnect, chat works both ways again', async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  assert.equal((await alice.msg('bob@localhost', 'before restart')).t, 'ack');
  await bob.nextMessage({ body: 'before restart' });
  await bob.send('alice@localhost', 'before restart too');
  await alice.nextMsg({ body: 'before restart too' });

  const port = b.redis.port;
  await b.redis.stop();
  await sleep(500);
  await b.redis.start();
  assert.equal(b.redis.port, port);
  const t0 = Date.now();

  // phone -> desktop: retry until acked, then the desktop must have it.
  const body = await sendUntilAcked(alice, 'bob@localhost', 'after restart');
  await bob.nextMessage({ body }, 5000);
  // desktop -> phone: retry until one arrives.
  let got = null;
  for (let i = 1; !got && Date.now() - t0 < 12000; i++) {
    await bob.send('alice@localhost', `desktop after restart ${i}`);
    got = await alice.nextMsg({ body: /^desktop after restart/ }, 1000).catch(() => null);
  }
  assert.ok(got, 'desktop -> phone works again within ~10 s of the restart');
  t.diagnostic(`recovered ${Date.now() - t0} ms after redis came back`);
  // The registry came back empty, but the worker was alive throughout: the
  // session stayed where it was (no re-login, no XMPP reconnect).
  assert.doesNotMatch(b.edge.stderr, / relogin /, 'a Redis restart moves no session');
  assert.equal(b.xmppd.stderr.match(/session_online jid=alice@/g).length, 1);
  // Steady state: no retries needed any more.
  assert.equal((await alice.msg('bob@localhost', 'steady')).t, 'ack');
  await bob.nextMessage({ body: 'steady' });
  await bob.send('alice@localhost', 'steady back');
  await alice.nextMsg({ body: 'steady back' });
  // New logins work too.
  const carol = await b.loginPhone('carol');
  assert.equal((await carol.msg('bob@localhost', 'carol after restart')).t, 'ack');
  await bob.nextMessage({ body: 'carol after restart' });
  assert.equal(b.edge.running && b.xmppd.running, true);
});

itest('XMPP server down: login gets unavailable (connection stays open), works once it is back', async (t, stack) => {
  const b = await startBridge(stack);
  await b.prosody.stop();
  const phone = await b.phone();
  const f = await phone.tryLogin(b.jid('alice'), b.pass('alice'), { timeout: 15000 });
  assert.equal(f.t, 'error');
  assert.equal(f.code, 'unavailable');
  assert.equal(phone.isClosed, false);
  await b.prosody.start();
  const bob = await b.desktop('bob');
  let w = null;
  for (let i = 0; i < 10 && !w; i++) {
    const r = await phone.tryLogin(b.jid('alice'), b.pass('alice'), { timeout: 15000 });
    if (r.t === 'welcome') w = r;
    else { assert.equal(r.code, 'unavailable'); await sleep(500); }
  }
  assert.ok(w, 'login works once the XMPP server is back');
  assert.equal((await phone.msg('bob@localhost', 'back')).t, 'ack');
  await bob.nextMessage({ body: 'back' });
});

itest('no imb-xmppd running: login gets unavailable', async (t, stack) => {
  const credKey = randomCredKey();
  const redis = await startRedis(stack);
  const prosody = await startProsody(stack);
  const edge = await startEdge(stack, { redisPort: redis.port, credKey });
  const phone = await connectPhone(stack, edge.port);
  const f = await phone.tryLogin('alice@localhost', 'secret', { timeout: 15000 });
  assert.equal(f.t, 'error');
  assert.equal(f.code, 'unavailable');
  assert.equal(phone.isClosed, false);
  // Start a bridge now: login eventually works on the same connection.
  await startXmppd(stack, { redisPort: redis.port, xmppPort: prosody.c2sPort, workers: 1, credKey });
  let w = null;
  for (let i = 0; i < 10 && !w; i++) {
    const r = await phone.tryLogin('alice@localhost', 'secret', { timeout: 15000 });
    if (r.t === 'welcome') w = r;
    else await sleep(500);
  }
  assert.ok(w, 'login works once imb-xmppd runs');
});

itest('SIGTERM/SIGINT: services exit cleanly, phones are told or closed', async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  const r1 = await b.edge.stop({ signal: 'SIGTERM', timeout: 5000 });
  assert.equal(r1.killed, false, 'imb-edge exits on SIGTERM within 5 s');
  assert.equal(r1.code, 0, `imb-edge exit code (signal ${r1.signal})`);
  await alice.waitClose(5000);
  for (const bye of alice.frames.filter((f) => f.t === 'bye')) assert.equal(bye.reason, 'shutdown');
  const r2 = await b.xmppd.stop({ signal: 'SIGINT', timeout: 5000 });
  assert.equal(r2.killed, false, 'imb-xmppd exits on SIGINT within 5 s');
  assert.equal(r2.code, 0, `imb-xmppd exit code (signal ${r2.signal})`);
});
