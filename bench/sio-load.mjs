// bench/sio-load.mjs - Socket.IO load for bench 3, the Socket.IO counterpart
// of loadgen:
//   --mode idle  --port P --conns N            connect N sockets (users i0..),
//                print {"event":"ready"} and hold until stdin EOF / --hold s
//   --mode pairs --port P --port2 Q --conns N --inflight K --warmup S --duration S
//                N echo users on node Q, N pinger users on node P; each pinger
//                keeps K messages in flight to its echo user (round trips timed)
//   --client ws (default) | socket.io
// WebSocket transport only. In pairs mode it prints {"event":"measure"} when
// the timed window opens and {"event":"end"} when it closes (the bench reads
// the servers' CPU at those two moments), then one JSON result line.
//
// The load client must not be what limits or flatters a comparison: the
// default client ("ws") speaks Engine.IO 4 / Socket.IO 5 directly over the
// `ws` package (the packets socket.io-client would send: "40{auth}", events
// "42<ack id>[...]", acks "43<id>[...]", pong "3"), without
// socket.io-client's layers; "socket.io" is socket.io-client itself.
import { WebSocket } from 'ws';

const arg = (k, d) => { const i = process.argv.indexOf(`--${k}`); return i > 0 ? process.argv[i + 1] : d; };
const mode = arg('mode', 'idle');
const client = arg('client', 'ws');
const port = Number(arg('port')); const port2 = Number(arg('port2', 0));
const conns = Number(arg('conns', 1)); const inflight = Number(arg('inflight', 1));
const warmup = Number(arg('warmup', 1)); const duration = Number(arg('duration', 5));
const hold = Number(arg('hold', 600)); const timeout = Number(arg('timeout', 120));
const bodySize = Number(arg('body-size', 32));
const concurrency = Number(arg('concurrency', 200));
const pad = 'abcdefghijklmnopqrstuvwxyz'.repeat(200).slice(0, bodySize);
const t0 = Date.now();
const sockets = [];
const hard = setTimeout(() => { console.error('sio-load: timeout'); finish(false); }, timeout * 1000);

// A minimal Socket.IO client socket: on(event, fn), emit(event, data, ack), close().
class RawSocket {
  constructor(ws) { this.ws = ws; this.handlers = new Map(); this.acks = new Map(); this.nextAck = 0; }
  on(ev, fn) { this.handlers.set(ev, fn); }
  emit(ev, data, ack) {
    let id = '';
    if (ack) { id = String(this.nextAck++); this.acks.set(id, ack); }
    this.ws.send(`42${id}${JSON.stringify([ev, data])}`);
  }
  close() { try { this.ws.close(); } catch { /* gone */ } }
  packet(s) {
    if (s === '2') { this.ws.send('3'); return; } // Engine.IO ping
    if (s.startsWith('42')) {
      const a = JSON.parse(s.slice(s.indexOf('[')));
      this.handlers.get(a[0])?.(a[1]);
    } else if (s.startsWith('43')) {
      const j = s.indexOf('['); const id = s.slice(2, j);
      const fn = this.acks.get(id);
      if (fn) { this.acks.delete(id); fn(...JSON.parse(s.slice(j))); }
    }
  }
}

function connectRaw(p, user) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${p}/socket.io/?EIO=4&transport=websocket`, { perMessageDeflate: false });
    const s = new RawSocket(ws);
    let up = false;
    ws.on('message', (d) => {
      const t = d.toString();
      if (!up) {
        if (t[0] === '0') { ws.send(`40${JSON.stringify({ user })}`); return; } // open -> connect
        if (t.startsWith('40')) { up = true; resolve(s); return; }
        if (t.startsWith('44')) { console.error('sio-load connect:', t); resolve(null); }
        return;
      }
      s.packet(t);
    });
    ws.on('error', (e) => { if (!up) { console.error('sio-load connect:', e.message); resolve(null); } });
    sockets.push(s);
  });
}

async function connectSio(p, user) {
  const { io } = await import('socket.io-client');
  return new Promise((resolve) => {
    const s = io(`http://127.0.0.1:${p}`, { transports: ['websocket'], auth: { user }, reconnection: false, forceNew: true, timeout: 20000 });
    s.once('connect', () => resolve(s));
    s.once('connect_error', (e) => { console.error('sio-load connect:', e.message); resolve(null); });
    sockets.push(s);
  });
}
const connectOne = client === 'socket.io' ? connectSio : connectRaw;

