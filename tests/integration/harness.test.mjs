// Self-tests of the harness: these need only redis-server, prosody and
// xmpp.js (not the project's binaries).  They prove that the XMPP server and
// the independent desktop peer work, so a failure elsewhere is the bridge's.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  itest, freePort, portIsFree, canConnect, startRedis, startProsody, startDesktop,
  PhoneClient, encodeFrame, Stack, SCRIPTS_DIR, sleep, waitFor, bareJid, PLAIN_RUN_ONLY,
} from '../harness/index.mjs';

const execFileP = promisify(execFile);
const NO_BINS = { bins: [], timeout: 30000, skip: PLAIN_RUN_ONLY };

itest('freePort gives distinct bindable ports', NO_BINS, async () => {
  const ports = [];
  for (let i = 0; i < 5; i++) ports.push(await freePort());
  assert.equal(new Set(ports).size, 5);
  for (const p of ports) assert.ok(await portIsFree(p), `port ${p} free`);
});

itest('prosody-conf.sh writes a valid config silently', NO_BINS, async (t, stack) => {
  const dir = path.join(stack.tempDir('imb-conf-'), 'sub dir');   // not yet existing, with a space
  const script = path.join(SCRIPTS_DIR, 'prosody-conf.sh');
  const r = await execFileP(script, [dir, '25222', '25280']);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr, '');
  const cfg = fs.readFileSync(path.join(dir, 'prosody.cfg.lua'), 'utf8');
  assert.match(cfg, /VirtualHost "localhost"/);
  assert.match(cfg, /Component "conference\.localhost" "muc"/);
  assert.match(cfg, /c2s_ports = \{ 25222 \}/);
  assert.match(cfg, /http_ports = \{ 25280 \}/);
  assert.match(cfg, /default_iteration_count = 128/);
  const chk = await execFileP('prosodyctl', ['--config', path.join(dir, 'prosody.cfg.lua'), 'check', 'config']);
  assert.match(chk.stdout, /All checks passed/);
  // Custom domain.
  const dir2 = stack.tempDir('imb-conf2-');
  await execFileP(script, [dir2, '25223', '25281', 'example.test']);
  const cfg2 = fs.readFileSync(path.join(dir2, 'prosody.cfg.lua'), 'utf8');
  assert.match(cfg2, /VirtualHost "example\.test"/);
  assert.match(cfg2, /Component "conference\.example\.test" "muc"/);
  // Bad usage fails.
  await assert.rejects(execFileP(script, [dir2]));
});

itest('redis: start, PING, stop, restart on the same port', NO_BINS, async (t, stack) => {
  const redis = await startRedis(stack);
  assert.ok(redis.port > 0);
  assert.equal(await redis.command('PING'), 'PONG');
  assert.equal(await redis.command('SET', 'k', 'v'), 'OK');
  assert.equal(await redis.command('GET', 'k'), 'v');
  const firstPid = redis.proc.pid;
  await redis.stop();
  assert.equal(redis.running, false);
  assert.equal(await redis.ping(), false);
  assert.equal(await canConnect(redis.port), false);
  await redis.start();
  assert.notEqual(redis.proc.pid, firstPid);
  assert.equal(await redis.command('PING'), 'PONG');
  assert.equal(await redis.command('GET', 'k'), null, 'no persistence');
  // Quick restart, again on the same port.
  const port = redis.port;
  await redis.restart();
  assert.equal(redis.port, port);
  assert.equal(await redis.ping(), true);
});

itest('prosody: two xmpp.js desktop peers exchange messages', NO_BINS, async (t, stack) => {
  const prosody = await startProsody(stack, { users: [['bob', 'pw1'], ['erin', 'pw2']] });
  const bob = await startDesktop(stack, { port: prosody.c2sPort, user: 'bob', pass: 'pw1' });
  const erin = await startDesktop(stack, { port: prosody.c2sPort, user: 'erin', pass: 'pw2', resource: 'laptop' });
  assert.match(bob.jid, /^bob@localhost\/desktop/);
  assert.match(erin.jid, /^erin@localhost\/laptop/);
  await bob.send('erin@localhost', 'hello erin');
  const m = await erin.nextMessage();
  assert.equal(m.body, 'hello erin');
  assert.equal(bareJid(m.from), 'bob@localhost');
  assert.equal(m.type, 'chat');
  await erin.send(bob.jid, 'hi bob');
  const m2 = await bob.nextMessageFrom('erin@localhost', 'hi bob');
  assert.equal(m2.from, erin.jid);
  // Wrong password is refused.
  const { DesktopPeer } = await import('../harness/desktop.mjs');
  const bad = new DesktopPeer({ port: prosody.c2sPort, user: 'bob', pass: 'nope' });
  stack.onCleanup('bad', () => bad.stop());
  await assert.rejects(bad.start(5000));
});

