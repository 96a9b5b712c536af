// A real Redis Cluster per test: N masters + N*R replicas, each a
// redis-server on 127.0.0.1 with a free client port and a free cluster-bus
// port, in its own temp dir, no persistence; created with
// `redis-cli --cluster create`.  Owns the cluster's lifecycle (start, kill -9
// of a master, failover wait, slot migration under load, restart of a node,
// stop) and a small slot-aware client for the tests (command() follows
// MOVED/ASK like a cluster client does).  The project's services under test
// get `seeds` as their --redis-cluster.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { Stack } from './stack.mjs';
import { freePort, HOST, sleep, waitFor } from './util.mjs';
import { encodeCommand, parseReply, redisCommand, redisPing, RedisError } from './redis.mjs';

export const CLUSTER_SLOTS = 16384;

// ---------------------------------------------------------------------------
// Key -> slot, as Redis computes it: CRC16 (XMODEM: poly 0x1021, init 0) of
// the key's UTF-8 bytes, or of the bytes between the first '{' and the first
// '}' after it when that span is not empty (the hash tag), mod 16384.

const CRC16_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let k = 0; k < 8; k++) c = (c & 0x8000) ? ((c << 1) ^ 0x1021) : (c << 1);
    t[i] = c & 0xffff;
  }
  return t;
})();

/** CRC16/XMODEM of a Buffer (what Redis Cluster hashes keys with). */
export function crc16(buf) {
  let crc = 0;
  for (const b of buf) crc = ((crc << 8) & 0xffff) ^ CRC16_TABLE[((crc >> 8) ^ b) & 0xff];
  return crc;
}

/** The cluster slot (0..16383) of a key (string: UTF-8, or Buffer), hash tags honoured. */
export function keySlot(key) {
  const buf = Buffer.isBuffer(key) ? key : Buffer.from(String(key), 'utf8');
  const open = buf.indexOf(0x7b); // '{'
  if (open >= 0) {
    const close = buf.indexOf(0x7d, open + 1); // '}'
    if (close > open + 1) return crc16(buf.subarray(open + 1, close)) % CLUSTER_SLOTS;
  }
  return crc16(buf) % CLUSTER_SLOTS;
}

/** A hash tag (without braces) whose keys `{tag}...` fall in `slot`: found by search. */
export function tagForSlot(slot, prefix = 't') {
  for (let i = 0; i < 1e7; i++) {
    const tag = `${prefix}${i}`;
    if (keySlot(tag) === slot) return tag;
  }
  throw new Error(`tagForSlot: no tag for slot ${slot}`);
}

// ---------------------------------------------------------------------------
// Raw RESP: several commands on one connection (ASKING + the command must
// share one), replies in order; RedisError replies are returned, not thrown.

function redisPipeline(port, cmds, { host = HOST, timeout = 3000, auth } = {}) {
  const all = auth ? [['AUTH', ...auth], ...cmds] : cmds;
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host });
    let buf = Buffer.alloc(0);
    const replies = [];
    let off = 0;
    const timer = setTimeout(() => finish(new Error(`redis ${cmds[0]?.[0]} on ${port}: timeout`)), timeout);
    function finish(err, v) {
      clearTimeout(timer);
      s.removeAllListeners('data');
      s.removeAllListeners('close');
      s.on('error', () => {});
      s.destroy();
      if (err) reject(err); else resolve(v);
    }
    s.on('connect', () => s.write(all.map(encodeCommand).join('')));
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      try {
        for (;;) {
          const r = parseReply(buf, off);
          if (!r) break;
          replies.push(r[0]);
          off = r[1];
        }
      } catch (e) { finish(e); return; }
      if (replies.length === all.length) {
        const out = auth ? replies.slice(1) : replies;
        if (auth && replies[0] instanceof RedisError) finish(new Error(`AUTH on ${port}: ${replies[0].message}`));
        else finish(null, out);
      }
    });
    s.on('error', (e) => finish(e));
    s.on('close', () => finish(new Error(`redis ${port}: connection closed before reply`)));
  });
}

