// PhoneClient: a TCP client speaking phone protocol v1 (4-byte big-endian
// length + UTF-8 JSON object), written from docs/spec, independent of the C code.
import fs from 'node:fs';
import net from 'node:net';
import { createRequire } from 'node:module';
import { HOST, toPredicate, uniqueId, withTimeout } from './util.mjs';

// ---------------------------------------------------------------------------
// Protocol conformance: every frame a PhoneClient receives is checked against
// docs/protocol.schema.json (#/$defs/server), every frame it sends with
// send() against #/$defs/client. A received frame that fails is a protocol
// violation of the server; a sent one that fails must be refused by the
// server (error bad_frame, unknown_type, bad_version or too_big: tests send
// invalid frames on purpose), else the schema and the server disagree.
// runWithStack (stack.mjs) fails a test that leaves either behind.

export const SCHEMA_FILE = new URL('../../docs/protocol.schema.json', import.meta.url);
let loaded = null; // { schema, fast, full, byType }

// Two ajv instances: one stopping at the first error, compiled per frame
// type on first use (cheap: a test file pays for the types it sees), and
// one collecting every error, for the report of a frame that failed.
function load() {
  if (!loaded) {
    const Ajv2020 = createRequire(import.meta.url)('ajv/dist/2020.js');
    const schema = JSON.parse(fs.readFileSync(SCHEMA_FILE, 'utf8'));
    const fast = new Ajv2020({ strict: true, validateSchema: false }); // (schema.test.mjs validates it)
    fast.addSchema(schema);
    loaded = { schema, fast, full: null, byType: { server: new Map(), client: new Map() } };
  }
  return loaded;
}

function fullAjv() {
  const l = load();
  if (!l.full) {
    const Ajv2020 = createRequire(import.meta.url)('ajv/dist/2020.js');
    l.full = new Ajv2020({ allErrors: true, strict: true, validateSchema: false });
    l.full.addSchema(l.schema);
  }
  return l.full;
}

/** The whole schema, compiled: { ajv, schema, server(frame), client(frame) }
 *  (ajv validators of any frame of each side, dispatching on "t"). */
export function protocolSchema() {
  const { schema } = load();
  const ajv = fullAjv();
  return {
    ajv,
    schema,
    server: ajv.getSchema(`${schema.$id}#/$defs/server`),
    client: ajv.getSchema(`${schema.$id}#/$defs/client`),
  };
}

/** null if frame is a valid frame of side ('server' | 'client'), else the
 *  schema's complaints as one line. */
export function frameProblems(side, frame) {
  const { schema, fast, byType } = load();
  const t = frame?.t;
  if (typeof t !== 'string' || !Object.hasOwn(schema.$defs[side].$defs, t)) {
    return `/t ${JSON.stringify(t)} is no ${side} frame type`;
  }
  const ref = `${schema.$id}#/$defs/${side}/$defs/${t}`;
  let v = byType[side].get(t);
  if (!v) byType[side].set(t, (v = fast.getSchema(ref)));
  if (v(frame)) return null;
  const full = fullAjv().getSchema(ref);
  full(frame);
  return (full.errors ?? v.errors).map((e) => `${e.instancePath || '/'} ${e.message}` +
    `${e.params?.allowedValues ? ` ${JSON.stringify(e.params.allowedValues)}` : ''}` +
    `${e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ''}`)
    .join('; ');
}

// Every frame received that fails the schema, as { phone, frame, problems },
// and every PhoneClient made: read by runWithStack (protocolCheck).
const violations = [];
const phones = [];
// Error codes with which the server refuses a frame it cannot take.
const REFUSALS = new Set(['bad_frame', 'unknown_type', 'bad_version', 'too_big']);
const secret = (k, v) => (k === 'pass' || k === 'token' ? '***' : v);
const cut = (s) => (s.length > 600 ? `${s.slice(0, 600)}... (${s.length} chars)` : s);

/** Where the bookkeeping stands: hand it to protocolCheck. */
export function protocolMark() {
  return { violations: violations.length, phones: phones.length, counts: snapshot() };
}

