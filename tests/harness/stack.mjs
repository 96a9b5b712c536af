// Process / temp-dir bookkeeping for one test: every child and temp dir a
// test creates goes through a Stack, which kills and removes them at the end
// (t.after), and, as a last resort, when the node process exits.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sleep, withTimeout } from './util.mjs';
import { frameProblems, protocolCheck, protocolMark, protocolSummary } from './phone.mjs';

const MAX_LOG = 4 * 1024 * 1024; // keep at most this many chars of each stream

// ---------------------------------------------------------------------------
// Last-resort cleanup: children still alive when node exits get SIGKILL.
const liveChildren = new Set(); // of ChildProcess
let hooksInstalled = false;
function installExitHooks() {
  if (hooksInstalled) return;
  hooksInstalled = true;
  const killAll = () => {
    for (const c of liveChildren) {
      try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
    }
    liveChildren.clear();
  };
  process.on('exit', killAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, () => {
      killAll();
      process.exit(128 + (os.constants.signals[sig] ?? 0));
    });
  }
}

/** A child process with captured output. */
export class Proc {
  constructor(name, cmd, args, { cwd, env, logFile, stdin = 'ignore' } = {}) {
    installExitHooks();
    this.name = name;
    this.cmd = cmd;
    this.args = args;
    this.stdout = '';
    this.stderr = '';
    this.exitCode = undefined;   // number, or null when killed by a signal
    this.signal = undefined;
    this.spawnError = null;
    this._lineWaiters = [];      // {stream, re, resolve, reject, count}
    this._stdoutLines = [];      // complete stdout lines not yet consumed by nextStdoutLine
    this._lines = { stdout: { lines: [], partial: '' }, stderr: { lines: [], partial: '' } };
    this._stdoutWaiters = [];
    this._logStream = logFile ? fs.createWriteStream(logFile, { flags: 'a' }) : null;
    this.child = spawn(cmd, args, {
      cwd,
      env,
      stdio: [stdin, 'pipe', 'pipe'],
    });
    this.pid = this.child.pid;
    liveChildren.add(this.child);
    this.exited = new Promise((resolve) => {
      this.child.once('error', (e) => {
        this.spawnError = e;
        this.stderr += `[spawn error] ${e.message}\n`;
        liveChildren.delete(this.child);
        if (this.exitCode === undefined) { this.exitCode = null; }
        this._failWaiters(new Error(`${name}: spawn failed: ${e.message}`));
        resolve({ code: null, signal: null, error: e });
      });
      this.child.once('exit', (code, signal) => {
        this.exitCode = code;
        this.signal = signal;
        liveChildren.delete(this.child);
      });
      this.child.once('close', (code, signal) => {
        this._logStream?.end();
        for (const stream of ['stdout', 'stderr']) {   // an unterminated last line counts too
          const st = this._lines[stream];
          if (st.partial) {
            st.lines.push(st.partial);
            if (stream === 'stdout') this._stdoutLines.push(st.partial);
            st.partial = '';
          }
        }
        this._pumpStdout();
        this._checkWaiters();
        this._failWaiters(new Error(`${name} exited (code=${code} signal=${signal}) while waiting`));
        resolve({ code, signal });
      });
    });
    this.child.stdout.setEncoding('utf8');
    this.child.stderr.setEncoding('utf8');
    this.child.stdout.on('data', (d) => this._onData('stdout', d));
    this.child.stderr.on('data', (d) => this._onData('stderr', d));
    if (this.child.stdin) this.child.stdin.on('error', () => {});
  }

  get running() {
    return this.exitCode === undefined && !this.spawnError;
  }

  _onData(stream, d) {
    if (this[stream].length < MAX_LOG) this[stream] += d;
    this._logStream?.write(d);
    const st = this._lines[stream];
    const parts = (st.partial + d).split('\n');
    st.partial = parts.pop();
    for (const l of parts) {
      if (st.lines.length < 200000) st.lines.push(l);
      if (stream === 'stdout') this._stdoutLines.push(l);
    }
    if (stream === 'stdout') this._pumpStdout();
    this._checkWaiters();
  }

  /** Complete lines of `stream` so far (plus the unterminated tail). */
  lines(stream = 'stderr') {
    const st = this._lines[stream];
    return st.partial ? [...st.lines, st.partial] : [...st.lines];
  }

