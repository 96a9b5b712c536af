// bench/run.mjs - `make bench`: every benchmark of docs/BENCHMARKS.md, each
// against a baseline measured in the same run, on 127.0.0.x only.
//
//   node bench/run.mjs [--quick] [--only idle,real,chat,sio,wire] [--runs 3]
//   env: BENCH_QUICK=1 (small sizes, ~2 min), BENCH_BIN_DIR (default bin/),
//        BENCH_WRITE_DOCS=0|1 (default: 1 for a full run of every section)
//
// Writes bench/results/<UTC time>.json and bench/results/latest.{json,md};
// the tables of latest.md replace the block between the markers
// <!-- bench:begin --> and <!-- bench:end --> in docs/BENCHMARKS.md.
// Every process it starts is tracked by a harness Stack and stopped at the
// end of its section (and SIGKILLed if node exits early).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { Stack } from '../tests/harness/stack.mjs';
import { startRedis } from '../tests/harness/redis.mjs';
import { ProsodyServer } from '../tests/harness/prosody.mjs';
import { freePort, randomCredKey, sleep, waitFor, canConnect } from '../tests/harness/util.mjs';

const execFileP = promisify(execFile);
const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
const BIN = path.resolve(process.env.BENCH_BIN_DIR || path.join(ROOT, 'bin'));
const BBIN = path.join(ROOT, 'build', 'bench');
const argv = process.argv.slice(2);
const QUICK = process.env.BENCH_QUICK === '1' || argv.includes('--quick');
const onlyArg = argv.includes('--only') ? argv[argv.indexOf('--only') + 1].split(',') : null;
const RUNS = Number(argv.includes('--runs') ? argv[argv.indexOf('--runs') + 1] : 3);
const SECTIONS = onlyArg ?? ['idle', 'real', 'chat', 'sio', 'wire'];
const WRITE_DOCS = process.env.BENCH_WRITE_DOCS ? process.env.BENCH_WRITE_DOCS === '1' : (!QUICK && !onlyArg);
const FD_LIMIT = Number(execFileSync('sh', ['-c', 'ulimit -Hn']).toString().trim()) || 1024;

const CFG = QUICK ? {
  idleN: [2000], realN: 200, realWorkers: 1, tlsN: 100, chatWarm: 0.5, chatSecs: 2, inflight: [1, 100],
  pairs: 20, pairsInflight: 4, sioIdleN: 2000, total: 150,
} : {
  // One process may hold at most `ulimit -Hn` descriptors (no CAP_SYS_RESOURCE
  // here): the largest idle size stays under it.
  idleN: [10000, Math.min(100000, FD_LIMIT - 1000)], realN: 1500, realWorkers: 2, tlsN: 500,
  chatWarm: 1, chatSecs: 5, inflight: [1, 100], pairs: 50, pairsInflight: 4, sioIdleN: 10000, total: 900,
};

const log = (...a) => process.stderr.write(`[bench] ${a.join(' ')}\n`);
const results = { started: new Date().toISOString(), quick: QUICK, runs: RUNS, config: CFG, machine: {}, sections: {} };

