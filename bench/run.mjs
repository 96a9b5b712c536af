// bench/run.mjs - `make bench`: every benchmark of docs/BENCHMARKS.md, each
// against a baseline measured in the same run, on 127.0.0.x only.
//
//   node bench/run.mjs [--quick] [--only idle,real,chat,sio,wire,cost,capacity,cluster] [--runs 5]
//                      [--real-n 19000] [--real-tls-n 19000] [--roster 30]
//   node bench/run.mjs --render bench/results/latest.json   (tables only, no runs)
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
const RUNS = Number(argv.includes('--runs') ? argv[argv.indexOf('--runs') + 1] : (QUICK ? 2 : 5));
const SECTIONS = onlyArg ?? ['idle', 'storm', 'real', 'chat', 'sio', 'wire', 'cost', 'capacity', 'cluster'];
const WRITE_DOCS = process.env.BENCH_WRITE_DOCS ? process.env.BENCH_WRITE_DOCS === '1' : (!QUICK && !onlyArg);
const FD_LIMIT = Number(execFileSync('sh', ['-c', 'ulimit -Hn']).toString().trim()) || 1024;

const CFG = QUICK ? {
  idleN: [2000], stormN: 2000, realN: 200, realWorkers: 1, tlsN: 100, chatWarm: 0.5, chatSecs: 2, costSecs: 2, inflight: [1, 100],
  pairs: 20, pairsInflight: 4, sioIdleN: 2000, total: 150,
  capacity: [{ name: 'cap', workers: 2, maxSessions: 150, target: 320, step: 160, budgetMs: 30000, idleMs: 2000 }],
} : {
  // One process may hold at most `ulimit -Hn` descriptors (no CAP_SYS_RESOURCE
  // here): the largest idle size stays under it.
  idleN: [10000, Math.min(100000, FD_LIMIT - 1000)], stormN: Math.min(19000, FD_LIMIT - 1000), realN: 1500, realWorkers: 2, tlsN: 500,
  // Every timed figure: RUNS runs (default 5) of a 10 s window after 1 s of warm-up.
  chatWarm: 1, chatSecs: 10, costSecs: 10, inflight: [1, 100], pairs: 50, pairsInflight: 4, sioIdleN: 10000, total: 2400,
  // Capacity: 8 workers of 900 (the most a worker may hold), 400 phones
  // more than that; then as many workers as it takes to hold more sessions
  // than one process may open descriptors (Prosody holds one per session).
  capacity: [
    { name: 'cap', workers: 8, maxSessions: 900, target: 8 * 900 + 400, step: 2000, budgetMs: 120000, idleMs: 5000 },
    { name: 'wall', workers: Math.min(256, Math.ceil((Math.min(FD_LIMIT, 60000) + 500) / 900)), maxSessions: 900,
      target: Math.min(FD_LIMIT, 60000) + 500, step: 2500, budgetMs: 240000, idleMs: 5000 },
  ],
};

// --real-n N / --real-tls-n N: section 1b's sizes (issue 15 asks for 19,000
// phones with real XMPP sessions behind one edge; the default keeps the whole
// bench inside an hour).
for (const [flag, key] of [['--real-n', 'realN'], ['--real-tls-n', 'tlsN']]) {
  if (argv.includes(flag)) CFG[key] = Math.min(Number(argv[argv.indexOf(flag) + 1]), FD_LIMIT - 1000);
}

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
// ------------------------------------------- timed windows and counted runs
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
const loadavg = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);

// Run a load generator that prints {"event":"measure"} and {"event":"end"}
// around its timed window, and read at those two moments the CPU time
// (utime+stime, /proc/<pid>/stat) of each named group of server processes,
// of the load generator(s) and of the whole machine; hooks.start/end (async)
// read counters at the same moments. Per message: the window's CPU divided
// by the messages delivered in it (msg/s as the load generator measured it,
// times the window's length), so every system is divided the same way.
async function measured(stack, name, cmd, args, { groups, loadgens = () => [], timeout = 120000, hooks = {}, env } = {}) {
  const la0 = loadavg();
  const p = stack.spawn(name, cmd, args, env ? { envExtra: env } : {});
  const lg = () => [p.pid, ...loadgens()];
  const sample = () => ({
    t: performance.now(), m: cpuStat(), lg: cpuTicks(lg()),
    g: Object.fromEntries(Object.entries(groups).map(([k, f]) => [k, cpuTicks(f())])),
  });
  const line = (ev) => p.nextStdoutLine((l) => l.includes(`"event":"${ev}"`), timeout).catch((e) => { throw new Error(`${name}: ${e.message}\n${p.tail(2000)}`); });
  try { await line('measure'); } catch (e) {
    // No timed window (a login refused...): the result says why, no CPU.
    await Promise.race([p.exited, sleep(5000)]);
    const bad = lastJson(p.stdout, (o) => !o.event);
    if (!bad) throw e;
    return { ...bad, ok: false, loadavg: { before: la0, after: loadavg() } };
  }
  const h0 = hooks.start ? await hooks.start() : null;
  const s0 = sample();
  await line('end');
  const s1 = sample();
  const h1 = hooks.end ? await hooks.end(h0) : null;
  const ex = await Promise.race([p.exited, sleep(20000).then(() => null)]);
  if (!ex) await p.stop({ timeout: 2000 });
  const r = lastJson(p.stdout, (o) => !o.event);
  if (!r) throw new Error(`${name}: no JSON result\n${p.tail(3000)}`);
  const secs = (s1.t - s0.t) / 1000;
  const msgs = r.msgs_per_s * secs;
  const us = (ticks) => (ticks * 1e6) / CLK_TCK;
  r.window_s = secs;
  r.window_msgs = msgs;
  r.cpu_us_per_msg = Object.fromEntries(Object.keys(groups).map((k) => [k, us(s1.g[k] - s0.g[k]) / msgs]));
  r.server_us_per_msg = Object.values(r.cpu_us_per_msg).reduce((a, b) => a + b, 0);
  r.loadgen_us_per_msg = us(s1.lg - s0.lg) / msgs;
  r.server_cores_by = Object.fromEntries(Object.keys(groups).map((k) => [k, (s1.g[k] - s0.g[k]) / CLK_TCK / secs]));
  r.server_cores_busy = Object.values(r.server_cores_by).reduce((a, b) => a + b, 0);
  r.loadgen_cores = (s1.lg - s0.lg) / CLK_TCK / secs;
  r.machine_cores_busy = ((s1.m.all - s0.m.all) - (s1.m.idle - s0.m.idle)) / (s1.m.all - s0.m.all) * os.cpus().length;
  r.loadavg = { before: la0, after: loadavg() };
  if (h1) r.counters = h1;
  return r;
}

// Redis's per-command counters (INFO commandstats): calls by command name.
// Commands a Lua script runs are counted under their own names too.
async function commandStats(port) {
  const info = String(await stackRedis(port, ['INFO', 'commandstats']));
  const out = {};
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out[m[1]] = Number(m[2]);
  return out;
}
const diffCounts = (a, b) => Object.fromEntries(Object.keys(b).map((k) => [k, b[k] - (a[k] ?? 0)]).filter(([, v]) => v > 0));

// malloccount.so's per-process files (bench/malloccount.c): counts by pid.
const MC_SLOTS = ['magic', 'malloc', 'calloc', 'realloc', 'free', 'bytes', 'pid'];
function mallocCounts(dir, pids) {
  const out = { malloc: 0, calloc: 0, realloc: 0, free: 0, bytes: 0, processes: 0 };
  for (const pid of pids) {
    let b;
    try { b = fs.readFileSync(path.join(dir, `${pid}.cnt`)); } catch { continue; }
    out.processes++;
    for (let i = 1; i <= 5; i++) out[MC_SLOTS[i]] += Number(b.readBigUInt64LE(i * 8));
  }
  return out;
}

