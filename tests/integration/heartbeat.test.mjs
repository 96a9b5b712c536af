// Heartbeats, idle timeout, login timeout.
import assert from 'node:assert/strict';
import { itest, startBridge, startEdge, connectPhone, sleep } from '../harness/index.mjs';

itest('hb is answered with hb (before and after login)', async (t, stack) => {
  const b = await startBridge(stack);
  const phone = await b.phone();
  phone.send({ t: 'hb' });
  assert.deepEqual(await phone.nextAny(), { t: 'hb' });
  await phone.login(b.jid('alice'), b.pass('alice'));
  phone.send({ t: 'hb' });
  assert.deepEqual(await phone.nextAny(), { t: 'hb' });
});

itest('--heartbeat 1: a silent client is closed (idle_timeout), a chatty one is not', async (t, stack) => {
  const b = await startBridge(stack, { edge: { heartbeat: 1 } });
  const bob = await b.desktop('bob');
  const silent = await b.loginPhone('alice', 'silent');
  const t0 = Date.now();
  assert.equal(silent.welcome.hb, 1);
  const chatty = await b.loginPhone('carol', 'chatty');
  const timer = setInterval(() => { if (!chatty.isClosed) chatty.send({ t: 'hb' }); }, 400);
  t.after(() => clearInterval(timer));

  const bye = await silent.expect({ t: 'bye' }, 5000);
  assert.equal(bye.reason, 'idle_timeout');
  await silent.waitClose(2000);
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= 1500 && elapsed <= 4000, `closed after ${elapsed} ms (expected ~2 s = 2*hb)`);

  await sleep(Math.max(0, 3000 - (Date.now() - t0)));
  assert.equal(chatty.isClosed, false, 'a client sending hb stays connected');
  const ack = await chatty.msg('bob@localhost', 'still here');
  assert.equal(ack.t, 'ack');
  await bob.nextMessage({ body: 'still here' });
  clearInterval(timer);
});

itest('--login-timeout 1: an unauthenticated client gets bye login_timeout', async (t, stack) => {
  const b = await startBridge(stack);
  const edge2 = await startEdge(stack, { redisPort: b.redis.port, credKey: b.credKey, loginTimeout: 1 });
  const phone = await connectPhone(stack, edge2.port, 'lazy');
  const t0 = Date.now();
  const bye = await phone.expect({ t: 'bye' }, 5000);
  assert.equal(bye.reason, 'login_timeout');
  await phone.waitClose(2000);
  const elapsed = Date.now() - t0;
  assert.ok(elapsed >= 700 && elapsed <= 3500, `closed after ${elapsed} ms (expected ~1 s)`);
  // A client that logs in in time is not affected.
  const ok = await connectPhone(stack, edge2.port, 'quick');
  await ok.login(b.jid('alice'), b.pass('alice'));
  await sleep(1500);
  assert.equal(ok.isClosed, false);
  ok.send({ t: 'hb' });
  assert.deepEqual(await ok.expect({ t: 'hb' }), { t: 'hb' });
});
