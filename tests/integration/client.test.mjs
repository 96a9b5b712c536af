// The C client library (client/) through its example program,
// bin/imb-client-example, against the real stack: it logs in on edge A,
// sends numbered messages to a desktop user while the desktop sends to it,
// edge A is killed in the middle (no bye: the socket just closes), and the library moves
// to edge B of its list, resumes with epoch/seq and resends its unacked
// messages with the same ids: every message arrives exactly once both ways.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { itest, startBridge, startEdge, binPath, sleep, FrameTap } from '../harness/index.mjs';

const N = 20;

itest('client library: edge killed mid-stream, the example moves to the next edge, nothing lost or twice',
  { bins: ['imb-edge', 'imb-xmppd', 'imb-client-example'], timeout: 30000 }, async (t, stack) => {
    const t0 = Date.now();
    const b = await startBridge(stack);
    const edgeB = await startEdge(stack, { redisPort: b.redis.port, credKey: b.credKey });
    const bob = await b.desktop('bob');
    // Both edges through a relay that checks every frame, both ways,
    // against docs/protocol.schema.json.
    const tapA = await FrameTap.start(stack, b.edge.port, 'frametap A');
    const tapB = await FrameTap.start(stack, edgeB.port, 'frametap B');
    const ex = stack.spawn('imb-client-example', binPath('imb-client-example'), [
      '--edge', `127.0.0.1:${tapA.port}`, '--edge', `127.0.0.1:${tapB.port}`,
      '--user', b.jid('alice'), '--dev', 'example', '--to', 'bob@localhost',
      '--send', String(N), '--interval', '100', '--expect', String(N),
      '--backoff', '200', '--timeout', '20000',
      // Acks in batches of 5: when edge A dies, some messages were shown but
      // not acknowledged; the server sends them again after the resume and
      // the library must not show them twice.
      '--ack-every', '5',
    ], { envExtra: { IMB_PASSWORD: b.pass('alice') } });
    await ex.nextStdoutLine((l) => l.startsWith('logged-in '), 10000);

    // The desktop sends N messages, 100 ms apart; edge A dies after 8.
    for (let i = 0; i < N; i++) {
      await bob.send('alice@localhost', `desk ${i}`);
      if (i === 7) {
        b.edge.unclean = true;
        await b.edge.stop({ signal: 'SIGKILL', timeout: 5000 });
      }
      await sleep(100);
    }
    const code = await ex.waitExit(15000).then((r) => r.code);
    const out = ex.stdout.split('\n');
    const done = out.find((l) => l.startsWith('done '));
    t.diagnostic(`example: ${done}; ${out.filter((l) => /^(connect|disconnect|logged-in|sync) /.test(l)).join(' | ')}`);
    assert.equal(code, 0, `the example exits 0 once all is sent, acked and received:\n${ex.stdout}\n${ex.stderr}`);

    // The example moved to edge B and logged in again there.
    assert.ok(out.some((l) => l.startsWith(`connect edge=127.0.0.1:${tapB.port}`)), 'reconnected to edge B');
    assert.ok(out.filter((l) => l.startsWith('logged-in ')).length >= 2, 'logged in twice');

    // Desktop -> example: each message printed exactly once.
    const got = out.filter((l) => l.startsWith('msg ')).map((l) => / body=(.*)$/.exec(l)[1]);
    const want = Array.from({ length: N }, (_, i) => `desk ${i}`);
    const missing = want.filter((w) => !got.includes(w));
    const twice = got.filter((g, i) => got.indexOf(g) !== i);
    // Example -> desktop: each numbered message received exactly once.
    await waitFor(() => new Set(bob.messages.map((m) => m.body).filter((x) => /^example \d+$/.test(x))).size >= N, 5000);
    const bodies = bob.messages.map((m) => m.body).filter((x) => /^example \d+$/.test(x ?? ''));
    const outMissing = Array.from({ length: N }, (_, i) => `example ${i}`).filter((w) => !bodies.includes(w));
    const outTwice = bodies.filter((g, i) => bodies.indexOf(g) !== i);
    const acks = out.filter((l) => l.startsWith('ack ')).length;
    t.diagnostic(`in: ${got.length} printed (${missing.length} missing, ${twice.length} twice); ` +
      `out: ${bodies.length} at the desktop (${outMissing.length} missing, ${outTwice.length} twice), ` +
      `${acks} acks; ${Date.now() - t0} ms in all`);
    assert.deepEqual(missing, [], 'no incoming message lost');
    assert.deepEqual(twice, [], 'no incoming message shown twice');
    assert.deepEqual(outMissing, [], 'no outgoing message lost');
    assert.deepEqual(outTwice, [], 'no outgoing message delivered twice');
    assert.equal(acks, N, 'one ack per message');
    assert.match(done, new RegExp(`^done sent=${N} acked=${N} received=${N} duplicates=0 `));

    // Every frame the library sent and every frame it was sent, on both
    // edges, is one the schema describes.
    for (const tap of [tapA, tapB]) t.diagnostic(tap.describe(tap === tapA ? 'edge A' : 'edge B'));
    const problems = [...tapA.problems, ...tapB.problems];
    assert.deepEqual(problems, [], 'every frame fits docs/protocol.schema.json');
    const sent = { ...tapA.types('client') };
    for (const [k, v] of Object.entries(tapB.types('client'))) sent[k] = (sent[k] ?? 0) + v;
    for (const t2 of ['login', 'msg', 'ack']) assert.ok(sent[t2] > 0, `the library sent ${t2} frames: ${JSON.stringify(sent)}`);
    assert.ok(tapB.types('client').login >= 1 && tapB.types('server').welcome >= 1, 'the resume on edge B was read too');
  });

