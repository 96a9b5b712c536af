// Malformed input on the phone socket: every bad frame gets the right error
// code, a too-big length prefix gets too_big + close, and meanwhile another
// phone keeps chatting with the desktop.
import assert from 'node:assert/strict';
import { itest, startBridge, encodeFrame, sleep, startCanary } from '../harness/index.mjs';

/** Send something (fn) and return the next frame, asserting it is an error with `code`. */
async function expectError(phone, code, fn, what) {
  fn();
  const f = await phone.nextAny(5000);
  assert.equal(f.t, 'error', `${what}: expected an error frame, got ${JSON.stringify(f)}`);
  assert.equal(f.code, code, `${what}: ${JSON.stringify(f)}`);
  assert.equal(typeof f.msg, 'string', `${what}: error has a msg`);
  assert.equal(phone.isClosed, false, `${what}: connection still open`);
  return f;
}

async function chatBothWays(alice, bob, tag) {
  const ack = await alice.msg('bob@localhost', `phone ${tag}`);
  assert.equal(ack.t, 'ack', `${tag}: ${JSON.stringify(ack)}`);
  await bob.nextMessage({ body: `phone ${tag}` });
  await bob.send('alice@localhost', `desktop ${tag}`);
  await alice.nextMsg({ body: `desktop ${tag}` });
}

itest('malformed frames get error frames; another phone keeps chatting', async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  await chatBothWays(alice, bob, 'before');

  const x = await b.phone('abuser');
  // Before login.
  await expectError(x, 'bad_frame', () => x.sendFrame('{not json'), 'garbage JSON');
  await expectError(x, 'bad_frame', () => x.sendFrame('[1,2,3]'), 'JSON array');
  await expectError(x, 'bad_frame', () => x.sendFrame('"just a string"'), 'JSON string');
  await expectError(x, 'bad_frame', () => x.sendFrame('42'), 'JSON number');
  await expectError(x, 'bad_frame', () => x.sendFrame('{"x":1}'), 'object without t');
  await expectError(x, 'bad_frame', () => x.sendFrame('{"t":5}'), 't not a string');
  await expectError(x, 'bad_frame', () => x.sendFrame(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])), 'invalid UTF-8');
  await expectError(x, 'not_logged_in',
    () => x.send({ t: 'msg', id: 'm0', to: 'bob@localhost', body: 'sneaky' }), 'msg before login');
  await expectError(x, 'bad_frame', () => x.send({ t: 'login', v: 1, jid: b.jid('carol') }), 'login without pass');
  x.send({ t: 'hb' });
  assert.deepEqual(await x.nextAny(), { t: 'hb' }, 'hb is allowed before login');

  await x.login(b.jid('carol'), b.pass('carol'));
  // After login.
  await expectError(x, 'unknown_type', () => x.send({ t: 'frobnicate' }), 'unknown type');
  let f = await expectError(x, 'bad_frame', () => x.send({ t: 'msg', id: 'm1', body: 'no to' }), 'missing to');
  assert.match(f.msg, /\bto\b/, 'msg names the field');
  f = await expectError(x, 'bad_frame', () => x.send({ t: 'msg', id: 'm2', to: 'bob@localhost' }), 'missing body');
  assert.match(f.msg, /body/);
  f = await expectError(x, 'bad_frame', () => x.send({ t: 'msg', to: 'bob@localhost', body: 'no id' }), 'missing id');
  assert.match(f.msg, /\bid\b/);
  await expectError(x, 'bad_frame',
    () => x.send({ t: 'msg', id: 'bad id!', to: 'bob@localhost', body: 'x' }), 'invalid id characters');
  await expectError(x, 'bad_frame',
    () => x.send({ t: 'msg', id: 'i'.repeat(65), to: 'bob@localhost', body: 'x' }), 'id too long');
  await expectError(x, 'bad_frame',
    () => x.send({ t: 'msg', id: 'm3', to: 'bob@localhost', body: 42 }), 'body not a string');
  await expectError(x, 'already_logged_in',
    () => x.send({ t: 'login', v: 1, jid: b.jid('carol'), pass: b.pass('carol') }), 'second login');
  // The abused connection still works.
  const ack = await x.msg('bob@localhost', 'carol survived');
  assert.equal(ack.t, 'ack', JSON.stringify(ack));
  await bob.nextMessage({ body: 'carol survived' });

  // A length prefix above the limit: too_big, then close.
  x.sendRaw(Buffer.concat([Buffer.from([0, 0, 0x40, 0x01]), Buffer.from('{"t":"hb"')])); // 16385
  const tb = await x.expect({ t: 'error' }, 5000);
  assert.equal(tb.code, 'too_big');
  await x.waitClose(5000);

  // Other abusers on fresh connections.
  const v2 = await b.phone('bad-version');
  v2.send({ t: 'login', v: 2, jid: b.jid('dave'), pass: b.pass('dave') });
  assert.equal((await v2.expect({ t: 'error' })).code, 'bad_version');
  await v2.waitClose(5000);

  const http = await b.phone('http-client');
  http.sendRaw(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));   // prefix "GET " = 1195725856
  assert.equal((await http.expect({ t: 'error' })).code, 'too_big');
  await http.waitClose(5000);

  const huge = await b.phone('huge');
  huge.sendRaw(Buffer.from([0xff, 0xff, 0xff, 0xff]));
  assert.equal((await huge.expect({ t: 'error' })).code, 'too_big');
  await huge.waitClose(5000);

  // A client that drops mid-frame, and one that trickles a frame byte by byte.
  const drop = await b.phone('drop');
  drop.sendRaw(Buffer.from([0, 0, 0, 50, 0x7b]));
  await sleep(50);
  drop.destroy();
  const slow = await b.phone('slow');
  const bytes = encodeFrame({ t: 'login', v: 1, jid: b.jid('dave'), pass: b.pass('dave') });
  for (let i = 0; i < bytes.length; i += 7) {
    slow.sendRaw(bytes.subarray(i, i + 7));
    await sleep(2);
  }
  assert.equal((await slow.expect({ t: 'welcome' })).jid, 'dave@localhost');
  // Two frames in one write.
  slow.sendRaw(Buffer.concat([encodeFrame({ t: 'hb' }), encodeFrame({ t: 'hb' })]));
  await slow.expect({ t: 'hb' });
  await slow.expect({ t: 'hb' });

  await chatBothWays(alice, bob, 'after');
  assert.equal(b.edge.running, true, 'imb-edge still running');
  assert.equal(b.xmppd.running, true, 'imb-xmppd still running');
  assert.deepEqual(alice.protocolErrors, [], 'server frames were all valid JSON objects');
});

