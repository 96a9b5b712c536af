// Hostile clients on the same edge as a legitimate conversation: each attack
// gets an error frame or a close, and the legitimate phone and desktop keep
// chatting with nothing lost.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { itest, startBridge, connectPhone, sleep } from '../harness/index.mjs';

/** A raw socket to the edge; resolves {sock, data(), closed} helpers. */
function raw(port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let closed = false;
    const closedP = new Promise((r) => sock.on('close', () => { closed = true; r(); }));
    sock.on('data', (d) => { buf = Buffer.concat([buf, d]); });
    sock.on('error', () => {});
    sock.on('connect', () => resolve({
      sock, closedP, isClosed: () => closed,
      frames() {
        const out = [];
        let o = 0;
        while (buf.length - o >= 4) {
          const n = buf.readUInt32BE(o);
          if (buf.length - o - 4 < n) break;
          out.push(JSON.parse(buf.subarray(o + 4, o + 4 + n).toString()));
          o += 4 + n;
        }
        return out;
      },
    }));
    sock.on('error', reject);
  });
}

function frame(body) {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  const h = Buffer.alloc(4);
  h.writeUInt32BE(b.length);
  return Buffer.concat([h, b]);
}

async function within(ms, what, cond) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await sleep(50);
  }
  assert.fail(`${what}: not within ${ms} ms`);
}

itest('hostile clients get errors or closes; a legitimate conversation on the same edge loses nothing', { timeout: 90000 }, async (t, stack) => {
  const b = await startBridge(stack, {
    edge: { loginTimeout: 2 }, edgeArgs: ['--max-unauth-per-ip', '500', '--max-msg-rate', '1000'],
  });
  const port = b.edge.port;
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');

  // The legitimate conversation runs all along.
  let stop = false;
  const sentByAlice = [], sentByBob = [];
  const talk = (async () => {
    for (let i = 1; !stop && i <= 400; i++) {
      const ack = await alice.msg('bob@localhost', `a${i}`, { id: `a${i}`, timeout: 10000 });
      assert.equal(ack.t, 'ack', JSON.stringify(ack));
      sentByAlice.push(`a${i}`);
      await bob.send('alice@localhost', `b${i}`);
      sentByBob.push(`b${i}`);
      await sleep(20);
    }
  })();

  // 1. Garbage bytes.
  const g = await raw(port);
  g.sock.write(crypto.randomBytes(65536));
  await within(5000, 'garbage closed', () => g.isClosed());
  // 2. A 4 GB length prefix.
  const big = await raw(port);
  big.sock.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7b]));
  await within(5000, '4GB closed', () => big.isClosed());
  assert.equal(big.frames()[0].code, 'too_big');
  // 3. Invalid UTF-8, 4. deep nesting, 5. a huge string: error frames, socket stays.
  const bad = await raw(port);
  bad.sock.write(frame(Buffer.from([0x7b, 0x22, 0x74, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d])));
  bad.sock.write(frame('['.repeat(16000)));
  bad.sock.write(frame(`{"t":"login","v":1,"jid":"alice@localhost","pass":"${'p'.repeat(16000)}"}`));
  await within(5000, 'three error frames', () => bad.frames().length >= 3);
  assert.deepEqual(bad.frames().slice(0, 3).map((f) => f.code), ['bad_frame', 'bad_frame', 'bad_frame']);
  // 6. 10,000 tiny frames in one write: every one answered, in order.
  const tiny = await raw(port);
  tiny.sock.write(Buffer.concat(Array.from({ length: 10000 }, () => frame('{"t":"hb"}'))));
  await within(10000, '10,000 hb answered', () => tiny.frames().length >= 10000);
  assert.ok(tiny.frames().every((f) => f.t === 'hb'));
  // 7. Half-open: 50 sockets that never speak are closed at the login deadline.
  const idle = await Promise.all(Array.from({ length: 50 }, () => raw(port)));
  // 8. Slowloris: a login frame one byte every 300 ms never beats the deadline.
  const slow = await raw(port);
  const login = frame('{"t":"login","v":1,"jid":"carol@localhost","pass":"secret"}');
  let k = 0;
  const drip = setInterval(() => { if (k < login.length && !slow.isClosed()) slow.sock.write(login.subarray(k, ++k)); }, 300);
  stack.onCleanup('drip', () => clearInterval(drip));
  await within(6000, 'half-open sockets closed', () => idle.every((s) => s.isClosed()));
  await within(6000, 'slowloris closed', () => slow.isClosed());
  clearInterval(drip);
  assert.ok(!slow.frames().some((f) => f.t === 'welcome'));
  assert.equal(slow.frames().at(-1).reason, 'login_timeout');

  stop = true;
  await talk;
  // Nothing lost on the legitimate side, in order.
  const gotByBob = [];
  for (let i = 0; i < sentByAlice.length; i++) gotByBob.push((await bob.nextMessage(() => true, 10000)).body);
  assert.deepEqual(gotByBob, sentByAlice);
  const gotByAlice = [];
  for (let i = 0; i < sentByBob.length; i++) gotByAlice.push((await alice.next({ t: 'msg' }, 10000)).body);
  assert.deepEqual(gotByAlice, sentByBob);
  t.diagnostic(`legitimate messages during the attacks: ${sentByAlice.length} each way, all delivered in order`);
  assert.ok(sentByAlice.length >= 20);
  assert.ok(b.edge.running && b.xmppd.running);
});