/** Fields of an INFO-style text ("k:v" lines) as an object. */
function infoFields(text) {
  const o = {};
  for (const line of String(text ?? '').split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) o[line.slice(0, i)] = line.slice(i + 1);
  }
  return o;
}

/** CLUSTER NODES text -> [{id, port, busPort, flags[], role, masterId, linkState, slots}]. */
function parseClusterNodes(text) {
  const out = [];
  for (const line of String(text ?? '').split('\n')) {
    const f = line.trim().split(' ');
    if (f.length < 8) continue;
    const m = /^([^:]*):(\d+)@(\d+)/.exec(f[1]);
    const flags = f[2].split(',');
    out.push({
      id: f[0],
      port: m ? Number(m[2]) : 0,
      busPort: m ? Number(m[3]) : 0,
      flags,
      role: flags.includes('master') ? 'master' : 'replica',
      masterId: f[3] === '-' ? null : f[3],
      linkState: f[7],
      slots: f.slice(8).filter((s) => !s.startsWith('[')),
    });
  }
  return out;
}

/** CLUSTER SLOTS reply -> Int32Array(16384) of the owning master's port (0: none)
 *  and a canonical text of the ranges (master and replica ports), to compare views. */
function parseClusterSlots(reply) {
  const map = new Int32Array(CLUSTER_SLOTS);
  const ranges = [];
  for (const r of Array.isArray(reply) ? reply : []) {
    const [start, end, master, ...replicas] = r;
    const port = Number(master[1]);
    for (let s = start; s <= end; s++) map[s] = port;
    ranges.push({ start, end, port, id: master[2], replicas: replicas.map((x) => Number(x[1])).sort((a, b) => a - b) });
  }
  ranges.sort((a, b) => a.start - b.start);
  const text = ranges.map((x) => `${x.start}-${x.end}:${x.port}[${x.replicas.join(',')}]`).join(' ');
  return { map, ranges, text };
}

let redisMajor;
function redisServerMajor() {
  if (redisMajor === undefined) {
    const out = execFileSync('redis-server', ['--version'], { encoding: 'utf8' });
    redisMajor = Number(/v=(\d+)\./.exec(out)?.[1] ?? 0);
  }
  return redisMajor;
}

/**
 * One client port and one cluster-bus port, both free now and never handed
 * out again in this process.  Redis >= 7 takes the bus port explicitly
 * (--cluster-port); before, it is always port+10000, so the client port is
 * picked so that port+10000 is free too and below the kernel's ephemeral
 * range.
 */
async function clusterPorts() {
  if (redisServerMajor() >= 7) return [await freePort(), await freePort()];
  for (let i = 0; i < 50; i++) {
    const p = await freePort({ min: 20000, max: 22700 });
    try {
      return [p, await freePort({ min: p + 10000, max: p + 10001, tries: 1 })];
    } catch { /* bus port taken: another */ }
  }
  throw new Error('rediscluster: no free port pair (port, port+10000)');
}

// ---------------------------------------------------------------------------

/**
 * One redis-server of the cluster.  role/masterId/slots follow the cluster
 * (refreshed from CLUSTER NODES after start, failover, migration, restart).
 */
class ClusterNode {
  constructor(cluster, index, port, busPort, dir) {
    this.cluster = cluster;
    this.index = index;       // 0.. in start order (masters come first)
    this.port = port;         // client port on 127.0.0.1
    this.busPort = busPort;   // cluster bus port
    this.dir = dir;           // its temp dir: nodes.conf, redis.log
    this.proc = null;         // the running Proc (null before start)
    this.starts = 0;
    this.id = null;           // cluster node id (40 hex), from CLUSTER NODES
    this.role = null;         // 'master' | 'replica'
    this.masterId = null;     // for a replica: its master's id
    this.slots = [];          // for a master: its slot ranges, as CLUSTER NODES prints them
    this.killedAt = null;     // Date.now() of the last killMaster() of it
  }

  get pid() { return this.proc?.pid; }
  get alive() { return !!this.proc && this.proc.running; }