itest('prosody: offline storage and registering while running', NO_BINS, async (t, stack) => {
  const prosody = await startProsody(stack, { users: [['bob', 'pw1']] });
  await prosody.register('carol', 'pw3');   // while running
  const bob = await startDesktop(stack, { port: prosody.c2sPort, user: 'bob', pass: 'pw1' });
  await bob.send('carol@localhost', 'while you were away');
  await bob.sync();
  const carol = await startDesktop(stack, { port: prosody.c2sPort, user: 'carol', pass: 'pw3' });
  const m = await carol.nextMessage({ body: 'while you were away' });
  assert.equal(bareJid(m.from), 'bob@localhost');
  assert.equal(m.delayed, true);
  // The same connections keep working afterwards (with stream management on,
  // xmpp.js 0.14 breaks exactly here: Prosody closes bob's stream).
  await bob.send('carol@localhost', 'live now');
  assert.equal((await carol.nextMessage({ body: 'live now' })).body, 'live now');
  await carol.send('bob@localhost', 'welcome back');
  await bob.nextMessage({ body: 'welcome back' });
  assert.deepEqual(bob.errors.map((e) => e.message), []);
  assert.deepEqual(carol.errors.map((e) => e.message), []);
  // BOSH endpoint answers too (used by web clients / make run).
  const res = await fetch(`http://127.0.0.1:${prosody.httpPort}/http-bind`, {
    method: 'POST',
    body: '<body rid="1" to="localhost" ver="1.6" wait="5" hold="1" xmlns="http://jabber.org/protocol/httpbind" ' +
      'xmlns:xmpp="urn:xmpp:xbosh" xmpp:version="1.0"/>',
  });
  assert.equal(res.status, 200);
  assert.match(await res.text(), /sid=/);
});

itest('PhoneClient framing against an in-process fake server', NO_BINS, async (t, stack) => {
  // Fake edge: answers every frame with {"t":"echo","got":<frame>}; on
  // {"t":"quit"} sends {"t":"bye"} and closes; splits its writes byte by byte.
  const server = net.createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4) {
        const n = buf.readUInt32BE(0);
        if (buf.length < 4 + n) break;
        const text = buf.subarray(4, 4 + n).toString();
        buf = buf.subarray(4 + n);
        let obj;
        try { obj = JSON.parse(text); } catch { obj = { raw: text }; }
        if (obj.t === 'quit') {
          sock.end(encodeFrame({ t: 'bye', reason: 'logout' }));
          return;
        }
        const out = encodeFrame({ t: 'echo', got: obj });
        for (const b of out) sock.write(Buffer.from([b]));
      }
    });
    sock.on('error', () => {});
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  stack.onCleanup('fake server', () => new Promise((r) => server.close(r)));
  const phone = await PhoneClient.connect(server.address().port);
  stack.onCleanup('phone', () => phone.destroy(), () => phone.describe());
  phone.send({ t: 'a', n: 1 });
  phone.sendFrame('not json');
  // Two frames in one write.
  phone.sendRaw(Buffer.concat([encodeFrame({ t: 'b' }), encodeFrame({ t: 'c', s: 'é✓' })]));
  const c = await phone.next((f) => f.got?.t === 'c');           // out of order: later frames stay queued
  assert.equal(c.got.s, 'é✓');
  assert.deepEqual(await phone.expect({ t: 'echo', got: { t: 'a' } }), { t: 'echo', got: { t: 'a', n: 1 } });
  assert.deepEqual((await phone.nextAny()).got, { raw: 'not json' });
  assert.deepEqual((await phone.nextAny()).got, { t: 'b' });
  assert.ok(await phone.noFrame(() => true, 100));
  await assert.rejects(phone.next({ t: 'never' }, 100), /timeout/);
  phone.send({ t: 'quit' });
  assert.deepEqual(await phone.expect({ t: 'bye' }), { t: 'bye', reason: 'logout' });
  await phone.waitClose(2000);
  assert.equal(phone.isClosed, true);
  await assert.rejects(phone.next({ t: 'x' }, 1000), /closed/);
});

itest('Stack cleanup kills its children', NO_BINS, async () => {
  const s = new Stack('inner');
  const p = s.spawn('sleeper', 'sleep', ['60']);
  const dir = s.tempDir('imb-x-');
  await sleep(50);
  assert.equal(p.running, true);
  await s.cleanup();
  assert.equal(p.running, false);
  assert.equal(fs.existsSync(dir), false);
  await waitFor(() => { try { process.kill(p.pid, 0); return false; } catch { return true; } },
    { timeout: 2000, what: 'sleeper gone' });
});