// ---------------------------------------------------------------- helpers
const med = (xs) => { const s = [...xs].sort((a, b) => a - b); const n = s.length; return n ? (n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2) : NaN; };
const stat = (xs) => ({ median: med(xs), min: Math.min(...xs), max: Math.max(...xs), runs: xs });
function rssKiB(pid) {
  try { return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]); } catch { return NaN; }
}
function cpuTicks(pids) {
  let t = 0;
  for (const pid of pids) {
    try {
      const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      t += Number(f[11]) + Number(f[12]); // utime, stime (fields 14, 15)
    } catch { /* gone */ }
  }
  return t;
}
// Run a pairs bench and note how busy the servers were (cores, out of os.cpus()).
async function withCpu(pids, fn) {
  const c0 = cpuTicks(pids()); const t0 = Date.now();
  const r = await fn();
  r.server_cores_busy = (cpuTicks(pids()) - c0) / 100 / ((Date.now() - t0) / 1000);
  return r;
}
function childPids(pid) {
  try { return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; }
}
function kernelMem() {
  const ss = fs.readFileSync('/proc/net/sockstat', 'utf8');
  const tcp = /TCP: inuse (\d+) orphan (\d+) tw (\d+) alloc (\d+) mem (\d+)/.exec(ss);
  const mi = fs.readFileSync('/proc/meminfo', 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(mi)?.[1] ?? NaN);
  return { tcpInuse: Number(tcp[1]), tcpAlloc: Number(tcp[4]), tcpMemPages: Number(tcp[5]), slabKiB: kb('Slab'), memAvailKiB: kb('MemAvailable') };
}
function helpHas(bin, opt) {
  try { return execFileSync(bin, ['--help'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString().includes(`--${opt} `); } catch (e) { return `${e.stdout ?? ''}`.includes(`--${opt} `); }
}
function lastJson(text, pred = () => true) {
  const lines = text.trim().split('\n').reverse();
  for (const l of lines) { try { const o = JSON.parse(l); if (pred(o)) return o; } catch { /* not json */ } }
  return null;
}
async function procJson(stack, name, cmd, args, { timeout = 60000, env } = {}) {
  const p = stack.spawn(name, cmd, args, env ? { envExtra: env } : {});
  const r = await Promise.race([p.exited, sleep(timeout).then(() => null)]);
  if (!r) { await p.stop({ timeout: 2000 }); throw new Error(`${name}: timeout after ${timeout} ms\n${p.tail(2000)}`); }
  const o = lastJson(p.stdout);
  if (!o) throw new Error(`${name}: no JSON result (exit ${r.code})\n${p.tail(3000)}`);
  return o;
}

// Services ------------------------------------------------------------------
const EDGE_EXTRA = [];
function edgeFlags() {
  if (EDGE_EXTRA.length) return EDGE_EXTRA;
  const bin = path.join(BIN, 'imb-edge');
  EDGE_EXTRA.push('--login-timeout', '600');
  if (helpHas(bin, 'tls')) EDGE_EXTRA.push('--tls', 'off');
  if (helpHas(bin, 'max-unauth-per-ip')) EDGE_EXTRA.push('--max-unauth-per-ip', '1000000');
  if (helpHas(bin, 'max-msg-rate')) EDGE_EXTRA.push('--max-msg-rate', '100000');
  return EDGE_EXTRA;
}
async function startEdge(stack, redisPort, credKey, name = 'imb-edge') {
  const p = stack.spawn(name, path.join(BIN, 'imb-edge'), ['--redis-host', '127.0.0.1', '--redis-port', String(redisPort),
    '--cred-key', credKey, '--log-level', 'warn', '--listen', '127.0.0.1:0', ...edgeFlags()]);
  // The port is in the `listening` line (INFO); at warn level, find it with ss.
  const port = await waitFor(() => {
    if (!p.running) throw new Error(`imb-edge exited: ${p.tail(2000)}`);
    const m = /listening addr=127\.0\.0\.1:(\d+)/.exec(p.stderr);
    if (m) return Number(m[1]);
    const ss = execFileSync('ss', ['-Htlnp']).toString().split('\n').find((l) => l.includes(`pid=${p.pid},`));
    const m2 = ss && /127\.0\.0\.1:(\d+)/.exec(ss);
    return m2 ? Number(m2[1]) : 0;
  }, { timeout: 10000, interval: 50, what: 'edge listening' });
  p.port = port;
  await sleep(300); // bus connected, worker list read
  return p;
}
async function startXmppd(stack, redisPort, xmppPort, credKey, workers, { tls = 'disabled', cafile } = {}) {
  const args = ['--redis-host', '127.0.0.1', '--redis-port', String(redisPort), '--cred-key', credKey, '--log-level', 'warn',
    '--xmpp-host', '127.0.0.1', '--xmpp-port', String(xmppPort), '--xmpp-tls', tls, '--workers', String(workers)];
  if (cafile) args.push('--xmpp-cafile', cafile);
  const p = stack.spawn('imb-xmppd', path.join(BIN, 'imb-xmppd'), args);
  await waitFor(async () => {
    if (!p.running) throw new Error(`imb-xmppd exited: ${p.tail(2000)}`);
    const w = await stackRedis(redisPort, ['HLEN', 'imb:workers']);
    return w >= workers;
  }, { timeout: 15000, interval: 100, what: 'xmppd workers registered' });
  return p;
}
async function stackRedis(port, args) {
  const { redisCommand } = await import('../tests/harness/redis.mjs');
  return redisCommand(port, args);
}
async function redisUsedMemory(port) {
  const info = await stackRedis(port, ['INFO', 'memory']);
  return Number(/used_memory:(\d+)/.exec(info)[1]);
}

// Prosody with MAM off, accounts written by copying one prosodyctl-made
// account file (same password, same SCRAM salt): registering thousands with
// prosodyctl would take minutes.
async function startBenchProsody(stack, users, { tls = false } = {}) {
  const dir = stack.tempDir('imb-bench-prosody-');
  const p = new ProsodyServer(stack, { dir, domain: 'localhost' });
  for (let attempt = 0; ; attempt++) {
    await p.configure(await freePort(), await freePort());
    let cfg = fs.readFileSync(p.cfg, 'utf8').replace('"mam"; ', '');
    if (tls) {
      cfg = cfg.replace('"roster";', '"tls"; "roster";');
      const cdir = path.join(dir, 'certs');
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost',
        '-addext', 'subjectAltName=DNS:localhost', '-keyout', path.join(cdir, 'localhost.key'), '-out', path.join(cdir, 'localhost.crt')],
      { stdio: 'ignore' });
      p.cafile = path.join(cdir, 'localhost.crt');
    }
    fs.writeFileSync(p.cfg, cfg);
    if (attempt === 0) {
      await p.register('seed', 'secret');
      const acc = path.join(dir, 'data', 'localhost', 'accounts');
      const seed = fs.readFileSync(path.join(acc, 'seed.dat'));
      for (const u of users) fs.writeFileSync(path.join(acc, `${u}.dat`), seed);
    }
    try { await p.start({ timeout: 15000 }); return p; } catch (e) {
      if (attempt >= 3) throw e;
      await sleep(100);
    }
  }
}

function loadgen(stack, name, args, opts = {}) {
  return stack.spawn(name, path.join(BBIN, 'loadgen'), args, { stdin: 'pipe', ...opts });
}