  args() {
    const c = this.cluster;
    return [
      '--bind', HOST, '--port', String(this.port),
      ...(redisServerMajor() >= 7 ? ['--cluster-port', String(this.busPort)] : []),
      '--cluster-enabled', 'yes',
      '--cluster-config-file', path.join(this.dir, 'nodes.conf'),
      '--cluster-node-timeout', String(c.nodeTimeoutMs),
      // A replica takes over however long it was cut from its master (the
      // default refuses one whose data is "too old": a test kills masters at
      // will and wants the promotion).
      '--cluster-replica-validity-factor', '0',
      // While a slot is uncovered the cluster refuses reads too: a client
      // sees CLUSTERDOWN, not stale data.
      '--cluster-allow-reads-when-down', 'no',
      '--save', '', '--appendonly', 'no',
      // A replica's first sync starts at once (the default waits 5 s for
      // more replicas to share one diskless transfer).
      '--repl-diskless-sync-delay', '0',
      // CLUSTER SLOTS lists a replica once its replication offset is not 0,
      // which an idle master moves only when it pings its replicas (every
      // 10 s by default).
      '--repl-ping-replica-period', '1',
      '--dir', this.dir,
      '--daemonize', 'no', '--protected-mode', 'no',
      '--logfile', '', '--loglevel', 'notice',
      ...(c.password ? ['--requirepass', c.password, '--masterauth', c.password] : []),
      ...c.extraArgs,
    ];
  }

  /** Spawn redis-server and wait for PING; throws if it exits (e.g. a port taken). */
  async start({ timeout = 10000 } = {}) {
    this.starts += 1;
    const proc = this.cluster.stack.spawn(`redis-cluster-${this.index}#${this.starts}:${this.port}`,
      'redis-server', this.args(), { logFile: path.join(this.dir, 'redis.log'), late: true });
    this.proc = proc;
    const r = await waitFor(async () => {
      if (!proc.running) return 'exited';
      return (await redisPing(this.port, HOST, this.cluster.auth)) ? 'up' : false;
    }, { timeout, interval: 20, what: `redis cluster node PING on ${this.port}` });
    if (r !== 'up') {
      await proc.exited;
      throw new Error(`redis-server (cluster node ${this.index}) exited on start (port ${this.port}):\n${proc.stdout}${proc.stderr}`);
    }
  }

  /** Plain description (what `cluster.nodes` lists). */
  describe() {
    return { port: this.port, busPort: this.busPort, pid: this.pid, id: this.id, role: this.role,
      masterId: this.masterId, slots: this.slots, alive: this.alive };
  }
}

export class RedisCluster {
  constructor(stack, { masters, replicasPer, nodeTimeoutMs, password, extraArgs = [], ownStack }) {
    this.stack = stack;
    this.ownStack = ownStack;        // true: stop() cleans the whole (private) stack up
    this.masters = masters;
    this.replicasPer = replicasPer;
    this.nodeTimeoutMs = nodeTimeoutMs;
    this.password = password;        // requirepass + masterauth of every node (undefined: none)
    this.auth = password ? [password] : undefined;
    this.extraArgs = extraArgs;      // more redis-server arguments for every node
    this.host = HOST;
    this.dir = null;                 // temp dir holding one dir per node
    this._nodes = [];                // ClusterNode, in start order
    this.slotMap = new Int32Array(CLUSTER_SLOTS); // slot -> master port, as last learnt (0: unknown)
    this.redirects = { moved: 0, ask: 0, retries: 0 }; // seen by command()
    this.kills = [];                 // {port, id, role, at (Date.now()), t (performance.now()), slots (Set), replicas (ports)}
    this.stopped = false;
    this._exitHook = null;
    this._seedNodes = null;          // the masters once first healthy: `seeds`
    this._busBase = new Map();       // port -> cluster bus counters at resetStats()
  }

  /** "127.0.0.1:p1,127.0.0.1:p2,..." of the masters at start: the services' --redis-cluster. */
  get seeds() {
    return (this._seedNodes ?? []).map((n) => `${HOST}:${n.port}`).join(',');
  }

  /** Every node: {port, busPort, pid, id, role, masterId, slots, alive}. */
  get nodes() {
    return this._nodes.map((n) => n.describe());
  }

