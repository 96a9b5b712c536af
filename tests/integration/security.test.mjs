// Security: TLS on the phone link, Redis AUTH (password and ACL user), no
// password ever visible on Redis, identity stamped by the edge, and each
// configurable limit enforced.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import {
  itest, startBridge, startRedis, startProsody, startXmppd, startEdge, startImcat, connectPhone,
  startDesktop, randomCredKey, sleep, waitFor, DEFAULT_USERS, redisSubscriber, redisCommand,
} from '../harness/index.mjs';

/** A self-signed certificate for 127.0.0.1/localhost in dir. */
function makeCert(dir, name = 'edge') {
  const cert = path.join(dir, `${name}.crt`), key = path.join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

itest('TLS on the phone link: imcat verifies the edge; a wrong CA and plaintext are refused', async (t, stack) => {
  const dir = stack.tempDir('imb-tls-');
  const tls = makeCert(dir);
  const other = makeCert(dir, 'other');
  const b = await startBridge(stack, { edge: { tls }, probe: false });
  const bob = await b.desktop('bob');
  await sleep(1200);

  const cat = startImcat(stack, {
    port: b.edge.port, user: 'alice@localhost', pass: b.pass('alice'), extraArgs: ['--cafile', tls.cert],
  });
  const w = await cat.nextJson({ t: 'welcome' }, 10000);
  assert.equal(w.jid, 'alice@localhost');
  cat.sendJson({ t: 'msg', id: 'tls1', to: 'bob@localhost', body: 'over TLS' });
  await cat.nextJson({ t: 'ack', id: 'tls1' }, 10000);
  await bob.nextMessage({ body: 'over TLS' });
  await bob.send('alice@localhost', 'back over TLS');
  await cat.nextJson({ t: 'msg', body: 'back over TLS' }, 10000);

  // Another CA: the certificate does not verify, no login happens.
  const bad = startImcat(stack, {
    port: b.edge.port, user: 'carol@localhost', pass: b.pass('carol'), extraArgs: ['--cafile', other.cert],
  });
  const r = await bad.waitExit(10000);
  assert.equal(r.code, 3, 'connection refused by verification');
  assert.doesNotMatch(bad.stdout, /welcome/);

  // A plaintext client gets no protocol at all.
  const plain = await connectPhone(stack, b.edge.port, 'plain');
  plain.send({ t: 'login', v: 1, jid: 'carol@localhost', pass: b.pass('carol') });
  await plain.waitClose(12000);
  assert.ok(!plain.frames.some((f) => f.t === 'welcome'));
});

itest('Redis AUTH with an ACL user and with a password; wrong credentials get nowhere', async (t, stack) => {
  const credKey = randomCredKey();
  // The default user may only PING (the harness's readiness check); the
  // services must authenticate as "imb".
  const redis = await startRedis(stack, {
    extraArgs: ['--user', 'default', 'on', 'nopass', '-@all', '+ping',
      '--user', 'imb', 'on', '>acl-pw-9', '~*', '&*', '+@all'],
  });
  const prosody = await startProsody(stack);
  const auth = ['--redis-user', 'imb', '--redis-password', 'acl-pw-9'];
  await startXmppd(stack, { redisPort: redis.port, xmppPort: prosody.c2sPort, credKey, workers: 1, extraArgs: auth });
  const edge = await startEdge(stack, { redisPort: redis.port, credKey, extraArgs: auth });
  await sleep(1200);
  const alice = await connectPhone(stack, edge.port, 'alice');
  await alice.login('alice@localhost', 'secret');
  const bob = await startDesktop(stack, { port: prosody.c2sPort, user: 'bob', pass: 'secret', domain: 'localhost' });
  assert.equal((await alice.msg('bob@localhost', 'acl ok')).t, 'ack');
  await bob.nextMessage({ body: 'acl ok' });

  // An edge with a wrong password cannot use the bus: logins are unavailable.
  const wrong = await startEdge(stack, {
    redisPort: redis.port, credKey, extraArgs: ['--redis-user', 'imb', '--redis-password', 'nope'],
  });
  await waitFor(() => /redis_auth_failed/.test(wrong.stderr), { timeout: 5000 });
  const p = await connectPhone(stack, wrong.port, 'wrong');
  const f = await p.tryLogin('carol@localhost', 'secret');
  assert.equal(f.code, 'unavailable');

  // Password-only AUTH (requirepass) on another Redis.
  const r2 = await startRedis(stack, { extraArgs: ['--requirepass', 'plain-pw-7'], auth: ['plain-pw-7'] });
  const x2 = await startXmppd(stack, {
    redisPort: r2.port, xmppPort: prosody.c2sPort, credKey, workers: 1, extraArgs: ['--redis-password', 'plain-pw-7'],
  });
  const e2 = await startEdge(stack, { redisPort: r2.port, credKey, extraArgs: ['--redis-password', 'plain-pw-7'] });
  await sleep(1200);
  const carol = await connectPhone(stack, e2.port, 'carol');
  await carol.login('carol@localhost', 'secret');
  assert.equal((await carol.msg('bob@localhost', 'requirepass ok')).t, 'ack');
  await bob.nextMessage({ body: 'requirepass ok' });
  assert.ok(x2.running);
});

itest('no password on Redis: MONITOR and PSUBSCRIBE during logins never see it', async (t, stack) => {
  const secretPass = 'Zq-unique-Passw0rd-7731';
  const b = await startBridge(stack, { users: [...DEFAULT_USERS, ['eve', secretPass]] });
  const watch = (args) => {
    const p = spawn('redis-cli', ['-p', String(b.redis.port), ...args]);
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    stack.onCleanup('redis-cli', () => p.kill());
    return () => out;
  };
  const monitor = watch(['monitor']);
  const tap = watch(['psubscribe', '*']);
  await sleep(300);
  for (let i = 0; i < 3; i++) {
    const p = await b.phone(`eve-${i}`);
    await p.login('eve@localhost', secretPass);
    p.send({ t: 'logout' });
    await p.expect({ t: 'bye' });
  }
  const bad = await b.phone('eve-bad');
  assert.equal((await bad.tryLogin('eve@localhost', `${secretPass}x`)).code, 'auth_failed');
  await sleep(500);
  // (redis-cli escapes the quotes in what it prints.)
  assert.match(monitor(), /type\\?":\\?"login/, 'the monitor saw the logins');
  assert.match(tap(), /type\\?":\\?"login/, 'the tap saw the logins');
  for (const [name, text] of [['MONITOR', monitor()], ['PSUBSCRIBE', tap()]]) {
    assert.ok(!text.includes(secretPass), `${name} output holds the password`);
    assert.ok(!text.includes(Buffer.from(secretPass).toString('base64')), `${name} output holds it in base64`);
  }
});

itest('identity: the edge stamps the sender; addresses and XML in bodies cannot escape', async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  // A forged "from" is ignored: bob sees alice.
  alice.send({ t: 'msg', id: 'f1', to: 'bob@localhost', body: 'forged?', from: 'carol@localhost' });
  await alice.expect({ t: 'ack', id: 'f1' });
  const m = await bob.nextMessage({ body: 'forged?' });
  assert.match(m.from, /^alice@localhost\//);
  // Markup in a body is text, not stanzas.
  const evil = "</body></message><message to='carol@localhost'><body>injected</body></message>";
  await alice.msg('bob@localhost', evil, { id: 'x1' });
  const got = await bob.nextMessage({ body: evil });
  assert.equal(got.body, evil);
  // Channel-like or malformed recipients are refused before the bus.
  for (const to of ['imb:w:anything', 'a@b:c', 'bob@localhost/\u0001', '@localhost', 'a b@localhost']) {
    alice.send({ t: 'msg', id: 'bad', to, body: 'x' });
    const e = await alice.expect({ t: 'error' });
    assert.equal(e.code, 'bad_frame', `to=${JSON.stringify(to)}`);
  }
});

itest('limits: unauthenticated sockets per address, sockets per edge, messages per second', async (t, stack) => {
  const b = await startBridge(stack, { edgeArgs: ['--max-unauth-per-ip', '3', '--max-msg-rate', '5'] });
  const idle = [];
  for (let i = 0; i < 3; i++) idle.push(await connectPhone(stack, b.edge.port, `idle${i}`));
  const fourth = await connectPhone(stack, b.edge.port, 'fourth');
  await fourth.waitClose(3000);
  await waitFor(() => /conn_rejected peer=127\.0\.0\.1 reason=unauth_per_ip/.test(b.edge.stderr), { timeout: 3000 });
  // Logging in frees the slot.
  await idle[0].login('alice@localhost', 'secret');
  const fifth = await connectPhone(stack, b.edge.port, 'fifth');
  await fifth.login('bob@localhost', 'secret');

  // 30 messages at once against 5/s (bursts of 10): some are refused with
  // rate_limited, the rest acked; nothing is silently dropped.
  const ids = Array.from({ length: 30 }, (_, i) => `r${i}`);
  for (const id of ids) idle[0].sendMsg('bob@localhost', `rate ${id}`, id);
  const answers = await Promise.all(ids.map((id) => idle[0].next((f) => f.id === id && (f.t === 'ack' || f.t === 'error'), 10000)));
  const limited = answers.filter((f) => f.t === 'error' && f.code === 'rate_limited').length;
  const acked = answers.filter((f) => f.t === 'ack').length;
  t.diagnostic(`rate limit: ${acked} acked, ${limited} rate_limited`);
  assert.equal(acked + limited, 30);
  assert.ok(limited >= 15 && acked >= 10, `${acked} acked, ${limited} limited`);

  // max_conns on another edge.
  const small = await startEdge(stack, { redisPort: b.redis.port, credKey: b.credKey, extraArgs: ['--max-conns', '2'] });
  await connectPhone(stack, small.port, 's1');
  await connectPhone(stack, small.port, 's2');
  const s3 = await connectPhone(stack, small.port, 's3');
  await s3.waitClose(3000);
  await waitFor(() => /reason=max_conns/.test(small.stderr), { timeout: 3000 });
});

itest('a phone that stops reading is cut at max_output, and loses nothing', { timeout: 120000 }, async (t, stack) => {
  const b = await startBridge(stack, {
    edgeArgs: ['--max-output', '65536'], xmppdArgs: ['--inbox-max', '5000', '--resume-window', '60'],
  });
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  alice.socket.pause(); // reads nothing from now on
  const body = 'x'.repeat(4000);
  const N = 1500;
  for (let i = 1; i <= N; i++) bob.send('alice@localhost', `${i} ${body}`);
  await bob.sync(20000);
  await waitFor(() => /conn_slow_reader/.test(b.edge.stderr), { timeout: 30000 });
  alice.destroy();
  // Everything is still in the inbox: a fresh login replays it all, in order.
  const p = await b.phone('alice-again');
  await p.login('alice@localhost', b.pass('alice'), { seq: 0, timeout: 60000 });
  const got = p.pending().filter((f) => f.t === 'msg').map((f) => Number(f.body.split(' ')[0]));
  assert.equal(got.length, N);
  assert.deepEqual(got, Array.from({ length: N }, (_, i) => i + 1));
});

itest('max_envelope: an oversized envelope on the bus is dropped and counted; the service carries on', async (t, stack) => {
  const { redisCommand } = await import('../harness/index.mjs');
  const b = await startBridge(stack, { edgeArgs: ['--max-envelope', '2048', '--http-listen', '127.0.0.1:0'] });
  const alice = await b.loginPhone('alice');
  const big = JSON.stringify({ v: 1, type: 'chat', from: 'mallory@localhost', to: 'alice@localhost', body: 'x'.repeat(4000) });
  // The edge's one channel: everything for its phones comes there.
  const [edgeChannel] = await redisCommand(b.redis.port, ['PUBSUB', 'CHANNELS', 'imb:e:*']);
  const n = await redisCommand(b.redis.port, ['PUBLISH', edgeChannel, big]);
  assert.equal(n, 1, 'the edge is subscribed');
  await waitFor(() => /envelope_invalid .*above 2048/.test(b.edge.stderr), { timeout: 5000 });
  assert.ok(!alice.pending().some((f) => f.t === 'msg'), 'nothing reached the phone');
  const addr = /http_serving addr=(\S+)/.exec(b.edge.stderr)[1];
  const metrics = await (await fetch(`http://${addr}/metrics`)).text();
  assert.match(metrics, /^imb_edge_bad_envelopes_total 1$/m);
  const bob = await b.desktop('bob');
  assert.equal((await alice.msg('bob@localhost', 'still fine')).t, 'ack');
  await bob.nextMessage({ body: 'still fine' });
});

// Every chat for a phone is numbered in the inbox before it is published:
// one without seq on the bus (a foreign or broken publisher) is refused,
// never written to a phone as an unnumbered msg it could not ack.
itest('a chat envelope without seq on the bus is refused and counted; the phone gets nothing of it', async (t, stack) => {
  const { redisCommand } = await import('../harness/index.mjs');
  const b = await startBridge(stack, { edgeArgs: ['--http-listen', '127.0.0.1:0'] });
  const alice = await b.loginPhone('alice');
  const [edgeChannel] = await redisCommand(b.redis.port, ['PUBSUB', 'CHANNELS', 'imb:e:*']);
  const env = { v: 1, type: 'chat', ts: Date.now(), from: 'mallory@localhost/x', to: 'alice@localhost', body: 'unnumbered' };
  assert.equal(await redisCommand(b.redis.port, ['PUBLISH', edgeChannel, JSON.stringify(env)]), 1);
  await waitFor(() => /envelope_invalid .*a chat without seq/.test(b.edge.stderr), { timeout: 5000 });
  const addr = /http_serving addr=(\S+)/.exec(b.edge.stderr)[1];
  const metrics = await (await fetch(`http://${addr}/metrics`)).text();
  assert.match(metrics, /^imb_edge_bad_envelopes_total 1$/m);
  const bob = await b.desktop('bob');
  await bob.send('alice@localhost', 'numbered');
  assert.equal((await alice.nextMsg({ body: 'numbered' })).seq, 1);
  assert.ok(!alice.pending().some((f) => f.t === 'msg' && f.body === 'unnumbered'), 'the unnumbered chat never reached the phone');
});

// Whoever can publish on the bus can replay a login envelope with its sealed
// credential for another user: refused, and logged as such (not blamed on
// the configuration, since other logins open with the same key).
itest('a sealed credential replayed for another user is refused and logged as a forgery', async (t, stack) => {
  const b = await startBridge(stack, { workers: 1 });
  const sub = await redisSubscriber(stack, b.redis.port, 'imb:w:*');
  const alice = await b.loginPhone('alice');
  const [channel, payload] = await sub.next((c, p) => p.includes('"login"') && p.includes('alice@localhost'));
  const env = JSON.parse(payload);
  const forged = JSON.stringify({ ...env, jid: 'bob@localhost', dev: 'c999' });
  const n = await redisCommand(b.redis.port, ['PUBLISH', channel, forged]);
  assert.ok(n >= 2, 'the worker (and this test) got the forged login');
  const [line] = await b.xmppd.waitForLines(/cred_rejected jid=bob@localhost/, { timeout: 5000 });
  assert.match(line, /WARN/);
  assert.match(line, /sealed for another user/);
  assert.ok(!b.xmppd.stderr.includes('cred_unreadable'), 'not blamed on the configuration');
  await sleep(300);
  assert.ok(!/session_online jid=bob@localhost/.test(b.xmppd.stderr), 'no session for bob');
  assert.equal((await alice.msg('bob@localhost', 'still fine')).t, 'ack');
});