itest('hostile feature requests: each gets an error, the limits hold, the session carries on', { timeout: 60000 }, async (t, stack) => {
  const b = await startBridge(stack, { edgeArgs: ['--max-msg-rate', '1000'] });
  const bob = await b.desktop('bob');
  const m = await b.loginPhone('alice');
  const bad = [
    [{ t: 'presence', show: 'sleeping' }, /show/],
    [{ t: 'typing', to: 'bob@localhost', state: 'composing', extra: 'x'.repeat(10) }, null], // unknown fields: ignored
    [{ t: 'join', id: 'j1', room: 'not a jid@@', nick: 'x' }, /room/],
    [{ t: 'join', id: 'j2', room: 'r@conference.localhost/withresource', nick: 'x' }, /bare JID/],
    [{ t: 'history', id: 'h1', max: 100000 }, /max/],
    [{ t: 'roster_set', id: 'r1', jid: 'bob@localhost', name: 'nul\u0000byte' }, /u0000/],
    [{ t: 'roster_set', id: 'r2', jid: 'bob@localhost', name: 'bell\u0007' }, /name/],
    [{ t: 'read', to: 'bob@localhost' }, /id/],
    [{ t: 'sub', to: 'bob@localhost', type: 'steal' }, /type/],
    [{ t: 'subject', id: 's1', room: 'nowhere@conference.localhost', subject: 'x' }, /join the room first/],
    [{ t: 'leave', id: 'l1', room: 'nowhere@conference.localhost' }, /not in that room/],
  ];
  for (const [frame, re] of bad) {
    m.send(frame);
    if (!re) continue;
    const e = await m.expect((f) => f.t === 'error');
    assert.match(e.msg, re, `${JSON.stringify(frame)} -> ${JSON.stringify(e)}`);
  }
  // The room limit: 100 rooms per user, the 101st refused.
  for (let i = 0; i < 100; i++) m.send({ t: 'join', id: `r${i}`, room: `room${i}@conference.localhost`, nick: 'A' });
  for (let i = 0; i < 100; i++) await m.expect({ t: 'ok', id: `r${i}` }, 20000);
  m.send({ t: 'join', id: 'r100', room: 'room100@conference.localhost', nick: 'A' });
  const full = await m.expect({ t: 'error', id: 'r100' });
  assert.equal(full.code, 'refused');
  // A burst of requests past the edge's rate limit is refused, not queued.
  const r = await b.loginPhone('carol');
  for (let i = 0; i < 3000; i++) r.send({ t: 'typing', to: 'bob@localhost', state: 'composing' });
  await r.expect({ t: 'error', code: 'rate_limited' }, 10000);
  // Through all of it the chat goes on.
  await m.msg('bob@localhost', 'still here', { id: 'ok1' });
  await bob.nextMessage({ body: 'still here' });
  await bob.send('alice@localhost', 'and you?');
  await m.nextMsg({ body: 'and you?' });
});