async function connectMany(list) {
  const out = new Array(list.length); let next = 0;
  const worker = async () => { while (next < list.length) { const i = next++; out[i] = await connectOne(...list[i]); } };
  await Promise.all(Array.from({ length: Math.min(concurrency, list.length) }, worker));
  return out;
}

let finished = false;
function finish(ok, extra = {}) {
  if (finished) return; finished = true;
  clearTimeout(hard);
  console.log(JSON.stringify({ mode: `sio_${mode}`, client, ok, ...extra }));
  for (const s of sockets) s.close();
  setTimeout(() => process.exit(0), 200);
}

if (mode === 'idle') {
  const socks = await connectMany(Array.from({ length: conns }, (_, i) => [port, `i${i}`]));
  const okN = socks.filter(Boolean).length;
  console.log(JSON.stringify({ event: 'ready', ok: okN, failed: conns - okN, elapsed_ms: Date.now() - t0 }));
  process.stdin.on('data', () => {}); process.stdin.on('end', () => finish(true, { conns, ok: okN }));
  setTimeout(() => finish(true, { conns, ok: okN }), hold * 1000);
} else {
  const echo = await connectMany(Array.from({ length: conns }, (_, i) => [port2, `e${i}`]));
  const ping = await connectMany(Array.from({ length: conns }, (_, i) => [port, `p${i}`]));
  if (echo.some((s) => !s) || ping.some((s) => !s)) finish(false, { error: 'connect failed' });
  // Every message is acked by the server (the Socket.IO ack callback), like
  // a phone's message by its edge; the echo side's too.
  let acks = 0;
  const onAck = () => { acks++; };
  let delivered = 0; let d0 = 0;
  for (const s of echo) s.on('msg', (m) => { delivered++; s.emit('msg', { to: m.from, body: m.body, id: `e${m.id}` }, onAck); });
  const samples = []; let measuring = false; let rt = 0; let tm = 0; let te = 0; let seq = 0;
  const now = () => Number(process.hrtime.bigint() / 1000n);
  const send = (s, i) => s.emit('msg', { to: `e${i}`, body: `${now()}:${pad}`, id: `m${++seq}` }, onAck);
  ping.forEach((s, i) => s.on('msg', (m) => {
    delivered++;
    const t = Number(m.body.slice(0, m.body.indexOf(':')));
    if (measuring) { rt++; samples.push(now() - t); }
    if (!finished) send(s, i);
  }));
  ping.forEach((s, i) => { for (let k = 0; k < inflight; k++) send(s, i); });
  setTimeout(() => { measuring = true; tm = Date.now(); d0 = delivered; console.log(JSON.stringify({ event: 'measure' })); }, warmup * 1000);
  setTimeout(() => {
    measuring = false; te = Date.now();
    const dn = delivered - d0;
    console.log(JSON.stringify({ event: 'end' }));
    samples.sort((a, b) => a - b);
    const pct = (q) => (samples.length ? samples[Math.round(q * (samples.length - 1))] : 0);
    const secs = (te - tm) / 1000;
    finish(samples.length > 0, {
      pingers: conns, inflight, seconds: secs, round_trips: rt, rt_per_s: rt / secs, msgs_per_s: 2 * rt / secs,
      delivered: dn,
      rtt_us: { p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), max: samples.at(-1) ?? 0, mean: samples.reduce((a, b) => a + b, 0) / (samples.length || 1) },
      acks,
    });
  }, (warmup + duration) * 1000);
}