// System calls of a group of processes, counted by the kernel's tracepoints
// through `perf stat` (no ptrace: the processes run at full speed), enabled
// and disabled through perf's control FIFO at the window's edges. The named
// calls are counted one by one; "other" is the rest of raw_syscalls.
const SYSCALLS = ['epoll_wait', 'epoll_ctl', 'read', 'write', 'readv', 'writev', 'recvfrom', 'sendto', 'recvmsg', 'sendmsg', 'ioctl', 'select', 'poll', 'futex', 'getpid', 'getrandom', 'close', 'accept4'];
function havePerf() {
  try { execFileSync('perf', ['stat', '-x,', '-e', 'raw_syscalls:sys_enter', '--', 'true'], { stdio: 'ignore' }); return true; } catch { return false; }
}
async function startSyscallCount(stack, name, pids) {
  const dir = stack.tempDir('imb-bench-perf-');
  const ctl = path.join(dir, 'ctl'); const ack = path.join(dir, 'ack');
  execFileSync('mkfifo', [ctl, ack]);
  const have = SYSCALLS.filter((c) => fs.existsSync(`/sys/kernel/tracing/events/syscalls/sys_enter_${c}`) || fs.existsSync(`/sys/kernel/debug/tracing/events/syscalls/sys_enter_${c}`));
  const events = ['raw_syscalls:sys_enter', ...have.map((c) => `syscalls:sys_enter_${c}`)];
  const p = stack.spawn(name, 'perf', ['stat', '-D', '-1', '--control', `fifo:${ctl},${ack}`, '-x,', '-e', events.join(','), '-p', pids.join(',')]);
  // O_RDWR: a FIFO opened so never blocks; perf opens its ends at start.
  const c = fs.openSync(ctl, fs.constants.O_RDWR); const a = fs.openSync(ack, fs.constants.O_RDWR);
  await sleep(300);
  if (!p.running) throw new Error(`perf: ${p.tail(1000)}`);
  const cmd = (w) => { fs.writeSync(c, `${w}\n`); const b = Buffer.alloc(64); fs.readSync(a, b); };
  return {
    enable: () => cmd('enable'),
    disable: () => cmd('disable'),
    async result() {
      p.kill('SIGINT');
      await Promise.race([p.exited, sleep(5000)]);
      fs.closeSync(c); fs.closeSync(a);
      const out = {};
      for (const l of p.stderr.split('\n')) {
        const f = l.split(',');
        const ev = f[2] ?? '';
        if (ev === 'raw_syscalls:sys_enter') out.total = Number(f[0]);
        else if (ev.startsWith('syscalls:sys_enter_')) out[ev.slice(19)] = Number(f[0]);
      }
      if (Number.isFinite(out.total)) out.other = out.total - Object.entries(out).filter(([k]) => k !== 'total').reduce((x, [, v]) => x + (Number.isFinite(v) ? v : 0), 0);
      return out;
    },
  };
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
async function startEdge(stack, redisPort, credKey, name = 'imb-edge', env = null, listenPort = 0) {
  const p = stack.spawn(name, path.join(BIN, 'imb-edge'), ['--redis-host', '127.0.0.1', '--redis-port', String(redisPort),
    '--cred-key', credKey, '--log-level', 'warn', '--listen', `127.0.0.1:${listenPort}`, ...edgeFlags()], env ? { envExtra: env } : {});
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
async function startXmppd(stack, redisPort, xmppPort, credKey, workers, { tls = 'disabled', cafile, maxSessions, env } = {}) {
  const args = ['--redis-host', '127.0.0.1', '--redis-port', String(redisPort), '--cred-key', credKey, '--log-level', 'warn',
    '--xmpp-host', '127.0.0.1', '--xmpp-port', String(xmppPort), '--xmpp-tls', tls, '--workers', String(workers)];
  if (cafile) args.push('--xmpp-cafile', cafile);
  if (maxSessions) args.push('--max-sessions', String(maxSessions));
  const p = stack.spawn('imb-xmppd', path.join(BIN, 'imb-xmppd'), args, env ? { envExtra: env } : {});
  await waitFor(async () => {
    if (!p.running) throw new Error(`imb-xmppd exited: ${p.tail(2000)}`);
    const w = await stackRedis(redisPort, ['HLEN', 'imb:workers']);
    return w >= workers;
  }, { timeout: 30000, interval: 100, what: 'xmppd workers registered' });
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
// Every bench account gets a roster of ROSTER contacts (the next accounts,
// subscription both, names and a group), as real users have: the bridge
// fetches it at every login, and what that costs a session belongs in the
// figures (an empty roster flatters xmppd's memory per session).
const ROSTER = Number(argv.includes('--roster') ? argv[argv.indexOf('--roster') + 1] : 30);

function writeRosters(dir, users) {
  const rdir = path.join(dir, 'data', 'localhost', 'roster');
  fs.mkdirSync(rdir, { recursive: true });
  const k = Math.min(ROSTER, users.length - 1);
  users.forEach((u, i) => {
    const items = [];
    for (let j = 1; j <= k; j++) {
      const c = users[(i + j) % users.length];
      items.push(`\t["${c}@localhost"] = { ["subscription"] = "both"; ["name"] = "Contact ${c}"; ["groups"] = { ["Friends"] = true; }; };`);
    }
    fs.writeFileSync(path.join(rdir, `${u}.dat`), `return {\n\t[false] = { ["version"] = 1; ["pending"] = {}; };\n${items.join('\n')}\n};\n`);
  });
}

async function startBenchProsody(stack, users, { tls = false, rosters = false } = {}) {
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
      if (rosters) writeRosters(dir, users);
    }
    try { await p.start({ timeout: 15000 }); return p; } catch (e) {
      if (attempt >= 3) throw e;
      await sleep(100);
    }
  }
}

// The C stub bridge (bench/stubbridge.c): a worker with no XMPP behind it.
async function startStub(stack, redisPort, opts = {}) {
  const p = stack.spawn('stubbridge', path.join(BBIN, 'stubbridge'), ['--redis-port', String(redisPort)], opts);
  await p.waitForLine(/stubbridge ready/, { timeout: 10000 });
  return p;
}

function loadgen(stack, name, args, opts = {}) {
  return stack.spawn(name, path.join(BBIN, 'loadgen'), args, { stdin: 'pipe', ...opts });
}

// Hold N idle connections made by makeGen() (a loadgen/sio-load Proc that
// prints a ready event); measure each group of processes (summed RSS) and
// the kernel's counters before and after.
async function measureHold(stack, makeGen, groups, { redisPort, settleMs = 1500, n, readyMs = 180000 } = {}) {
  await sleep(500);
  const rss = () => Object.fromEntries(Object.entries(groups).map(([k, f]) => [k, f().reduce((a, p) => a + rssKiB(p), 0)]));
  const rss0 = rss();
  const k0 = kernelMem();
  const red0 = redisPort ? await redisUsedMemory(redisPort) : 0;
  const g = makeGen();
  const readyLine = await g.nextStdoutLine((l) => l.includes('"event":"ready"'), readyMs);
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
          await startStub(st, redis.port);
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

// ------------------------------------------------ 1c: reconnect storm
// One edge holds N idle phones logged in through the stub bridge; it is
// killed (-9) and a new edge starts on the same port. The phones (loadgen
// --reconnect: 0..1 s of jitter, doubling while connects fail) come back and
// resume with their epoch and seq. Measured: from the kill until every phone
// is logged in again, the peak Redis command rate (commands processed per
// 100 ms, as a rate), and the SUBSCRIBE / PUBLISH / EVALSHA calls Redis ran
// for the storm.
async function redisInfoStats(port) {
  const info = await stackRedis(port, ['INFO', 'commandstats']);
  const calls = (cmd) => Number(new RegExp(`cmdstat_${cmd}:calls=(\\d+)`).exec(info)?.[1] ?? 0);
  const total = Number(/total_commands_processed:(\d+)/.exec(await stackRedis(port, ['INFO', 'stats']))[1]);
  return { total, subscribe: calls('subscribe'), unsubscribe: calls('unsubscribe'), publish: calls('publish'), evalsha: calls('evalsha') };
}
async function sectionStorm() {
  const n = CFG.stormN;
  const runs = [];
  for (let r = 0; r < RUNS; r++) {
    const st = new Stack('storm');
    try {
      const redis = await startRedis(st);
      await startStub(st, redis.port);
      const key = randomCredKey();
      const edge = await startEdge(st, redis.port, key);
      await sleep(1200);
      const g = loadgen(st, 'loadgen', ['--mode', 'idle', '--reconnect', '--port', String(edge.port), '--conns', String(n),
        '--user-fmt', 'u%d@localhost', '--concurrency', '512', '--timeout', '600']);
      const ready = JSON.parse(await g.nextStdoutLine((l) => l.includes('"event":"ready"'), 180000));
      await sleep(1000);
      const before = await redisInfoStats(redis.port);
      let peak = 0, last = before.total, lastT = Date.now(), sampling = true;
      const sampler = (async () => {
        while (sampling) {
          await sleep(100);
          const t = Number(/total_commands_processed:(\d+)/.exec(await stackRedis(redis.port, ['INFO', 'stats']))[1]);
          const now = Date.now();
          peak = Math.max(peak, (t - last) / ((now - lastT) / 1000));
          last = t; lastT = now;
        }
      })();
      const t0 = Date.now();
      await edge.stop({ signal: 'SIGKILL', timeout: 5000 });
      await startEdge(st, redis.port, key, 'imb-edge-2', null, edge.port);
      const resumed = JSON.parse(await g.nextStdoutLine((l) => l.includes('"event":"resumed"'), 300000));
      const ms = Date.now() - t0;
      sampling = false;
      await sampler;
      const after = await redisInfoStats(redis.port);
      g.endStdin();
      await Promise.race([g.exited, sleep(10000)]);
      const one = {
        n, logged_in: ready.ok, resumed: resumed.phones, resumed_ms: ms, peak_cmds_per_s: peak,
        subscribe: after.subscribe - before.subscribe, unsubscribe: after.unsubscribe - before.unsubscribe,
        publish: after.publish - before.publish, evalsha: after.evalsha - before.evalsha, commands: after.total - before.total,
      };
      runs.push(one);
      log(`storm n=${n} run ${r + 1}: ${one.resumed}/${n} back in ${ms} ms, peak ${Math.round(peak)} Redis cmds/s, ` +
        `${one.subscribe} SUBSCRIBE, ${one.publish} PUBLISH, ${one.evalsha} EVALSHA, ${one.commands} commands`);
    } finally { await st.cleanup(); }
  }
  return {
    n, runs, resumed_ms: summarize(runs, 'resumed_ms'), peak_cmds_per_s: summarize(runs, 'peak_cmds_per_s'),
    subscribe: summarize(runs, 'subscribe'), commands_per_phone: summarize(runs, (x) => x.commands / n),
  };
}

// ------------------------------------------------- 1b + 5: real logins, xmppd
async function sectionReal() {
  const out = {};
  for (const tls of [false, true]) {
    const n = tls ? CFG.tlsN : CFG.realN;
    if (!n) continue; // --real-n 0 / --real-tls-n 0: that half skipped
    const workers = Math.max(CFG.realWorkers, Math.ceil(n / 780));
    const users = Array.from({ length: n }, (_, i) => `u${i}`);
    const limitS = Math.max(170, Math.ceil(n / 20)); // logins run at 100-300/s alone
    const runs = [];
    for (let r = 0; r < RUNS; r++) {
      const st = new Stack('real');
      try {
        const [redis, prosody] = await Promise.all([startRedis(st), startBenchProsody(st, users, { tls, rosters: true })]);
        const key = randomCredKey();
        const xmppd = await startXmppd(st, redis.port, prosody.c2sPort, key, workers, tls ? { tls: 'required', cafile: prosody.cafile } : {});
        const edge = await startEdge(st, redis.port, key);
        await sleep(1200);
        const res = await measureHold(st, () => loadgen(st, 'loadgen', ['--mode', 'idle', '--port', String(edge.port), '--conns', String(n), '--user-fmt', 'u%d@localhost', '--concurrency', '64', '--timeout', String(limitS)]),
          { edge: () => [edge.pid], xmppd_workers: () => childPids(xmppd.pid), prosody: () => [prosody.proc.pid] }, { n, redisPort: redis.port, settleMs: 2500, readyMs: (limitS + 10) * 1000 });
        res.workers = workers;
        runs.push(res);
        log(`real ${tls ? 'tls' : 'plain'} n=${n} run ${r + 1}: ${res.ok} logged in, ${res.per_s.toFixed(0)}/s, edge ${res.bytes_per_conn.edge.toFixed(0)} B, xmppd ${res.bytes_per_conn.xmppd_workers.toFixed(0)} B, prosody ${res.bytes_per_conn.prosody.toFixed(0)} B per session`);
      } finally { await st.cleanup(); }
    }
    out[tls ? 'tls' : 'plain'] = {
      n, workers, roster: Math.min(ROSTER, n - 1), runs,
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
    const xm = await startXmppd(st, redis.port, prosody.c2sPort, key, 2);
    const edge = await startEdge(st, redis.port, key);
    const xc = path.join(BBIN, 'xmppclient');
    const c2s = String(prosody.c2sPort);
    const echoB = st.spawn('echo-bob', xc, ['--mode', 'echo', '--jid', 'bob@localhost/desktop', '--pass', 'secret', '--port', c2s, '--timeout', String(CFG.total)], { stdin: 'pipe' });
    const echoD = st.spawn('echo-dave', xc, ['--mode', 'echo', '--jid', 'dave@localhost/desktop', '--pass', 'secret', '--port', c2s, '--timeout', String(CFG.total)], { stdin: 'pipe' });
    await echoB.waitForLine(/online/, { timeout: 10000 });
    await echoD.waitForLine(/online/, { timeout: 10000 });
    const common = ['--warmup', String(CFG.chatWarm), '--duration', String(CFG.chatSecs), '--timeout', String(CFG.chatSecs + 60)];
    const xmppd = () => [xm.pid, ...childPids(xm.pid)];
    for (const k of CFG.inflight) {
      out.direct[k] = []; out.bridged[k] = [];
      for (let r = 0; r < RUNS; r++) {
        // Alternate, so drift (caches, Prosody's heap) hits both alike. The
        // echo clients are load generators too.
        // A run that did not get to its timed window (a refused login) is
        // made again, at most twice, and noted.
        const again = async (what, fn) => {
          for (let t = 0; ; t++) {
            const x = await fn();
            if (x.ok || t >= 2) return x;
            log(`  ${what} run not ok (${JSON.stringify(x).slice(0, 200)}): again`);
            out.retries = (out.retries ?? 0) + 1;
          }
        };
        const d = await again('direct', () => measured(st, 'xmpp-ping', xc, ['--mode', 'ping', '--jid', 'carol@localhost/desktop', '--pass', 'secret', '--port', c2s, '--peer', 'dave@localhost', '--inflight', String(k), ...common],
          { groups: { prosody: () => [prosody.proc.pid] }, loadgens: () => [echoD.pid] }));
        const b = await again('bridged', () => measured(st, 'loadgen-chat', path.join(BBIN, 'loadgen'), ['--mode', 'chat', '--port', String(edge.port), '--conns', '1', '--user-fmt', 'alice@localhost', '--peer-fmt', 'bob@localhost', '--inflight', String(k), ...common],
          { groups: { edge: () => [edge.pid], redis: () => [redis.proc.pid], xmppd, prosody: () => [prosody.proc.pid] }, loadgens: () => [echoB.pid] }));
        if (!d.ok || !b.ok) log(`  chat run not ok: direct ${JSON.stringify(d)} bridged ${JSON.stringify(b)}`);
        out.direct[k].push(d); out.bridged[k].push(b);
        log(`chat inflight=${k} run ${r + 1}: direct ${d.msgs_per_s.toFixed(0)} msg/s p50 ${d.rtt_us.p50} p99 ${d.rtt_us.p99} us ${d.server_us_per_msg?.toFixed(0)} us CPU/msg; bridged ${b.msgs_per_s.toFixed(0)} msg/s p50 ${b.rtt_us.p50} p99 ${b.rtt_us.p99} us ${b.server_us_per_msg?.toFixed(0)} us CPU/msg`);
      }
    }
    echoB.endStdin(); echoD.endStdin();
  } finally { await st.cleanup(); }
  const sum = (list) => ({
    msgs_per_s: summarize(list, 'msgs_per_s'), p50_us: summarize(list, (x) => x.rtt_us.p50), p99_us: summarize(list, (x) => x.rtt_us.p99),
    server_us: summarize(list, 'server_us_per_msg'), loadgen_us: summarize(list, 'loadgen_us_per_msg'),
    by_us: Object.fromEntries(Object.keys(list[0]?.cpu_us_per_msg ?? {}).map((g) => [g, summarize(list, (x) => x.cpu_us_per_msg[g])])),
    loadavg: { before: list.map((x) => x.loadavg.before[0]), after: list.map((x) => x.loadavg.after[0]) },
  });
  out.summary = Object.fromEntries(CFG.inflight.map((k) => [k, { direct: sum(out.direct[k]), bridged: sum(out.bridged[k]) }]));
  return out;
}

// ---------------------------------------------------- 3: against Socket.IO
// A server that prints "listening port=P" once it listens (on port 0): its
// process, with .port set.
async function spawnListening(st, name, cmd, args) {
  const p = st.spawn(name, cmd, args);
  p.port = Number(/listening port=(\d+)/.exec(await p.waitForLine(/listening port=\d+/, { timeout: 10000 }))[1]);
  return p;
}

async function sectionSio() {
  const out = {};
  const P = CFG.pairs; const K = CFG.pairsInflight;
  const common = ['--conns', String(P), '--inflight', String(K), '--warmup', String(CFG.chatWarm), '--duration', String(CFG.chatSecs), '--timeout', String(CFG.chatSecs + 80)];
  const runs = { sio: [], edge_stub: [], floor: [], full: [] };
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
          nodes.push(await spawnListening(st, `sio-${i}`, process.execPath, [path.join(HERE, 'sio-server.mjs'), '--port', '0', '--redis-port', String(redis.port)]));
        }
        runs.sio.push(await measured(st, 'sio-load', process.execPath, [path.join(HERE, 'sio-load.mjs'), '--mode', 'pairs', '--port', String(nodes[0].port), '--port2', String(nodes[1].port), ...common],
          { groups: { node: () => nodes.map((x) => x.pid), redis: () => [redis.proc.pid] } }));
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
        const stub = await startStub(st, redis.port);
        const key = randomCredKey();
        const e1 = await startEdge(st, redis.port, key, 'imb-edge-1');
        const e2 = await startEdge(st, redis.port, key, 'imb-edge-2');
        await sleep(1200);
        runs.edge_stub.push(await measured(st, 'loadgen-pairs', path.join(BBIN, 'loadgen'), ['--mode', 'pairs', '--port', String(e1.port), '--port2', String(e2.port), '--user-fmt', 'a%d@localhost', '--peer-fmt', 'b%d@localhost', ...common],
          { groups: { edge: () => [e1.pid, e2.pid], redis: () => [redis.proc.pid], bridge: () => [stub.pid] } }));
        edgeIdle.push(await measureHold(st, () => loadgen(st, 'loadgen', ['--mode', 'idle', '--port', String(e1.port), '--conns', String(CFG.sioIdleN), '--user-fmt', 'i%d@localhost', '--concurrency', '512', '--timeout', '170']),
          { server: () => [e1.pid] }, { n: CFG.sioIdleN, redisPort: redis.port }));
      } finally { await st.cleanup(); }
    }
    // The floor: two lean relays on one Redis (bench/leanrelay.c), the same
    // load generator. No storage, no bridge: what this box can relay at all.
    {
      const st = new Stack('lean-relay');
      try {
        const redis = await startRedis(st);
        const relays = [];
        for (let i = 0; i < 2; i++) {
          relays.push(await spawnListening(st, `leanrelay-${i + 1}`, path.join(BBIN, 'leanrelay'), ['--redis-port', String(redis.port), '--port', '0']));
        }
        runs.floor.push(await measured(st, 'loadgen-pairs', path.join(BBIN, 'loadgen'), ['--mode', 'pairs', '--port', String(relays[0].port), '--port2', String(relays[1].port), '--user-fmt', 'a%d@localhost', '--peer-fmt', 'b%d@localhost', ...common],
          { groups: { relay: () => relays.map((x) => x.pid), redis: () => [redis.proc.pid] } }));
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
        runs.full.push(await measured(st, 'loadgen-pairs', path.join(BBIN, 'loadgen'), ['--mode', 'pairs', '--port', String(e1.port), '--port2', String(e2.port), '--user-fmt', 'a%d@localhost', '--peer-fmt', 'b%d@localhost', '--concurrency', '32', ...common],
          { groups: { edge: () => [e1.pid, e2.pid], redis: () => [redis.proc.pid], xmppd: () => [xm.pid, ...childPids(xm.pid)], prosody: () => [prosody.proc.pid] } }));
      } finally { await st.cleanup(); }
    }
    const us = (x) => `${x.server_us_per_msg.toFixed(0)} us CPU/msg (load gen ${x.loadgen_us_per_msg.toFixed(0)})`;
    log(`sio run ${r + 1}: socket.io ${runs.sio.at(-1).msgs_per_s?.toFixed(0)} msg/s ${us(runs.sio.at(-1))}, edge+stub ${runs.edge_stub.at(-1).msgs_per_s.toFixed(0)} msg/s ${us(runs.edge_stub.at(-1))}, lean relay ${runs.floor.at(-1).msgs_per_s.toFixed(0)} msg/s ${us(runs.floor.at(-1))}, full path ${runs.full.at(-1).msgs_per_s.toFixed(0)} msg/s ${us(runs.full.at(-1))}; memory/conn socket.io ${sioIdle.at(-1).bytes_per_conn.server.toFixed(0)} B, edge ${edgeIdle.at(-1).bytes_per_conn.server.toFixed(0)} B`);
  }
  const sum = (list) => ({
    msgs_per_s: summarize(list, 'msgs_per_s'), p50_us: summarize(list, (x) => x.rtt_us.p50), p99_us: summarize(list, (x) => x.rtt_us.p99), cores: summarize(list, 'server_cores_busy'),
    server_us: summarize(list, 'server_us_per_msg'), loadgen_us: summarize(list, 'loadgen_us_per_msg'), loadgen_cores: summarize(list, 'loadgen_cores'),
    machine_cores: summarize(list, 'machine_cores_busy'),
    by_us: Object.fromEntries(Object.keys(list[0]?.cpu_us_per_msg ?? {}).map((g) => [g, summarize(list, (x) => x.cpu_us_per_msg[g])])),
    loadavg: { before: list.map((x) => x.loadavg.before[0]), after: list.map((x) => x.loadavg.after[0]) },
  });
  out.pairs = P; out.inflight = K; out.runs = runs; out.idle = { sio: sioIdle, edge: edgeIdle };
  out.summary = {
    sio: sum(runs.sio), edge_stub: sum(runs.edge_stub), floor: sum(runs.floor), full: sum(runs.full),
    sio_mem: summarize(sioIdle, (x) => x.bytes_per_conn.server), edge_mem: summarize(edgeIdle, (x) => x.bytes_per_conn.server),
    sio_redis: summarize(sioIdle, 'redis_bytes_per_conn'), edge_redis: summarize(edgeIdle, 'redis_bytes_per_conn'),
  };
  return out;
}

