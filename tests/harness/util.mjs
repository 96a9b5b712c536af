// Small helpers shared by the harness: paths, ports, waits, random values.
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';

/** Repository root (tests/harness/../..), derived from this file's URL. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Where the project's binaries are: bin/ (override: IMB_TEST_BIN_DIR). */
export const BIN_DIR = process.env.IMB_TEST_BIN_DIR
  ? path.resolve(process.env.IMB_TEST_BIN_DIR)
  : path.join(REPO_ROOT, 'bin');
export const SCRIPTS_DIR = path.join(REPO_ROOT, 'scripts');

export const HOST = '127.0.0.1';

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Random lowercase hex string of `nchars` characters. */
export function randomHex(nchars) {
  return crypto.randomBytes(Math.ceil(nchars / 2)).toString('hex').slice(0, nchars);
}

/** A random 64-hex-char AES-256 key for --cred-key (shared by one stack). */
export function randomCredKey() {
  return randomHex(64);
}

/** Short unique id usable as a phone msg id ([A-Za-z0-9._:-]). */
let idCounter = 0;
export function uniqueId(prefix = 'c') {
  idCounter += 1;
  return `${prefix}${idCounter}-${randomHex(6)}`;
}

/** Path of a binary in bin/ (does not check it exists). */
export function binPath(name) {
  return path.join(BIN_DIR, name);
}

/** Names (from `names`) of bin/ programs that are missing or not executable. */
export function missingBins(names) {
  return names.filter((n) => {
    try {
      fs.accessSync(binPath(n), fs.constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
}

/**
 * Poll `fn` until it returns a truthy value (returned) or the timeout expires
 * (throws Error(`timeout: ${what}`)).  `fn` may be async; exceptions thrown by
 * it count as "not yet" and the last one is attached to the timeout error.
 */
export async function waitFor(fn, { timeout = 5000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let lastErr;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) {
      const err = new Error(`timeout after ${timeout} ms waiting for ${what}` +
        (lastErr ? ` (last error: ${lastErr.message})` : ''));
      if (lastErr) err.cause = lastErr;
      throw err;
    }
    await sleep(interval);
  }
}

/** Reject with a timeout error if `promise` does not settle within `ms`. */
export function withTimeout(promise, ms, what = 'operation') {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

/** Resolve true if a TCP connection to host:port succeeds within `timeout` ms. */
export function canConnect(port, host = HOST, timeout = 500) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    const done = (ok) => {
      clearTimeout(timer);
      s.removeAllListeners();
      s.on('error', () => {});
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeout);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Resolve true if we can bind host:port right now (and release it). */
export function portIsFree(port, host = HOST) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen({ port, host, exclusive: true }, () => {
      srv.close(() => resolve(true));
    });
  });
}

// Ports handed out by this process: never hand the same one out twice.
const handedOut = new Set();

/**
 * A random free TCP port on 127.0.0.1, chosen below the kernel's ephemeral
 * range (so outgoing connections do not grab it meanwhile), checked by
 * binding it, retried on conflict.  Callers that start a server on it must
 * still be ready for a lost race (retry with another port).
 */
export async function freePort({ min = 20000, max = 32000, tries = 200 } = {}) {
  for (let i = 0; i < tries; i++) {
    const port = min + crypto.randomInt(max - min);
    if (handedOut.has(port)) continue;
    if (await portIsFree(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('freePort: no free port found');
}

/** Shallow "partial match": every key of `pattern` equals (===) the value in `obj`,
 *  or, when the pattern value is a RegExp, matches it; when it is a function, returns truthy. */
export function matches(obj, pattern) {
  if (obj === null || typeof obj !== 'object') return false;
  for (const [k, v] of Object.entries(pattern)) {
    const o = obj[k];
    if (v instanceof RegExp) {
      if (typeof o !== 'string' || !v.test(o)) return false;
    } else if (typeof v === 'function') {
      if (!v(o)) return false;
    } else if (v !== null && typeof v === 'object') {
      if (!matches(o, v)) return false;
    } else if (o !== v) {
      return false;
    }
  }
  return true;
}

/** Turn a predicate-or-pattern argument into a predicate. */
export function toPredicate(p) {
  if (p == null) return () => true;
  if (typeof p === 'function') return p;
  return (x) => matches(x, p);
}

/** Bare JID of a full JID string ('a@b/c' -> 'a@b'). */
export function bareJid(j) {
  const s = String(j ?? '');
  const i = s.indexOf('/');
  return i < 0 ? s : s.slice(0, i);
}

/** GET http://addr/path -> {status, text}. */
export async function httpGet(addr, path) {
  const r = await fetch(`http://${addr}${path}`);
  return { status: r.status, text: await r.text() };
}

/** The address a service started with --http-listen 127.0.0.1:0 serves on. */
export function httpAddr(proc) {
  const m = /http_serving addr=(\S+)/.exec(proc.stderr);
  if (!m) throw new Error(`${proc.name} did not log http_serving`);
  return m[1];
}

/** The value of one sample line of /metrics text, e.g. 'imb_logins_total{result="ok"}'. */
export function metricValue(text, sample) {
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? undefined : Number(line.slice(sample.length + 1));
}

/**
 * A skip reason for the tests that check files and tools (the compose file,
 * the Dockerfile's build, alert rules, the harness itself) and run none of
 * the binaries under test: in the sanitizer run (IMB_TEST_SANITIZED=1, set
 * by `make SANITIZE=1 test`) they would only repeat the plain run.
 */
export const PLAIN_RUN_ONLY = process.env.IMB_TEST_SANITIZED === '1'
  ? 'runs none of the binaries under test: the plain run covers it' : false;

/**
 * A skip reason for the sanitizer run, for a test whose code paths another
 * test runs under the sanitizer too (named in `covered`): it varies a policy
 * or a deployment around paths already exercised, and CI's time goes to the
 * tests that reach new code.
 */
export const plainRunRepeats = (covered) => (process.env.IMB_TEST_SANITIZED === '1'
  ? `its code paths run under the sanitizer in ${covered}` : false);