// Hold N idle connections made by makeGen() (a loadgen/sio-load Proc that
// prints a ready event); measure each group of processes (summed RSS) and
// the kernel's counters before and after.
async function measureHold(stack, makeGen, groups, { redisPort, settleMs = 1500, n } = {}) {
  await sleep(500);
  const rss = () => Object.fromEntries(Object.entries(groups).map(([k, f]) => [k, f().reduce((a, p) => a + rssKiB(p), 0)]));
  const rss0 = rss();
  const k0 = kernelMem();
  const red0 = redisPort ? await redisUsedMemory(redisPort) : 0;
  const g = makeGen();
  const readyLine = await g.nextStdoutLine((l) => l.includes('"event":"ready"'), 180000);
  const ready = JSON.parse(readyLine);
  await sleep(settleMs);
  const rss1 = rss();
  const k1 = kernelMem();
  const red1 = redisPort ? await redisUsedMemory(redisPort) : 0;
  g.endStdin();
  await Promise.race([g.exited, sleep(30000)]);
  if (g.running) await g.stop({ timeout: 3000 });
  const ok = ready.ok;
  if (ok < n) log(`  warning: only ${ok}/${n} connections were up`);
  const per = Object.fromEntries(Object.keys(groups).map((k) => [k, ok ? ((rss1[k] - rss0[k]) * 1024) / ok : NaN]));
  return {
    n, ok, failed: ready.failed, ready_ms: ready.elapsed_ms,
    per_s: ready.elapsed_ms > 0 ? ok / (ready.elapsed_ms / 1000) : null,
    rss_kib_before: rss0, rss_kib_after: rss1, bytes_per_conn: per,
    kernel: {
      tcp_sockets: k1.tcpAlloc - k0.tcpAlloc,
      tcp_mem_bytes_per_conn: ok ? ((k1.tcpMemPages - k0.tcpMemPages) * 4096) / ok : NaN,
      slab_bytes_per_conn: ok ? ((k1.slabKiB - k0.slabKiB) * 1024) / ok : NaN,
    },
    redis_bytes_per_conn: redisPort && ok ? (red1 - red0) / ok : null,
  };
}

function summarize(list, key) { return stat(list.map((r) => (typeof key === 'function' ? key(r) : r[key]))); }