/** Frames validated so far: received (and by "t"), sent with send(), sent
 *  ones the schema refuses, and of those the ones the server refused. */
export const protocolCounts = { received: 0, sent: 0, sentInvalid: 0, refused: 0, types: {} };
const snapshot = () => ({ ...protocolCounts, types: { ...protocolCounts.types } });

/** One line of figures: the frames validated since mark. */
export function protocolSummary(mark) {
  const a = mark.counts, b = protocolCounts;
  const types = Object.entries(b.types).map(([k, v]) => [k, v - (a.types[k] ?? 0)]).filter(([, v]) => v > 0)
    .sort((x, y) => y[1] - x[1]).map(([k, v]) => `${k}:${v}`).join(' ');
  return `protocol schema: ${b.received - a.received} frames received and checked (${types || 'none'}), ` +
    `${b.sent - a.sent} sent, ${b.sentInvalid - a.sentInvalid} of them invalid on purpose, ` +
    `${b.refused - a.refused} refused by the server`;
}

/**
 * The protocol problems since mark (protocolMark()): frames received that
 * fail the schema, and frames sent that fail it without the server refusing
 * them. A sent frame's refusal may still be on its way: waits up to waitMs
 * for it on a connection still open. Forgets the phones made since mark.
 */
export async function protocolCheck(mark, { waitMs = 1000 } = {}) {
  if (mark.done) return [];
  const mine = phones.slice(mark.phones);
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline && mine.some((p) => p._unrefused.length && !p.isClosed)) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const out = violations.slice(mark.violations)
    .map((v) => `${v.phone} received a frame the schema refuses: ${cut(v.frame)} -- ${v.problems}`);
  for (const p of mine) {
    for (const u of p._unrefused) {
      out.push(`${p.name} sent a frame the schema refuses and the server took it: ` +
        `${cut(JSON.stringify(u.frame, secret))} -- ${u.problems}`);
    }
  }
  phones.length = mark.phones;
  violations.length = mark.violations;
  mark.done = true;
  return out;
}

/** Encode a frame: obj (serialized as JSON) or a string/Buffer payload sent as is. */
export function encodeFrame(payload) {
  const body = Buffer.isBuffer(payload) ? payload
    : Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload), 'utf8');
  const hdr = Buffer.alloc(4);
  hdr.writeUInt32BE(body.length, 0);
  return Buffer.concat([hdr, body]);
}

export class PhoneClient {
  constructor(socket, name = 'phone') {
    this.name = name;
    this.socket = socket;
    this.frames = [];        // every frame received (history, for diagnostics)
    this.sent = [];          // every frame sent (objects or raw descriptions)
    this._queue = [];        // received, not yet consumed by next()
    this._waiters = [];
    this._buf = Buffer.alloc(0);
    this.isClosed = false;
    this.closeInfo = null;   // {hadError, error}
    this.protocolErrors = []; // frames from the server that were not valid JSON objects
    this.jid = null;
    this.welcome = null;
    this._unrefused = [];    // sent frames the schema refuses, not refused by the server yet
    phones.push(this);
    this.closed = new Promise((resolve) => {
      socket.on('close', (hadError) => {
        this.isClosed = true;
        this.closeInfo = { hadError, error: this._sockErr ?? null, at: Date.now() };
        resolve(this.closeInfo);
        // Wake waiters: nothing more will arrive.
        for (const w of this._waiters) w.reject(new Error(`${this.name}: connection closed while waiting for a frame`));
        this._waiters = [];
      });
    });
    socket.on('error', (e) => { this._sockErr = e; });
    socket.on('data', (d) => this._onData(d));
    socket.setNoDelay(true);
  }

