// TLS between xmppd and the XMPP server: verified against a configured CA,
// a certificate that does not verify is reported as unavailable (not as a
// wrong password), and a server that stalls in the handshake cannot freeze
// a worker.
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  itest, startRedis, startProsody, startXmppd, startEdge, connectPhone, startDesktop,
  randomCredKey, freePort, sleep, waitFor,
} from '../harness/index.mjs';

async function bridgeTo(stack, xmppPort, xmppArgs, users) {
  const credKey = randomCredKey();
  const redis = await startRedis(stack);
  const xmppd = await startXmppd(stack, { redisPort: redis.port, xmppPort, credKey, workers: 1, extraArgs: xmppArgs });
  const edge = await startEdge(stack, { redisPort: redis.port, credKey });
  await sleep(1200);
  return { redis, xmppd, edge };
}

itest('verified TLS to the XMPP server; an untrusted certificate is unavailable, not auth_failed', async (t, stack) => {
  const prosody = await startProsody(stack, { tls: true });
  const ok = await bridgeTo(stack, prosody.c2sPort, ['--xmpp-tls', 'required', '--xmpp-cafile', prosody.caFile]);
  const alice = await connectPhone(stack, ok.edge.port, 'alice');
  await alice.login('alice@localhost', 'secret');
  // The desktop peer is not under test: let it accept the self-signed cert.
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  const bob = await startDesktop(stack, { port: prosody.c2sPort, user: 'bob', pass: 'secret', domain: 'localhost' });
  assert.equal((await alice.msg('bob@localhost', 'over verified TLS')).t, 'ack');
  await bob.nextMessage({ body: 'over verified TLS' });
  await bob.send('alice@localhost', 'and back');
  await alice.next({ t: 'msg', body: 'and back' });

  // Same server, but the bridge trusts another CA.
  const other = await startProsody(stack, { tls: true, users: [] });
  const bad = await bridgeTo(stack, prosody.c2sPort, ['--xmpp-tls', 'required', '--xmpp-cafile', other.caFile]);
  const carol = await connectPhone(stack, bad.edge.port, 'carol');
  const f = await carol.tryLogin('carol@localhost', 'secret', { timeout: 20000 });
  assert.equal(f.code, 'unavailable', JSON.stringify(f));
  assert.match(f.msg, /certificate/);
  await waitFor(() => /xmpp_cert_rejected/.test(bad.xmppd.stderr), { timeout: 3000 });
});

itest('a server that stalls after <proceed/> cannot freeze a worker', async (t, stack) => {
  // A fake XMPP server: stream header, STARTTLS offered, <proceed/>, then nothing.
  const port = await freePort();
  const socks = new Set();
  const srv = net.createServer((s) => {
    socks.add(s);
    s.on('error', () => {});
    s.on('data', (d) => {
      const x = d.toString();
      if (x.includes('<stream:stream')) {
        s.write("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' " +
          "id='stall' from='localhost' version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>" +
          '<required/></starttls></stream:features>');
      }
      if (x.includes('<starttls')) s.write("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
      // ...and then the TLS handshake never gets an answer.
    });
  });
  await new Promise((r) => srv.listen(port, '127.0.0.1', r));
  stack.onCleanup('stall-server', () => { for (const s of socks) s.destroy(); srv.close(); });

  const b = await bridgeTo(stack, port, ['--xmpp-tls', 'required', '--connect-timeout', '5']);
  const phones = await Promise.all(['alice', 'bob'].map((u) => connectPhone(stack, b.edge.port, u)));
  const t0 = Date.now();
  const answers = await Promise.all(phones.map((p, i) => p.tryLogin(`${['alice', 'bob'][i]}@localhost`, 'secret', { timeout: 20000 })));
  const took = Date.now() - t0;
  t.diagnostic(`stalled handshakes answered in ${took} ms`);
  for (const a of answers) assert.equal(a.code, 'unavailable', JSON.stringify(a));
  assert.ok(took < 10000, `answers took ${took} ms`);
  await waitFor(() => /libstrophe_stalled/.test(b.xmppd.stderr), { timeout: 3000 });
  // The worker is alive and still answers: a third login is answered too.
  const p3 = await connectPhone(stack, b.edge.port, 'carol');
  const a3 = await p3.tryLogin('carol@localhost', 'secret', { timeout: 20000 });
  assert.equal(a3.code, 'unavailable');
  assert.ok(b.xmppd.running);
});