// ------------------------------------------------------------- 0 machine
function machine() {
  const sh = (c) => { try { return execFileSync('sh', ['-c', c], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim(); } catch { return '?'; } };
  const m = {
    cpu: sh("lscpu | sed -n 's/^Model name:[ \\t]*//p' | head -1"),
    cores: os.cpus().length,
    ram_gib: +(os.totalmem() / 2 ** 30).toFixed(1),
    kernel: os.release(),
    os: sh(". /etc/os-release && echo $PRETTY_NAME"),
    fd_hard_limit: FD_LIMIT,
    redis: sh("redis-server --version | sed 's/.*v=\\([^ ]*\\).*/\\1/'"),
    prosody: sh("dpkg-query -W -f='${Version}' prosody"),
    libevent: sh('pkg-config --modversion libevent'), hiredis: sh('pkg-config --modversion hiredis'),
    libstrophe: sh('pkg-config --modversion libstrophe'), jansson: sh('pkg-config --modversion jansson'),
    openssl: sh('pkg-config --modversion openssl'), node: process.version,
    socketio: JSON.parse(fs.readFileSync(path.join(HERE, 'node_modules/socket.io/package.json'))).version,
    redis_adapter: JSON.parse(fs.readFileSync(path.join(HERE, 'node_modules/@socket.io/redis-adapter/package.json'))).version,
    cc: sh('cc --version | head -1'),
    git: sh(`git -C ${ROOT} describe --always --dirty`),
  };
  return m;
}

// ------------------------------------------------------------- 1a/1b idle
async function sectionIdle() {
  const out = { sizes: {} };
  for (const n of CFG.idleN) {
    const runs = { echo: [], edge_unauth: [], edge_stub_login: [] };
    for (let r = 0; r < RUNS; r++) {
      // Baseline: the libevent echo server.
      {
        const st = new Stack('idle-echo');
        try {
          const srv = st.spawn('echoserver', path.join(BBIN, 'echoserver'), ['--listen', '127.0.0.1', '--port', '0']);
          const port = await waitFor(() => Number(/listening port=(\d+)/.exec(srv.stderr)?.[1]), { timeout: 5000, what: 'echoserver' });
          runs.echo.push(await measureHold(st, () => loadgen(st, 'loadgen', ['--mode', 'idle', '--raw', '--port', String(port), '--conns', String(n), '--timeout', '170']), { server: () => [srv.pid] }, { n }));
        } finally { await st.cleanup(); }
      }
      // The edge: connected, not logged in (login timeout raised to 600 s).
      {
        const st = new Stack('idle-edge');
        try {
          const redis = await startRedis(st);
          const edge = await startEdge(st, redis.port, randomCredKey());
          runs.edge_unauth.push(await measureHold(st, () => loadgen(st, 'loadgen', ['--mode', 'idle', '--raw', '--port', String(edge.port), '--conns', String(n), '--timeout', '170']), { server: () => [edge.pid] }, { n }));
        } finally { await st.cleanup(); }
      }
      // The edge: logged in, through the stub bridge (no XMPP behind).
      {
        const st = new Stack('idle-edge-login');
        try {
          const redis = await startRedis(st);
          const stub = st.spawn('stubbridge', process.execPath, [path.join(HERE, 'stubbridge.mjs'), '--redis-port', String(redis.port)]);
          await stub.waitForLine(/stubbridge ready/, { timeout: 10000 });
          const edge = await startEdge(st, redis.port, randomCredKey());
          await sleep(1200);
          runs.edge_stub_login.push(await measureHold(st, () => loadgen(st, 'loadgen', ['--mode', 'idle', '--port', String(edge.port), '--conns', String(n), '--user-fmt', 'u%d@localhost', '--concurrency', '512', '--timeout', '170']), { server: () => [edge.pid] }, { n, redisPort: redis.port }));
        } finally { await st.cleanup(); }
      }
      log(`idle n=${n} run ${r + 1}: echo ${runs.echo.at(-1).bytes_per_conn.server.toFixed(0)} B, edge unauth ${runs.edge_unauth.at(-1).bytes_per_conn.server.toFixed(0)} B, edge logged in (stub) ${runs.edge_stub_login.at(-1).bytes_per_conn.server.toFixed(0)} B per conn`);
    }
    out.sizes[n] = {
      runs,
      echo_bytes: summarize(runs.echo, (x) => x.bytes_per_conn.server),
      edge_unauth_bytes: summarize(runs.edge_unauth, (x) => x.bytes_per_conn.server),
      edge_login_bytes: summarize(runs.edge_stub_login, (x) => x.bytes_per_conn.server),
      redis_login_bytes: summarize(runs.edge_stub_login, 'redis_bytes_per_conn'),
      kernel_tcp_mem_bytes: summarize(runs.echo, (x) => x.kernel.tcp_mem_bytes_per_conn),
      kernel_slab_bytes: summarize(runs.echo, (x) => x.kernel.slab_bytes_per_conn),
      stub_logins_per_s: summarize(runs.edge_stub_login, 'per_s'),
      ok: Math.min(...Object.values(runs).flat().map((x) => x.ok)),
    };
  }
  return out;
}

// ------------------------------------------------- 1b + 5: real logins, xmppd
async function sectionReal() {
  const out = {};
  for (const tls of [false, true]) {
    const n = tls ? CFG.tlsN : CFG.realN;
    const workers = Math.max(CFG.realWorkers, Math.ceil(n / 780));
    const users = Array.from({ length: n }, (_, i) => `u${i}`);
    const runs = [];
    for (let r = 0; r < RUNS; r++) {
      const st = new Stack('real');
      try {
        const [redis, prosody] = await Promise.all([startRedis(st), startBenchProsody(st, users, { tls })]);
        const key = randomCredKey();
        const xmppd = await startXmppd(st, redis.port, prosody.c2sPort, key, workers, tls ? { tls: 'required', cafile: prosody.cafile } : {});
        const edge = await startEdge(st, redis.port, key);
        await sleep(1200);
        const res = await measureHold(st, () => loadgen(st, 'loadgen', ['--mode', 'idle', '--port', String(edge.port), '--conns', String(n), '--user-fmt', 'u%d@localhost', '--concurrency', '64', '--timeout', '170']),
          { edge: () => [edge.pid], xmppd_workers: () => childPids(xmppd.pid), prosody: () => [prosody.proc.pid] }, { n, redisPort: redis.port, settleMs: 2500 });
        res.workers = workers;
        runs.push(res);
        log(`real ${tls ? 'tls' : 'plain'} n=${n} run ${r + 1}: ${res.ok} logged in, ${res.per_s.toFixed(0)}/s, edge ${res.bytes_per_conn.edge.toFixed(0)} B, xmppd ${res.bytes_per_conn.xmppd_workers.toFixed(0)} B, prosody ${res.bytes_per_conn.prosody.toFixed(0)} B per session`);
      } finally { await st.cleanup(); }
    }
    out[tls ? 'tls' : 'plain'] = {
      n, workers, runs,
      logins_per_s: summarize(runs, 'per_s'),
      edge_bytes: summarize(runs, (x) => x.bytes_per_conn.edge),
      xmppd_bytes: summarize(runs, (x) => x.bytes_per_conn.xmppd_workers),
      prosody_bytes: summarize(runs, (x) => x.bytes_per_conn.prosody),
      redis_bytes: summarize(runs, 'redis_bytes_per_conn'),
      ok: Math.min(...runs.map((x) => x.ok)),
    };
  }
  return out;
}

// ------------------------------------------------------ 2: bridged vs direct
async function sectionChat() {
  const out = { direct: {}, bridged: {} };
  const st = new Stack('chat');
  try {
    const [redis, prosody] = await Promise.all([startRedis(st), startBenchProsody(st, ['alice', 'bob', 'carol', 'dave'])]);
    const key = randomCredKey();
    await startXmppd(st, redis.port, prosody.c2sPort, key, 2);
    const edge = await startEdge(st, redis.port, key);
    const xc = path.join(BBIN, 'xmppclient');
    const c2s = String(prosody.c2sPort);
    const echoB = st.spawn('echo-bob', xc, ['--mode', 'echo', '--jid', 'bob@localhost/desktop', '--pass', 'secret', '--port', c2s, '--timeout', String(CFG.total)], { stdin: 'pipe' });
    const echoD = st.spawn('echo-dave', xc, ['--mode', 'echo', '--jid', 'dave@localhost/desktop', '--pass', 'secret', '--port', c2s, '--timeout', String(CFG.total)], { stdin: 'pipe' });
    await echoB.waitForLine(/online/, { timeout: 10000 });
    await echoD.waitForLine(/online/, { timeout: 10000 });
    const common = ['--warmup', String(CFG.chatWarm), '--duration', String(CFG.chatSecs), '--timeout', '60'];
    for (const k of CFG.inflight) {
      out.direct[k] = []; out.bridged[k] = [];
      for (let r = 0; r < RUNS; r++) {
        // Alternate, so drift (caches, Prosody's heap) hits both alike.
        const d = await procJson(st, 'xmpp-ping', xc, ['--mode', 'ping', '--jid', 'carol@localhost/desktop', '--pass', 'secret', '--port', c2s, '--peer', 'dave@localhost', '--inflight', String(k), ...common]);
        const b = await procJson(st, 'loadgen-chat', path.join(BBIN, 'loadgen'), ['--mode', 'chat', '--port', String(edge.port), '--conns', '1', '--user-fmt', 'alice@localhost', '--peer-fmt', 'bob@localhost', '--inflight', String(k), ...common]);
        if (!d.ok || !b.ok) log(`  chat run not ok: direct ${JSON.stringify(d)} bridged ${JSON.stringify(b)}`);
        out.direct[k].push(d); out.bridged[k].push(b);
        log(`chat inflight=${k} run ${r + 1}: direct ${d.msgs_per_s.toFixed(0)} msg/s p50 ${d.rtt_us.p50} p99 ${d.rtt_us.p99} us; bridged ${b.msgs_per_s.toFixed(0)} msg/s p50 ${b.rtt_us.p50} p99 ${b.rtt_us.p99} us`);
      }
    }
    echoB.endStdin(); echoD.endStdin();
  } finally { await st.cleanup(); }
  const sum = (list) => ({ msgs_per_s: summarize(list, 'msgs_per_s'), p50_us: summarize(list, (x) => x.rtt_us.p50), p99_us: summarize(list, (x) => x.rtt_us.p99) });
  out.summary = Object.fromEntries(CFG.inflight.map((k) => [k, { direct: sum(out.direct[k]), bridged: sum(out.bridged[k]) }]));
  return out;
}

// ---------------------------------------------------- 3: against Socket.IO
async function sectionSio() {
  const out = {};
  const P = CFG.pairs; const K = CFG.pairsInflight;
  const common = ['--conns', String(P), '--inflight', String(K), '--warmup', String(CFG.chatWarm), '--duration', String(CFG.chatSecs), '--timeout', '90'];
  const runs = { sio: [], edge_stub: [], full: [] };
  const sioIdle = [];
  const edgeIdle = [];
  for (let r = 0; r < RUNS; r++) {
    // Socket.IO: two nodes, Redis adapter.
    {
      const st = new Stack('sio');
      try {
        const redis = await startRedis(st);
        const nodes = [];
        for (let i = 0; i < 2; i++) {
          const p = st.spawn(`sio-${i}`, process.execPath, [path.join(HERE, 'sio-server.mjs'), '--port', '0', '--redis-port', String(redis.port)]);
          p.port = Number(/listening port=(\d+)/.exec(await p.waitForLine(/listening port=\d+/, { timeout: 10000 }))[1]);
          nodes.push(p);
        }
        runs.sio.push(await withCpu(() => [redis.proc.pid, ...nodes.map((x) => x.pid)], () => procJson(st, 'sio-load', process.execPath, [path.join(HERE, 'sio-load.mjs'), '--mode', 'pairs', '--port', String(nodes[0].port), '--port2', String(nodes[1].port), ...common], { timeout: 120000 })));
        // Memory per connection: N idle sockets on node 0, each in its user's room.
        sioIdle.push(await measureHold(st, () => st.spawn('sio-load-idle', process.execPath, [path.join(HERE, 'sio-load.mjs'), '--mode', 'idle', '--port', String(nodes[0].port), '--conns', String(CFG.sioIdleN), '--timeout', '170'], { stdin: 'pipe' }),
          { server: () => [nodes[0].pid] }, { n: CFG.sioIdleN, redisPort: redis.port, settleMs: 3000 }));
      } finally { await st.cleanup(); }
    }
    // imbridge, raw: two edges + Redis + the stub bridge (no XMPP).
    {
      const st = new Stack('edge-stub');
      try {
        const redis = await startRedis(st);
        const stub = st.spawn('stubbridge', process.execPath, [path.join(HERE, 'stubbridge.mjs'), '--redis-port', String(redis.port)]);
        await stub.waitForLine(/stubbridge ready/, { timeout: 10000 });
        const key = randomCredKey();
        const e1 = await startEdge(st, redis.port, key, 'imb-edge-1');
        const e2 = await startEdge(st, redis.port, key, 'imb-edge-2');
        await sleep(1200);
        runs.edge_stub.push(await withCpu(() => [redis.proc.pid, stub.pid, e1.pid, e2.pid], () => procJson(st, 'loadgen-pairs', path.join(BBIN, 'loadgen'), ['--mode', 'pairs', '--port', String(e1.port), '--port2', String(e2.port), '--user-fmt', 'a%d@localhost', '--peer-fmt', 'b%d@localhost', ...common], { timeout: 120000 })));
        edgeIdle.push(await measureHold(st, () => loadgen(st, 'loadgen', ['--mode', 'idle', '--port', String(e1.port), '--conns', String(CFG.sioIdleN), '--user-fmt', 'i%d@localhost', '--concurrency', '512', '--timeout', '170']),
          { server: () => [e1.pid] }, { n: CFG.sioIdleN, redisPort: redis.port }));
      } finally { await st.cleanup(); }
    }
    // imbridge, full path: two edges, xmppd, Prosody.
    {
      const st = new Stack('edge-full');
      try {
        const users = [...Array.from({ length: P }, (_, i) => `a${i}`), ...Array.from({ length: P }, (_, i) => `b${i}`)];
        const [redis, prosody] = await Promise.all([startRedis(st), startBenchProsody(st, users)]);
        const key = randomCredKey();
        const xm = await startXmppd(st, redis.port, prosody.c2sPort, key, 2);
        const e1 = await startEdge(st, redis.port, key, 'imb-edge-1');
        const e2 = await startEdge(st, redis.port, key, 'imb-edge-2');
        runs.full.push(await withCpu(() => [redis.proc.pid, prosody.proc.pid, e1.pid, e2.pid, ...childPids(xm.pid)], () => procJson(st, 'loadgen-pairs', path.join(BBIN, 'loadgen'), ['--mode', 'pairs', '--port', String(e1.port), '--port2', String(e2.port), '--user-fmt', 'a%d@localhost', '--peer-fmt', 'b%d@localhost', '--concurrency', '32', ...common], { timeout: 120000 })));
      } finally { await st.cleanup(); }
    }
    log(`sio run ${r + 1}: socket.io ${runs.sio.at(-1).msgs_per_s?.toFixed(0)} msg/s, edge+stub ${runs.edge_stub.at(-1).msgs_per_s.toFixed(0)} msg/s, full path ${runs.full.at(-1).msgs_per_s.toFixed(0)} msg/s; memory/conn socket.io ${sioIdle.at(-1).bytes_per_conn.server.toFixed(0)} B, edge ${edgeIdle.at(-1).bytes_per_conn.server.toFixed(0)} B`);
  }
  const sum = (list) => ({ msgs_per_s: summarize(list, 'msgs_per_s'), p50_us: summarize(list, (x) => x.rtt_us.p50), p99_us: summarize(list, (x) => x.rtt_us.p99), cores: summarize(list, 'server_cores_busy') });
  out.pairs = P; out.inflight = K; out.runs = runs; out.idle = { sio: sioIdle, edge: edgeIdle };
  out.summary = {
    sio: sum(runs.sio), edge_stub: sum(runs.edge_stub), full: sum(runs.full),
    sio_mem: summarize(sioIdle, (x) => x.bytes_per_conn.server), edge_mem: summarize(edgeIdle, (x) => x.bytes_per_conn.server),
    sio_redis: summarize(sioIdle, 'redis_bytes_per_conn'), edge_redis: summarize(edgeIdle, 'redis_bytes_per_conn'),
  };
  return out;
}

// ---------------------------------------------------------- 4: bytes on wire
function rawHttp(port, body, extraHeaders = '') {
  return new Promise((resolve, reject) => {
    const req = `POST /http-bind HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: text/xml; charset=utf-8\r\n${extraHeaders}Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
    const s = net.connect({ port, host: '127.0.0.1' });
    let resp = Buffer.alloc(0);
    const t = setTimeout(() => { s.destroy(); reject(new Error('bosh timeout')); }, 15000);
    s.on('connect', () => s.write(req));
    s.on('data', (d) => { resp = Buffer.concat([resp, d]); });
    s.on('error', (e) => { clearTimeout(t); reject(e); });
    s.on('close', () => { clearTimeout(t); const text = resp.toString(); resolve({ reqBytes: Buffer.byteLength(req), respBytes: resp.length, text, body: text.slice(text.indexOf('\r\n\r\n') + 4) }); });
  });
}
async function boshMessage(httpPort) {
  const NS = "xmlns='http://jabber.org/protocol/httpbind'";
  let rid = 1000;
  const r1 = await rawHttp(httpPort, `<body rid='${rid++}' to='localhost' ver='1.6' wait='1' hold='1' ${NS} xmlns:xmpp='urn:xmpp:xbosh' xmpp:version='1.0'/>`);
  const sid = /sid=['"]([^'"]+)['"]/.exec(r1.body)?.[1];
  if (!sid) throw new Error(`bosh: no sid: ${r1.text.slice(0, 300)}`);
  const plain = Buffer.from('\0carol\0secret').toString('base64');
  await rawHttp(httpPort, `<body rid='${rid++}' sid='${sid}' ${NS}><auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${plain}</auth></body>`);
  await rawHttp(httpPort, `<body rid='${rid++}' sid='${sid}' ${NS} xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh' to='localhost'/>`);
  await rawHttp(httpPort, `<body rid='${rid++}' sid='${sid}' ${NS}><iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq></body>`);
  // One message, as a BOSH client sends it (the stanza strophe.js would build).
  const msg = `<body rid='${rid++}' sid='${sid}' ${NS}><message to='dave@localhost' type='chat' id='c1' xmlns='jabber:client'><body>hello</body></message></body>`;
  const rm = await rawHttp(httpPort, msg);
  // An empty poll: what a BOSH client sends to be able to receive at all.
  const rp = await rawHttp(httpPort, `<body rid='${rid++}' sid='${sid}' ${NS}/>`);
  return { message_request: rm.reqBytes, message_response: rm.respBytes, empty_poll_request: rp.reqBytes, empty_poll_response: rp.respBytes };
}
async function sectionWire() {
  const out = { phone: [], xmpp: [], bosh: [] };
  const st = new Stack('wire');
  try {
    const [redis, prosody] = await Promise.all([startRedis(st), startBenchProsody(st, ['alice', 'bob', 'carol', 'dave'])]);
    const key = randomCredKey();
    await startXmppd(st, redis.port, prosody.c2sPort, key, 1);
    const edge = await startEdge(st, redis.port, key);
    const xc = path.join(BBIN, 'xmppclient');
    const c2s = String(prosody.c2sPort);
    const echoB = st.spawn('echo-bob', xc, ['--mode', 'echo', '--jid', 'bob@localhost/desktop', '--pass', 'secret', '--port', c2s, '--timeout', '300'], { stdin: 'pipe' });
    await echoB.waitForLine(/online/, { timeout: 10000 });
    for (let r = 0; r < RUNS; r++) {
      out.phone.push(await procJson(st, 'loadgen-wire', path.join(BBIN, 'loadgen'), ['--mode', 'wire', '--port', String(edge.port), '--user-fmt', 'alice@localhost', '--peer-fmt', 'bob@localhost', '--body-size', '5', '--timeout', '20']));
      out.xmpp.push(await procJson(st, 'xmpp-wire', xc, ['--mode', 'wire', '--jid', 'carol@localhost/desktop', '--pass', 'secret', '--port', c2s, '--peer', 'bob@localhost', '--timeout', '20']));
      try { out.bosh.push(await boshMessage(prosody.httpPort)); } catch (e) { out.bosh.push({ error: e.message }); }
    }
    echoB.endStdin();
  } finally { await st.cleanup(); }
  return out;
}

// ----------------------------------------------------------------- render
const f0 = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
const sp = (s, f = f0) => `${f(s.median)} (${f(s.min)}–${f(s.max)})`;
const ms = (s) => `${f2(s.median / 1000)} (${f2(s.min / 1000)}–${f2(s.max / 1000)})`;

function render(res) {
  const m = res.machine; const L = [];
  L.push(`Run of ${res.started} (${res.quick ? 'BENCH_QUICK=1' : 'full'}, ${res.runs} runs per figure; median (min–max)); git ${m.git}.`, '');
  L.push(`Machine: ${m.cpu}, ${m.cores} cores, ${m.ram_gib} GiB RAM, ${m.os}, kernel ${m.kernel}, fd hard limit ${m.fd_hard_limit}. ` +
    `Redis ${m.redis}, Prosody ${m.prosody}, libevent ${m.libevent}, hiredis ${m.hiredis}, libstrophe ${m.libstrophe}, jansson ${m.jansson}, OpenSSL ${m.openssl}, Node ${m.node}, socket.io ${m.socketio}, @socket.io/redis-adapter ${m.redis_adapter}; ${m.cc}.`, '');
  const S = res.sections;
  if (S.idle) {
    L.push('### 1a. Idle connections held by one process', '');
    L.push('| N | echo server (floor) B/conn | edge, connected, not logged in B/conn | ratio | edge, logged in (stub bridge) B/conn | ratio | Redis B per logged-in phone | kernel TCP buffer B/conn | kernel slab B/conn (both ends) |');
    L.push('|---|---|---|---|---|---|---|---|---|');
    for (const [n, x] of Object.entries(S.idle.sizes)) {
      L.push(`| ${f0(+n)}${x.ok < n ? ` (${x.ok} up)` : ''} | ${sp(x.echo_bytes)} | ${sp(x.edge_unauth_bytes)} | ${f2(x.edge_unauth_bytes.median / x.echo_bytes.median)}× | ${sp(x.edge_login_bytes)} | ${f2(x.edge_login_bytes.median / x.echo_bytes.median)}× | ${sp(x.redis_login_bytes)} | ${sp(x.kernel_tcp_mem_bytes)} | ${sp(x.kernel_slab_bytes)} |`);
    }
    const big = Object.values(S.idle.sizes).at(-1);
    L.push('', `Stub-bridge logins: ${sp(big.stub_logins_per_s)} per second through one edge.`, '');
  }
  if (S.real) {
    L.push('### 1b + 5. Logged-in phones with real XMPP sessions (edge + xmppd + Prosody)', '');
    L.push('| XMPP link | sessions | workers | logins/s | edge B/phone | xmppd B/session | Prosody B/session | Redis B/phone |');
    L.push('|---|---|---|---|---|---|---|---|');
    for (const [k, x] of Object.entries(S.real)) {
      L.push(`| ${k === 'tls' ? 'STARTTLS (verified)' : 'plaintext'} | ${x.ok}/${x.n} | ${x.workers} | ${sp(x.logins_per_s)} | ${sp(x.edge_bytes)} | ${sp(x.xmppd_bytes)} | ${sp(x.prosody_bytes)} | ${sp(x.redis_bytes)} |`);
    }
    L.push('');
  }
  if (S.chat) {
    L.push('### 2. Phone ↔ desktop through the bridge vs two direct XMPP clients', '');
    L.push('| in flight | direct msg/s | bridged msg/s | ratio | direct p50 ms | bridged p50 ms | direct p99 ms | bridged p99 ms | p99 difference ms |');
    L.push('|---|---|---|---|---|---|---|---|---|');
    for (const [k, x] of Object.entries(S.chat.summary)) {
      L.push(`| ${k} | ${sp(x.direct.msgs_per_s)} | ${sp(x.bridged.msgs_per_s)} | ${f2(x.bridged.msgs_per_s.median / x.direct.msgs_per_s.median)}× | ${ms(x.direct.p50_us)} | ${ms(x.bridged.p50_us)} | ${ms(x.direct.p99_us)} | ${ms(x.bridged.p99_us)} | +${f2((x.bridged.p99_us.median - x.direct.p99_us.median) / 1000)} |`);
    }
    L.push('');
  }
  if (S.sio) {
    const x = S.sio.summary;
    L.push(`### 3. Against Socket.IO + @socket.io/redis-adapter (${S.sio.pairs} pairs across two nodes, ${S.sio.inflight} in flight each)`, '');
    L.push('| system | msg/s | vs Socket.IO | p50 ms | p99 ms | server CPU (cores busy, of ' + m.cores + ') |');
    L.push('|---|---|---|---|---|---|');
    L.push(`| Socket.IO, 2 nodes + Redis adapter | ${sp(x.sio.msgs_per_s)} | 1× | ${ms(x.sio.p50_us)} | ${ms(x.sio.p99_us)} | ${sp(x.sio.cores, f2)} |`);
    L.push(`| imbridge: 2 edges + Redis + stub bridge (no XMPP) | ${sp(x.edge_stub.msgs_per_s)} | ${f2(x.edge_stub.msgs_per_s.median / x.sio.msgs_per_s.median)}× | ${ms(x.edge_stub.p50_us)} | ${ms(x.edge_stub.p99_us)} | ${sp(x.edge_stub.cores, f2)} |`);
    L.push(`| imbridge: 2 edges + Redis + xmppd + Prosody (full path) | ${sp(x.full.msgs_per_s)} | ${f2(x.full.msgs_per_s.median / x.sio.msgs_per_s.median)}× | ${ms(x.full.p50_us)} | ${ms(x.full.p99_us)} | ${sp(x.full.cores, f2)} |`);
    L.push('', `| memory per idle connection (N=${f0(CFG.sioIdleN)}, one node) | server B/conn | vs Socket.IO | Redis B/conn |`, '|---|---|---|---|');
    L.push(`| Socket.IO (websocket, joined its user's room) | ${sp(x.sio_mem)} | 1× | ${sp(x.sio_redis)} |`);
    L.push(`| imb-edge (logged in via the stub bridge) | ${sp(x.edge_mem)} | ${f2(x.edge_mem.median / x.sio_mem.median)}× | ${sp(x.edge_redis)} |`);
    L.push('');
  }
  if (S.wire) {
    const p = S.wire.phone.find((r) => r.ok)?.steps ?? {};
    const xs = S.wire.xmpp.find((r) => r.ok)?.steps ?? {};
    const b = S.wire.bosh.find((r) => !r.error) ?? {};
    L.push('### 4. Bytes on the wire (TCP payload; one run shown, they do not vary)', '');
    L.push('| exchange | phone link (imb-edge) | XMPP c2s (libstrophe ↔ Prosody) | ratio | BOSH (HTTP/1.1, minimal headers) |');
    L.push('|---|---|---|---|---|');
    const r = (a, c) => (a && c ? `${f2(a / c)}×` : '');
    L.push(`| chat message sent (5-byte body) | ${p.out_msg} | ${xs.msg_out?.out} | ${r(p.out_msg, xs.msg_out?.out)} | ${b.message_request ?? 'n/a'} request + ${b.message_response ?? 'n/a'} response |`);
    L.push(`| chat message received | ${p.in_msg} | ${xs.msg_in?.in} | ${r(p.in_msg, xs.msg_in?.in)} | response to a pending poll + a new ${b.empty_poll_request ?? 'n/a'}-byte poll |`);
    L.push(`| ack of a sent message (server has it) | ${p.in_ack} | no ack in plain c2s (XEP-0198 \`<a h='1' xmlns='urn:xmpp:sm:3'/>\` would be 31, after a 23-byte \`<r/>\`) | | |`);
    L.push(`| ack of a received message (phone → server) | ${p.out_ack} | — | | |`);
    L.push(`| delivery receipt to the sender | not implemented (no XEP-0184 translation) | ${xs.receipt_out?.out} (XEP-0184) | | |`);
    L.push(`| heartbeat request + answer | ${p.out_hb} + ${p.in_hb} | ${xs.ping_iq_roundtrip?.out} + ${xs.ping_iq_roundtrip?.in} (XEP-0199 ping), or 1 byte of whitespace (no answer) | ${r(p.out_hb + p.in_hb, (xs.ping_iq_roundtrip?.out ?? 0) + (xs.ping_iq_roundtrip?.in ?? 0))} | ${b.empty_poll_request ?? 'n/a'} + ${b.empty_poll_response ?? 'n/a'} (empty poll) |`);
    L.push(`| login | ${p.out_login} + ${p.in_welcome} + ${p.in_sync} (login, welcome, sync) | ${xs.login?.out} + ${xs.login?.in} (stream, SCRAM, bind, session) | ${r(p.out_login + p.in_welcome + p.in_sync, (xs.login?.out ?? 0) + (xs.login?.in ?? 0))} | |`);
    const hbHour = 3600 / 30 * (p.out_hb + p.in_hb);
    L.push('', `Idle hour with the default heartbeat (30 s): 120 × ${p.out_hb + p.in_hb} = ${f0(hbHour)} bytes of payload; with TCP/IP headers (52 bytes per segment with timestamps; request, answer, and the phone's ACK) about ${f0(120 * (p.out_hb + p.in_hb + 3 * 52))} bytes.`, '');
  }
  return L.join('\n');
}

// ------------------------------------------------------------------- main
async function main() {
  for (const b of ['loadgen', 'echoserver', 'xmppclient']) if (!fs.existsSync(path.join(BBIN, b))) throw new Error(`${BBIN}/${b} missing: run make bench`);
  for (const b of ['imb-edge', 'imb-xmppd']) if (!fs.existsSync(path.join(BIN, b))) throw new Error(`${BIN}/${b} missing: run make`);
  results.machine = machine();
  results.edge_flags = edgeFlags();
  log(`${QUICK ? 'quick' : 'full'} run, sections ${SECTIONS.join(',')}, ${RUNS} runs each; edge flags ${edgeFlags().join(' ')}`);
  const fns = { idle: sectionIdle, real: sectionReal, chat: sectionChat, sio: sectionSio, wire: sectionWire };
  for (const s of SECTIONS) {
    const t0 = Date.now();
    try { results.sections[s] = await fns[s](); } catch (e) { log(`section ${s} failed: ${e.stack ?? e}`); results.sections[s + '_error'] = String(e.stack ?? e); }
    log(`section ${s}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
  results.finished = new Date().toISOString();
  const dir = path.join(HERE, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const stamp = results.started.replace(/[:.]/g, '-');
  const json = JSON.stringify(results, null, 1);
  fs.writeFileSync(path.join(dir, `${stamp}.json`), json);
  fs.writeFileSync(path.join(dir, 'latest.json'), json);
  const md = render(results);
  fs.writeFileSync(path.join(dir, 'latest.md'), md + '\n');
  process.stdout.write(md + '\n');
  if (WRITE_DOCS) {
    const doc = path.join(ROOT, 'docs', 'BENCHMARKS.md');
    const text = fs.existsSync(doc) ? fs.readFileSync(doc, 'utf8') : '';
    const a = text.indexOf('<!-- bench:begin -->'); const z = text.indexOf('<!-- bench:end -->');
    if (a >= 0 && z > a) {
      fs.writeFileSync(doc, `${text.slice(0, a)}<!-- bench:begin -->\n${md}\n${text.slice(z)}`);
      log('tables written to docs/BENCHMARKS.md');
    } else log('docs/BENCHMARKS.md has no bench markers: tables only in bench/results/latest.md');
  }
  const failed = Object.keys(results.sections).filter((k) => k.endsWith('_error'));
  return failed.length ? 1 : 0;
}

const guard = setTimeout(() => { log(`overall time limit (${CFG.total + 300} s) reached`); process.exit(3); }, (CFG.total + 300) * 1000);
main().then((code) => { clearTimeout(guard); process.exit(code); }, (e) => { log(e.stack ?? String(e)); process.exit(1); });