// -------------------------------- 8: one Redis against a Redis Cluster
// The stub-bridge pairs load of bench 3 (edges -> Redis -> stub bridge ->
// Redis -> edges, no XMPP) on one Redis and on a cluster of 3 masters + 3
// replicas, alternated in each run. Redis's CPU is every node's; each node's
// commands are read from INFO commandstats at the window's edges, so the
// per-shard load shows. Issue 20 expects no gain on 2 cores: the figure is
// the cost of the cluster, and how its work spreads.
async function clusterRun(kind, common) {
  const { startRedisCluster } = await import('../tests/harness/rediscluster.mjs');
  const st = new Stack(`cluster-${kind}`);
  try {
    const key = randomCredKey();
    let redis; let env = null; let nodes; let stubArgs;
    if (kind === 'one') {
      redis = await startRedis(st);
      nodes = () => [{ port: redis.port, pid: redis.proc.pid, role: 'master' }];
      stubArgs = [];
    } else {
      redis = await startRedisCluster(st, { masters: 3, replicasPer: 1, nodeTimeoutMs: 2000 });
      nodes = () => redis.nodes.filter((n) => n.alive !== false);
      env = { IMB_REDIS_CLUSTER: redis.seeds };
      stubArgs = ['--redis-cluster', redis.seeds];
    }
    const port0 = nodes()[0].port;
    const stub = st.spawn('stubbridge', path.join(BBIN, 'stubbridge'), ['--redis-port', String(port0), ...stubArgs]);
    await stub.waitForLine(/stubbridge ready/, { timeout: 10000 });
    const e1 = await startEdge(st, port0, key, 'imb-edge-1', env);
    const e2 = await startEdge(st, port0, key, 'imb-edge-2', env);
    await sleep(1500);
    const perNode = Object.fromEntries(nodes().map((n) => [`redis ${n.role} ${n.port}`, () => [n.pid]]));
    const stats = () => Promise.all(nodes().map(async (n) => [n.port, await commandStats(n.port)]));
    const r = await measured(st, 'loadgen-pairs', path.join(BBIN, 'loadgen'), ['--mode', 'pairs', '--port', String(e1.port), '--port2', String(e2.port), '--user-fmt', 'a%d@localhost', '--peer-fmt', 'b%d@localhost', ...common],
      {
        groups: { edge: () => [e1.pid, e2.pid], bridge: () => [stub.pid], ...perNode },
        hooks: {
          start: stats,
          end: async (before) => {
            const after = await stats();
            return Object.fromEntries(after.map(([port, c], i) => [port, { role: nodes().find((n) => n.port === port)?.role, calls: diffCounts(before[i][1], c) }]));
          },
        },
      });
    r.redis_us_per_msg = Object.entries(r.cpu_us_per_msg).filter(([k]) => k.startsWith('redis')).reduce((a, [, v]) => a + v, 0);
    r.shards = Object.entries(r.counters ?? {}).map(([port, x]) => ({
      port: Number(port), role: x.role,
      commands_per_msg: Object.values(x.calls).reduce((a, b) => a + b, 0) / r.window_msgs,
      evalsha_per_msg: (x.calls.evalsha ?? 0) / r.window_msgs,
      publish_per_msg: (x.calls.publish ?? 0) / r.window_msgs,
      cpu_us_per_msg: r.cpu_us_per_msg[`redis ${x.role} ${port}`],
    }));
    return r;
  } finally { await st.cleanup(); }
}

