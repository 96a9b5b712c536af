// A real redis-server per test: 127.0.0.1, random free port, temp dir, no
// persistence unless asked ({appendonly: true}: AOF, fsync on every write, so
// a restart keeps everything).  Supports stop + start again on the SAME port.
import net from 'node:net';
import path from 'node:path';
import { freePort, HOST, sleep, waitFor } from './util.mjs';

/** Encode a command as a RESP array of bulk strings. */
export function encodeCommand(args) {
  let out = `*${args.length}\r\n`;
  for (const a of args) {
    const s = Buffer.from(String(a));
    out += `$${s.length}\r\n${s.toString()}\r\n`;
  }
  return out;
}

/** Parse one RESP reply from buf at offset; returns [value, nextOffset] or null if incomplete. */
export function parseReply(buf, off = 0) {
  const nl = buf.indexOf('\r\n', off);
  if (nl < 0) return null;
  const type = String.fromCharCode(buf[off]);
  const line = buf.toString('utf8', off + 1, nl);
  const after = nl + 2;
  switch (type) {
    case '+': return [line, after];
    case '-': return [new RedisError(line), after];
    case ':': return [Number(line), after];
    case '$': {
      const n = Number(line);
      if (n < 0) return [null, after];
      if (buf.length < after + n + 2) return null;
      return [buf.toString('utf8', after, after + n), after + n + 2];
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return [null, after];
      const arr = [];
      let o = after;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, o);
        if (!r) return null;
        arr.push(r[0]);
        o = r[1];
      }
      return [arr, o];
    }
    default:
      throw new Error(`bad RESP type byte ${JSON.stringify(type)}`);
  }
}

export class RedisError extends Error {}

/**
 * Send one command to redis at host:port over a fresh connection; resolves the
 * parsed reply (RedisError instances for -ERR replies are returned, not thrown).
 */
export function redisCommand(port, args, { host = HOST, timeout = 2000, auth } = {}) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host });
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`redis ${args[0]}: timeout`)); }, timeout);
    const finish = (err, v) => {
      clearTimeout(timer);
      s.removeAllListeners('data');
      s.on('error', () => {});
      s.destroy();
      if (err) reject(err); else resolve(v);
    };
    // auth: [password] or [user, password], sent first; its reply is skipped.
    s.on('connect', () => s.write((auth ? encodeCommand(['AUTH', ...auth]) : '') + encodeCommand(args)));
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      let r;
      try {
        r = parseReply(buf);
        if (r && auth) r = parseReply(buf, r[1]);
      } catch (e) { finish(e); return; }
      if (r) finish(null, r[0]);
    });
    s.on('error', (e) => finish(e));
    s.on('close', () => finish(new Error('redis connection closed before reply')));
  });
}

/** true if redis answers PING with PONG. */
export async function redisPing(port, host = HOST, auth) {
  try {
    return (await redisCommand(port, ['PING'], { host, timeout: 1000, auth })) === 'PONG';
  } catch {
    return false;
  }
}

export class RedisServer {
  constructor(stack, { port, dir, name = 'redis', extraArgs = [], auth, appendonly = false }) {
    this.stack = stack;
    this.appendonly = appendonly; // AOF + appendfsync always: a restart keeps the data
    this.extraArgs = extraArgs; // e.g. ['--requirepass', 'x'] or ACL '--user' lines
    this.auth = auth;           // what the harness itself AUTHs with, if needed
    this.port = port;
    this.host = HOST;
    this.dir = dir;
    this.name = name;
    this.proc = null;
    this.starts = 0;
  }

