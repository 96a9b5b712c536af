// Chat features, part 3 (docs/PROTOCOL.md section 10): the central message
// filter (rules file, both directions, reasons to the phone, metrics, SIGHUP
// reload) and the push hook (one envelope per message for a user whose phone
// is not connected, even with several bridges).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  itest, startBridge, startXmppd, xml, sleep, waitFor, httpGet, httpAddr, metricValue, redisSubscriber,
  redisCommand, DEFAULT_USERS, connectPhone, pushArgs, startRedis, startProsody, startEdge, startDesktop,
  randomCredKey, freePort, waitBridgeReady,
} from '../harness/index.mjs';

const RULES = `# imbridge message filter (test)
max_length 40
mask darn heck
reject spamword
block mallory@localhost
rate 6/60
`;

itest('message filter: both directions, reasons, metrics, reload on SIGHUP', { timeout: 90000 }, async (t, stack) => {
  const dir = stack.tempDir('imb-rules-');
  const rules = path.join(dir, 'filter.rules');
  fs.writeFileSync(rules, RULES);
  const users = [...DEFAULT_USERS, ['mallory', 'secret']];
  const b = await startBridge(stack, { users, workers: 1, xmppdArgs: ['--filter-rules', rules, '--http-listen', '127.0.0.1:0'] });
  await b.xmppd.waitForLine(/filter_rules_loaded .*rules=6/);
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');
  const mallory = await b.desktop('mallory');

  // Out: masked words pass masked; the rest is refused with a reason.
  await alice.msg('bob@localhost', 'well darn it', { id: 'f1' });
  assert.equal((await bob.nextMessageFrom('alice@localhost')).body, 'well **** it');
  const refused = async (to, body, id, reason) => {
    alice.send({ t: 'msg', id, to, body });
    const e = await alice.expect({ t: 'error', id });
    assert.equal(e.code, 'filtered', JSON.stringify(e));
    assert.equal(e.reason, reason, JSON.stringify(e));
    assert.equal(typeof e.msg, 'string');
  };
  await refused('bob@localhost', 'x'.repeat(41), 'f2', 'too_long');
  await alice.msg('bob@localhost', 'é'.repeat(40), { id: 'f2b' }); // 40 characters, 80 bytes: passes
  await refused('bob@localhost', 'buy SPAMWORD now', 'f3', 'banned_word');
  await refused('mallory@localhost', 'hello', 'f4', 'blocked');
  // Rate: 6 per minute per user (refused messages do not count).
  for (let i = 3; i <= 6; i++) await alice.msg('bob@localhost', `ok ${i}`, { id: `r${i}` });
  await refused('bob@localhost', 'one too many', 'r7', 'rate_limited');

  // In: masked for the phone, refused ones bounce to the sender.
  await bob.send('alice@localhost', 'oh heck, again');
  const masked = await alice.nextMsg({ body: 'oh ****, again' });
  assert.equal(masked.filtered, 'masked');
  const sid = await bob.send('alice@localhost', 'spamword inside');
  const bounce = await bob.nextMessage((m) => m.type === 'error' && m.id === sid);
  assert.match(bounce.error, /policy-violation/);
  await mallory.send('alice@localhost', 'let me in');
  await mallory.nextMessage((m) => m.type === 'error');
  assert.ok(await alice.noFrame((f) => f.t === 'msg' && /spamword|let me in/.test(f.body), 500));

  // (A worker reports its counts to /metrics once a second.)
  let m = '';
  const n = (dir2, reason) => metricValue(m, `imb_xmppd_filtered_total{worker="0",direction="${dir2}",reason="${reason}"}`);
  await waitFor(async () => {
    m = (await httpGet(httpAddr(b.xmppd), '/metrics')).text;
    return n('in', 'blocked') >= 1;
  }, { timeout: 3000, what: 'the filter counts reported' });
  assert.equal(n('out', 'masked'), 1);
  assert.equal(n('out', 'too_long'), 1);
  assert.equal(n('out', 'banned_word'), 1);
  assert.equal(n('out', 'blocked'), 1);
  assert.equal(n('out', 'rate_limited'), 1);
  assert.equal(n('in', 'masked'), 1);
  assert.equal(n('in', 'banned_word'), 1);
  assert.equal(n('in', 'blocked'), 1);

  // SIGHUP re-reads the rules: a broken file keeps the old ones...
  fs.writeFileSync(rules, 'max_length forty\n');
  b.xmppd.kill('SIGHUP');
  await b.xmppd.waitForLine(/filter_rules_invalid .*filter.rules:1: max_length/);
  await refused('bob@localhost', 'still refused: spamword', 'h1', 'banned_word');
  // ...a good one replaces them.
  fs.writeFileSync(rules, 'reject spamword\n');
  b.xmppd.kill('SIGHUP');
  await b.xmppd.waitForLine(/filter_rules_loaded .*rules=1/);
  await alice.msg('bob@localhost', 'darn, no more masking', { id: 'h2' });
  assert.equal((await bob.nextMessage({ body: 'darn, no more masking' })).body, 'darn, no more masking');
});