// What a cluster's pub/sub costs: N PUBLISH (classic: forwarded over the
// cluster bus to every node) against N SPUBLISH (sharded: only to the
// shard's replica), each sent by redis-benchmark to the master of its
// channel's slot, one subscriber on that master; the CPU of every node
// (INFO cpu) per message.
async function pubCost(n) {
  const { startRedisCluster } = await import('../tests/harness/rediscluster.mjs');
  const { redisCommand } = await import('../tests/harness/redis.mjs');
  const st = new Stack('cluster-pub');
  const out = {};
  try {
    const c = await startRedisCluster(st, { masters: 3, replicasPer: 1, nodeTimeoutMs: 2000 });
    const channel = 'imb:e:{bench}';
    const port = await c.masterForSlot(c.keySlot(channel));
    const cpu = async () => {
      let sum = 0;
      for (const node of c.nodes) {
        const info = String(await redisCommand(node.port, ['INFO', 'cpu']));
        sum += Number(/used_cpu_sys:([\d.]+)/.exec(info)[1]) + Number(/used_cpu_user:([\d.]+)/.exec(info)[1]);
      }
      return sum;
    };
    for (const cmd of ['PUBLISH', 'SPUBLISH']) {
      const sub = st.spawn(`sub-${cmd}`, 'redis-cli', ['-p', String(port), cmd === 'PUBLISH' ? 'SUBSCRIBE' : 'SSUBSCRIBE', channel]);
      await sleep(300);
      const c0 = await cpu();
      const t0 = performance.now();
      await execFileP('redis-benchmark', ['-p', String(port), '-n', String(n), '-c', '4', '-P', '16', '-q', cmd, channel, 'x'.repeat(200)]);
      const secs = (performance.now() - t0) / 1000;
      const c1 = await cpu();
      await sub.stop({ timeout: 2000 });
      out[cmd.toLowerCase()] = { us_per_msg_all_nodes: ((c1 - c0) * 1e6) / n, msgs_per_s: n / secs };
    }
    out.nodes = c.nodes.length;
  } finally { await st.cleanup(); }
  return out;
}

async function sectionCluster() {
  const P = CFG.pairs; const K = CFG.pairsInflight;
  const common = ['--conns', String(P), '--inflight', String(K), '--warmup', String(CFG.chatWarm), '--duration', String(CFG.chatSecs), '--timeout', String(CFG.chatSecs + 80)];
  const runs = { one: [], cluster: [] };
  for (let r = 0; r < RUNS; r++) {
    for (const kind of r % 2 ? ['cluster', 'one'] : ['one', 'cluster']) runs[kind].push(await clusterRun(kind, common));
    const d = (x) => `${x.msgs_per_s.toFixed(0)} msg/s, ${x.server_us_per_msg.toFixed(0)} us CPU/msg (Redis ${x.redis_us_per_msg.toFixed(0)})`;
    log(`cluster run ${r + 1}: one Redis ${d(runs.one.at(-1))}; 3+3 cluster ${d(runs.cluster.at(-1))}; ` +
      `per node commands/msg ${runs.cluster.at(-1).shards.map((x) => `${x.role[0]}${x.port}:${x.commands_per_msg.toFixed(2)}`).join(' ')}`);
  }
  const sum = (list) => ({
    msgs_per_s: summarize(list, 'msgs_per_s'), p99_us: summarize(list, (x) => x.rtt_us.p99), server_us: summarize(list, 'server_us_per_msg'),
    redis_us: summarize(list, 'redis_us_per_msg'),
    commands_per_msg: summarize(list, (x) => x.shards.reduce((a, y) => a + y.commands_per_msg, 0)),
    loadavg: { before: list.map((x) => x.loadavg.before[0]), after: list.map((x) => x.loadavg.after[0]) },
  });
  const pub = [];
  for (let r = 0; r < RUNS; r++) pub.push(await pubCost(QUICK ? 50000 : 300000));
  log(`cluster pub/sub: ${pub.map((x) => `PUBLISH ${x.publish.us_per_msg_all_nodes.toFixed(1)} us, SPUBLISH ${x.spublish.us_per_msg_all_nodes.toFixed(1)} us`).join('; ')} of CPU per message, all nodes`);
  return {
    pairs: P, inflight: K, runs, pub,
    summary: {
      one: sum(runs.one), cluster: sum(runs.cluster),
      publish_us: summarize(pub, (x) => x.publish.us_per_msg_all_nodes), spublish_us: summarize(pub, (x) => x.spublish.us_per_msg_all_nodes),
    },
  };
}

