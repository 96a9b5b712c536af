// Failure injection and "well-behaved client" models, for tests that break
// things while traffic flows (tests/integration/chaos.test.mjs):
//   killHard(proc)          kill -9 a process and all its descendants, with no
//                           chance of a graceful shutdown
//   ReliablePhone           a phone app that follows docs/PROTOCOL.md section 8
//                           (outbox resent with the same ids, seq/ack/resume)
//   ReliableDesktop         an XMPP desktop user (xmpp.js) that resends until a
//                           ping after the message is answered
// The models never throw: whatever breaks a rule of the protocol or a
// delivery guarantee is recorded in .violations (with a timestamp) for the
// test to fail on, and the model recovers like a real client would.
import fs from 'node:fs';
import net from 'node:net';
import { xml } from '@xmpp/client';
import { PhoneClient } from './phone.mjs';
import { DesktopPeer } from './desktop.mjs';
import { encodeCommand, parseReply } from './redis.mjs';
import { bareJid, HOST, sleep, waitFor, withTimeout } from './util.mjs';

const rand = ([lo, hi]) => lo + Math.random() * (hi - lo);

// ---------------------------------------------------------------------------
// Processes

/** State letter of a process from /proc ('R', 'S', 'Z', ...), or null if gone. */
function procState(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return null;
  }
}

/** Pids of the live (non-zombie) descendants of pid, parents before children. */
export function descendantPids(pid) {
  const children = new Map(); // ppid -> [pid]
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let stat;
    try { stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8'); } catch { continue; }
    // "pid (comm) state ppid ...": comm may hold spaces and parens.
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (state === 'Z') continue;
    const p = Number(ppid);
    if (!children.has(p)) children.set(p, []);
    children.get(p).push(Number(d));
  }
  const out = [];
  const todo = [pid];
  while (todo.length) {
    for (const c of children.get(todo.shift()) ?? []) {
      out.push(c);
      todo.push(c);
    }
  }
  return out;
}

/**
 * kill -9 a tracked Proc and every process below it (an imb-xmppd
 * supervisor and its workers) so that none shuts down gracefully: the Proc
 * is stopped first (SIGSTOP: it cannot restart its children or pass on a
 * signal), then each descendant gets SIGKILL, then the Proc.  (Killing the
 * supervisor first would not do: its workers get SIGTERM through
 * PR_SET_PDEATHSIG and close their sessions cleanly.)  Marks proc.unclean
 * so the harness does not expect a clean exit; waits until all are gone.
 * Resolves the killed pids, the Proc's first.
 */
export async function killHard(proc, { timeout = 5000 } = {}) {
  proc.unclean = true;
  if (!proc.running) return [];
  try { process.kill(proc.pid, 'SIGSTOP'); } catch { /* gone */ }
  const kids = descendantPids(proc.pid);
  for (const k of kids) {
    try { process.kill(k, 'SIGKILL'); } catch { /* gone */ }
  }
  try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ }
  await proc.waitExit(timeout);
  // Orphans are reaped by init (or stay zombies, which are dead all the same).
  await waitFor(() => kids.every((k) => { const s = procState(k); return s === null || s === 'Z'; }),
    { timeout, interval: 20, what: `descendants of ${proc.name} gone` });
  return [proc.pid, ...kids];
}

// ---------------------------------------------------------------------------
// Watching the bus

/** A MONITOR tap on the Redis at port: [{client, args}] of every command
 *  from now on ('lua' as client for what a script ran), closed with the
 *  stack. */
export function redisMonitor(stack, port) {
  const seen = [];
  const s = net.connect({ port, host: HOST });
  let buf = Buffer.alloc(0);
  s.on('connect', () => s.write(encodeCommand(['MONITOR'])));
  s.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      const r = parseReply(buf);
      if (!r) break;
      buf = buf.subarray(r[1]);
      const m = typeof r[0] === 'string' && /^\d+\.\d+ \[\d+ ([^\]]*)\] (.*)$/.exec(r[0]);
      if (m) seen.push({ client: m[1], args: monitorArgs(m[2]) });
    }
  });
  s.on('error', () => {});
  stack.onCleanup('monitor', () => s.destroy());
  return seen;
}

