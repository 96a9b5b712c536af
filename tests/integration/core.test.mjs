// Core behaviour of the bridge, end to end: a phone (PhoneClient, protocol v1)
// on imb-edge, imb-xmppd, Redis and Prosody, and a desktop XMPP user (xmpp.js).
import assert from 'node:assert/strict';
import { itest, startBridge, waitBridgeReady, bareJid, uniqueId } from '../harness/index.mjs';

itest('login ok (welcome), wrong password (auth_failed) then login again, logout', async (t, stack) => {
  const b = await startBridge(stack);
  const phone = await b.phone('alice-phone');
  const bad = await phone.tryLogin(b.jid('alice'), 'wrong-password');
  assert.equal(bad.t, 'error');
  assert.equal(bad.code, 'auth_failed');
  assert.equal(typeof bad.msg, 'string');
  assert.equal(phone.isClosed, false, 'connection stays open after auth_failed');

  const w = await phone.login(b.jid('alice'), b.pass('alice'), { dev: 'pixel7' });
  assert.equal(w.t, 'welcome');
  assert.equal(w.v, 1);
  assert.equal(w.jid, 'alice@localhost');
  assert.equal(w.hb, 30, 'default heartbeat');
  assert.equal(w.max, 16384, 'default max frame');

  // A second phone logs in without a device label.
  const p2 = await b.phone('bob-phone');
  const w2 = await p2.login(b.jid('bob'), b.pass('bob'));
  assert.equal(w2.jid, 'bob@localhost');

  phone.send({ t: 'logout' });
  assert.deepEqual(await phone.expect({ t: 'bye' }), { t: 'bye', reason: 'logout' });
  await phone.waitClose(5000);
});

itest('three wrong passwords: the server closes the connection', async (t, stack) => {
  const b = await startBridge(stack);
  const phone = await b.phone();
  for (let i = 1; i <= 2; i++) {
    const f = await phone.tryLogin(b.jid('alice'), `wrong${i}`);
    assert.equal(f.code, 'auth_failed', `failure ${i}`);
  }
  phone.send({ t: 'login', v: 1, jid: b.jid('alice'), pass: 'wrong3' });
  const bye = await phone.expect({ t: 'bye' }, 10000);
  assert.equal(bye.reason, 'too_many_failures');
  await phone.waitClose(5000);
  // The third failure may or may not also get an auth_failed error first.
  assert.ok(phone.pending().every((f) => f.t === 'error' && f.code === 'auth_failed'),
    JSON.stringify(phone.pending()));
  assert.ok(!phone.frames.some((f) => f.t === 'welcome'));
});

itest('phone -> desktop: ack with the same id, desktop gets the body', async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  const ack = await alice.msg('bob@localhost', 'hello from the phone', { id: 'c1' });
  assert.deepEqual(ack, { t: 'ack', id: 'c1' });
  const m = await bob.nextMessage({ body: 'hello from the phone' }, 5000);
  assert.equal(bareJid(m.from), 'alice@localhost');
  assert.equal(bareJid(m.to), 'bob@localhost');

  // Unicode, JSON escapes and a few messages in a row keep their order.
  const bodies = ['naïve ✓ 日本語 🙂', 'quote " backslash \\ newline\nend', '<xml> & stuff </xml>'];
  const ids = bodies.map((body) => alice.sendMsg('bob@localhost', body, uniqueId('u')));
  for (const id of ids) assert.deepEqual(await alice.expect({ t: 'ack', id }), { t: 'ack', id });
  for (const body of bodies) {
    const got = await bob.nextMessage((x) => x.body != null, 5000);
    assert.equal(got.body, body);
  }
});

itest('desktop -> phone: msg with from, body, id, ts', async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');
  const before = Date.now();
  const sentId = await bob.send('alice@localhost', 'hi phone');
  const m = await alice.nextMsg({ body: 'hi phone' }, 5000);
  assert.equal(m.t, 'msg');
  assert.equal(m.from, bob.jid, 'from is the desktop full JID');
  assert.match(m.from, /^bob@localhost\//);
  assert.equal(m.id, sentId, 'the XMPP id is passed on');
  assert.equal(typeof m.ts, 'number');
  assert.ok(Math.abs(m.ts - before) < 60000, `ts ${m.ts} near now ${before}`);

  // Also to the full JID of the phone's XMPP session? We only know the bare
  // JID; a reply by the phone goes back to the desktop.
  const ack = await alice.msg(bareJid(m.from), 'reply');
  assert.equal(ack.t, 'ack');
  assert.equal((await bob.nextMessage({ body: 'reply' })).body, 'reply');
});

itest('offline: desktop writes to carol before her phone ever connected; she gets it at login', async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  const bodies = ['offline 1', 'offline 2', 'offline 3'];
  for (const body of bodies) await bob.send('carol@localhost', body);
  await bob.sync(); // Prosody has stored them
  const carol = await b.loginPhone('carol');
  for (const body of bodies) {
    const m = await carol.nextMsg({}, 10000);
    assert.equal(m.body, body, 'offline messages arrive in order');
    assert.equal(bareJid(m.from), 'bob@localhost');
  }
  // And live chat works afterwards.
  await bob.send('carol@localhost', 'now live');
  assert.equal((await carol.nextMsg({ body: 'now live' })).body, 'now live');
});

itest('several phones at once, each gets only its own messages', async (t, stack) => {
  const b = await startBridge(stack, { workers: 2 });
  const bob = await b.desktop('bob');
  const users = ['alice', 'carol', 'dave'];
  const phones = await Promise.all(users.map((u) => b.loginPhone(u)));
  await Promise.all(phones.map(async (p, i) => {
    const ack = await p.msg('bob@localhost', `from ${users[i]}`);
    assert.equal(ack.t, 'ack', JSON.stringify(ack));
  }));
  for (const u of users) {
    const m = await bob.nextMessage((x) => x.body === `from ${u}`);
    assert.equal(bareJid(m.from), `${u}@localhost`);
  }
  for (const u of users) await bob.send(`${u}@localhost`, `to ${u}`);
  for (let i = 0; i < users.length; i++) {
    const m = await phones[i].nextMsg({}, 5000);
    assert.equal(m.body, `to ${users[i]}`);
  }
  for (const p of phones) assert.ok(await p.noFrame({ t: 'msg' }, 200), 'no stray messages');
});

itest('cold start: logins are routed within 3 s of both services reporting ready', async (t, stack) => {
  const b = await startBridge(stack, { probe: false });
  const ms = await waitBridgeReady(b.edge.port, { timeout: 3000 });
  t.diagnostic(`first login routed after ${ms} ms`);
  const alice = await b.loginPhone('alice');
  assert.equal(alice.welcome.jid, 'alice@localhost');
});