  node(port) {
    const n = this._nodes.find((x) => x.port === Number(port));
    if (!n) throw new Error(`rediscluster: no node on port ${port}`);
    return n;
  }

  liveNodes() {
    return this._nodes.filter((n) => n.alive);
  }

  /** Ports of the current masters (alive), from the last refresh. */
  masterPorts() {
    return this._nodes.filter((n) => n.alive && n.role === 'master').map((n) => n.port);
  }

  /** Run one command on one node (AUTH first when the cluster has a password). */
  commandOn(port, args, { timeout = 3000 } = {}) {
    return redisCommand(port, args.flat(), { timeout, auth: this.auth });
  }

  keySlot(key) {
    return keySlot(key);
  }

  // ---- start ---------------------------------------------------------------

  async _start({ create = true } = {}) {
    await this._startNodes();
    if (!create) return;
    // redis-cli makes the first `masters` nodes of the list masters (one
    // host: no anti-affinity to honour) and the rest their replicas.
    const cli = this.stack.spawn('redis-cli --cluster create', 'redis-cli', [
      '--cluster', 'create', ...this._nodes.map((n) => `${HOST}:${n.port}`),
      '--cluster-replicas', String(this.replicasPer), '--cluster-yes',
    ], { envExtra: this.password ? { REDISCLI_AUTH: this.password } : {}, late: true });
    const r = await cli.waitExit(30000);
    if (r.code !== 0) throw new Error(`redis-cli --cluster create failed (code ${r.code}):\n${cli.stdout}${cli.stderr}`);
    await this.waitHealthy({ timeoutMs: 20000 });
    if (this._seedNodes.length !== this.masters) {
      throw new Error(`rediscluster: ${this._seedNodes.length} masters after create, wanted ${this.masters}`);
    }
  }

  /** Start every node (in parallel), not joined yet; one whose port was
   *  taken meanwhile retries on other ports. */
  async _startNodes() {
    this.dir = this.stack.tempDir('imb-rcluster-');
    const total = this.masters * (1 + this.replicasPer);
    await Promise.all(Array.from({ length: total }, async (_, i) => {
      let lastErr;
      for (let attempt = 0; attempt < 5; attempt++) {
        const [port, busPort] = await clusterPorts();
        const dir = path.join(this.dir, `node${i}-${port}`);
        fs.mkdirSync(dir);
        const n = new ClusterNode(this, i, port, busPort, dir);
        try {
          await n.start();
          this._nodes[i] = n;
          return;
        } catch (e) {
          lastErr = e;
          await n.proc?.stop({ timeout: 2000 });
        }
      }
      throw lastErr;
    }));
  }

  /**
   * Wait until every live node reports cluster_state:ok, all live nodes show
   * the same CLUSTER SLOTS covering all 16384 slots (with every replica
   * listed once it knows its master), and every live replica's link to its
   * master is up (its first sync done).  Then refresh nodes' roles and the
   * slot map.  Resolves with the ms waited.
   */
  async waitHealthy({ timeoutMs = 15000 } = {}) {
    const t0 = performance.now();
    let why = '';
    await waitFor(async () => {
      const live = this.liveNodes();
      const views = await Promise.all(live.map(async (n) => {
        const [info, slots, repl] = await redisPipeline(n.port,
          [['CLUSTER', 'INFO'], ['CLUSTER', 'SLOTS'], ['INFO', 'replication']], { auth: this.auth });
        return { n, info: infoFields(info), slots: parseClusterSlots(slots), repl: infoFields(repl) };
      }));
      for (const v of views) {
        if (v.info.cluster_state !== 'ok') { why = `${v.n.port}: cluster_state:${v.info.cluster_state}`; return false; }
        if (v.slots.map.includes(0)) { why = `${v.n.port}: slots not all covered`; return false; }
        if (v.slots.text !== views[0].slots.text) { why = `views differ: ${v.n.port}: ${v.slots.text} vs ${views[0].n.port}: ${views[0].slots.text}`; return false; }
        if (v.repl.role === 'slave' && v.repl.master_link_status !== 'up') { why = `${v.n.port}: replica link ${v.repl.master_link_status}`; return false; }
      }
      // Every live replica appears in the slot view (its master knows it).
      const listed = new Set(views[0].slots.ranges.flatMap((x) => [x.port, ...x.replicas]));
      for (const v of views) {
        if (!listed.has(v.n.port)) { why = `${v.n.port} not yet in CLUSTER SLOTS (${views[0].slots.text})`; return false; }
      }
      this.slotMap = views[0].slots.map;
      return true;
    }, { timeout: timeoutMs, interval: 50, what: 'redis cluster healthy' }).catch((e) => {
      throw new Error(`${e.message}: ${why}`);
    });
    await this.refreshNodes();
    this._seedNodes ??= this._nodes.filter((n) => n.role === 'master');
    return Math.round(performance.now() - t0);
  }