// ------------------------------------------ 7: cost per message, counted
// Counted runs, apart from the timed ones (an instrumented run is no
// throughput figure): the same pairs load as bench 3, once on the stub-bridge
// path and once on the full path, with the edges and xmppd under
// malloccount.so and their system calls counted by perf; Redis's
// INFO commandstats read at the window's edges.
async function costRun(kind) {
  const P = CFG.pairs; const K = CFG.pairsInflight;
  const st = new Stack(`cost-${kind}`);
  try {
    const mcDir = st.tempDir('imb-bench-malloc-');
    const pre = { LD_PRELOAD: path.join(BBIN, 'malloccount.so'), MALLOCCOUNT_DIR: mcDir };
    const users = [...Array.from({ length: P }, (_, i) => `a${i}`), ...Array.from({ length: P }, (_, i) => `b${i}`)];
    const [redis, prosody] = await Promise.all([startRedis(st), kind === 'full' ? startBenchProsody(st, users) : null]);
    const key = randomCredKey();
    let bridge; let xmppdPids = () => [];
    if (kind === 'full') {
      bridge = await startXmppd(st, redis.port, prosody.c2sPort, key, 2, { env: pre });
      xmppdPids = () => [bridge.pid, ...childPids(bridge.pid)];
    } else {
      bridge = await startStub(st, redis.port);
    }
    const e1 = await startEdge(st, redis.port, key, 'imb-edge-1', pre);
    const e2 = await startEdge(st, redis.port, key, 'imb-edge-2', pre);
    await sleep(1200);
    const edges = () => [e1.pid, e2.pid];
    const perf = havePerf();
    const scEdge = perf ? await startSyscallCount(st, 'perf-edge', edges()) : null;
    const scX = perf && kind === 'full' ? await startSyscallCount(st, 'perf-xmppd', childPids(bridge.pid)) : null;
    const args = ['--mode', 'pairs', '--port', String(e1.port), '--port2', String(e2.port), '--user-fmt', 'a%d@localhost', '--peer-fmt', 'b%d@localhost',
      '--conns', String(P), '--inflight', String(K), '--warmup', String(CFG.chatWarm), '--duration', String(CFG.costSecs), '--timeout', String(CFG.costSecs + 80), '--concurrency', '32'];
    const groups = { edge: edges, redis: () => [redis.proc.pid], ...(kind === 'full' ? { xmppd: xmppdPids, prosody: () => [prosody.proc.pid] } : { bridge: () => [bridge.pid] }) };
    const r = await measured(st, 'loadgen-cost', path.join(BBIN, 'loadgen'), args, {
      groups,
      hooks: {
        start: async () => {
          scEdge?.enable(); scX?.enable();
          return { cs: await commandStats(redis.port), edge: mallocCounts(mcDir, edges()), xmppd: mallocCounts(mcDir, xmppdPids()) };
        },
        end: async (h0) => {
          scEdge?.disable(); scX?.disable();
          const cs = await commandStats(redis.port);
          const edge = mallocCounts(mcDir, edges()); const xm = mallocCounts(mcDir, xmppdPids());
          const d = (a, b) => Object.fromEntries(['malloc', 'calloc', 'realloc', 'free', 'bytes'].map((k) => [k, b[k] - a[k]]));
          const c = diffCounts(h0.cs, cs);
          delete c.info; // the bench's own INFO calls
          return { commands: c, malloc_edge: d(h0.edge, edge), malloc_xmppd: kind === 'full' ? d(h0.xmppd, xm) : null };
        },
      },
    });
    const n = r.window_msgs;
    const per = (o) => (o ? Object.fromEntries(Object.entries(o).map(([k, v]) => [k, v / n])) : null);
    const scripts = ['eval', 'evalsha', 'fcall', 'fcall_ro', 'eval_ro', 'evalsha_ro'];
    const cmds = r.counters.commands;
    const out = {
      kind, pairs: P, inflight: K, msgs_per_s: r.msgs_per_s, window_s: r.window_s, msgs: n, loadavg: r.loadavg,
      redis_per_msg: per(cmds),
      redis_executions_per_msg: Object.values(cmds).reduce((a, b) => a + b, 0) / n,
      redis_scripts_per_msg: scripts.reduce((a, k) => a + (cmds[k] ?? 0), 0) / n,
      edge_malloc_per_msg: per(r.counters.malloc_edge),
      xmppd_malloc_per_msg: per(r.counters.malloc_xmppd),
      cpu_us_per_msg: r.cpu_us_per_msg,
    };
    const allocs = (m) => (m ? m.malloc + m.calloc + m.realloc : NaN);
    out.edge_allocs_per_msg = allocs(out.edge_malloc_per_msg);
    out.xmppd_allocs_per_msg = allocs(out.xmppd_malloc_per_msg);
    if (scEdge) out.edge_syscalls_per_msg = per(await scEdge.result());
    if (scX) out.xmppd_syscalls_per_msg = per(await scX.result());
    if (!perf) out.syscalls_note = 'perf stat not available (linux-perf): system calls not counted';
    log(`cost ${kind}: ${n.toFixed(0)} msgs at ${r.msgs_per_s.toFixed(0)} msg/s; Redis ${out.redis_executions_per_msg.toFixed(2)} executions/msg (scripts ${out.redis_scripts_per_msg.toFixed(2)}); ` +
      `edge ${out.edge_allocs_per_msg.toFixed(1)} allocs/msg, ${out.edge_syscalls_per_msg?.total?.toFixed(2) ?? 'n/a'} syscalls/msg` +
      (kind === 'full' ? `; xmppd ${out.xmppd_allocs_per_msg.toFixed(1)} allocs/msg, ${out.xmppd_syscalls_per_msg?.total?.toFixed(2) ?? 'n/a'} syscalls/msg` : ''));
    return out;
  } finally { await st.cleanup(); }
}
async function sectionCost() {
  const out = { stub: [], full: [] };
  // Counts vary little: two counted runs of each path are plenty.
  for (let r = 0; r < Math.min(RUNS, 2); r++) {
    out.stub.push(await costRun('stub'));
    out.full.push(await costRun('full'));
  }
  return out;
}