/** Arguments of a MONITOR line's command part: "a" "b\\x01\\"c" -> ['a', 'b\x01"c']. */
export function monitorArgs(s) {
  const args = [];
  const esc = { n: 10, r: 13, t: 9, a: 7, b: 8 };
  let i = 0;
  while (i < s.length) {
    if (s[i] === ' ') { i++; continue; }
    if (s[i] !== '"') break;
    i++;
    const bytes = [];
    while (i < s.length && s[i] !== '"') {
      if (s[i] === '\\') {
        const c = s[i + 1];
        if (c === 'x') {
          bytes.push(parseInt(s.slice(i + 2, i + 4), 16));
          i += 4;
        } else {
          bytes.push(esc[c] ?? c.charCodeAt(0));
          i += 2;
        }
      } else {
        bytes.push(s.charCodeAt(i));
        i++;
      }
    }
    i++;
    args.push(Buffer.from(bytes).toString('utf8'));
  }
  return args;
}

/**
 * A MONITOR tap on Redis that records the bus traffic for failure reports
 * (MONITOR, unlike a PSUBSCRIBE, is not counted among a PUBLISH's
 * receivers, so it changes nothing the services see): .records =
 * [{at (ms), client ('127.0.0.1:port' of the connection that sent it), cmd
 * ('PUBLISH', ...), args, channel (PUBLISH, SUBSCRIBE, UNSUBSCRIBE), env
 * (a PUBLISHed envelope, parsed), text (the command line)}].  Kept:
 * PUBLISH (but the bus heartbeats), SUBSCRIBE, UNSUBSCRIBE, EVAL/EVALSHA.
 * It reconnects every 50 ms while Redis is away; what happens meanwhile is
 * not seen.  start() / stop().
 */
export class BusTap {
  constructor(port, { host = HOST, max = 300000 } = {}) {
    this.port = port;
    this.host = host;
    this.max = max;
    this.records = [];
    this.connects = 0;
    this.stopped = false;
    this.sock = null;
  }

  start() {
    this._connect();
    return this;
  }

  _connect() {
    if (this.stopped) return;
    const s = net.connect({ port: this.port, host: this.host });
    let buf = Buffer.alloc(0);
    s.on('connect', () => {
      this.connects++;
      s.write(encodeCommand(['MONITOR']));
    });
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        let r;
        try { r = parseReply(buf); } catch { s.destroy(); return; }
        if (!r) break;
        buf = buf.subarray(r[1]);
        if (typeof r[0] === 'string') this._onLine(r[0]);
      }
    });
    s.on('error', () => {});
    s.on('close', () => {
      if (this.sock === s) this.sock = null;
      if (!this.stopped) setTimeout(() => this._connect(), 50).unref();
    });
    this.sock = s;
  }

  _onLine(line) {
    // 1700000000.123456 [0 127.0.0.1:40000] "PUBLISH" "imb:x:a@b" "{...}"
    const m = /^(\d+\.\d+) \[\d+ ([^\]]*)\] (.*)$/.exec(line);
    if (!m || this.records.length >= this.max) return;
    const args = monitorArgs(m[3]);
    const cmd = (args[0] ?? '').toUpperCase();
    if (!['PUBLISH', 'SUBSCRIBE', 'UNSUBSCRIBE', 'EVAL', 'EVALSHA'].includes(cmd)) return;
    if (cmd === 'PUBLISH' && /:bus:/.test(args[1])) return;
    let env = null;
    if (cmd === 'PUBLISH') {
      try { env = JSON.parse(args[2]); } catch { /* not JSON */ }
    }
    const text = cmd.startsWith('EVAL') ? `${cmd} <script> ${args.slice(2).join(' ')}` : args.join(' ');
    this.records.push({
      at: Math.round(Number(m[1]) * 1000), client: m[2], cmd, args,
      channel: ['PUBLISH', 'SUBSCRIBE', 'UNSUBSCRIBE'].includes(cmd) ? args[1] : undefined, env, text,
    });
  }

  /** Records whose command line contains `text`, optionally within [from, to] (ms). */
  find(text, { from = -Infinity, to = Infinity } = {}) {
    return this.records.filter((r) => r.at >= from && r.at <= to && r.text.includes(text));
  }

  stop() {
    this.stopped = true;
    this.sock?.destroy();
  }
}

// ---------------------------------------------------------------------------
// Shared bits of the two client models