  /** Re-read ids, roles, masters and slots of every node (CLUSTER NODES of a live node). */
  async refreshNodes() {
    for (const n of this.liveNodes()) {
      let text;
      try { text = await this.commandOn(n.port, ['CLUSTER', 'NODES']); } catch { continue; }
      if (text instanceof RedisError) continue;
      const byPort = new Map(parseClusterNodes(text).map((x) => [x.port, x]));
      for (const node of this._nodes) {
        const x = byPort.get(node.port);
        if (!x) continue;
        node.id = x.id;
        if (!x.flags.includes('fail') || node.alive) {
          node.role = x.role;
          node.masterId = x.masterId;
          node.slots = x.slots;
        }
      }
      return;
    }
    throw new Error('rediscluster: no live node answers CLUSTER NODES');
  }

  /** CLUSTER SLOTS as one live node sees it (the first that answers). */
  async _slotsView(nodes = this.liveNodes()) {
    for (const n of nodes) {
      try {
        const r = await this.commandOn(n.port, ['CLUSTER', 'SLOTS'], { timeout: 1000 });
        if (!(r instanceof RedisError)) return parseClusterSlots(r);
      } catch { /* next */ }
    }
    throw new Error('rediscluster: no live node answers CLUSTER SLOTS');
  }

  /** Port of the master serving `slot` now (CLUSTER SLOTS of a live node; 0: none). */
  async masterForSlot(slot) {
    const v = await this._slotsView();
    this.slotMap = v.map;
    return v.map[slot];
  }

  // ---- client --------------------------------------------------------------

  /**
   * Run a command on the master owning args[1]'s slot, as a cluster client
   * would: MOVED updates the slot map and retries there, ASK retries once on
   * the importing node after ASKING; TRYAGAIN / CLUSTERDOWN / a refused
   * connection (a failover under way) are retried after a short pause, up to
   * timeoutMs.  Resolves the reply (a RedisError for other -ERR replies).
   * key: the key that picks the slot when it is not args[1] (EVALSHA sha 1 key ...).
   */
  async command(args, { timeoutMs = 5000, key } = {}) {
    args = args.flat();
    const slot = key !== undefined ? keySlot(key) : args.length > 1 ? keySlot(args[1]) : 0;
    const deadline = Date.now() + timeoutMs;
    let port = this.slotMap[slot];
    let asking = false;
    let lastErr;
    for (;;) {
      if (!port) {
        try { port = await this.masterForSlot(slot); } catch (e) { lastErr = e; }
      }
      if (port) {
        let reply;
        try {
          reply = asking
            ? (await redisPipeline(port, [['ASKING'], args], { auth: this.auth }))[1]
            : (await redisPipeline(port, [args], { auth: this.auth }))[0];
        } catch (e) {
          lastErr = e;
          reply = undefined;
        }
        asking = false;
        if (reply instanceof RedisError) {
          const moved = /^MOVED (\d+) (\S+):(\d+)/.exec(reply.message);
          const ask = /^ASK (\d+) (\S+):(\d+)/.exec(reply.message);
          if (moved) {
            this.redirects.moved++;
            port = Number(moved[3]);
            this.slotMap[slot] = port;
            continue;
          }
          if (ask) {
            this.redirects.ask++;
            port = Number(ask[3]);
            asking = true;
            continue;
          }
          if (!/^(TRYAGAIN|CLUSTERDOWN|LOADING|MASTERDOWN)/.test(reply.message)) return reply;
          lastErr = reply;
        } else if (reply !== undefined) {
          return reply;
        }
      }
      // Refused, down or in transition: look the slot up again shortly.
      if (Date.now() >= deadline) {
        throw new Error(`rediscluster command ${args[0]} ${args[1] ?? ''} (slot ${slot}): ${lastErr?.message ?? 'no owner'}`);
      }
      this.redirects.retries++;
      port = 0;
      await sleep(50);
    }
  }

