// bench/idle-tls.mjs - edge memory per idle TLS phone: starts Redis, Prosody,
// xmppd and a TLS edge with the test harness, then measures the edge's RSS
// (VmRSS) before and after opening N TLS sockets that finish the handshake
// and stay silent (not logged in), then M phones that log in and stay idle.
//   node bench/idle-tls.mjs [--idle 2000] [--logged 500]
// and, for comparison, what OpenSSL alone holds per idle connection
// (build/bench/tlsfloor, from bench/tlsfloor.c).
// IMB_TEST_BIN_DIR=dir picks the binaries (to compare builds).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { Stack, startBridge, PhoneClient, sleep } from '../tests/harness/index.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const IDLE = arg('idle', 2000);
const LOGGED = arg('logged', 500);
const USERS = 20;

const rssKb = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);

function tlsSocket(port) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

async function batches(n, size, fn) {
  const out = [];
  for (let i = 0; i < n; i += size) {
    out.push(...await Promise.all(Array.from({ length: Math.min(size, n - i) }, (_, j) => fn(i + j))));
  }
  return out;
}

/* 200 sockets that finish their handshake and leave: the edge frees them,
 * which lets it trim its heap (a build that trims) before the next reading. */
async function churn(port) {
  const socks = await batches(200, 100, () => tlsSocket(port));
  for (const s of socks) s.destroy();
  await sleep(2500);
}

const st = new Stack('idle-tls');
try {
  const dir = st.tempDir('imb-idle-tls-');
  const cert = path.join(dir, 'edge.crt'), key = path.join(dir, 'edge.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  const users = Array.from({ length: USERS }, (_, i) => [`u${i}`, `pw-u${i}`]);
  const b = await startBridge(st, {
    users, probe: false, edge: { tls: { cert, key }, loginTimeout: 600 },
    edgeArgs: ['--max-unauth-per-ip', '100000'],
  });
  const pid = b.edge.pid, port = b.edge.port;
  await churn(port);
  const r0 = rssKb(pid);

  const idle = await batches(IDLE, 100, () => tlsSocket(port));
  await churn(port);
  const r1 = rssKb(pid);

  // Logged in: LOGGED phones over USERS accounts, then all quiet.
  const phones = await batches(LOGGED, 20, async (i) => {
    const [u, pw] = users[i % USERS];
    for (let tries = 0; ; tries++) {
      const p = new PhoneClient(await tlsSocket(port), `p${i}`);
      const f = await p.tryLogin(`${u}@localhost`, pw, { timeout: 20000 });
      if (f.t === 'welcome') {
        await p.next((x) => x.t === 'sync', 20000);
        return p;
      }
      p.destroy();
      if (tries > 20) throw new Error(`login ${u}: ${JSON.stringify(f)}`);
      await sleep(300);
    }
  });
  await churn(port);
  const r2 = rssKb(pid);
  const kb = (x) => x.toFixed(1);
  console.log(`edge RSS: ${kb(r0 / 1024)} MB at rest; +${IDLE} idle TLS sockets (handshake done, no login): ` +
    `${kb(r1 / 1024)} MB = ${kb((r1 - r0) / IDLE)} KB each; +${LOGGED} logged-in idle TLS phones ` +
    `(${USERS} users): ${kb(r2 / 1024)} MB = ${kb((r2 - r1) / LOGGED)} KB each`);
  // What OpenSSL alone keeps per idle connection, same certificate, no edge
  // (bench/tlsfloor.c; `make bench` builds it).
  const floorBin = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'build', 'bench', 'tlsfloor');
  if (fs.existsSync(floorBin)) {
    const f = JSON.parse(execFileSync(floorBin, [cert, key, String(IDLE)]).toString());
    console.log(`${f.openssl} alone (bench/tlsfloor): ${kb(f.bytes_per_conn / 1024)} KB of heap per idle server connection ` +
      `(${kb(f.bytes_per_conn_buffers_freed / 1024)} KB after SSL_free_buffers, ${kb(f.bytes_per_conn_no_ticket / 1024)} KB without session tickets)`);
  }
  for (const s of idle) s.destroy();
  for (const p of phones) p.destroy();
} finally {
  await st.cleanup();
}