class Model {
  constructor(name, { t0 = Date.now(), events = 600 } = {}) {
    this.name = name;
    this.t0 = t0;
    this.maxEvents = events;
    this.events = [];       // last `events` things that happened, for diagnostics
    this.violations = [];   // broken guarantees / protocol rules: the test fails on these
    this.stopped = false;
    this.progressAt = [];   // when each of its messages was acked/confirmed (ms)
  }

  /** The longest time (ms) its outbox went without progress while it had
   * something to send, from the traffic start (t0) to its last message. */
  worstStall() {
    let worst = 0;
    let prev = this.t0;
    for (const at of this.progressAt) {
      worst = Math.max(worst, at - prev);
      prev = at;
    }
    return worst;
  }

  _ev(text) {
    this.events.push(`+${Date.now() - this.t0}ms ${text}`);
    if (this.events.length > this.maxEvents) this.events.shift();
  }

  /** The last n events, one per line. */
  recentEvents(n = 150) {
    const ev = this.events.slice(-n);
    return `events (last ${ev.length} of ${this.events.length} kept):\n  ${ev.join('\n  ')}`;
  }

  _violation(text) {
    const v = `+${Date.now() - this.t0}ms ${this.name}: ${text}`;
    this.violations.push(v);
    this._ev(`VIOLATION ${text}`);
  }
}

/** k of an id "<prefix>-<k>", or NaN. */
function kOf(id, prefix) {
  const m = typeof id === 'string' && id.startsWith(`${prefix}-`) ? /^\d+$/.exec(id.slice(prefix.length + 1)) : null;
  return m ? Number(m[0]) : NaN;
}

// ---------------------------------------------------------------------------
// The phone app

/**
 * A phone app for user `jid` that sends `count` numbered messages to `peer`
 * (body "<user>-><peerUser> #k", id "<user>-k") one at a time, each after the
 * previous one's ack and a random pause in `pace` ms, through a random edge
 * from edges() (a load balancer).  It follows docs/PROTOCOL.md section 8:
 *   - on an error frame for its message, or any close: reconnect after a
 *     random `backoff` ms (to a random live edge), log in with the last epoch
 *     and the highest stored seq, resend the unacked message with its id;
 *   - login answered `unavailable`: retry after `backoff` (same socket while
 *     it stays open);
 *   - incoming msg: stored by seq (a seq already stored is dropped), shown
 *     to the app deduplicated by XMPP id, acked ({t:'ack', seq});
 *   - sends hb when it sent nothing for hb/2 s.
 * Watchdogs (each recorded as a violation, then recovered from by
 * reconnecting): no ack or error for the message within ackStallMs on an
 * open socket (PROTOCOL.md promises one or the other; with
 * stallIsViolation=false only counted and listed in .stalls); no answer to
 * login within loginTimeoutMs; no sync after welcome within loginTimeoutMs.
 * start() starts it; stop() closes everything.  See .stats, .visible,
 * .violations; outboxDone / complete(peerPrefix, n) for progress.
 */
export class ReliablePhone extends Model {
  constructor({
    name, jid, pass, peer, count, edges, pace = [150, 300], backoff = [100, 500],
    ackStallMs = 10000, stallIsViolation = true, loginTimeoutMs = 20000, label = 'app', t0,
    allowReset = false,
  }) {
    super(name ?? jid.split('@')[0], { t0 });
    this.jid = jid;
    this.user = jid.split('@')[0];
    this.pass = pass;
    this.peer = peer;
    this.count = count;
    this.edges = edges;
    this.pace = pace;
    this.backoff = backoff;
    this.ackStallMs = ackStallMs;
    this.stallIsViolation = stallIsViolation;
    this.allowReset = allowReset; // a sync with reset is expected (Redis without persistence)
    this.stalls = [];          // {id, sentAt, ms, port}: messages that got no answer
    this.loginTimeoutMs = loginTimeoutMs;
    this.label = label;
    // outbox
    this.nextK = 1;
    this.nextSendAt = 0;
    this.outstanding = null;   // {k, id, body, conn, sentAt, tries, firstSentAt}
    this.acked = new Set();
    // incoming
    this.epoch = null;
    this.maxSeq = 0;
    this.stored = new Map();   // seq -> {id, from, body}
    this.visible = [];         // app-visible messages: {id, seq, body, from}
    this.visibleIds = new Set();
    this.sess = null;          // the current connection's state
    this.stats = {
      connects: 0, connectFailures: 0, logins: 0, loginUnavailable: 0, loginErrors: {},
      msgFrames: 0, resends: 0, acked: 0, errorsById: {}, staleAnswers: 0, otherErrors: {},
      closes: 0, drops: 0, byes: {}, received: 0, replayed: 0, replayLogins: 0,
      dupSeqDropped: 0, dupIdDropped: 0, syncs: 0, syncLoss: [], resets: 0, stalls: 0, hbs: 0,
      ackLatencyMax: 0,
    };
  }