  // ---- faults --------------------------------------------------------------

  /** SIGKILL a node (a master, to provoke a failover). Returns Date.now() at the kill. */
  async killMaster(port) {
    const n = this.node(port);
    if (!n.alive) throw new Error(`rediscluster: node ${port} is not running`);
    const slots = [];
    this.slotMap.forEach((p, s) => { if (p === n.port) slots.push(s); });
    const at = Date.now();
    const replicas = this._nodes.filter((x) => x.masterId === n.id).map((x) => x.port);
    const kill = { port: n.port, id: n.id, role: n.role, at, t: performance.now(), slots: new Set(slots), replicas };
    n.proc.unclean = true;
    n.proc.kill('SIGKILL');
    n.killedAt = at;
    this.kills.push(kill);
    await n.proc.waitExit(5000);
    return at;
  }

  /**
   * Wait until `slot` is served again after a killMaster() of its master:
   * every live node reports cluster_state:ok and names, for that slot, the
   * same live master, a former replica of the killed one.  Resolves
   * {port, ms (from the kill), promotedFrom (the killed port)}.
   */
  async waitFailover(slot, { timeoutMs = 15000 } = {}) {
    const kill = [...this.kills].reverse().find((k) => k.slots.has(slot)) ?? this.kills[this.kills.length - 1];
    if (!kill) throw new Error('rediscluster: waitFailover without a killMaster');
    const formerReplicas = new Set(kill.replicas);
    let port = 0;
    let why = '';
    await waitFor(async () => {
      const live = this.liveNodes();
      const views = await Promise.all(live.map(async (n) => {
        const [info, slots] = await redisPipeline(n.port, [['CLUSTER', 'INFO'], ['CLUSTER', 'SLOTS']],
          { auth: this.auth, timeout: 1000 });
        return { n, info: infoFields(info), owner: parseClusterSlots(slots).map[slot] };
      }));
      for (const v of views) {
        if (v.info.cluster_state !== 'ok') { why = `${v.n.port}: cluster_state:${v.info.cluster_state}`; return false; }
        if (v.owner === kill.port || !v.owner) { why = `${v.n.port}: slot ${slot} still on ${v.owner}`; return false; }
        if (v.owner !== views[0].owner) { why = `views differ on slot ${slot}`; return false; }
      }
      if (!live.some((n) => n.port === views[0].owner)) { why = `owner ${views[0].owner} is not a live node`; return false; }
      port = views[0].owner;
      return true;
    }, { timeout: timeoutMs, interval: 20, what: `failover of slot ${slot}` }).catch((e) => {
      throw new Error(`${e.message}: ${why}`);
    });
    const ms = Math.round(performance.now() - kill.t);
    await this.refreshNodes();
    this.slotMap = (await this._slotsView()).map;
    if (!formerReplicas.has(port)) {
      throw new Error(`rediscluster: slot ${slot} went to ${port}, not to a replica of ${kill.port} (${[...formerReplicas]})`);
    }
    return { port, ms, promotedFrom: kill.port };
  }