itest('a bad rules file stops the bridge at start with the line at fault', async (t, stack) => {
  const dir = stack.tempDir('imb-rules-');
  const rules = path.join(dir, 'bad.rules');
  fs.writeFileSync(rules, 'mask ok\nfrobnicate now\n');
  const b = await startBridge(stack, { probe: false }).catch((e) => e);
  assert.ok(!(b instanceof Error));
  const p = await startXmppd(stack, {
    redisPort: b.redis.port, xmppPort: b.prosody.c2sPort, credKey: b.credKey,
    extraArgs: ['--filter-rules', rules], wait: false,
  });
  p.unclean = true; // it is meant to refuse to start
  const exit = await p.waitExit(5000);
  assert.notEqual(exit.code, 0);
  assert.match(p.stderr, /bad\.rules:2: unknown rule 'frobnicate'/);
});

itest('push: one envelope per message while no phone is connected, several bridges', { timeout: 60000 }, async (t, stack) => {
  const b = await startBridge(stack, { xmppdArgs: ['--push-preview', 'full'] });
  // A second bridge: sessions are held by one of the two, pushes are not doubled.
  await startXmppd(stack, {
    redisPort: b.redis.port, xmppPort: b.prosody.c2sPort, credKey: b.credKey,
    extraArgs: ['--push-preview', 'full'],
  });
  const pushes = await redisSubscriber(stack, b.redis.port, 'imb:push');
  const bob = await b.desktop('bob');
  const alice = await connectPhone(stack, b.edge.port, 'alice');
  const w = await alice.login(b.jid('alice'), b.pass('alice'));
  await bob.send('alice@localhost', 'while you look');
  await alice.nextMsg({ body: 'while you look' });
  await sleep(300);
  assert.equal(pushes.messages.length, 0, 'no push while a phone is connected');

  // The phone drops (the session lives on in the resume window).
  alice.destroy();
  await b.xmppd.waitForLine(/device_detach jid=alice@localhost/).catch(() => {});
  await sleep(300);
  for (let i = 1; i <= 5; i++) await bob.send('alice@localhost', `missed ${i}: ${'long text '.repeat(20)}`);
  const got = [];
  for (let i = 1; i <= 5; i++) got.push(JSON.parse((await pushes.next())[1]));
  await sleep(500);
  assert.equal(pushes.messages.length, 5, 'exactly one push per message');
  got.sort((x, y) => x.seq - y.seq);
  for (const [i, p] of got.entries()) {
    assert.equal(p.type, 'push');
    assert.equal(p.to, 'alice@localhost');
    assert.equal(p.from, 'bob@localhost');
    assert.ok(p.preview.startsWith(`missed ${i + 1}: long text`));
    assert.equal([...p.preview].length, 100, 'the preview is cut at 100 characters');
    assert.equal(typeof p.seq, 'number');
    assert.equal(typeof p.ts, 'number');
  }
  assert.deepEqual(got.map((p) => p.unread), [2, 3, 4, 5, 6], 'unread counts what waits for the phone');
  // The same envelopes wait in a list for a consumer that must not miss any.
  const q = await redisCommand(b.redis.port, ['LRANGE', 'imb:pushq', '0', '-1']);
  assert.equal(q.length, 5);
  assert.deepEqual(q.map((x) => JSON.parse(x).seq).reverse(), got.map((p) => p.seq));

  // Back online: the messages are replayed, and no more pushes.
  const again = await connectPhone(stack, b.edge.port, 'alice-again');
  await again.login(b.jid('alice'), b.pass('alice'));
  await again.nextMsg({ body: /missed 5/ });
  await bob.send('alice@localhost', 'you are back');
  await again.nextMsg({ body: 'you are back' });
  await sleep(300);
  assert.equal(pushes.messages.length, 5);
  assert.equal(w.t, 'welcome');
});