  get outboxDone() {
    return this.nextK > this.count && !this.outstanding;
  }

  /** Every k in 1..n from peer `prefix` is app-visible. */
  complete(prefix, n) {
    const ks = new Set(this.visible.map((m) => kOf(m.id, prefix)));
    for (let k = 1; k <= n; k++) if (!ks.has(k)) return false;
    return true;
  }

  start() {
    this.tick = setInterval(() => this._tick(), 250);
    this.done = this._run().catch((e) => this._violation(`model crashed: ${e.stack}`));
    return this;
  }

  async stop() {
    this.stopped = true;
    clearInterval(this.tick);
    clearTimeout(this.sendTimer);
    this.sess?.conn.destroy();
    await withTimeout(this.done ?? Promise.resolve(), 3000, `${this.name} stop`).catch(() => {});
  }

  /** Cut the socket abruptly (as a network loss would): rst=true sends a TCP RST. */
  drop({ rst = false } = {}) {
    const s = this.sess;
    if (!s || s.conn.isClosed) return false;
    this.stats.drops++;
    this._ev(`drop socket (${rst ? 'RST' : 'destroy'}) edge=${s.port}`);
    if (rst && typeof s.conn.socket.resetAndDestroy === 'function') s.conn.socket.resetAndDestroy();
    else s.conn.destroy();
    return true;
  }

  async _run() {
    while (!this.stopped) {
      const ports = this.edges();
      const port = ports.length ? ports[Math.floor(Math.random() * ports.length)] : null;
      let conn = null;
      if (port) {
        try {
          conn = await PhoneClient.connect(port, { name: `${this.name}#${this.stats.connects + 1}`, timeout: 3000 });
        } catch (e) {
          this.stats.connectFailures++;
          this._ev(`connect to ${port} failed: ${e.code ?? e.message}`);
        }
      }
      if (conn && !this.stopped) {
        this.stats.connects++;
        await this._session(conn, port);
        this.stats.closes++;
      }
      conn?.destroy();
      if (!this.stopped) await sleep(rand(this.backoff));
    }
  }

  async _session(conn, port) {
    const sess = {
      conn, port, state: 'login', replayed: 0, loginAt: 0, welcomeAt: 0, lastSent: Date.now(), hb: 30, loginTimer: null,
    };
    this.sess = sess;
    this._ev(`connected to edge ${port}`);
    this._sendLogin(sess);
    for (;;) {
      let f;
      try {
        f = await conn.nextAny(24 * 3600 * 1000);
      } catch {
        break; // closed, nothing left
      }
      try {
        this._onFrame(sess, f);
      } catch (e) {
        this._violation(`frame handler failed on ${JSON.stringify(f)}: ${e.stack}`);
      }
    }
    clearTimeout(sess.loginTimer);
    this._ev(`closed (edge ${port}, state ${sess.state})`);
    if (this.sess === sess) this.sess = null;
  }

  _send(sess, obj) {
    if (sess.conn.isClosed || sess.conn.socket.destroyed) return false;
    sess.conn.send(obj);
    sess.lastSent = Date.now();
    return true;
  }

  _sendLogin(sess) {
    const f = { t: 'login', v: 1, jid: this.jid, pass: this.pass, dev: this.label, seq: this.maxSeq };
    if (this.epoch) f.epoch = this.epoch;
    sess.loginAt = Date.now();
    sess.state = 'login';
    this._send(sess, f);
    this._ev(`login epoch=${f.epoch ?? '-'} seq=${f.seq}`);
    clearTimeout(sess.loginTimer);
    sess.loginTimer = setTimeout(() => {
      if (sess.state === 'login' && !sess.conn.isClosed) {
        this._violation(`no answer to login within ${this.loginTimeoutMs} ms (edge ${sess.port})`);
        sess.conn.destroy();
      }
    }, this.loginTimeoutMs);
  }

