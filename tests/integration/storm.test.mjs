// Socket storms: thousands of TLS sockets that never finish (or never start)
// their handshake, and more sockets than the edge has descriptors. The edge
// closes every socket by login_timeout whatever its handshake did, gives its
// descriptors and memory back, backs off when accept() fails instead of
// spinning, and a canary conversation on the same edge never stalls.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import {
  itest, startBridge, PhoneClient, connectPhone, sleep, waitFor, httpGet, httpAddr, metricValue, startCanary,
} from '../harness/index.mjs';

/** A self-signed certificate for 127.0.0.1/localhost in dir. */
function makeCert(dir) {
  const cert = path.join(dir, 'edge.crt'), key = path.join(dir, 'edge.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', key, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}

// ---- what the kernel says about the edge process --------------------------

const fdCount = (pid) => fs.readdirSync(`/proc/${pid}/fd`).length;
const rssKb = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
/** utime + stime in seconds (clock ticks of 10 ms). */
function cpuSec(pid) {
  const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}
/** Sockets of the edge's listening port in CLOSE-WAIT (the peer closed, the edge did not). */
function closeWait(port) {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  let n = 0;
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text;
    try { text = fs.readFileSync(f, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length > 3 && c[1].endsWith(`:${hex}`) && c[3] === '08') n++;
    }
  }
  return n;
}

/** The process runs a sanitized build (ASan keeps freed memory in quarantine). */
const sanitized = (pid) => /libasan/.test(fs.readFileSync(`/proc/${pid}/maps`, 'utf8'));

// ---- clients ----------------------------------------------------------------

/** A phone over TLS (the edge's certificate is self-signed: not verified here). */
function tlsPhone(stack, port, name) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false });
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`${name}: TLS connect timeout`)); }, 10000);
    s.once('secureConnect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      const p = new PhoneClient(s, name);
      stack.onCleanup(name, () => p.destroy(), () => p.describe());
      resolve(p);
    });
    s.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

/** Log user in over TLS, retrying while the bridge is not ready yet. */
async function tlsLogin(stack, b, user, name = user, timeout = 15000) {
  const end = Date.now() + timeout;
  for (;;) {
    const p = await tlsPhone(stack, b.edge.port, name);
    const f = await p.tryLogin(b.jid(user), b.pass(user));
    if (f.t === 'welcome') {
      p.sync = await p.next((x) => x.t === 'sync', 10000);
      return p;
    }
    p.destroy();
    if (Date.now() > end) throw new Error(`${user}: no login: ${JSON.stringify(f)}`);
    await sleep(200);
  }
}

/** The first 11 bytes of a TLS ClientHello record announcing 512 bytes. */
const HALF_HELLO = Buffer.from('1603010200010001fc0303', 'hex');

/**
 * Open n raw sockets to port, `batch` connects at a time; how(sock) runs on
 * connect. Resolves the sockets, each with .closedAt set when the edge
 * closes it.
 */
async function openMany(port, n, how, batch = 250) {
  const socks = [];
  for (let i = 0; i < n; i += batch) {
    await Promise.all(Array.from({ length: Math.min(batch, n - i) }, () => new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => {});
      s.on('close', () => { s.closedAt = Date.now(); resolve(); });
      s.on('end', () => s.destroy()); // the edge closed: close ours at once
      s.resume(); // read (and drop) whatever comes, so 'end' is seen
      s.once('connect', () => { how(s); resolve(); });
      socks.push(s);
    })));
  }
  return socks;
}

