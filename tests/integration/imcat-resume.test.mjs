// bin/imcat on the client library (client/), against the real stack: it
// reconnects and resumes by itself when its edge goes away (bye shutdown),
// moving across its --host list; it names why a connection failed (a
// certificate that does not verify, plaintext against a TLS edge); a
// message the server bounces as undeliverable is not also shown as
// delivered; on a terminal it has a prompt with line editing (libedit).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { itest, startBridge, startEdge, binPath, sleep, waitFor } from '../harness/index.mjs';

const esc = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** imcat in chat mode (password from $IMCAT_PASSWORD), with helpers as in imcat.test.mjs. */
function spawnChat(stack, b, user, args, name = `imcat-${user}`) {
  const proc = stack.spawn(name, binPath('imcat'), ['--user', b.jid(user), ...args],
    { stdin: 'pipe', envExtra: { IMCAT_PASSWORD: b.pass(user) } });
  proc.say = (text) => proc.write(`${text}\n`);
  proc.line = (re, timeout = 5000) => proc.nextStdoutLine((l) => re.test(l), timeout).catch((e) => {
    e.message += `; wanted ${re}; stdout so far:\n${proc.stdout}\nstderr:\n${proc.stderr}`;
    throw e;
  });
  return proc;
}

const N = 16;

/**
 * A conversation both ways (N messages each, 100 ms apart) during which the
 * edge goes away with bye shutdown after a third: 'restart' starts a new edge
 * on the same port (imcat has one --host); 'next-host' leaves a second edge
 * running, the next in imcat's --host list. Counts what was sent, shown,
 * lost and shown twice.
 */