  _onFrame(sess, f) {
    switch (f.t) {
      case 'welcome':
        if (sess.state !== 'login') { this._violation(`unexpected welcome ${JSON.stringify(f)}`); return; }
        clearTimeout(sess.loginTimer);
        sess.state = 'replay';
        sess.welcomeAt = Date.now();
        sess.hb = Number(f.hb) > 0 ? Number(f.hb) : 30;
        this.stats.logins++;
        this._ev(`welcome after ${sess.welcomeAt - sess.loginAt} ms`);
        this._pumpOut();
        return;
      case 'error':
        this._onError(sess, f);
        return;
      case 'ack':
        this._onAck(sess, f);
        return;
      case 'msg':
        this._onMsg(sess, f);
        return;
      case 'sync':
        this._onSync(sess, f);
        return;
      case 'bye':
        this.stats.byes[f.reason] = (this.stats.byes[f.reason] ?? 0) + 1;
        this._ev(`bye ${f.reason}`);
        if (f.reason === 'too_many_failures' || f.reason === 'protocol_error') {
          this._violation(`bye ${f.reason}`);
        }
        return;
      case 'hb':
        return;
      default:
        this._ev(`ignored frame ${JSON.stringify(f)}`);
    }
  }

  _onError(sess, f) {
    if (sess.state === 'login' && !f.id) {
      clearTimeout(sess.loginTimer);
      if (f.code === 'unavailable') {
        this.stats.loginUnavailable++;
      } else {
        this.stats.loginErrors[f.code] = (this.stats.loginErrors[f.code] ?? 0) + 1;
        this._violation(`login answered ${JSON.stringify(f)} (the password is right)`);
      }
      this._ev(`login error ${f.code}: ${f.msg}`);
      sess.state = 'login-wait';
      setTimeout(() => {
        if (!this.stopped && this.sess === sess && !sess.conn.isClosed && sess.state === 'login-wait') this._sendLogin(sess);
      }, rand(this.backoff));
      return;
    }
    if (f.id) {
      const o = this.outstanding;
      if (o && o.id === f.id && o.conn === sess.conn) {
        this.stats.errorsById[f.code] = (this.stats.errorsById[f.code] ?? 0) + 1;
        this._ev(`error for ${f.id}: ${f.code} ${f.msg}`);
        if (f.code !== 'unavailable') this._violation(`message ${f.id} answered ${JSON.stringify(f)}`);
        // Reconnect, then resend it with the same id.
        o.conn = null;
        sess.conn.destroy();
      } else {
        this.stats.staleAnswers++;
        this._ev(`stale error ${JSON.stringify(f)}`);
      }
      return;
    }
    this.stats.otherErrors[f.code] = (this.stats.otherErrors[f.code] ?? 0) + 1;
    this._ev(`error ${f.code}: ${f.msg}`);
    if (f.code !== 'unavailable') this._violation(`error frame ${JSON.stringify(f)}`);
  }

  _onAck(sess, f) {
    const o = this.outstanding;
    if (!o || o.id !== f.id || o.conn !== sess.conn) {
      this.stats.staleAnswers++;
      this._ev(`stale ack ${f.id}`);
      return;
    }
    const now = Date.now();
    this.stats.acked++;
    this._ev(`ack ${o.id} (${now - o.sentAt} ms)`);
    this.stats.ackLatencyMax = Math.max(this.stats.ackLatencyMax, now - o.sentAt);
    this.acked.add(o.k);
    this.progressAt.push(now);
    this.outstanding = null;
    this.nextK = o.k + 1;
    this.nextSendAt = now + rand(this.pace);
    this._pumpOut();
  }