  _checkWaiters() {
    this._lineWaiters = this._lineWaiters.filter((w) => {
      const { lines } = this._lines[w.stream];
      for (; w.scanned < lines.length; w.scanned++) {
        if (w.re.test(lines[w.scanned])) w.hits.push(lines[w.scanned]);
      }
      if (w.hits.length >= w.count) {
        w.resolve(w.hits.slice(0, w.count));
        return false;
      }
      return true;
    });
  }

  _failWaiters(err) {
    for (const w of this._lineWaiters) w.reject(err);
    this._lineWaiters = [];
    for (const w of this._stdoutWaiters) w.reject(err);
    this._stdoutWaiters = [];
  }

  /**
   * Wait until `count` lines of `stream` (default stderr, whole history)
   * match `re`; resolves with the matching lines.  Rejects on timeout or if
   * the process exits first.
   */
  waitForLines(re, { count = 1, stream = 'stderr', timeout = 10000 } = {}) {
    if (re.global || re.sticky) re = new RegExp(re.source, re.flags.replace(/[gy]/g, ''));
    let w;
    const p = new Promise((resolve, reject) => {
      w = { stream, re, count, resolve, reject, scanned: 0, hits: [] };
    });
    if (!this.running) {
      const hits = this.lines(stream).filter((l) => re.test(l));
      if (hits.length >= count) return Promise.resolve(hits.slice(0, count));
      return Promise.reject(new Error(`${this.name} is not running (code=${this.exitCode} signal=${this.signal}); ` +
        `wanted ${count} line(s) matching ${re}`));
    }
    this._lineWaiters.push(w);
    this._checkWaiters();
    return withTimeout(p, timeout, `${this.name}: ${count} stderr line(s) matching ${re}`).catch((e) => {
      this._lineWaiters = this._lineWaiters.filter((x) => x !== w);
      throw e;
    });
  }

  /** First stderr line matching `re` (see waitForLines). */
  async waitForLine(re, opts = {}) {
    const [line] = await this.waitForLines(re, { ...opts, count: 1 });
    return line;
  }

  _pumpStdout() {
    while (this._stdoutWaiters.length) {
      let done = false;
      for (let i = 0; i < this._stdoutLines.length; i++) {
        const w = this._stdoutWaiters[0];
        if (w.pred(this._stdoutLines[i])) {
          const [line] = this._stdoutLines.splice(i, 1);
          this._stdoutWaiters.shift();
          w.resolve(line);
          done = true;
          break;
        }
      }
      if (!done) break;
    }
  }

  /** Next stdout line (consumed) satisfying pred(line); lines that do not match stay queued. */
  nextStdoutLine(pred = () => true, timeout = 5000) {
    for (let i = 0; i < this._stdoutLines.length; i++) {
      if (pred(this._stdoutLines[i])) return Promise.resolve(this._stdoutLines.splice(i, 1)[0]);
    }
    if (!this.running) {
      return Promise.reject(new Error(`${this.name} exited; no stdout line matched`));
    }
    let w;
    const p = new Promise((resolve, reject) => { w = { pred, resolve, reject }; });
    this._stdoutWaiters.push(w);
    return withTimeout(p, timeout, `${this.name}: stdout line`).catch((e) => {
      this._stdoutWaiters = this._stdoutWaiters.filter((x) => x !== w);
      throw e;
    });
  }

  /** Write to the child's stdin (spawned with stdin: 'pipe'). */
  write(text) {
    this.child.stdin.write(text);
  }

  endStdin() {
    this.child.stdin?.end();
  }

  kill(signal = 'SIGTERM') {
    if (!this.running) return false;
    try { return this.child.kill(signal); } catch { return false; }
  }

  /** Wait (without signalling) up to `timeout` ms for the exit; resolves {code, signal}. */
  waitExit(timeout = 5000) {
    return withTimeout(this.exited, timeout, `${this.name} exit`);
  }

  /**
   * Send `signal`, wait up to `timeout` ms for the exit, then SIGKILL.
   * Resolves {code, signal, killed} (killed: true if SIGKILL was needed).
   */
  async stop({ signal = 'SIGTERM', timeout = 5000 } = {}) {
    if (this.spawnError) return { code: null, signal: null, killed: false };
    if (!this.running) {
      const r = await this.exited;
      return { ...r, killed: false };
    }
    this.kill(signal);
    let killed = false;
    try {
      const r = await withTimeout(this.exited, timeout, `${this.name} exit after ${signal}`);
      return { ...r, killed };
    } catch {
      killed = true;
      this.kill('SIGKILL');
      const r = await withTimeout(this.exited, 5000, `${this.name} exit after SIGKILL`).catch(() => ({}));
      return { ...r, killed };
    }
  }