async function conversationAcrossRestart(t, stack, mode) {
  const b = await startBridge(stack);
  const port = b.edge.port;
  const edgeB = mode === 'next-host' ? await startEdge(stack, { redisPort: b.redis.port, credKey: b.credKey }) : null;
  const bob = await b.desktop('bob');
  const hosts = mode === 'next-host'
    ? ['--host', `127.0.0.1:${port}`, '--host', `127.0.0.1:${edgeB.port}`]
    : ['--host', '127.0.0.1', '--port', String(port)];
  const cat = spawnChat(stack, b, 'alice', [...hosts, '--dev', 'cli', '--to', 'bob@localhost']);
  await cat.waitForLine(/^\* logged in as alice@localhost/, { timeout: 10000 });

  const t0 = Date.now();
  let stopAt = 0;
  let restarted = null;
  for (let i = 0; i < N; i++) {
    await bob.send('alice@localhost', `desk ${i}`);
    cat.say(`phone ${i}`);
    if (i === Math.floor(N / 3)) {
      stopAt = Date.now();
      await b.edge.stop({ signal: 'SIGTERM', timeout: 5000 });
      if (mode === 'restart') {
        restarted = await startEdge(stack, { redisPort: b.redis.port, credKey: b.credKey,
          extraArgs: ['--listen', `127.0.0.1:${port}`] });
        assert.equal(restarted.port, port, 'the new edge listens where the old one did');
      }
    }
    await sleep(100);
  }
  const resumed = await cat.waitForLine(/^\* reconnected to 127\.0\.0\.1:\d+, resumed at seq \d+/, { timeout: 15000 });
  // Everything arrives: N lines at the desktop, N messages on imcat's
  // stdout, and each of imcat's messages acknowledged once.
  const phoneAtBob = () => bob.messages.map((m) => m.body).filter((x) => /^phone \d+$/.test(x ?? ''));
  await waitFor(() => new Set(phoneAtBob()).size >= N, { timeout: 15000 }).catch(() => {});
  await waitFor(() => cat.lines('stdout').filter((l) => / bob@localhost\/desktop: desk \d+$/.test(l)).length >= N,
    { timeout: 15000 }).catch(() => {});
  await waitFor(() => cat.lines('stdout').filter((l) => /^\(delivered to server: /.test(l)).length >= N,
    { timeout: 10000 }).catch(() => {});
  cat.endStdin();
  const code = (await cat.waitExit(10000)).code;

  const shown = cat.lines('stdout').map((l) => / bob@localhost\/desktop: (desk \d+)$/.exec(l)?.[1]).filter(Boolean);
  const want = Array.from({ length: N }, (_, i) => `desk ${i}`);
  const inMissing = want.filter((w) => !shown.includes(w));
  const inTwice = shown.filter((s, i) => shown.indexOf(s) !== i);
  const atBob = phoneAtBob();
  const outMissing = Array.from({ length: N }, (_, i) => `phone ${i}`).filter((w) => !atBob.includes(w));
  const outTwice = atBob.filter((s, i) => atBob.indexOf(s) !== i);
  const acks = cat.lines('stdout').filter((l) => /^\(delivered to server: /.test(l));
  const ackTwice = acks.filter((s, i) => acks.indexOf(s) !== i);
  t.diagnostic(`${mode}: in: sent ${N}, shown ${shown.length}, missing ${inMissing.length}, twice ${inTwice.length}; ` +
    `out: sent ${N}, at the desktop ${atBob.length}, missing ${outMissing.length}, twice ${outTwice.length}; ` +
    `acks shown ${acks.length} (${ackTwice.length} twice); "${resumed}"; edge stopped ${stopAt - t0} ms in, ` +
    `${Date.now() - t0} ms in all; exit ${code}`);
  assert.match(cat.stderr, /server ended the session: shutdown; reconnecting/);
  assert.match(resumed, new RegExp(`^\\* reconnected to 127\\.0\\.0\\.1:${edgeB ? edgeB.port : port}, resumed at seq `));
  assert.deepEqual(inMissing, [], 'no incoming message lost');
  assert.deepEqual(inTwice, [], 'no incoming message shown twice');
  assert.deepEqual(outMissing, [], 'no outgoing message lost');
  assert.deepEqual(outTwice, [], 'no outgoing message delivered twice');
  assert.equal(acks.length, N, 'one "(delivered to server" line per message');
  assert.equal(code, 0, 'imcat exits 0 at end of input');
}

itest('imcat: its edge restarts mid-conversation (bye shutdown): imcat reconnects and resumes by itself, nothing lost or shown twice', {
  bins: ['imb-edge', 'imb-xmppd', 'imcat'], timeout: 60000,
}, (t, stack) => conversationAcrossRestart(t, stack, 'restart'));

itest('imcat: its edge shuts down mid-conversation: imcat resumes on the next --host, nothing lost or shown twice', {
  bins: ['imb-edge', 'imb-xmppd', 'imcat'], timeout: 60000,
}, (t, stack) => conversationAcrossRestart(t, stack, 'next-host'));

/** A self-signed certificate for the given subjectAltName. */
function makeCert(dir, name, san) {
  const cert = path.join(dir, `${name}.crt`), key = path.join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '1', '-subj', '/CN=imb-test', '-addext', `subjectAltName=${san}`,
    '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

itest('imcat: TLS and connection errors say why (verification failure, plaintext against a TLS edge)', {
  bins: ['imb-edge', 'imb-xmppd', 'imcat'], timeout: 60000,
}, async (t, stack) => {
  const dir = stack.tempDir('imb-imcat-tls-');
  const tls = makeCert(dir, 'edge', 'DNS:edge.example.test');
  const b = await startBridge(stack, { edge: { tls }, probe: false });
  const run = async (name, args) => {
    const p = spawnChat(stack, b, 'alice', ['--port', String(b.edge.port), ...args], `imcat-${name}`);
    const r = await p.waitExit(15000);
    const err = p.stderr.trim().split('\n').filter((l) => /^imcat: /.test(l)).join(' | ');
    t.diagnostic(`${name}: exit ${r.code}: ${err}`);
    return { r, err, p };
  };
  // The certificate names edge.example.test, imcat asks for localhost.
  const name = await run('hostname', ['--host', 'localhost', '--cafile', tls.cert]);
  assert.equal(name.r.code, 3);
  assert.match(name.err, /certificate verify failed: hostname mismatch/);
  assert.doesNotMatch(name.p.stderr, /error="Success"/);
  // An address the certificate does not carry.
  const ip = await run('address', ['--host', '127.0.0.1', '--cafile', tls.cert]);
  assert.equal(ip.r.code, 3);
  assert.match(ip.err, /certificate verify failed: IP address mismatch/);
  // Plaintext against the TLS edge.
  const plain = await run('plaintext', ['--host', '127.0.0.1']);
  assert.equal(plain.r.code, 3);
  assert.match(plain.err, /seems to speak TLS/);
  assert.match(plain.err, /--tls/);
});

itest('imcat: a message the server bounces (undeliverable) is not also shown as delivered; a good one is', {
  bins: ['imb-edge', 'imb-xmppd', 'imcat'], timeout: 60000,
}, async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  const cat = spawnChat(stack, b, 'alice', ['--host', '127.0.0.1', '--port', String(b.edge.port), '--to', 'bob@localhost']);
  await cat.waitForLine(/^\* logged in as alice@localhost/, { timeout: 10000 });
  cat.say('a good one');
  const ok = await cat.line(/^\(delivered to server: \S+\)$/);
  await bob.nextMessage({ body: 'a good one' });
  // A room alice is not in: the server takes the message (ack), the room
  // refuses it afterwards (error undeliverable, docs/PROTOCOL.md 10.6).
  const bounced = [];
  for (let i = 0; i < 3; i++) {
    cat.say('/room lobby@conference.localhost');
    cat.say(`nobody hears this ${i}`);
    const err = await cat.line(/^! error undeliverable/, 10000);
    bounced.push(/\(id (\S+)\)/.exec(err)?.[1]);
  }
  cat.say('/to bob@localhost');
  cat.say('the last one');
  await bob.nextMessage({ body: 'the last one' });
  await cat.line(/^\(delivered to server: \S+\)$/);
  await sleep(2000);
  cat.endStdin();
  assert.equal((await cat.waitExit(5000)).code, 0);
  const delivered = cat.lines('stdout').filter((l) => /^\(delivered to server: /.test(l));
  const both = bounced.filter((id) => delivered.some((l) => l.includes(id)));
  t.diagnostic(`good: ${ok}; bounced ids ${bounced.join(', ')}; "delivered" lines ${delivered.length}; ` +
    `bounced but shown delivered: ${both.length}`);
  assert.ok(bounced.every(Boolean), `each error names its message: ${cat.stdout}`);
  assert.deepEqual(both, [], 'no bounced message shown as delivered');
  assert.equal(delivered.length, 2, 'the two good messages are shown delivered');
});

itest('imcat on a terminal: a prompt, and line editing (libedit)', {
  bins: ['imb-edge', 'imb-xmppd', 'imcat'], timeout: 60000,
}, async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  // script(1) runs imcat on a pseudo-terminal and relays our stdin to it.
  const cmd = [binPath('imcat'), '--host', '127.0.0.1', '--port', String(b.edge.port), '--user', b.jid('alice'),
    '--to', 'bob@localhost'].map((a) => `'${a}'`).join(' ');
  const proc = stack.spawn('imcat-tty', 'script', ['-qfec', cmd, '/dev/null'],
    { stdin: 'pipe', envExtra: { IMCAT_PASSWORD: b.pass('alice'), TERM: 'xterm' } });
  await waitFor(() => /bob@localhost> /.test(proc.stdout), { timeout: 10000 }).catch(() => {});
  assert.match(proc.stdout, /bob@localhost> /, `the prompt shows the recipient:\n${JSON.stringify(proc.stdout)}`);
  // Typed: "ello bob", Ctrl-A (start of line), "h", Enter: libedit edits
  // the line into "hello bob" (a terminal in cooked mode would send the ^A).
  proc.write('ello bob');
  await sleep(200);
  proc.write('\x01h\r');
  const m = await bob.nextMessage((x) => /ello bob/.test(x.body ?? ''), 10000);
  t.diagnostic(`the desktop got ${JSON.stringify(m.body)}`);
  assert.equal(m.body, 'hello bob');
  proc.write('/quit\r');
  const r = await proc.waitExit(10000);
  assert.equal(r.code, 0, proc.stdout);
});