itest('push privacy: push_preview none tells neither sender nor text', async (t, stack) => {
  const b = await startBridge(stack, { xmppdArgs: ['--push-preview', 'none'] });
  const pushes = await redisSubscriber(stack, b.redis.port, 'imb:push');
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  alice.destroy();
  await sleep(500);
  await bob.send('alice@localhost', 'secret text');
  const p = JSON.parse((await pushes.next())[1]);
  assert.equal(p.to, 'alice@localhost');
  assert.equal(p.from, undefined);
  assert.equal(p.preview, undefined);
  assert.equal(p.unread, 1);
});

itest('push after the resume window: the XMPP server notifies the bridge (XEP-0357), one per message', { timeout: 60000 }, async (t, stack) => {
  const b = await startBridge(stack, {
    push: true, xmppdArgs: ['--resume-window', '1', '--push-preview', 'sender'],
  });
  // A second bridge competes for the component: only one holds it.
  const second = await startXmppd(stack, {
    redisPort: b.redis.port, xmppPort: b.prosody.c2sPort, credKey: b.credKey,
    extraArgs: [...pushArgs(b.prosody), '--resume-window', '1'],
  });
  await b.xmppd.waitForLine(/push_component_up/, { timeout: 10000 }).catch(() => {});
  const holders = [b.xmppd, second].filter((p) => /push_component_up/.test(p.stderr));
  assert.equal(holders.length, 1, 'exactly one bridge holds the push component');

  const pushes = await redisSubscriber(stack, b.redis.port, 'imb:push');
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  await bob.send('alice@localhost', 'seen live');
  const live = await alice.nextMsg({ body: 'seen live' });
  // The app is closed: the resume window (1 s) ends, the session closes.
  alice.destroy();
  const closing = holders[0] === b.xmppd ? [b.xmppd, second] : [second, b.xmppd];
  await Promise.any(closing.map((p) => p.waitForLine(/session_close jid=alice@localhost reason=resume_window_over/, { timeout: 10000 })));
  await sleep(300);
  await bob.send('alice@localhost', 'after the window 1');
  await bob.send('alice@localhost', 'after the window 2');
  const p1 = JSON.parse((await pushes.next(undefined, 10000))[1]);
  const p2 = JSON.parse((await pushes.next(undefined, 10000))[1]);
  await sleep(1000);
  assert.equal(pushes.messages.length, 2, `one push per message: ${JSON.stringify(pushes.messages)}`);
  for (const p of [p1, p2]) {
    assert.equal(p.type, 'push');
    assert.equal(p.to, 'alice@localhost');
    assert.equal(p.from, 'bob@localhost');
    assert.equal(p.preview, undefined, 'push_preview sender: no text');
  }
  // unread: the live message was never acked (1), then 1 and 2 stored offline.
  assert.deepEqual([p1.unread, p2.unread], [2, 3]);
  assert.ok(live.seq > 0);

  // Back: everything arrives, and pushes stop while the session lives.
  const again = await b.loginPhone('alice', 'alice-back');
  await again.nextMsg({ body: 'after the window 2' });
  await bob.send('alice@localhost', 'you are online');
  await again.nextMsg({ body: 'you are online' });
  await sleep(500);
  assert.equal(pushes.messages.length, 2);

  // Logging out says "no more pushes": the server stops notifying.
  again.send({ t: 'logout' });
  await again.expect({ t: 'bye' });
  await sleep(1500);
  await bob.send('alice@localhost', 'after logout');
  await sleep(1500);
  assert.equal(pushes.messages.length, 2, 'no push after a logout');
});