itest('--max-frame is announced and enforced', async (t, stack) => {
  const b = await startBridge(stack, { edge: { maxFrame: 1024 } });
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  assert.equal(alice.welcome.max, 1024);
  // A message that fits (frame just under the limit) is fine.
  const body = 'x'.repeat(900);
  const ack = await alice.msg('bob@localhost', body);
  assert.equal(ack.t, 'ack');
  assert.equal((await bob.nextMessage({ body })).body.length, 900);
  alice.send({ t: 'msg', id: 'big', to: 'bob@localhost', body: 'y'.repeat(1100) });
  assert.equal((await alice.expect({ t: 'error' })).code, 'too_big');
  await alice.waitClose(5000);
});

// PROTOCOL.md section 3: no frame the server sends is longer than the max it
// announced. What the XMPP side sends is bounded by the XMPP server, not by
// the phone's max: a long message (live, replayed and in history) arrives
// cut to fit with "truncated", a long roster split over frames with "more".
itest('frames to a phone never exceed the announced max: long messages are cut, long rosters split', { timeout: 60000 }, async (t, stack) => {
  const MAX = 2048;
  const b = await startBridge(stack, { edge: { maxFrame: MAX } });
  const canary = startCanary(await b.loginPhone('carol'), 'carol@localhost',
    await b.loginPhone('dave'), 'dave@localhost');
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  assert.equal(alice.welcome.max, MAX);
  const sizeOf = (f) => Buffer.byteLength(JSON.stringify(f), 'utf8');
  const within = () => alice.frames.every((f) => f.t === '__invalid__' || sizeOf(f) <= MAX);

  // At the limit but under it: whole. (jansson's compact output is what
  // JSON.stringify gives for these frames.)
  const fits = 'f'.repeat(MAX - 200);
  await bob.send('alice@localhost', fits);
  const m0 = await alice.nextMsg({ body: fits });
  assert.equal(m0.truncated, undefined);

  // Over it, with characters that grow when escaped: cut at a character
  // boundary, a prefix of what was sent, marked.
  const long = 'é"\\\n'.repeat(1500) + 'END';
  await bob.send('alice@localhost', long, { id: 'long1' });
  const m1 = await alice.nextMsg((f) => f.id === 'long1');
  assert.equal(m1.truncated, true);
  assert.ok(long.startsWith(m1.body) && m1.body.length > MAX / 4, `a prefix: ${m1.body.length} chars`);
  assert.ok(within(), 'every frame within max');

  // The same message replayed at the next login: cut the same way.
  alice.socket.destroy();
  const again = await b.phone('alice-again');
  await again.login('alice@localhost', b.pass('alice'), { seq: 0 });
  const r1 = await again.nextMsg((f) => f.id === 'long1');
  assert.equal(r1.truncated, true);
  assert.equal(r1.body, m1.body);
  assert.ok(again.frames.every((f) => sizeOf(f) <= MAX), 'replay within max');

  // History holds it whole; the page carries it cut.
  again.send({ t: 'history', id: 'h1', with: 'bob@localhost', max: 5 });
  const hist = [];
  for (;;) {
    const f = await again.next((x) => (x.t === 'hist' || x.t === 'history') && x.id === 'h1', 10000);
    if (f.t === 'history') break;
    hist.push(f);
  }
  const h = hist.find((x) => x.mid === 'long1');
  assert.ok(h && h.truncated === true && long.startsWith(h.body), JSON.stringify(hist.map((x) => [x.mid, x.truncated])));

  // A roster longer than max: several frames, all but the last with more.
  const N = 40;
  for (let i = 0; i < N; i++) {
    again.send({ t: 'roster_set', id: `rs${i}`, jid: `contact${i}@localhost`, name: `A contact with a long display name number ${i}` });
    await again.expect({ t: 'ok', id: `rs${i}` }, 10000); // one at a time: under the rate limit
  }
  again.send({ t: 'roster', id: 'r1' });
  const parts = [];
  for (;;) {
    const f = await again.expect({ t: 'roster', id: 'r1' });
    parts.push(f);
    if (!f.more) break;
  }
  const items = parts.flatMap((p) => p.items);
  t.diagnostic(`roster of ${items.length} items in ${parts.length} frames of at most ${Math.max(...parts.map(sizeOf))} bytes (max ${MAX})`);
  assert.ok(parts.length > 1);
  for (let i = 0; i < N; i++) assert.ok(items.some((it) => it.jid === `contact${i}@localhost`), `contact${i}`);
  assert.ok(again.frames.every((f) => sizeOf(f) <= MAX), 'every frame within max');
  await b.edge.waitForLines(/frame_fitted .*t=roster/, { timeout: 2000 });
  await b.edge.waitForLines(/frame_fitted .*t=hist/, { timeout: 2000 });
  await canary.stop(t);
});

itest('a refused frame\'s error names its id; logout before login is not_logged_in', async (t, stack) => {
  const b = await startBridge(stack);
  const p = await b.phone();
  p.send({ t: 'logout' });
  const e0 = await p.expect({ t: 'error' });
  assert.equal(e0.code, 'not_logged_in');
  assert.ok(await p.noFrame({ t: 'bye' }, 300), 'no bye: the connection stays open');
  await p.login('alice@localhost', b.pass('alice'));
  p.send({ t: 'msg', id: 'm-bad', to: 'not a jid', body: 'x' });
  const e1 = await p.expect({ t: 'error', code: 'bad_frame' });
  assert.equal(e1.id, 'm-bad');
  p.send({ t: 'msg', id: 'm-bad2', to: 'bob@localhost' });
  const e2 = await p.expect({ t: 'error', code: 'bad_frame' });
  assert.equal(e2.id, 'm-bad2');
  assert.match(e2.msg, /body/);
  p.sendFrame('{"t":"msg","id":"broken json');
  const e3 = await p.expect({ t: 'error', code: 'bad_frame' });
  assert.equal(e3.id, undefined);
  p.send({ t: 'logout' });
  assert.equal((await p.expect({ t: 'bye' })).reason, 'logout');
});