  _onMsg(sess, f) {
    if (sess.state === 'login' || sess.state === 'login-wait') {
      this._violation(`msg before welcome: ${JSON.stringify(f)}`);
      return;
    }
    if (sess.state === 'replay') sess.replayed++;
    const seq = f.seq;
    if (!Number.isInteger(seq) || seq < 1) {
      this._violation(`msg without a valid seq: ${JSON.stringify(f)}`);
      return;
    }
    if (this.stored.has(seq)) {
      // The phone said where it was: the server should not send this again.
      this.stats.dupSeqDropped++;
      this._violation(`seq ${seq} sent again after login with epoch=${this.epoch} seq=${this.maxSeq}` +
        ` (stored: ${this.stored.get(seq).id}, now: ${f.id})`);
      return;
    }
    if (seq !== this.maxSeq + 1) {
      this._violation(`gap: seq ${seq} after ${this.maxSeq} (${f.id})`);
    }
    this.stored.set(seq, { id: f.id, from: f.from, body: f.body });
    this.maxSeq = Math.max(this.maxSeq, seq);
    this.stats.received++;
    this._ev(`msg seq=${seq} id=${f.id}${sess.state === 'replay' ? ' (replay)' : ''}`);
    if (f.sent === true) {
      // A copy of what the user sent (PROTOCOL.md 10.9): one of ours, or
      // nothing this model sends from elsewhere. Numbered, so acked.
      if (!this.outbox?.has?.(f.id) && !String(f.id).startsWith(`${this.name}-`)) {
        this._violation(`a sent copy of a message this phone never sent: ${JSON.stringify(f)}`);
      }
      this.stats.sentCopies = (this.stats.sentCopies ?? 0) + 1;
    } else if (f.id && this.visibleIds.has(f.id)) {
      this.stats.dupIdDropped++;
      this._ev(`dup id ${f.id} seq=${seq} dropped`);
    } else {
      if (f.id) this.visibleIds.add(f.id);
      this.visible.push({ id: f.id, seq, epoch: this.epoch, body: f.body, from: f.from });
    }
    this._send(sess, { t: 'ack', seq });
  }

  _onSync(sess, f) {
    this.stats.syncs++;
    if (f.reset && this.allowReset && !f.missed) {
      // The server lost the numbering (PROTOCOL.md section 8): the stored
      // seqs mean nothing now; what the app shows stays, deduplicated by id.
      this.stats.resets++;
      this._ev(`reset ${JSON.stringify(f)} (we had epoch=${this.epoch} seq=${this.maxSeq})`);
      this.epoch = f.epoch || null;
      this.maxSeq = 0;
      this.stored.clear();
      return;
    }
    if (f.missed || f.reset) {
      this.stats.syncLoss.push(f);
      this._violation(`sync reports loss: ${JSON.stringify(f)} (we had epoch=${this.epoch} seq=${this.maxSeq})`);
    }
    if (typeof f.epoch === 'string' && f.epoch) {
      if (this.epoch && f.epoch !== this.epoch) this._violation(`epoch changed ${this.epoch} -> ${f.epoch}`);
      this.epoch = f.epoch;
    }
    if (sess.state === 'replay') {
      sess.state = 'ready';
      this.stats.replayed += sess.replayed;
      if (sess.replayed) this.stats.replayLogins++;
      if (f.seq !== this.maxSeq) this._violation(`login sync seq ${f.seq} but the app has stored up to ${this.maxSeq}`);
      this._ev(`sync ${JSON.stringify(f)} after ${sess.replayed} replayed`);
    }
    this._pumpOut();
  }

  /** Send (or resend) what the outbox holds, if the connection is logged in. */
  _pumpOut() {
    const sess = this.sess;
    if (this.stopped || !sess || sess.state === 'login' || sess.state === 'login-wait' || sess.conn.isClosed) return;
    let o = this.outstanding;
    if (o) {
      if (o.conn !== sess.conn) this._transmit(sess, o); // a resend, same id
      return;
    }
    if (this.nextK > this.count) return;
    const wait = this.nextSendAt - Date.now();
    if (wait > 0) {
      clearTimeout(this.sendTimer);
      this.sendTimer = setTimeout(() => this._pumpOut(), wait);
      return;
    }
    const k = this.nextK;
    const peerUser = this.peer.split('@')[0];
    o = { k, id: `${this.user}-${k}`, body: `${this.user}->${peerUser} #${k}`, conn: null, tries: 0 };
    this.outstanding = o;
    this._transmit(sess, o);
  }

  _transmit(sess, o) {
    if (!this._send(sess, { t: 'msg', id: o.id, to: this.peer, body: o.body })) return;
    o.conn = sess.conn;
    o.sentAt = Date.now();
    o.firstSentAt ??= o.sentAt;
    o.tries++;
    this.stats.msgFrames++;
    if (o.tries > 1) {
      this.stats.resends++;
      this._ev(`resend ${o.id} (try ${o.tries})`);
    } else {
      this._ev(`send ${o.id}`);
    }
  }