itest('TLS storm: half-open handshakes are closed by login_timeout, descriptors and memory come back, a canary never stalls',
  { timeout: 120000 }, async (t, stack) => {
    const LOGIN_TIMEOUT = 2;
    const cert = makeCert(stack.tempDir('imb-storm-'));
    const b = await startBridge(stack, {
      edge: { tls: cert, loginTimeout: LOGIN_TIMEOUT }, probe: false,
      edgeArgs: ['--max-unauth-per-ip', '100000'],
    });
    const pid = b.edge.pid, port = b.edge.port;
    const alice = await tlsLogin(stack, b, 'alice');
    const bob = await tlsLogin(stack, b, 'bob');
    const chat = startCanary(alice, 'alice@localhost', bob, 'bob@localhost', { minMessages: 10 });
    await sleep(1500);
    const base = { fds: fdCount(pid), rss: rssKb(pid) };

    // The storm: silent sockets, half a ClientHello, and half a ClientHello
    // then our FIN (the edge's side sits in CLOSE-WAIT until it closes).
    const t0 = Date.now();
    const peak = { fds: 0, rss: 0, closeWait: 0 };
    const sampler = setInterval(() => {
      peak.fds = Math.max(peak.fds, fdCount(pid));
      peak.rss = Math.max(peak.rss, rssKb(pid));
      peak.closeWait = Math.max(peak.closeWait, closeWait(port));
    }, 100);
    const silent = await openMany(port, 2000, () => {});
    const half = await openMany(port, 2000, (s) => s.write(HALF_HELLO));
    const fin = await openMany(port, 500, (s) => s.end(HALF_HELLO));
    const opened = Date.now();
    const all = [...silent, ...half, ...fin];
    // A new phone logs in during the storm.
    const tc = Date.now();
    const carol = await tlsLogin(stack, b, 'carol', 'carol', 5000);
    const carolMs = Date.now() - tc;

    // login_timeout + 2 s after the last one opened, every one is gone.
    await waitFor(() => all.every((s) => s.closedAt), {
      timeout: Math.max(0, opened + (LOGIN_TIMEOUT + 2) * 1000 - Date.now()), interval: 100,
    }).catch(() => {});
    const closed = all.filter((s) => s.closedAt).length;
    const lastClose = closed ? Math.max(...all.filter((s) => s.closedAt).map((s) => s.closedAt)) - t0 : '-';
    clearInterval(sampler);
    for (const s of all) s.destroy();
    await sleep(1500); // the edge's once-a-second memory trim
    const after = { fds: fdCount(pid), rss: rssKb(pid), closeWait: closeWait(port) };
    const chatStats = await chat.stop(t); // (asserts: no stall over 2 s)
    carol.destroy();

    const mb = (kb) => (kb / 1024).toFixed(1);
    console.log(`storm: ${all.length} sockets opened in ${opened - t0} ms (2000 silent, 2000 half ClientHello, ` +
      `500 half ClientHello + FIN); closed by the edge ${closed}/${all.length}, last ${lastClose} ms after the storm began`);
    console.log(`edge fds: baseline ${base.fds}, peak ${peak.fds}, after ${after.fds}; ` +
      `RSS MB: baseline ${mb(base.rss)}, peak ${mb(peak.rss)}, after ${mb(after.rss)}; ` +
      `CLOSE-WAIT: peak ${peak.closeWait}, after ${after.closeWait}`);
    console.log(`carol logged in during the storm in ${carolMs} ms; canary: ${chatStats.n} messages, ` +
      `worst ack ${chatStats.worstAck} ms, worst delivery ${chatStats.worstDelivery} ms`);

    assert.equal(closed, all.length, `the edge closed ${closed} of ${all.length} storm sockets within login_timeout + 2 s`);
    assert.ok(peak.fds > base.fds + 500, `the storm reached the edge (peak fds ${peak.fds})`);
    assert.ok(after.fds <= base.fds + 3, `descriptors back to baseline: ${after.fds} vs ${base.fds}`);
    assert.equal(after.closeWait, 0, 'no socket left in CLOSE-WAIT');
    // What stays is about a page per descriptor number the storm used
    // (libevent keeps a small slot per fd, which pins its heap page).
    if (!sanitized(pid)) assert.ok(after.rss - base.rss < 0.2 * (peak.rss - base.rss) && after.rss - base.rss < 32 * 1024,
      `RSS back near baseline: ${mb(after.rss)} vs ${mb(base.rss)} MB (peak ${mb(peak.rss)})`);
  });