  /**
   * Move `slot` to the master on `toPort` with Redis's own protocol, safe
   * while clients write to it: SETSLOT IMPORTING on the target, MIGRATING on
   * the source, then GETKEYSINSLOT + MIGRATE ... KEYS in batches of `batch`
   * (pauseMs between batches stretches the window in which clients meet ASK),
   * then SETSLOT NODE on the target, the source and every other master, and
   * wait until every live node agrees.  Resolves {from, to, keys, batches, ms}.
   */
  async migrateSlot(slot, toPort, { batch = 100, pauseMs = 0, timeoutMs = 10000 } = {}) {
    const t0 = performance.now();
    const from = await this.masterForSlot(slot);
    if (!from) throw new Error(`rediscluster: slot ${slot} has no master`);
    if (from === toPort) return { from, to: toPort, keys: 0, batches: 0, ms: 0 };
    const ok = async (port, args) => {
      const r = await this.commandOn(port, args);
      if (r instanceof RedisError) throw new Error(`${args.join(' ')} on ${port}: ${r.message}`);
      return r;
    };
    const fromId = await ok(from, ['CLUSTER', 'MYID']);
    const toId = await ok(toPort, ['CLUSTER', 'MYID']);
    await ok(toPort, ['CLUSTER', 'SETSLOT', slot, 'IMPORTING', fromId]);
    await ok(from, ['CLUSTER', 'SETSLOT', slot, 'MIGRATING', toId]);
    let keys = 0;
    let batches = 0;
    for (;;) {
      const ks = await ok(from, ['CLUSTER', 'GETKEYSINSLOT', slot, batch]);
      if (!ks.length) break;
      const r = await this.commandOn(from, ['MIGRATE', HOST, toPort, '', 0, 5000,
        ...(this.password ? ['AUTH', this.password] : []), 'KEYS', ...ks], { timeout: 8000 });
      if (r instanceof RedisError && !/NOKEY/.test(r.message)) {
        throw new Error(`MIGRATE of slot ${slot} ${from} -> ${toPort}: ${r.message}`);
      }
      keys += ks.length;
      batches++;
      if (pauseMs) await sleep(pauseMs);
    }
    // The target first (it then owns the slot and bumps its epoch), then the
    // source (it stops sending ASK and sends MOVED), then the others.
    await ok(toPort, ['CLUSTER', 'SETSLOT', slot, 'NODE', toId]);
    await ok(from, ['CLUSTER', 'SETSLOT', slot, 'NODE', toId]);
    for (const port of this.masterPorts()) {
      if (port !== from && port !== toPort) await ok(port, ['CLUSTER', 'SETSLOT', slot, 'NODE', toId]);
    }
    await waitFor(async () => {
      for (const n of this.liveNodes()) {
        const r = await this.commandOn(n.port, ['CLUSTER', 'SLOTS'], { timeout: 1000 });
        if (parseClusterSlots(r).map[slot] !== toPort) return false;
      }
      return true;
    }, { timeout: timeoutMs, interval: 20, what: `every node sees slot ${slot} on ${toPort}` });
    this.slotMap[slot] = toPort;
    await this.refreshNodes();
    return { from, to: toPort, keys, batches, ms: Math.round(performance.now() - t0) };
  }

  /**
   * Start a stopped (killed) node again on its ports with its nodes.conf: it
   * rejoins (a killed master comes back as a replica of the one that took
   * over).  Waits until the cluster is healthy again with it.
   */
  async restartNode(port, { timeoutMs = 20000 } = {}) {
    const n = this.node(port);
    if (n.alive) throw new Error(`rediscluster: node ${port} is running`);
    await n.start();
    await this.waitHealthy({ timeoutMs });
    return n.describe();
  }

  // ---- measurements --------------------------------------------------------