  _tick() {
    const sess = this.sess;
    if (!sess || sess.conn.isClosed) return;
    const now = Date.now();
    const o = this.outstanding;
    if (o && o.conn === sess.conn && now - o.sentAt > this.ackStallMs) {
      this.stats.stalls++;
      this.stalls.push({ id: o.id, sentAt: o.sentAt, ms: now - o.sentAt, port: sess.port });
      const text = `no ack or error for ${o.id} ${now - o.sentAt} ms after sending it on an open socket ` +
        `(edge ${sess.port}); reconnecting to resend`;
      if (this.stallIsViolation) this._violation(text);
      else this._ev(text);
      o.conn = null;
      sess.conn.destroy();
      return;
    }
    if (sess.state === 'replay' && now - sess.welcomeAt > this.loginTimeoutMs) {
      this._violation(`no sync within ${this.loginTimeoutMs} ms after welcome (edge ${sess.port})`);
      sess.conn.destroy();
      return;
    }
    if (sess.state === 'ready' || sess.state === 'replay') {
      if (now - sess.lastSent >= (sess.hb * 1000) / 2) {
        this.stats.hbs++;
        this._send(sess, { t: 'hb' });
      }
    }
  }

  describe() {
    const o = this.outstanding;
    return `----- phone app ${this.name} (${this.jid}) -----\n` +
      `outbox: next k=${this.nextK}/${this.count}, outstanding=${o ? `${o.id} tries=${o.tries}` : '-'}; ` +
      `incoming: epoch=${this.epoch} maxSeq=${this.maxSeq} visible=${this.visible.length}\n` +
      `stats: ${JSON.stringify(this.stats)}\n` +
      (this.violations.length ? `violations:\n  ${this.violations.join('\n  ')}\n` : '') +
      this.recentEvents();
  }
}

// ---------------------------------------------------------------------------
// The desktop user

/**
 * A desktop XMPP user (xmpp.js, no stream management, initial presence) that
 * sends `count` numbered chats to `peer` (body "<user>-><peerUser> #k",
 * XMPP id "<user>-k"), one at a time: k counts as delivered to the server
 * only once an XMPP ping sent after it is answered; on a failure or
 * disconnect it reconnects (a new client, after `backoff` ms) and resends k
 * with the same id.  It stays connected to receive the phone's messages
 * (deduplicated by id: .visible).  port may be a number or a function.
 */
export class ReliableDesktop extends Model {
  constructor({
    stack, name, user, pass, domain = 'localhost', port, peer, count, pace = [150, 300],
    backoff = [200, 600], pingTimeoutMs = 5000, resource = 'desktop', t0,
  }) {
    super(name ?? user, { t0 });
    this.stack = stack;
    this.user = user;
    this.pass = pass;
    this.domain = domain;
    this.port = typeof port === 'function' ? port : () => port;
    this.peer = peer;
    this.peerUser = peer.split('@')[0];
    this.count = count;
    this.pace = pace;
    this.backoff = backoff;
    this.pingTimeoutMs = pingTimeoutMs;
    this.resource = resource;
    this.nextK = 1;
    this.tries = new Map();     // k -> sends
    this.confirmed = new Set();
    this.visible = [];          // {id, k, body, delayed}
    this.visibleIds = new Set();
    this.client = null;         // current DesktopPeer
    this.stats = {
      connects: 0, connectFailures: 0, disconnects: 0, sends: 0, resends: 0, confirmed: 0,
      pingFailures: 0, received: 0, dupIdDropped: 0, delayed: 0,
    };
  }

  get outboxDone() {
    return this.nextK > this.count;
  }

  complete(prefix, n) {
    const ks = new Set(this.visible.map((m) => kOf(m.id, prefix)));
    for (let k = 1; k <= n; k++) if (!ks.has(k)) return false;
    return true;
  }

  start() {
    this.done = this._run().catch((e) => this._violation(`model crashed: ${e.stack}`));
    return this;
  }

  async stop() {
    this.stopped = true;
    await withTimeout(this.done ?? Promise.resolve(), 6000, `${this.name} stop`).catch(() => {});
    if (this.client) await this.client.stop();
  }

  async _run() {
    while (!this.stopped) {
      const c = this.client;
      if (!c || !c.alive) {
        await this._connect();
        continue;
      }
      if (this.nextK > this.count) {
        await Promise.race([sleep(200), c.dead]);
        continue;
      }
      await this._sendOne(c);
    }
  }