itest('descriptor exhaustion: the edge keeps headroom, backs off accept() instead of spinning, and recovers',
  { timeout: 120000 }, async (t, stack) => {
    const LIMIT = 256;
    const b = await startBridge(stack, {
      edge: { loginTimeout: 2, wrap: ['prlimit', `--nofile=${LIMIT}:${LIMIT}`] },
      edgeArgs: ['--max-unauth-per-ip', '100000', '--http-listen', '127.0.0.1:0'],
    });
    const edge = b.edge, pid = edge.pid, port = edge.port, http = httpAddr(edge);
    // Counted as the lines come (the harness keeps only the start of a long log).
    const count = { accept_failed: 0, conn_rejected: 0 };
    let part = '';
    edge.child.stderr.on('data', (d) => {
      const lines = (part + d).split('\n');
      part = lines.pop();
      for (const l of lines) for (const k of Object.keys(count)) if (l.includes(` ${k} `)) count[k]++;
    });
    const acceptLines = () => count.accept_failed;
    const rejectLines = () => count.conn_rejected;
    const clamp = /max_conns_clamped.*max_conns=(\d+)/.exec(edge.stderr);
    const alice = await b.loginPhone('alice');
    const base = fdCount(pid);

    // 1. More sockets than the limit: beyond max_conns they are refused
    //    (accepted and closed), Redis and /healthz keep working.
    let cpu0 = cpuSec(pid);
    let w0 = Date.now();
    const storm1 = await openMany(port, 600, () => {});
    await sleep(500);
    const peak1 = fdCount(pid);
    const refused1 = storm1.filter((s) => s.closedAt).length;
    const health1 = await httpGet(http, '/healthz');
    const ack1 = await alice.msg('bob@localhost', 'during the storm', { timeout: 5000 });
    await sleep(1500);
    const cpu1 = cpuSec(pid) - cpu0, wall1 = (Date.now() - w0) / 1000;
    for (const s of storm1) s.destroy();

    // 2. The limit drops under what the edge holds (an operator, another
    //    process's share): accept() fails with EMFILE; the edge backs off and
    //    sheds the queue through its reserve descriptor, without spinning.
    await waitFor(() => fdCount(pid) <= base + 2, { timeout: 6000, what: 'storm 1 sockets gone' });
    const held = fdCount(pid);
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=${held + 40}:${LIMIT}`]);
    const lines0 = acceptLines();
    cpu0 = cpuSec(pid);
    w0 = Date.now();
    const storm2 = await openMany(port, 600, () => {});
    await sleep(3000);
    const cpu2 = cpuSec(pid) - cpu0, wall2 = (Date.now() - w0) / 1000;
    const lines2 = acceptLines() - lines0;
    const shed2 = storm2.filter((s) => s.closedAt).length;
    for (const s of storm2) s.destroy();
    execFileSync('prlimit', ['--pid', String(pid), `--nofile=${LIMIT}:${LIMIT}`]);

    // 3. Once the storm is gone: a new phone logs in, /healthz is fine.
    await waitFor(() => fdCount(pid) <= base + 2, { timeout: 8000, what: 'storm 2 sockets gone' });
    // (Sockets of the storm still in the listen queue are accepted first.)
    let attempts = 0;
    await waitFor(async () => {
      attempts++;
      const carol = await connectPhone(stack, port, `carol${attempts}`);
      const f = await carol.tryLogin(b.jid('carol'), b.pass('carol'), { timeout: 3000 }).catch(() => null);
      return f?.t === 'welcome';
    }, { timeout: 10000, interval: 200, what: 'carol logs in' });
    const health3 = await httpGet(http, '/healthz');
    const metrics = (await httpGet(http, '/metrics')).text;
    const failures = metricValue(metrics, 'imb_edge_accept_failures_total');

    console.log(`limit ${LIMIT}: max_conns clamped to ${clamp?.[1]}; storm 1: 600 sockets, ${refused1} refused, ` +
      `peak fds ${peak1} (baseline ${base}), edge CPU ${cpu1.toFixed(2)} s in ${wall1.toFixed(1)} s, ` +
      `/healthz ${health1.status}, chat ${ack1.t}, conn_rejected lines ${rejectLines()}`);
    console.log(`storm 2 (limit lowered to ${held + 40}): 600 sockets, ${shed2} shed, edge CPU ${cpu2.toFixed(2)} s in ` +
      `${wall2.toFixed(1)} s, accept_failed lines ${lines2}, imb_edge_accept_failures_total ${failures}; ` +
      `after: /healthz ${health3.status}, carol logged in (attempt ${attempts})`);

    assert.ok(clamp, 'the edge logged max_conns_clamped');
    assert.equal(health1.status, 200, `/healthz during storm 1: ${health1.text}`);
    assert.equal(ack1.t, 'ack');
    assert.ok(peak1 <= LIMIT, `fds at peak ${peak1}`);
    assert.ok(refused1 >= 600 - LIMIT + 64, `refused ${refused1}`);
    assert.ok(cpu1 < 0.3 * wall1, `storm 1: edge CPU ${cpu1} s in ${wall1} s`);
    assert.ok(rejectLines() <= wall1 + 4, `conn_rejected lines: ${rejectLines()}`);
    assert.ok(cpu2 < 0.3 * wall2, `storm 2: edge CPU ${cpu2} s in ${wall2} s`);
    assert.ok(lines2 >= 1 && lines2 <= wall2 + 2, `accept_failed lines: ${lines2}`);
    assert.ok(failures > 0, `imb_edge_accept_failures_total ${failures}`);
    assert.equal(health3.status, 200);
  });