/** A self-signed certificate naming only DNS:localhost (no IP address). */
function makeCert(dir, name) {
  const cert = path.join(dir, `${name}.crt`), key = path.join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost',
    '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

itest('client library over TLS: the edge is verified by CA and by name', {
  bins: ['imb-edge', 'imb-xmppd', 'imb-client-example'], timeout: 30000,
}, async (t, stack) => {
  const dir = stack.tempDir('imb-client-tls-');
  const tls = makeCert(dir, 'edge');
  const other = makeCert(dir, 'other');
  const b = await startBridge(stack, { edge: { tls }, probe: false });
  const bob = await b.desktop('bob');
  const run = (name, edge, cafile, extra = []) => stack.spawn(name, binPath('imb-client-example'), [
    '--edge', edge, '--tls', '--cafile', cafile, '--user', b.jid('alice'), '--to', 'bob@localhost',
    '--backoff', '200', ...extra,
  ], { envExtra: { IMB_PASSWORD: b.pass('alice') } });

  // The right CA and the name the certificate carries: logs in, both ways.
  const good = run('imb-client-example-tls', `localhost:${b.edge.port}`, tls.cert,
    ['--send', '1', '--expect', '1', '--timeout', '15000']);
  await good.nextStdoutLine((l) => l.startsWith('logged-in '), 12000);
  await bob.nextMessage({ body: 'example 0' });
  await bob.send('alice@localhost', 'back over TLS');
  const r = await good.waitExit(10000);
  assert.equal(r.code, 0, good.stdout + good.stderr);
  assert.match(good.stdout, /^msg seq=\d+ from=bob@localhost\/desktop body=back over TLS$/m);

  // Another CA, or an address the certificate does not name: no login, and
  // the reason is a verification failure.
  for (const [name, edge, ca, why] of [
    ['wrong-ca', `localhost:${b.edge.port}`, other.cert, /self-signed certificate|unable to get local issuer/],
    ['wrong-name', `127.0.0.1:${b.edge.port}`, tls.cert, /IP address mismatch/]]) {
    const bad = run(`imb-client-example-${name}`, edge, ca, ['--expect', '1', '--timeout', '10000']);
    bad.unclean = true; // stopped by the test
    const line = await bad.nextStdoutLine((l) => l.startsWith('disconnect '), 10000);
    assert.match(line, /certificate verify failed/, `${name}: ${line}`);
    assert.match(line, why, `${name}: ${line}`);
    // It keeps trying (backoff) and never logs in.
    await bad.nextStdoutLine((l) => l.startsWith('disconnect '), 10000);
    await bad.stop({ timeout: 3000 });
    assert.doesNotMatch(bad.stdout, /logged-in/, `${name}: never logged in`);
    t.diagnostic(`${name}: ${line}`);
  }
});

async function waitFor(pred, ms) {
  const end = Date.now() + ms;
  while (!pred() && Date.now() < end) await sleep(50);
}