  args() {
    return [
      '--bind', HOST, '--port', String(this.port),
      '--save', '',
      ...(this.appendonly ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']),
      '--dir', this.dir,
      '--daemonize', 'no',
      '--protected-mode', 'no',
      '--logfile', '',            // log to stdout (captured)
      '--loglevel', 'notice',
      ...this.extraArgs,
    ];
  }

  /** Start (or start again, on the same port).  Waits for PING. */
  async start({ timeout = 10000 } = {}) {
    if (this.proc && this.proc.running) throw new Error('redis already running');
    this.starts += 1;
    const deadline = Date.now() + timeout;
    // On a restart the old socket may linger briefly: retry the bind a few times.
    for (;;) {
      this.proc = this.stack.spawn(`${this.name}#${this.starts}:${this.port}`, 'redis-server', this.args(), {
        logFile: path.join(this.dir, 'redis.log'),
        late: true,
      });
      const proc = this.proc;
      const ok = await waitFor(async () => {
        if (!proc.running) return 'exited';
        return (await redisPing(this.port, HOST, this.auth)) ? 'up' : false;
      }, { timeout: Math.max(500, deadline - Date.now()), interval: 20, what: `redis PING on ${this.port}` });
      if (ok === 'up') return this;
      await proc.exited;
      const out = proc.stdout + proc.stderr;
      if (/Address already in use|bind/i.test(out) && Date.now() < deadline) {
        await sleep(100);
        continue;
      }
      throw new Error(`redis-server exited on start (port ${this.port}):\n${out}`);
    }
  }

  /** Stop (SIGTERM, wait; SIGKILL after 5 s). The port stays reserved for start(). */
  async stop() {
    if (!this.proc) return;
    await this.proc.stop({ timeout: 5000 });
    // Make sure nothing answers any more.
    await waitFor(async () => !(await redisPing(this.port)), { timeout: 3000, what: 'redis down' });
  }

  async restart({ downMs = 0 } = {}) {
    await this.stop();
    if (downMs) await sleep(downMs);
    await this.start();
  }

  get running() {
    return !!this.proc && this.proc.running;
  }

  /** Run a command on this server (e.g. ['PUBSUB','CHANNELS']). */
  command(...args) {
    return redisCommand(this.port, args.flat());
  }

  ping() {
    return redisPing(this.port, HOST, this.auth);
  }
}

/**
 * startRedis(stack, {port?, appendonly=false}) -> RedisServer (started).
 * Picks a random free port and retries with another if the bind fails on
 * first start.  appendonly: AOF with appendfsync always in the server's temp
 * dir, so stop() + start() keeps the data (keys with a TTL included).
 */
export async function startRedis(stack, { port, extraArgs, auth, appendonly = false } = {}) {
  const dir = stack.tempDir('imb-redis-');
  let lastErr;
  for (let attempt = 0; attempt < 5; attempt++) {
    const p = port ?? await freePort();
    const r = new RedisServer(stack, { port: p, dir, extraArgs, auth, appendonly });
    try {
      await r.start();
      return r;
    } catch (e) {
      lastErr = e;
      if (r.proc) await r.proc.stop({ timeout: 2000 });
      if (port) break;
    }
  }
  throw lastErr;
}

/**
 * redisSubscriber(stack, port, pattern) -> { messages, next(pred, timeout) }
 * A raw RESP connection that PSUBSCRIBEs `pattern` (subscribed when this
 * resolves) and collects every message as [channel, payload] in `messages`.
 * next(pred) resolves the first not yet taken message with pred(channel,
 * payload) true, waiting up to timeout ms. Closed at stack cleanup.
 */
export async function redisSubscriber(stack, port, pattern, { host = HOST } = {}) {
  const s = net.connect({ port, host });
  await new Promise((res, rej) => { s.once('connect', res); s.once('error', rej); });
  const messages = [];
  const taken = new Set();
  let buf = Buffer.alloc(0);
  let subscribed;
  const ready = new Promise((res) => { subscribed = res; });
  s.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      const r = parseReply(buf, 0);
      if (!r) break;
      buf = buf.subarray(r[1]);
      const v = r[0];
      if (Array.isArray(v) && v[0] === 'psubscribe') subscribed();
      if (Array.isArray(v) && v[0] === 'pmessage') messages.push([v[2], v[3]]);
    }
  });
  s.write(encodeCommand(['PSUBSCRIBE', pattern]));
  stack.onCleanup(`redis-subscriber ${pattern}`, () => s.destroy());
  await ready;
  const next = async (pred = () => true, timeout = 5000) => {
    const t0 = Date.now();
    for (;;) {
      const i = messages.findIndex((m, k) => !taken.has(k) && pred(m[0], m[1]));
      if (i >= 0) {
        taken.add(i);
        return messages[i];
      }
      if (Date.now() - t0 > timeout) {
        throw new Error(`no message on ${pattern} within ${timeout} ms; got ${JSON.stringify(messages)}`);
      }
      await sleep(20);
    }
  };
  return { messages, next };
}