  /** Connect to the edge at host:port; localAddress picks the source
   *  address (any of 127.0.0.0/8 works on Linux loopback). */
  static connect(port, { host = HOST, name = 'phone', timeout = 5000, localAddress } = {}) {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host, ...(localAddress ? { localAddress } : {}) });
      const timer = setTimeout(() => { s.destroy(); reject(new Error(`${name}: connect timeout`)); }, timeout);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(new PhoneClient(s, name));
      });
      s.once('error', (e) => { clearTimeout(timer); reject(e); });
    });
  }

  _onData(d) {
    this._buf = Buffer.concat([this._buf, d]);
    while (this._buf.length >= 4) {
      const n = this._buf.readUInt32BE(0);
      if (this._buf.length < 4 + n) break;
      const payload = this._buf.subarray(4, 4 + n).toString('utf8');
      this._buf = this._buf.subarray(4 + n);
      let f;
      try {
        f = JSON.parse(payload);
      } catch {
        f = undefined;
      }
      if (f === null || typeof f !== 'object' || Array.isArray(f) || typeof f.t !== 'string') {
        this.protocolErrors.push(payload);
        violations.push({ phone: this.name, frame: payload, problems: 'not a JSON object with a string "t"' });
        f = { t: '__invalid__', raw: payload };
      } else {
        protocolCounts.received++;
        protocolCounts.types[f.t] = (protocolCounts.types[f.t] ?? 0) + 1;
        const problems = frameProblems('server', f);
        if (problems) violations.push({ phone: this.name, frame: payload, problems });
        if (f.t === 'error' && REFUSALS.has(f.code) && this._unrefused.length) {
          this._unrefused.shift();
          protocolCounts.refused++;
        }
      }
      f.__at = Date.now();
      Object.defineProperty(f, '__at', { enumerable: false });
      this.frames.push(f);
      this._queue.push(f);
    }
    this._pump();
  }

  _pump() {
    for (let wi = 0; wi < this._waiters.length; wi++) {
      const w = this._waiters[wi];
      const i = this._queue.findIndex(w.pred);
      if (i >= 0) {
        const [f] = this._queue.splice(i, 1);
        this._waiters.splice(wi, 1);
        wi -= 1;
        w.resolve(f);
      }
    }
  }

  /** Send an object as one frame. It is checked against the schema: one
   *  that fails must be refused by the server (see protocolCheck). */
  send(obj) {
    this.sent.push(obj);
    protocolCounts.sent++;
    const problems = frameProblems('client', obj);
    if (problems) {
      protocolCounts.sentInvalid++;
      this._unrefused.push({ frame: obj, problems });
    }
    this.socket.write(encodeFrame(obj));
  }

  /** Send a frame whose payload is the given string/Buffer (e.g. invalid JSON). */
  sendFrame(payload) {
    this.sent.push({ __frame: String(payload) });
    this.socket.write(encodeFrame(payload));
  }

  /** Write raw bytes (no framing added). */
  sendRaw(buf) {
    this.sent.push({ __raw: Buffer.from(buf).toString('hex') });
    this.socket.write(buf);
  }

  /**
   * Next received frame (consumed) satisfying `pred` (function or partial
   * pattern such as {t:'ack', id:'c1'}).  Frames that do not match stay queued.
   * Rejects on timeout or if the connection closes first.
   */
  next(pred, timeoutMs = 5000) {
    const p = toPredicate(pred);
    const i = this._queue.findIndex(p);
    if (i >= 0) return Promise.resolve(this._queue.splice(i, 1)[0]);
    if (this.isClosed) {
      return Promise.reject(new Error(`${this.name}: connection closed; no frame matches ${describePred(pred)}; ` +
        `received: ${JSON.stringify(this.frames)}`));
    }
    let w;
    const prom = new Promise((resolve, reject) => { w = { pred: p, resolve, reject }; });
    this._waiters.push(w);
    return withTimeout(prom, timeoutMs, `${this.name}: frame matching ${describePred(pred)}`).catch((e) => {
      this._waiters = this._waiters.filter((x) => x !== w);
      e.message += `; received so far: ${JSON.stringify(this.frames)}`;
      throw e;
    });
  }

  /** Same as next(pattern): wait for a frame matching a partial object. */
  expect(pattern, timeoutMs = 5000) {
    return this.next(pattern, timeoutMs);
  }

  /** The very next unconsumed frame, whatever it is. */
  nextAny(timeoutMs = 5000) {
    return this.next(() => true, timeoutMs);
  }

  /** Resolve true if no frame matching pred arrives within ms (does not consume). */
  async noFrame(pred, ms) {
    const p = toPredicate(pred);
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (this._queue.some(p)) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return !this._queue.some(p);
  }

  /** Frames received but not consumed yet. */
  pending() {
    return [...this._queue];
  }

  /** Wait until the server closes the connection; resolves closeInfo. */
  waitClose(timeoutMs = 5000) {
    return withTimeout(this.closed, timeoutMs, `${this.name}: server close`);
  }

  /**
   * Send login and wait for the answer: resolves the welcome frame, throws an
   * Error (with .frame = the error frame) otherwise.
   */
  async login(jid, pass, { v = 1, dev, epoch, seq, token, timeout = 10000 } = {}) {
    const f = await this.tryLogin(jid, pass, { v, dev, epoch, seq, token, timeout });
    if (f.t !== 'welcome') {
      const e = new Error(`${this.name}: login ${jid} failed: ${JSON.stringify(f)}`);
      e.frame = f;
      throw e;
    }
    // The inbox replay (msg frames, left queued) ends with a sync frame.
    this.sync = await this.next((x) => x.t === 'sync', timeout);
    return f;
  }

  /** Send login; resolve the answer (welcome or error frame). token: the
   *  device token of an earlier welcome. */
  async tryLogin(jid, pass, { v = 1, dev, epoch, seq, token, timeout = 10000 } = {}) {
    const obj = { t: 'login', v, jid, pass };
    if (dev !== undefined) obj.dev = dev;
    if (token !== undefined) obj.token = token;
    if (epoch !== undefined) obj.epoch = epoch;
    if (seq !== undefined || epoch !== undefined) obj.seq = seq ?? 0;
    this.send(obj);
    const f = await this.next((x) => x.t === 'welcome' || x.t === 'error' || x.t === 'bye', timeout);
    if (f.t === 'welcome') {
      this.jid = f.jid;
      this.welcome = f;
    }
    return f;
  }

  /** Send a msg frame; returns its id (does not wait). */
  sendMsg(to, body, id = uniqueId('c')) {
    this.send({ t: 'msg', id, to, body });
    return id;
  }

  /** Send a msg and wait for its ack or error (frame with the same id); resolves that frame. */
  async msg(to, body, { id = uniqueId('c'), timeout = 5000 } = {}) {
    this.sendMsg(to, body, id);
    return this.next((f) => (f.t === 'ack' || f.t === 'error') && f.id === id, timeout);
  }

  /** Next incoming chat message (t:'msg'), optionally matching a pattern. */
  nextMsg(pattern = {}, timeoutMs = 5000) {
    const p = toPredicate(pattern);
    return this.next((f) => f.t === 'msg' && p(f), timeoutMs);
  }

  /** Half-close nicely (FIN) and forget. */
  close() {
    if (!this.isClosed) this.socket.end();
    // Hard-destroy if the server does not close its side soon.
    setTimeout(() => { if (!this.isClosed) this.socket.destroy(); }, 1000).unref();
  }

  destroy() {
    this.socket.destroy();
  }

  describe() {
    const fmt = (x) => JSON.stringify(x, (k, v) => (k === 'pass' || k === 'token' ? '***' : v));
    return `----- ${this.name}${this.jid ? ` (${this.jid})` : ''} ${this.isClosed ? 'closed' : 'open'} -----\n` +
      `sent: ${this.sent.map(fmt).join('\n      ')}\n` +
      `received: ${this.frames.map(fmt).join('\n          ')}`;
  }
}

function describePred(p) {
  if (p == null) return 'anything';
  if (typeof p === 'function') return p.name || 'predicate';
  return JSON.stringify(p, (k, v) => (v instanceof RegExp ? String(v) : v));
}

/**
 * connectPhone(stack, port, name?) -> PhoneClient registered for cleanup and
 * for failure diagnostics.
 */
export async function connectPhone(stack, port, name = 'phone', { localAddress } = {}) {
  const p = await PhoneClient.connect(port, { name, localAddress });
  stack?.onCleanup(name, () => p.destroy(), () => p.describe());
  return p;
}