  async _connect() {
    const old = this.client;
    this.client = null;
    if (old) {
      this.stats.disconnects++;
      old.stop().catch(() => {}); // in the background; it is dead already
    }
    const port = this.port();
    const d = new DesktopPeer({ port, user: this.user, pass: this.pass, domain: this.domain, resource: this.resource });
    let markDead;
    d.alive = false;
    d.dead = new Promise((resolve) => { markDead = resolve; });
    const onStatus = (s) => {
      if (['disconnecting', 'disconnect', 'closing', 'close', 'offline'].includes(s)) {
        if (d.alive) this._ev(`xmpp status ${s}`);
        d.alive = false;
        markDead();
      }
    };
    d.xmpp.on('status', onStatus);
    d.xmpp.on('stanza', (st) => this._onStanza(st));
    this.stack?.onCleanup(`desktop app ${this.name}`, () => d.stop());
    try {
      await d.start(10000);
      if (d.xmpp.status !== 'online') throw new Error(`status ${d.xmpp.status} after start`);
      d.alive = true;
      this.client = d;
      this.stats.connects++;
      this._ev(`online as ${d.jid} (port ${port})`);
    } catch (e) {
      this.stats.connectFailures++;
      this._ev(`connect failed: ${e.code ?? e.message}`);
      markDead();
      d.stop().catch(() => {});
      await sleep(rand(this.backoff));
    }
  }

  async _sendOne(c) {
    const k = this.nextK;
    const id = `${this.user}-${k}`;
    const n = (this.tries.get(k) ?? 0) + 1;
    this.tries.set(k, n);
    this.stats.sends++;
    if (n > 1) {
      this.stats.resends++;
      this._ev(`resend ${id} (try ${n})`);
    } else {
      this._ev(`send ${id}`);
    }
    const t1 = Date.now();
    const body = `${this.user}->${this.peerUser} #${k}`;
    const fail = (what) => (e) => { throw new Error(`${what}: ${e?.message ?? e}`); };
    try {
      const died = c.dead.then(() => { throw new Error('disconnected'); });
      died.catch(() => {});
      await Promise.race([
        withTimeout(c.xmpp.send(xml('message', { to: this.peer, type: 'chat', id }, xml('body', {}, body))),
          this.pingTimeoutMs, 'send').catch(fail('send')),
        died,
      ]);
      await Promise.race([
        withTimeout(c.xmpp.iqCaller.request(
          xml('iq', { type: 'get', to: this.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })), this.pingTimeoutMs,
        ), this.pingTimeoutMs + 500, 'ping').catch(fail('ping')),
        died,
      ]);
    } catch (e) {
      this.stats.pingFailures++;
      this._ev(`${id} not confirmed: ${e.message}; reconnecting`);
      c.alive = false;
      return;
    }
    this.confirmed.add(k);
    this.progressAt.push(Date.now());
    this.stats.confirmed++;
    this._ev(`confirmed ${id} (${Date.now() - t1} ms)`);
    this.nextK = k + 1;
    await sleep(rand(this.pace));
  }

  _onStanza(st) {
    if (!st.is('message')) return;
    const body = st.getChildText('body');
    const type = st.attrs.type ?? 'normal';
    if (type === 'error') {
      this._violation(`error message: ${st.toString()}`);
      return;
    }
    if (body == null) return; // chat states, receipts, ...
    const from = bareJid(st.attrs.from);
    const id = st.attrs.id;
    const k = kOf(id, this.peerUser);
    if (from !== this.peer || !(k >= 1) || body !== `${this.peerUser}->${this.user} #${k}`) {
      this._violation(`unexpected message: ${st.toString()}`);
      return;
    }
    this.stats.received++;
    const delayed = !!st.getChild('delay', 'urn:xmpp:delay');
    this._ev(`recv ${id}${delayed ? ' (delayed)' : ''}`);
    if (delayed) this.stats.delayed++;
    if (this.visibleIds.has(id)) {
      this.stats.dupIdDropped++;
      this._ev(`dup id ${id} dropped`);
      return;
    }
    this.visibleIds.add(id);
    this.visible.push({ id, k, body, delayed });
  }

  describe() {
    return `----- desktop app ${this.name} -----\n` +
      `outbox: next k=${this.nextK}/${this.count}; received ${this.visible.length}\n` +
      `stats: ${JSON.stringify(this.stats)}\n` +
      (this.violations.length ? `violations:\n  ${this.violations.join('\n  ')}\n` : '') +
      this.recentEvents();
  }
}