// --------------------------------------- 6: capacity of one xmppd instance
// One xmppd (supervisor + W workers, --max-sessions M) against one Prosody,
// filled through two edges in steps: each step is two loadgens (one per edge)
// whose phones log in and then stay, idle, until the plan ends. The fill
// stops at the first step with a failed login, when a process exits, when
// the target is reached or when the plan's time budget is spent. Plans:
//   cap   W × M below every limit of the machine: the configured ceiling,
//         and what a phone gets past it;
//   wall  enough workers for more sessions than one process may hold
//         descriptors: the first resource of the machine that runs out.
// Node raises its soft descriptor limit to the hard one at start; the
// services inherit it (the limits are recorded), loadgen raises its own.
function fdCount(pid) { try { return fs.readdirSync(`/proc/${pid}/fd`).length; } catch { return NaN; } }
function fdLimit(pid) {
  try { return Number(/Max open files\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/limits`, 'utf8'))[1]); } catch { return NaN; }
}
function cpuStat() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: f[3] + f[4], all: f.reduce((a, b) => a + b, 0) };
}
async function workerLoads(redisPort) {
  const h = await stackRedis(redisPort, ['HGETALL', 'imb:workers']);
  const out = [];
  for (let i = 0; i + 1 < h.length; i += 2) {
    const [, sessions, capacity] = String(h[i + 1]).split(' ').map(Number);
    out.push({ id: h[i], sessions, capacity });
  }
  return out;
}
// CPU of each group over fn()'s run, in cores busy; plus the whole machine's.
async function cpuOver(groups, fn) {
  const g0 = Object.fromEntries(Object.entries(groups).map(([k, f]) => [k, cpuTicks(f())]));
  const m0 = cpuStat(); const t0 = Date.now();
  const r = await fn();
  const secs = (Date.now() - t0) / 1000; const m1 = cpuStat();
  const cores = Object.fromEntries(Object.entries(groups).map(([k, f]) => [k, (cpuTicks(f()) - g0[k]) / 100 / secs]));
  cores.machine = ((m1.all - m0.all) - (m1.idle - m0.idle)) / (m1.all - m0.all) * os.cpus().length;
  return { r, secs, cores };
}

async function capacityPlan(plan) {
  const st = new Stack(`capacity-${plan.name}`);
  const users = Array.from({ length: plan.target }, (_, i) => `u${i}`);
  const out = { ...plan, steps: [] };
  try {
    const [redis, prosody] = await Promise.all([startRedis(st), startBenchProsody(st, users)]);
    const key = randomCredKey();
    const xm = await startXmppd(st, redis.port, prosody.c2sPort, key, plan.workers, { maxSessions: plan.maxSessions });
    const edges = [await startEdge(st, redis.port, key, 'imb-edge-1'), await startEdge(st, redis.port, key, 'imb-edge-2')];
    await sleep(1500);
    const workerPids = () => childPids(xm.pid);
    const gens = [];
    const groups = {
      xmppd: () => [xm.pid, ...workerPids()], prosody: () => [prosody.proc.pid], edges: () => edges.map((e) => e.pid),
      redis: () => [redis.proc.pid], loadgen: () => gens.filter((g) => g.running).map((g) => g.pid),
    };
    const rss = () => Object.fromEntries(Object.entries(groups).map(([k, f]) => [k, f().reduce((a, pid) => a + rssKiB(pid), 0)]));
    const fds = () => ({
      prosody: fdCount(prosody.proc.pid), edges: edges.map((e) => fdCount(e.pid)),
      worker_max: Math.max(...workerPids().map(fdCount)), supervisor: fdCount(xm.pid),
    });
    out.fd_limits = { prosody: fdLimit(prosody.proc.pid), edge: fdLimit(edges[0].pid), worker: fdLimit(workerPids()[0]), supervisor: fdLimit(xm.pid) };
    out.rss_kib_before = rss();
    out.fds_before = fds();
    out.mem_avail_kib_before = kernelMem().memAvailKiB;
    let next = 0; let held = 0; let failed = 0; let fillSecs = 0;
    const notes = [];
    for (let step = 0; next < plan.target; step++) {
      const k = Math.min(plan.step, plan.target - next);
      const parts = [Math.ceil(k / 2), Math.floor(k / 2)];
      const { r, secs, cores } = await cpuOver(groups, async () => {
        const batch = [];
        let u = next;
        parts.forEach((n, j) => {
          if (!n) return;
          const g = loadgen(st, `loadgen-${step}-${j}`, ['--mode', 'idle', '--port', String(edges[j].port), '--conns', String(n), '--user-fmt', 'u%d@localhost',
            '--user-start', String(u), '--src-base', String(2 + (gens.length % 240)), '--src-count', '1', '--concurrency', '64', '--timeout', '1500', '--hold', '1500']);
          u += n;
          gens.push(g); batch.push(g);
        });
        const ready = await Promise.all(batch.map((g) => g.nextStdoutLine((l) => l.includes('"event":"ready"'), 300000).then(JSON.parse)
          .catch((e) => ({ ok: 0, failed: 0, error: e.message }))));
        return { batch, ready };
      });
      next += k;
      const ok = r.ready.reduce((a, x) => a + x.ok, 0);
      const bad = k - ok;
      held += ok; failed += bad; fillSecs += secs;
      await sleep(1500); // let the workers publish their session counts
      const loads = await workerLoads(redis.port);
      const s = {
        step, tried: k, ok, failed: bad, secs, logins_per_s: ok / secs, held,
        sessions_reported: loads.reduce((a, w) => a + w.sessions, 0),
        per_worker_min: Math.min(...loads.map((w) => w.sessions)), per_worker_max: Math.max(...loads.map((w) => w.sessions)),
        workers_full: loads.filter((w) => w.sessions >= w.capacity).length,
        rss_kib: rss(), fds: fds(), cores, mem_avail_kib: kernelMem().memAvailKiB,
      };
      out.steps.push(s);
      log(`capacity ${plan.name} step ${step}: ${ok}/${k} in ${secs.toFixed(1)} s (${s.logins_per_s.toFixed(0)}/s), held ${held}, workers ${s.per_worker_min}–${s.per_worker_max} sessions (${s.workers_full} full), ` +
        `xmppd ${(s.rss_kib.xmppd / 1024).toFixed(0)} MiB, prosody ${(s.rss_kib.prosody / 1024).toFixed(0)} MiB, fds prosody ${s.fds.prosody} edges ${s.fds.edges.join('+')}, ` +
        `cores prosody ${cores.prosody.toFixed(2)} xmppd ${cores.xmppd.toFixed(2)} edges ${cores.edges.toFixed(2)} redis ${cores.redis.toFixed(2)} loadgen ${cores.loadgen.toFixed(2)} machine ${cores.machine.toFixed(2)}`);
      if (bad > 0) {
        for (const g of r.batch) {
          for (const l of g.lines('stderr')) if (/error frame|lost:|timeout/.test(l) && notes.length < 6) notes.push(l.replace(/^loadgen: /, '').slice(0, 300));
        }
        for (const x of r.ready) if (x.error && notes.length < 8) notes.push(x.error.slice(0, 300));
        out.stop_kind = 'failed_logins';
        break;
      }
      const dead = [['imb-xmppd', xm], ['prosody', prosody.proc], ...edges.map((e, i) => [`imb-edge-${i + 1}`, e])].filter(([, p]) => !p.running);
      if (dead.length) { out.stop_kind = 'process_exited'; notes.push(`exited: ${dead.map(([n]) => n).join(', ')}`); break; }
      if (fillSecs * 1000 > plan.budgetMs && next < plan.target) { out.stop_kind = 'time_budget'; break; }
    }
    if (!out.stop_kind) out.stop_kind = 'target_reached';
    out.held = held; out.tried = next; out.failed = failed; out.fill_secs = fillSecs;
    const last = out.steps.at(-1);
    out.rss_kib_after = last.rss_kib;
    out.bytes_per_session = Object.fromEntries(Object.keys(out.rss_kib_before).filter((k) => k !== 'loadgen')
      .map((k) => [k, held ? ((last.rss_kib[k] - out.rss_kib_before[k]) * 1024) / held : NaN]));
    out.fill_cores = {};
    for (const k of Object.keys(last.cores)) out.fill_cores[k] = out.steps.reduce((a, x) => a + x.cores[k] * x.secs, 0) / fillSecs;
    // What the held sessions cost when nothing happens (heartbeats, lease
    // renewals, libstrophe's timers and keepalives).
    await sleep(3000);
    out.idle_cores = (await cpuOver(groups, () => sleep(plan.idleMs))).cores;
    out.workers_alive = workerPids().length;
    out.supervisor_rss_kib = rssKiB(xm.pid);
    out.worker_rss_kib = workerPids().map(rssKiB);
    out.mem_avail_kib_after = kernelMem().memAvailKiB;
    // Evidence for what stopped the fill.
    out.prosody_log = prosody.logText().split('\n').filter((l) => /\b(error|warn)\b/i.test(l)).slice(-5).map((l) => l.slice(0, 300));
    out.xmppd_log = xm.stderr.split('\n').filter((l) => l.trim()).slice(-5).map((l) => l.slice(0, 300));
    out.edge_log = edges.flatMap((e) => e.stderr.split('\n').filter((l) => l.trim()).slice(-3)).map((l) => l.slice(0, 300));
    out.notes = notes;
    out.stopped_by = capacityVerdict(out);
    log(`capacity ${plan.name}: held ${held} of ${next} tried (${failed} failed) in ${fillSecs.toFixed(0)} s; ` +
      `xmppd ${out.bytes_per_session.xmppd.toFixed(0)} B/session; idle cores xmppd ${out.idle_cores.xmppd.toFixed(2)} prosody ${out.idle_cores.prosody.toFixed(2)}; stopped by: ${out.stopped_by}`);
    for (const g of gens) g.endStdin();
    await Promise.race([Promise.all(gens.map((g) => g.exited)), sleep(15000)]);
  } finally { await st.cleanup(); }
  return out;
}

// The limit that stopped a plan, named from what was measured.
function capacityVerdict(o) {
  const last = o.steps.at(-1);
  const near = (n, lim) => Number.isFinite(lim) && n >= lim - 64;
  const why = [];
  if (o.stop_kind === 'failed_logins') {
    if (last.workers_full === o.workers) why.push(`every worker at max_sessions (${o.workers} × ${o.maxSessions}): logins past it are refused`);
    if (near(last.fds.prosody, o.fd_limits.prosody)) why.push(`Prosody's descriptors (${last.fds.prosody} of ${o.fd_limits.prosody} open)`);
    last.fds.edges.forEach((n, i) => { if (near(n, o.fd_limits.edge)) why.push(`edge ${i + 1}'s descriptors (${n} of ${o.fd_limits.edge})`); });
    if (near(last.fds.worker_max, o.fd_limits.worker)) why.push(`a worker's descriptors (${last.fds.worker_max} of ${o.fd_limits.worker})`);
    if (last.mem_avail_kib < 512 * 1024) why.push(`memory (${(last.mem_avail_kib / 1024).toFixed(0)} MiB left)`);
    if (!why.length) why.push('failed logins with no resource at its limit (see notes)');
  } else if (o.stop_kind === 'process_exited') {
    why.push(`a process exited (${o.notes.join('; ')})`);
  } else if (o.stop_kind === 'time_budget') {
    why.push(`the time budget (${(o.budgetMs / 1000).toFixed(0)} s of filling)`);
  } else {
    why.push(`nothing: all ${o.target} phones logged in`);
  }
  return why.join('; ');
}

async function sectionCapacity() {
  const out = { plans: {} };
  for (const plan of CFG.capacity) out.plans[plan.name] = await capacityPlan(plan);
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
  L.push('How it is measured: every process runs on this one machine over 127.0.0.1. Timed figures are the median (min–max) of the runs; each run times a window ' +
    `(${res.config.chatSecs} s after ${res.config.chatWarm} s of warm-up) that the load generator opens and closes with a line on stdout. Server CPU per message is the ` +
    'utime+stime (/proc/<pid>/stat) of every server process, read at those two lines, divided by the messages delivered in the window (msg/s × its length, a round trip ' +
    'counting two messages); the load generators\' CPU is read the same way. Counted runs (section 7) are separate: Redis `INFO commandstats` deltas (commands a Lua script ' +
    'runs are counted too), allocations by an LD_PRELOAD counter (bench/malloccount.c) and system calls by the kernel\'s syscall tracepoints through `perf stat`, ' +
    'enabled and disabled at the window\'s edges.', '');
  L.push(`Load average (1, 5, 15 min) at the start: ${res.loadavg_start?.join(', ') ?? 'n/a'}; at the end: ${res.loadavg_end?.join(', ') ?? 'n/a'}.`, '');
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
  if (S.storm) {
    const x = S.storm;
    L.push(`### 1c. Reconnect storm: one edge killed (-9) under ${f0(x.n)} idle logged-in phones (stub bridge), a new one started on its port`, '');
    L.push('| phones back | from the kill until every phone resumed, ms | peak Redis commands/s (per 100 ms) | SUBSCRIBE calls in the storm | Redis commands per phone |');
    L.push('|---|---|---|---|---|');
    L.push(`| ${Math.min(...x.runs.map((r) => r.resumed))}/${f0(x.n)} | ${sp(x.resumed_ms)} | ${sp(x.peak_cmds_per_s)} | ${sp(x.subscribe)} | ${sp(x.commands_per_phone, f1)} |`);
    L.push('', 'The phones reconnect after a random 0–1 s (doubling while connects are refused, up to 8 s) and log in with the epoch and seq they last saw, as the client library does.', '');
  }
  if (S.real) {
    L.push('### 1b + 5. Logged-in phones with real XMPP sessions (edge + xmppd + Prosody)', '');
    L.push('| XMPP link | sessions | workers | roster | logins/s | edge B/phone | xmppd B/session | Prosody B/session | Redis B/phone |');
    L.push('|---|---|---|---|---|---|---|---|---|');
    for (const [k, x] of Object.entries(S.real)) {
      L.push(`| ${k === 'tls' ? 'STARTTLS (verified)' : 'plaintext'} | ${x.ok}/${x.n} | ${x.workers} | ${x.roster ?? 0} contacts | ${sp(x.logins_per_s)} | ${sp(x.edge_bytes)} | ${sp(x.xmppd_bytes)} | ${sp(x.prosody_bytes)} | ${sp(x.redis_bytes)} |`);
    }
    L.push('');
  }
  const la = (x) => (x?.loadavg ? `${f2(Math.min(...x.loadavg.before))}–${f2(Math.max(...x.loadavg.before))} → ${f2(Math.min(...x.loadavg.after))}–${f2(Math.max(...x.loadavg.after))}` : 'n/a');
  const byUs = (x) => Object.entries(x.by_us ?? {}).map(([k, v]) => `${k} ${f1(v.median)}`).join(' + ');
  if (S.chat) {
    L.push('### 2. Phone ↔ desktop through the bridge vs two direct XMPP clients', '');
    L.push('| in flight | direct msg/s | bridged msg/s | ratio | direct p50 ms | bridged p50 ms | direct p99 ms | bridged p99 ms | p99 difference ms |');
    L.push('|---|---|---|---|---|---|---|---|---|');
    for (const [k, x] of Object.entries(S.chat.summary)) {
      L.push(`| ${k} | ${sp(x.direct.msgs_per_s)} | ${sp(x.bridged.msgs_per_s)} | ${f2(x.bridged.msgs_per_s.median / x.direct.msgs_per_s.median)}× | ${ms(x.direct.p50_us)} | ${ms(x.bridged.p50_us)} | ${ms(x.direct.p99_us)} | ${ms(x.bridged.p99_us)} | +${f2((x.bridged.p99_us.median - x.direct.p99_us.median) / 1000)} |`);
    }
    if (Object.values(S.chat.summary)[0]?.direct.server_us) {
      L.push('', 'Server CPU per message delivered (µs, utime+stime of every server process over the timed window ÷ messages delivered in it; median (min–max)), and the load generators\' own:', '');
      L.push('| in flight | system | server µs/msg | by process (median µs/msg) | load generators µs/msg | load average 1 min (before → after) |');
      L.push('|---|---|---|---|---|---|');
      for (const [k, x] of Object.entries(S.chat.summary)) {
        L.push(`| ${k} | direct XMPP (Prosody) | ${sp(x.direct.server_us, f1)} | ${byUs(x.direct)} | ${sp(x.direct.loadgen_us, f1)} (xmppclient ping + echo) | ${la(x.direct)} |`);
        L.push(`| ${k} | bridged (edge + Redis + xmppd + Prosody) | ${sp(x.bridged.server_us, f1)} | ${byUs(x.bridged)} | ${sp(x.bridged.loadgen_us, f1)} (loadgen + xmppclient echo) | ${la(x.bridged)} |`);
      }
    }
    L.push('');
  }
  if (S.sio) {
    const x = S.sio.summary;
    L.push(`### 3. Against Socket.IO + @socket.io/redis-adapter on ioredis (${S.sio.pairs} pairs across two nodes, ${S.sio.inflight} in flight each)`, '');
    L.push(`| system | msg/s | vs Socket.IO | server CPU µs/msg | vs Socket.IO | by process (median µs/msg) | p50 ms | p99 ms | server cores busy (of ${m.cores}) | load generator µs/msg (cores) | load average 1 min (before → after) |`);
    L.push('|---|---|---|---|---|---|---|---|---|---|---|');
    const row = (name, y) => L.push(`| ${name} | ${sp(y.msgs_per_s)} | ${f2(y.msgs_per_s.median / x.sio.msgs_per_s.median)}× | ${y.server_us ? sp(y.server_us, f1) : 'n/a'} | ${y.server_us ? `${f2(y.server_us.median / x.sio.server_us.median)}×` : ''} | ${byUs(y)} | ${ms(y.p50_us)} | ${ms(y.p99_us)} | ${sp(y.cores, f2)} | ${y.loadgen_us ? `${f1(y.loadgen_us.median)} (${f2(y.loadgen_cores.median)})` : 'n/a'} | ${la(y)} |`);
    row(`Socket.IO, 2 nodes + Redis adapter (load: bench/sio-load.mjs, ${S.sio.runs.sio[0]?.client ?? 'socket.io'} client)`, x.sio);
    row('imbridge: 2 edges + Redis + C stub bridge (no XMPP; bridge = stub)', x.edge_stub);
    row('imbridge: 2 edges + Redis + xmppd + Prosody (full path)', x.full);
    if (x.floor?.msgs_per_s) {
      row('floor: 2 lean relays + Redis (bench/leanrelay.c: one PUBLISH per message, nothing stored, no bridge)', x.floor);
      L.push('', `imbridge's stub path against the floor in the same runs: ${f2(x.edge_stub.msgs_per_s.median / x.floor.msgs_per_s.median)}× its msg/s, ${f2(x.edge_stub.server_us.median / x.floor.server_us.median)}× its server CPU per message.`);
    }
    L.push('', `| memory per idle connection (N=${f0(res.config.sioIdleN)}, one node) | server B/conn | vs Socket.IO | Redis B/conn |`, '|---|---|---|---|');
    L.push(`| Socket.IO (websocket, joined its user's room) | ${sp(x.sio_mem)} | 1× | ${sp(x.sio_redis)} |`);
    L.push(`| imb-edge (logged in via the stub bridge) | ${sp(x.edge_mem)} | ${f2(x.edge_mem.median / x.sio_mem.median)}× | ${sp(x.edge_redis)} |`);
    L.push('');
  }
  if (S.wire) {
    const p = S.wire.phone.find((r) => r.ok)?.steps ?? {};
    const xs = S.wire.xmpp.find((r) => r.ok)?.steps ?? {};
    const b = S.wire.bosh.find((r) => !r.error) ?? {};
    // XMPP's cheapest proof that the server has a stanza is XEP-0198: a
    // request and an answer per stanza acked one by one (stream management
    // is not negotiated by the bench clients: the two elements are computed).
    const smR = Buffer.byteLength("<r xmlns='urn:xmpp:sm:3'/>");
    const smA = Buffer.byteLength("<a xmlns='urn:xmpp:sm:3' h='1'/>");
    const xin = xs.msg_in_stanza?.out ?? xs.msg_in?.in;
    L.push('### 4. Bytes on the wire (TCP payload; one run shown, they do not vary)', '');
    L.push('| exchange | phone link (imb-edge) | XMPP c2s (libstrophe ↔ Prosody) | ratio | BOSH (HTTP/1.1, minimal headers) |');
    L.push('|---|---|---|---|---|');
    const r = (a, c) => (a && c ? `${f2(a / c)}×` : '');
    L.push(`| chat message sent (5-byte body) | ${p.out_msg} | ${xs.msg_out?.out} | ${r(p.out_msg, xs.msg_out?.out)} | ${b.message_request ?? 'n/a'} request + ${b.message_response ?? 'n/a'} response |`);
    L.push(`| ack of a sent message (the server has it) | ${p.in_ack} | ${smR} + ${smA} (XEP-0198 \`<r/>\` out, \`<a h/>\` in; computed) | ${r(p.in_ack, smR + smA)} | |`);
    L.push(`| chat message received (the message stanza alone) | ${p.in_msg} | ${xin} | ${r(p.in_msg, xin)} | response to a pending poll + a new ${b.empty_poll_request ?? 'n/a'}-byte poll |`);
    L.push(`| ack of a received message (client → server) | ${p.out_ack} | ${smR} + ${smA} (XEP-0198 \`<r/>\` in, \`<a h/>\` out; computed) | ${r(p.out_ack, smR + smA)} | |`);
    const pt = p.out_msg + p.in_ack + p.in_msg + p.out_ack; const xt = (xs.msg_out?.out ?? NaN) + xin + 2 * (smR + smA);
    L.push(`| **one message, both ends, acks counted** | **${pt}** | **${xt}** | **${r(pt, xt)}** | |`);
    // The phone's receipt frame is not exchanged by the wire run (its peer is
    // not an XMPP client): its size is that of the frame the edge writes for a
    // delivery receipt from the same peer (PROTOCOL.md 10.4), computed.
    const receiptFrame = 4 + Buffer.byteLength(JSON.stringify({ t: 'receipt', seq: 12, from: 'bob@localhost/desktop', id: 'c1', state: 'delivered' }));
    L.push(`| delivery receipt to the sender (phone: the frame as written, computed) | ${receiptFrame} | ${xs.receipt_out?.out} (XEP-0184) | ${r(receiptFrame, xs.receipt_out?.out)} | |`);
    L.push(`| heartbeat request + answer | ${p.out_hb} + ${p.in_hb} | ${xs.ping_iq_roundtrip?.out} + ${xs.ping_iq_roundtrip?.in} (XEP-0199 ping), or 1 byte of whitespace (no answer) | ${r(p.out_hb + p.in_hb, (xs.ping_iq_roundtrip?.out ?? 0) + (xs.ping_iq_roundtrip?.in ?? 0))} | ${b.empty_poll_request ?? 'n/a'} + ${b.empty_poll_response ?? 'n/a'} (empty poll) |`);
    L.push(`| login | ${p.out_login} + ${p.in_welcome} + ${p.in_sync} (login, welcome, sync) | ${xs.login?.out} + ${xs.login?.in} (stream, SCRAM, bind, session) | ${r(p.out_login + p.in_welcome + p.in_sync, (xs.login?.out ?? 0) + (xs.login?.in ?? 0))} | |`);
    const hbHour = 3600 / 30 * (p.out_hb + p.in_hb);
    L.push('', `The XMPP "received" figure is the \`<message/>\` alone, as read from the socket (what else arrived meanwhile, a presence, is left out: ${xs.msg_in?.in ?? 'n/a'} bytes in all).`);
    L.push('', `Idle hour with the default heartbeat (30 s): 120 × ${p.out_hb + p.in_hb} = ${f0(hbHour)} bytes of payload; with TCP/IP headers (52 bytes per segment with timestamps; request, answer, and the phone's ACK) about ${f0(120 * (p.out_hb + p.in_hb + 3 * 52))} bytes.`, '');
  }
  if (S.cost) {
    const C = S.cost;
    const medOf = (list, f) => med(list.map(f).filter(Number.isFinite));
    const paths = [['stub-bridge path (2 edges + Redis + C stub)', C.stub], ['full path (2 edges + Redis + xmppd + Prosody)', C.full]].filter(([, l]) => l?.length);
    L.push(`### 7. Cost per message (counted runs: ${res.config.pairs} pairs × ${res.config.pairsInflight} in flight, ${C.stub?.length ?? 0} run(s) of ${res.config.costSecs} s per path; medians)`, '');
    L.push('| path | msg/s (instrumented: not a throughput figure) | Redis executions/msg (all, scripts' + "'" + ' inner commands included) | script calls/msg | edge allocations/msg (malloc+calloc+realloc) | edge frees/msg | edge syscalls/msg | xmppd allocations/msg | xmppd syscalls/msg |');
    L.push('|---|---|---|---|---|---|---|---|---|');
    for (const [name, l] of paths) {
      L.push(`| ${name} | ${f0(medOf(l, (x) => x.msgs_per_s))} | ${f2(medOf(l, (x) => x.redis_executions_per_msg))} | ${f2(medOf(l, (x) => x.redis_scripts_per_msg))} | ${f1(medOf(l, (x) => x.edge_allocs_per_msg))} | ${f1(medOf(l, (x) => x.edge_malloc_per_msg?.free))} | ${f2(medOf(l, (x) => x.edge_syscalls_per_msg?.total))} | ${l[0].kind === 'full' ? f1(medOf(l, (x) => x.xmppd_allocs_per_msg)) : '—'} | ${l[0].kind === 'full' ? f2(medOf(l, (x) => x.xmppd_syscalls_per_msg?.total)) : '—'} |`);
    }
    const breakdown = (l, key) => {
      const keys = [...new Set(l.flatMap((x) => Object.keys(x[key] ?? {})))];
      return keys.map((k) => [k, medOf(l, (x) => x[key]?.[k] ?? 0)]).filter(([k, v]) => v >= 0.005 && k !== 'total' && k !== 'bytes').sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${f2(v)}`).join(', ');
    };
    L.push('');
    for (const [name, l] of paths) {
      L.push(`- ${name}: Redis commands per message: ${breakdown(l, 'redis_per_msg')}.`);
      L.push(`  Edge system calls per message: ${breakdown(l, 'edge_syscalls_per_msg') || 'n/a'}.`);
      if (l[0].kind === 'full') L.push(`  xmppd (workers) system calls per message: ${breakdown(l, 'xmppd_syscalls_per_msg') || 'n/a'}.`);
    }
    L.push('');
  }
  if (S.capacity) {
    const P = Object.values(S.capacity.plans);
    const mib = (k) => f0(k / 1024);
    L.push('### 6. Capacity of one xmppd instance (plaintext XMPP, two edges, one run)', '');
    L.push(`| | ${P.map((x) => `plan \`${x.name}\``).join(' | ')} |`, `|---|${P.map(() => '---').join('|')}|`);
    const row = (name, f) => L.push(`| ${name} | ${P.map(f).join(' | ')} |`);
    row('workers × max_sessions', (x) => `${x.workers} × ${x.maxSessions}`);
    row('phones tried / sessions held', (x) => `${f0(x.tried)} / **${f0(x.held)}**`);
    row('sessions per worker', (x) => `${f0(x.steps.at(-1).per_worker_min)}–${f0(x.steps.at(-1).per_worker_max)}`);
    row('stopped by', (x) => x.stopped_by);
    row('logins/s while filling: overall (first step → last step)', (x) => `${f0(x.held / x.fill_secs)} (${f0(x.steps[0].logins_per_s)} → ${f0(x.steps.at(-1).logins_per_s)})`);
    row('xmppd B/session (supervisor + workers, RSS delta / sessions)', (x) => f0(x.bytes_per_session.xmppd));
    row('Prosody B/session', (x) => f0(x.bytes_per_session.prosody));
    row('edges B/phone (both edges)', (x) => f0(x.bytes_per_session.edges));
    row('Redis B/phone', (x) => f0(x.bytes_per_session.redis));
    row('cores busy while filling: Prosody / xmppd / whole machine', (x) => `${f2(x.fill_cores.prosody)} / ${f2(x.fill_cores.xmppd)} / ${f2(x.fill_cores.machine)}`);
    row('cores busy idle, all sessions held: xmppd / Prosody / edges / Redis', (x) => `${f2(x.idle_cores.xmppd)} / ${f2(x.idle_cores.prosody)} / ${f2(x.idle_cores.edges)} / ${f2(x.idle_cores.redis)}`);
    row('xmppd idle CPU per 1,000 sessions (cores)', (x) => ((x.idle_cores.xmppd / x.held) * 1000).toFixed(3));
    const w = P.at(-1);
    L.push('', `Filling step by step (plan ${w.name}; fd limits: Prosody ${f0(w.fd_limits.prosody)}, edge ${f0(w.fd_limits.edge)}, worker ${f0(w.fd_limits.worker)}):`, '');
    L.push('| sessions held | logins/s in the step | failed | xmppd RSS MiB | Prosody RSS MiB | Prosody fds | edge fds | busiest worker fds | cores: Prosody | xmppd | edges | Redis | whole machine |');
    L.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const z of w.steps) {
      L.push(`| ${f0(z.held)} | ${f0(z.logins_per_s)} | ${f0(z.failed)} | ${mib(z.rss_kib.xmppd)} | ${mib(z.rss_kib.prosody)} | ${f0(z.fds.prosody)} | ${z.fds.edges.map(f0).join(' + ')} | ${f0(z.fds.worker_max)} | ${f2(z.cores.prosody)} | ${f2(z.cores.xmppd)} | ${f2(z.cores.edges)} | ${f2(z.cores.redis)} | ${f2(z.cores.machine)} |`);
    }
    L.push('');
  }
  if (S.cluster) {
    const x = S.cluster.summary;
    L.push(`### 8. One Redis against a Redis Cluster of 3 masters + 3 replicas (stub-bridge pairs load of bench 3: ${S.cluster.pairs} pairs, ${S.cluster.inflight} in flight each)`, '');
    L.push('| Redis | msg/s | p99 round trip µs | server CPU µs/msg | of which Redis (every node) | Redis commands per message, all nodes |');
    L.push('|---|---|---|---|---|---|');
    L.push(`| one redis-server | ${sp(x.one.msgs_per_s)} | ${sp(x.one.p99_us)} | ${sp(x.one.server_us, f1)} | ${sp(x.one.redis_us, f1)} | ${sp(x.one.commands_per_msg, f2)} |`);
    L.push(`| cluster, 3 masters + 3 replicas | ${sp(x.cluster.msgs_per_s)} | ${sp(x.cluster.p99_us)} | ${sp(x.cluster.server_us, f1)} | ${sp(x.cluster.redis_us, f1)} | ${sp(x.cluster.commands_per_msg, f2)} |`);
    const last = S.cluster.runs.cluster.at(-1);
    L.push('', 'Per node, in the last cluster run (commands a node executed per message delivered, its CPU per message):', '');
    L.push('| node | commands/msg | EVALSHA/msg | PUBLISH/msg | CPU µs/msg |', '|---|---|---|---|---|');
    for (const n of [...last.shards].sort((a, b) => a.role.localeCompare(b.role) || a.port - b.port)) {
      L.push(`| ${n.role} ${n.port} | ${f2(n.commands_per_msg)} | ${f2(n.evalsha_per_msg)} | ${f2(n.publish_per_msg)} | ${f1(n.cpu_us_per_msg)} |`);
    }
    L.push('', 'A replica executes what its master replicates (the writes of the scripts, not their reads); every node also receives each PUBLISH over the cluster bus (not counted as a command).', '');
    L.push(`Pub/sub alone on the same cluster (redis-benchmark, 200-byte messages, pipelined, one subscriber): CPU of all ${S.cluster.pub[0]?.nodes} nodes per message, ` +
      `classic PUBLISH ${sp(x.publish_us, f2)} µs, sharded SPUBLISH ${sp(x.spublish_us, f2)} µs.`, '');
  }
  return L.join('\n');
}

// ------------------------------------------------------------------- main
async function main() {
  for (const b of ['loadgen', 'echoserver', 'xmppclient', 'stubbridge', 'leanrelay', 'malloccount.so']) if (!fs.existsSync(path.join(BBIN, b))) throw new Error(`${BBIN}/${b} missing: run make bench`);
  for (const b of ['imb-edge', 'imb-xmppd']) if (!fs.existsSync(path.join(BIN, b))) throw new Error(`${BIN}/${b} missing: run make`);
  results.machine = machine();
  results.loadavg_start = loadavg();
  results.edge_flags = edgeFlags();
  log(`${QUICK ? 'quick' : 'full'} run, sections ${SECTIONS.join(',')}, ${RUNS} runs each; edge flags ${edgeFlags().join(' ')}`);
  const fns = { idle: sectionIdle, storm: sectionStorm, real: sectionReal, chat: sectionChat, sio: sectionSio, wire: sectionWire, cost: sectionCost, capacity: sectionCapacity, cluster: sectionCluster };
  for (const s of SECTIONS) {
    const t0 = Date.now();
    try { results.sections[s] = await fns[s](); } catch (e) { log(`section ${s} failed: ${e.stack ?? e}`); results.sections[s + '_error'] = String(e.stack ?? e); }
    log(`section ${s}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
  results.finished = new Date().toISOString();
  results.loadavg_end = loadavg();
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

if (argv.includes('--render')) {
  // Re-render the tables of a saved result file (no benchmark runs).
  process.stdout.write(render(JSON.parse(fs.readFileSync(argv[argv.indexOf('--render') + 1], 'utf8'))) + '\n');
  process.exit(0);
}
const guard = setTimeout(() => { log(`overall time limit (${CFG.total + 300} s) reached`); process.exit(3); }, (CFG.total + 300) * 1000);
main().then((code) => { clearTimeout(guard); process.exit(code); }, (e) => { log(e.stack ?? String(e)); process.exit(1); });