  /**
   * INFO commandstats of every live node: [{port, id, role, calls: {cmd: n},
   * total, bus}] (command names lower case as Redis prints them, e.g.
   * 'publish', 'evalsha', 'cluster|slots'; bus: the node's cluster-bus
   * message counters from CLUSTER INFO, e.g. publish_received, ping_sent).
   * resetStats() resets both.  A replica counts the writes it replays from
   * its master too: count a shard's load on its master.
   */
  async commandStats() {
    return Promise.all(this.liveNodes().map(async (n) => {
      const [text, info] = await redisPipeline(n.port, [['INFO', 'commandstats'], ['CLUSTER', 'INFO']], { auth: this.auth });
      const calls = {};
      let total = 0;
      for (const line of String(text).split('\r\n')) {
        const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
        if (m) { calls[m[1]] = Number(m[2]); total += Number(m[2]); }
      }
      // A PUBLISH reaches the other nodes over the cluster bus, not as a
      // command: those count here (publish_sent / publish_received).
      // CONFIG RESETSTAT leaves these alone: counted from resetStats()'s snapshot.
      const bus = {};
      const base = this._busBase.get(n.port) ?? {};
      for (const [k, v] of Object.entries(infoFields(info))) {
        const m = /^cluster_stats_messages_(.+)$/.exec(k);
        if (m) bus[m[1]] = Number(v) - (base[m[1]] ?? 0);
      }
      return { port: n.port, id: n.id, role: n.role, calls, total, bus };
    }));
  }

  /** CONFIG RESETSTAT on every live node, and a snapshot of its bus
   *  counters: commandStats() counts from here. */
  async resetStats() {
    await Promise.all(this.liveNodes().map(async (n) => {
      const [info] = await redisPipeline(n.port, [['CLUSTER', 'INFO'], ['CONFIG', 'RESETSTAT']], { auth: this.auth });
      const base = {};
      for (const [k, v] of Object.entries(infoFields(info))) {
        const m = /^cluster_stats_messages_(.+)$/.exec(k);
        if (m) base[m[1]] = Number(v);
      }
      this._busBase.set(n.port, base);
    }));
  }

  // ---- stop ----------------------------------------------------------------

  /** Kill every node, remove the temp dirs. Idempotent. */
  async stop() {
    if (this.stopped) return;
    this.stopped = true;
    if (this._exitHook) process.removeListener('exit', this._exitHook);
    await Promise.all(this._nodes.filter(Boolean).map((n) => n.proc?.stop({ signal: 'SIGKILL', timeout: 3000 })));
    if (this.ownStack) await this.stack.cleanup();
    else if (this.dir && process.env.IMB_TEST_KEEP !== '1') fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * startRedisCluster([stack], {masters=3, replicasPer=1, nodeTimeoutMs=1000, password, extraArgs, create=true})
 *   -> RedisCluster, healthy (every node cluster_state:ok, all agree on the
 *   slots, every replica synced).  password: requirepass + masterauth on
 *   every node; extraArgs: more redis-server arguments for every node (e.g.
 *   ['--cluster-require-full-coverage', 'no']); create: false starts the
 *   nodes only (e.g. to test a script that creates the cluster; then
 *   waitHealthy()).
 * With a Stack the nodes are its processes (their output in its failure
 * report) and stop() also runs at its cleanup; without one the cluster keeps
 * a private one.  Either way a node still alive when node exits is killed
 * and the temp dirs removed.
 */
export async function startRedisCluster(stackOrOpts, maybeOpts) {
  const given = stackOrOpts && typeof stackOrOpts.spawn === 'function' ? stackOrOpts : null;
  const opts = (given ? maybeOpts : stackOrOpts) ?? {};
  const { masters = 3, replicasPer = 1, nodeTimeoutMs = 1000, password, extraArgs, create = true } = opts;
  if (masters < 3) throw new Error('redis-cli --cluster create needs at least 3 masters');
  const stack = given ?? new Stack(`redis-cluster-${crypto.randomBytes(3).toString('hex')}`);
  const c = new RedisCluster(stack, { masters, replicasPer, nodeTimeoutMs, password, extraArgs, ownStack: !given });
  if (given) given.onCleanup('redis cluster', () => c.stop());
  // Last resort (Proc already SIGKILLs live children at exit): the dirs.
  c._exitHook = () => {
    if (c.dir && process.env.IMB_TEST_KEEP !== '1') {
      try { fs.rmSync(c.dir, { recursive: true, force: true }); } catch { /* ignore */ }
    }
  };
  process.on('exit', c._exitHook);
  try {
    await c._start({ create });
  } catch (e) {
    const tails = c._nodes.filter(Boolean).map((n) => n.proc?.tail(2000) ?? '').join('');
    await c.stop();
    e.message += `\n${tails}`;
    throw e;
  }
  return c;
}