/** A TCP relay to 127.0.0.1:port that keeps what the client side sends. */
async function recordingRelay(stack, port) {
  const relay = { port: await freePort(), sent: '' };
  const socks = new Set();
  const srv = net.createServer((c) => {
    const up = net.connect(port, '127.0.0.1');
    for (const s of [c, up]) {
      socks.add(s);
      s.on('error', () => {});
    }
    c.on('data', (d) => { relay.sent += d.toString(); up.write(d); });
    up.pipe(c);
    c.on('close', () => up.destroy());
    up.on('close', () => c.destroy());
  });
  await new Promise((r) => srv.listen(relay.port, '127.0.0.1', r));
  stack.onCleanup('component-relay', () => { for (const s of socks) s.destroy(); srv.close(); });
  return relay;
}

/** The <iq> start tags in raw XML text, as attribute maps. */
function iqTags(text) {
  return [...text.matchAll(/<iq\b([^>]*)>/g)].map(([, attrs]) =>
    Object.fromEntries([...attrs.matchAll(/([\w:-]+)=(["'])(.*?)\2/g)].map(([, k, , v]) => [k, v])));
}

itest('push component: every reply says who sends it (from) and to whom (to)', { timeout: 60000 }, async (t, stack) => {
  // What xmppd sends on its component stream, seen on the wire: Prosody
  // would fill in a missing 'from' before anyone else could see it.
  const credKey = randomCredKey();
  const [redis, prosody] = await Promise.all([startRedis(stack), startProsody(stack, { push: true })]);
  const relay = await recordingRelay(stack, prosody.push.port);
  const args = pushArgs(prosody);
  args[args.indexOf('--push-port') + 1] = String(relay.port);
  const xmppd = await startXmppd(stack, {
    redisPort: redis.port, xmppPort: prosody.c2sPort, credKey, workers: 1,
    extraArgs: [...args, '--resume-window', '1'],
  });
  const edge = await startEdge(stack, { redisPort: redis.port, credKey });
  await xmppd.waitForLine(/push_component_up/, { timeout: 10000 });
  await waitBridgeReady(edge.port);
  const pushes = await redisSubscriber(stack, redis.port, 'imb:push');
  const bob = await startDesktop(stack, { port: prosody.c2sPort, user: 'bob', pass: 'secret', domain: 'localhost' });

  // A notification: alice's session closed, a message is stored offline.
  const alice = await connectPhone(stack, edge.port, 'alice');
  await alice.login('alice@localhost', 'secret');
  alice.destroy();
  await xmppd.waitForLine(/session_close jid=alice@localhost reason=resume_window_over/, { timeout: 10000 });
  await sleep(300);
  await bob.send('alice@localhost', 'while away');
  assert.equal(JSON.parse((await pushes.next(undefined, 10000))[1]).to, 'alice@localhost');
  // A request the component refuses: anyone may address it.
  await bob.sendXml(xml('iq', { type: 'set', id: 'not-a-server', to: prosody.push.jid },
    xml('pubsub', { xmlns: 'http://jabber.org/protocol/pubsub' }, xml('publish', { node: 'alice@localhost' }))));
  const refused = await bob.nextStanza((el) => el.is('iq') && el.attrs.id === 'not-a-server', 5000, 'the refusal');
  assert.equal(refused.attrs.type, 'error');

  await waitFor(() => iqTags(relay.sent).filter((a) => a.type === 'error').length > 0, { timeout: 3000 });
  const replies = iqTags(relay.sent).filter((a) => a.type === 'result' || a.type === 'error');
  assert.ok(replies.some((a) => a.type === 'result'), `a result was sent: ${relay.sent}`);
  for (const a of replies) {
    assert.equal(a.from, prosody.push.jid, `from on every reply: ${JSON.stringify(a)}`);
    assert.ok(a.to, `to on every reply: ${JSON.stringify(a)}`);
  }
  assert.equal(replies.find((a) => a.type === 'result').to, 'localhost', 'the result goes to the server');
  assert.equal(replies.find((a) => a.id === 'not-a-server').to, 'bob@localhost/desktop');
});