  /** Last `max` chars of stderr (and stdout if any), for failure reports. */
  tail(max = 8000) {
    const cut = (s) => (s.length > max ? `...[${s.length - max} chars cut]...\n` + s.slice(-max) : s);
    let out = `----- ${this.name} (pid ${this.pid}, ${this.running ? 'running' : `exit code=${this.exitCode} signal=${this.signal}`}) -----\n`;
    out += `$ ${this.cmd} ${this.args.join(' ')}\n`;
    if (this.stderr) out += `[stderr]\n${cut(this.stderr)}\n`;
    if (this.stdout) out += `[stdout]\n${cut(this.stdout)}\n`;
    return out;
  }
}

/** Environment for children: ours minus any IMB_* settings (flags are explicit). */
export function childEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('IMB_')) env[k] = v;
  }
  return { ...env, ...extra };
}

/**
 * One test's resources.  stack.spawn(...) / stack.tempDir(...) register
 * things; stack.cleanup() (idempotent) closes clients, stops processes
 * (SIGTERM, then SIGKILL after 3 s; the project's services in parallel first,
 * then the servers spawned with {late: true}) and removes temp dirs.
 * Set IMB_TEST_KEEP=1 to keep temp dirs (their paths are reported).
 */
export class Stack {
  constructor(name = 'stack') {
    this.name = name;
    this.procs = [];
    this.dirs = [];
    this.closers = [];   // {name, close: async fn, describe?: fn}
    this.cleaned = false;
    this.notes = [];
  }

  /** Make a temp dir (removed at cleanup). */
  tempDir(prefix = 'imb-') {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    this.dirs.push(d);
    return d;
  }

  /** Spawn and track a child (see Proc).  Its output is also appended to
   *  `logFile` when given. */
  spawn(name, cmd, args, opts = {}) {
    // IMB_TEST_WRAPPER (e.g. "valgrind -q --error-exitcode=99") runs the
    // project's services under a tool; the clean-exit check then covers it.
    const wrapper = process.env.IMB_TEST_WRAPPER;
    if (wrapper && /^imb-/.test(name)) {
      const w = wrapper.split(/\s+/).filter(Boolean);
      args = [...w.slice(1), cmd, ...args];
      cmd = w[0];
    }
    // opts.wrap (e.g. ['prlimit', '--nofile=300:300']): a command that execs
    // the rest, outermost (the pid stays the service's).
    if (opts.wrap?.length) {
      args = [...opts.wrap.slice(1), cmd, ...args];
      cmd = opts.wrap[0];
    }
    const p = new Proc(name, cmd, args, { env: childEnv(opts.envExtra), ...opts });
    p.late = !!opts.late;
    this.procs.push(p);
    return p;
  }

  /** Register something to close at cleanup (clients): before processes stop. */
  onCleanup(name, close, describe) {
    this.closers.push({ name, close, describe });
  }

  note(text) {
    this.notes.push(text);
  }

  /** Text describing every process (stderr tails) and client, for a failed test. */
  report(maxPerProc = 8000) {
    let out = `===== ${this.name}: diagnostics =====\n`;
    for (const n of this.notes) out += `note: ${n}\n`;
    for (const c of this.closers) {
      if (c.describe) {
        try { out += c.describe() + '\n'; } catch { /* ignore */ }
      }
    }
    for (const p of this.procs) out += p.tail(maxPerProc);
    if (this.dirs.length) out += `temp dirs: ${this.dirs.join(' ')}\n`;
    return out;
  }

  async cleanup() {
    if (this.cleaned) return;
    this.cleaned = true;
    for (const c of this.closers.reverse()) {
      try { await withTimeout(Promise.resolve().then(() => c.close()), 3000, `close ${c.name}`); } catch { /* ignore */ }
    }
    // Services (and anything else) first, all at once; then the servers
    // they use (spawned with {late: true}: redis, prosody).
    const stopAll = (ps) => Promise.all(ps.map((p) => p.stop({ timeout: 3000 })
      .then((r) => { p.stopResult = r; }).catch(() => {})));
    await stopAll(this.procs.filter((p) => !p.late));
    await stopAll(this.procs.filter((p) => p.late));
    if (process.env.IMB_TEST_KEEP === '1') {
      if (this.dirs.length) process.stderr.write(`[${this.name}] kept temp dirs: ${this.dirs.join(' ')}\n`);
    } else {
      for (const d of this.dirs) {
        try { fs.rmSync(d, { recursive: true, force: true }); } catch { /* ignore */ }
      }
    }
  }
}

/** Marks of a sanitizer report in a process's output. */
const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer/;

/**
 * After cleanup: every project process (imb-*, imcat) must have left no
 * sanitizer report, and each service (imb-*) the cleanup stopped must have
 * exited by itself with status 0 (a graceful shutdown). A test that kills a process on
 * purpose sets proc.unclean = true. Returns a list of problems.
 */
export function uncleanExits(stack) {
  const problems = [];
  for (const p of stack.procs) {
    if (!/^(imb-|imcat)/.test(p.name)) continue;
    const out = `${p.stderr ?? ''}${p.stdout ?? ''}`;
    if (SANITIZER_RE.test(out)) problems.push(`${p.name}: sanitizer report in its output`);
    if (p.unclean || !p.stopResult || !p.name.startsWith('imb-')) continue;
    const r = p.stopResult;
    if (r.killed) problems.push(`${p.name}: did not exit within 3 s of SIGTERM`);
    else if (r.code !== 0 && r.code !== undefined && r.code !== null) problems.push(`${p.name}: exit status ${r.code}`);
  }
  return problems;
}

/**
 * Create a Stack bound to a node:test context: cleanup runs in t.after.
 * Use runWithStack() to also get diagnostics printed on failure.
 */
export function stackFor(t, name = t?.name ?? 'stack') {
  const s = new Stack(name);
  if (t && typeof t.after === 'function') t.after(() => s.cleanup());
  return s;
}

/** The frames an `imcat --json` printed (one received frame per stdout
 *  line) that fail the protocol schema (docs/protocol.schema.json). */
function imcatProblems(stack) {
  const out = [];
  for (const p of stack.procs) {
    if (!/^imcat/.test(p.name) || !p.args?.includes('--json')) continue;
    for (const line of (p.stdout ?? '').split('\n')) {
      let f;
      try { f = JSON.parse(line); } catch { continue; }
      if (f === null || typeof f !== 'object' || Array.isArray(f)) continue;
      const problems = frameProblems('server', f);
      if (problems) out.push(`${p.name} printed a frame the schema refuses: ${line} -- ${problems}`);
    }
  }
  return out;
}

/**
 * Run `fn(stack)`; if it throws, attach the stack's diagnostics (process
 * stderr tails, client frame logs) to the test output (t.diagnostic and
 * stderr) and rethrow.  Always cleans up.  Unless opts.protocol is false
 * (a test that talks to fakes, not to the project's servers), the test also
 * fails when a phone received, or sent without the server refusing it, a
 * frame that docs/protocol.schema.json refuses (phone.mjs: protocolCheck),
 * or an imcat --json printed one.
 */
export async function runWithStack(t, fn, name = t?.name ?? 'stack', { protocol = true } = {}) {
  const s = stackFor(t, name);
  const mark = protocolMark();
  try {
    const result = await fn(s);
    const late = protocol ? await protocolCheck(mark) : [];
    if (protocol && typeof t?.diagnostic === 'function') t.diagnostic(protocolSummary(mark));
    await s.cleanup();
    const problems = uncleanExits(s);
    if (problems.length) throw new Error(`unclean exit: ${problems.join('; ')}`);
    const violations = protocol ? [...late, ...imcatProblems(s)] : [];
    if (violations.length) {
      throw new Error(`protocol violations (docs/protocol.schema.json), ${violations.length}:\n  ${violations.join('\n  ')}`);
    }
    return result;
  } catch (e) {
    // A test that failed otherwise still shows its protocol violations.
    const late = protocol ? await protocolCheck(mark, { waitMs: 0 }) : [];
    const rep = (late.length ? `protocol violations (docs/protocol.schema.json):\n  ${late.join('\n  ')}\n` : '') +
      s.report().replace(/\t/g, '  ');
    if (t && typeof t.diagnostic === 'function') {
      for (const line of rep.split('\n')) t.diagnostic(line);
    } else {
      process.stderr.write(rep + '\n');
    }
    throw e;
  } finally {
    await s.cleanup();
    await protocolCheck(mark, { waitMs: 0 }); // forget this test's phones
  }
}

export { sleep };
