// The whole stack on a Redis Cluster (3 masters + 3 replicas, real
// redis-server processes: tests/harness/rediscluster.mjs): the services find
// the slot map from the seeds, send each user's commands to the master of the
// user's slot, and keep their channels on the masters of the channels' slots
// (docs/ARCHITECTURE.md, "Redis Cluster"). Then the faults a cluster adds: a
// master killed under load (its replica promoted), a busy user's slot
// migrated to another master under load. Counts and stalls are printed
// (tests/harness/faultrun.mjs).
import assert from 'node:assert/strict';
import {
  itest, runFaults, startBridge, startEdge, startRedisCluster, connectPhone, waitFor, sleep,
  binPath, randomCredKey, killHard,
} from '../harness/index.mjs';
import { spawnSync } from 'node:child_process';

const N = Number(process.env.IMB_FAULT_USERS || 4);
const M = Number(process.env.IMB_FAULT_MSGS || 40);
const PACE = [80, 160];

/** Messages among a phone's pending frames, waiting for n of them. */
async function msgs(phone, n) {
  await waitFor(() => phone.pending().filter((f) => f.t === 'msg').length >= n,
    { timeout: 8000, what: `${n} messages` });
  return phone.pending().filter((f) => f.t === 'msg');
}

/** Redis commands of each master since resetStats(), one line each. */
async function perShard(cluster, say) {
  const stats = await cluster.commandStats();
  const rows = [];
  for (const n of stats.filter((s) => s.role === 'master')) {
    const c = n.calls;
    const app = ['evalsha', 'publish', 'hset', 'hget', 'hgetall', 'hmget', 'get', 'zadd', 'zrange',
      'zrangebyscore', 'expire', 'pexpire', 'incr', 'hkeys', 'lpush', 'ltrim', 'hdel', 'set', 'del']
      .reduce((s, k) => s + (c[k] ?? 0), 0);
    rows.push({ port: n.port, evalsha: c.evalsha ?? 0, publish: c.publish ?? 0, app });
    say(`  master ${n.port}: evalsha ${c.evalsha ?? 0}, publish ${c.publish ?? 0}, ` +
      `data commands ${app}, cluster|slots ${c['cluster|slots'] ?? 0}`);
  }
  return rows;
}

itest('cluster: chat both ways and a resume on another edge; users spread over the masters; imtap on one seed sees it all', { bins: ['imb-edge', 'imb-xmppd', 'imtap'], timeout: 90000 }, async (t, stack) => {
  const say = (s) => t.diagnostic(s);
  const cluster = await startRedisCluster(stack);
  say(`cluster up: masters ${cluster.masterPorts().join(' ')}, seeds ${cluster.seeds}`);
  // Phones p1..p4 and desktops d1..d4 (one device kind per account: a
  // desktop of the same account would add carbon copies to the numbering).
  const users = ['p1', 'p2', 'p3', 'p4'];
  const accounts = users.flatMap((u) => [[u, 'secret'], [`d${u.slice(1)}`, 'secret']]);
  const b = await startBridge(stack, { cluster, users: accounts, xmppdArgs: ['--resume-window', '30'] });
  const edge2 = await startEdge(stack, {
    redisPort: cluster.masterPorts()[0], credKey: b.credKey, extraArgs: ['--redis-cluster', cluster.seeds],
  });
  // imtap listens on one seed: a cluster forwards every PUBLISH to every
  // node, the ones made on other masters and inside scripts included.
  const tap = stack.spawn('imb-tap', binPath('imtap'), ['--redis-cluster', cluster.seeds]);
  await tap.waitForLine(/subscribed imb:\* on/, { timeout: 5000 });
  await cluster.resetStats();
  const slots = users.map((u) => cluster.keySlot(`{${b.jid(u)}}`));
  const owners = await Promise.all(slots.map((s) => cluster.masterForSlot(s)));
  say(`user slots: ${users.map((u, i) => `${u} ${slots[i]} on ${owners[i]}`).join(', ')}`);

  // Each phone pi chats with desktop di both ways.
  const phones = {};
  const desks = {};
  const desk = (u) => `d${u.slice(1)}`;
  for (const u of users) desks[u] = await b.desktop(desk(u));
  for (const u of users) phones[u] = await b.loginPhone(u);
  let sent = 0;
  let acked = 0;
  let delivered = 0;
  for (const u of users) {
    for (let k = 1; k <= 5; k++) {
      sent++;
      const a = await phones[u].msg(b.jid(desk(u)), `${u}->${desk(u)} #${k}`, { id: `${u}-${k}` });
      assert.deepEqual(a, { t: 'ack', id: `${u}-${k}` });
      acked++;
      await desks[u].nextMessage({ body: `${u}->${desk(u)} #${k}` }, 5000);
      delivered++;
    }
  }
  for (const u of users) {
    for (let k = 1; k <= 5; k++) { sent++; await desks[u].send(b.jid(u), `${desk(u)}->${u} #${k}`); }
  }
  for (const u of users) {
    const got = await msgs(phones[u], 5);
    assert.deepEqual(got.map((f) => f.seq), [1, 2, 3, 4, 5], `${u}: numbered 1..5`);
    delivered += got.length;
  }
  say(`chat: sent ${sent}, phone messages acked ${acked}, delivered ${delivered}, lost ${sent - delivered}`);
  assert.equal(delivered, sent);
  // What the tap on one node saw: each kind of envelope, whichever master
  // took it (logins and phone messages on the workers' channels, acks and
  // stored messages on the edges').
  for (const re of [/ w:\S+ login p1@localhost -> - .*cred=<sealed>/, / w:\S+ chat p1@localhost -> d1@localhost /,
    / e:\S+ ack - -> p1@localhost /, / e:\S+ chat d1@localhost\/\S+ -> p1@localhost /,
    / w:\S+ chat p4@localhost -> d4@localhost /, / e:\S+ chat d4@localhost\/\S+ -> p4@localhost /]) {
    await tap.waitForLines(re, { stream: 'stdout', timeout: 5000 });
  }
  say(`imtap on ${cluster.seeds.split(',')[0]}: ${tap.lines('stdout').filter(Boolean).length} envelopes shown`);

  // p1 acks 3 of 5 and goes away; 3 more come; it resumes on edge 2.
  const p1 = phones.p1;
  const sync = p1.pending().filter((f) => f.t === 'sync' && f.epoch).pop();
  assert.ok(sync, 'a sync frame with the epoch came before the numbered messages');
  p1.send({ t: 'ack', seq: 3 });
  await sleep(200);
  p1.destroy();
  for (let k = 6; k <= 8; k++) await desks.p1.send(b.jid('p1'), `d1->p1 #${k}`);
  await desks.p1.sync();
  const inbox = `imb:inbox:{${b.jid('p1')}}`;
  await waitFor(async () => Number(await cluster.command(['ZCARD', inbox])) >= 5,
    { timeout: 5000, what: 'the 3 new ones stored in p1\'s inbox' });
  const again = await connectPhone(stack, edge2.port, 'p1-again');
  await again.login(b.jid('p1'), b.pass('p1'), { epoch: sync.epoch, seq: 3 });
  const rest = again.pending().filter((f) => f.t === 'msg');
  assert.deepEqual(rest.map((f) => f.seq), [4, 5, 6, 7, 8], 'exactly the rest, in order');
  assert.equal(again.sync.epoch, sync.epoch, 'the numbering survived');
  say(`resume on edge 2: got seq ${rest.map((f) => f.seq).join(' ')} of epoch ${again.sync.epoch}`);

  // Every master carried part of the users' work, and every user's keys
  // stayed on one slot (a script over several slots would have failed).
  const rows = await perShard(cluster, say);
  for (const port of new Set(owners)) {
    assert.ok(rows.find((r) => r.port === port)?.evalsha > 0, `scripts ran on ${port}, owner of users' slots`);
  }
  for (const u of users) {
    const keys = (await Promise.all(cluster.masterPorts().map((p) => cluster.commandOn(p, ['KEYS', `*${b.jid(u)}*`])))).flat();
    const keySlots = new Set(keys.map((k) => cluster.keySlot(k)));
    assert.ok(keys.length >= 3, `${u}: keys ${keys}`);
    assert.deepEqual([...keySlots], [cluster.keySlot(`{${b.jid(u)}}`)], `${u}: every key on the user's slot: ${keys.join(' ')}`);
  }
  const errs = [b.edge, edge2, b.xmppd].flatMap((p) => p.lines('stderr').filter((l) => /CROSSSLOT|redis_cluster_map_failed|delivery_failed/.test(l)));
  assert.deepEqual(errs, []);
});

// A master dies (kill -9) while its slots are busy: the cluster promotes its
// replica after cluster-node-timeout. Commands to those slots fail meanwhile
// (the services retry them), the subscriptions on the dead master are lost
// (the bus reports itself down, then up once each channel is subscribed
// again on the slot's new master, and its owner catches up from the
// inboxes). Nothing acked is lost, nothing is shown twice, and every sender
// is chatting again within the failover time + 2 s.
itest('cluster fault: kill -9 of the master holding a busy user\'s slot, then of the one holding an edge\'s channel', { timeout: 180000 }, async (t, stack) => {
  const failovers = [];
  const killOwnerOf = (what, name) => async ({ redis }) => {
    const slot = redis.keySlot(name(redis));
    const port = await redis.masterForSlot(slot);
    await redis.killMaster(port);
    const f = await redis.waitFailover(slot);
    failovers.push(f.ms);
    return `${what}: slot ${slot}, master ${port} killed, replica ${f.port} serving it ${f.ms} ms later`;
  };
  let edgeId = '';
  const r = await runFaults(t, stack, {
    cluster: { masters: 3, replicasPer: 1, nodeTimeoutMs: 1000 },
    users: N,
    msgs: 2 * M,
    pace: PACE,
    noDuplicates: true,
    minGapMs: 1000,
    steps: [
      { at: 0.25, name: 'kill -9 the master of p1\'s slot', run: killOwnerOf('p1', () => '{p1@localhost}') },
      {
        at: 0.45,
        name: 'restart the killed master (it rejoins as a replica)',
        run: async ({ redis }) => {
          const k = redis.kills[redis.kills.length - 1];
          await redis.restartNode(k.port);
          return `node ${k.port} back: ${redis.nodes.find((n) => n.port === k.port).role}`;
        },
      },
      {
        at: 0.6,
        name: 'kill -9 the master of edge 1\'s channel',
        run: async (ctx) => {
          edgeId = /listening .*edge=(\w+)/.exec(ctx.edges[0].stderr)?.[1];
          assert.ok(edgeId, 'edge id from its log');
          return killOwnerOf(`edge ${edgeId}`, () => `imb:e:${edgeId}`)(ctx);
        },
      },
    ],
  });
  const bound = Math.max(...failovers) + 2000;
  t.diagnostic(`failovers: ${failovers.join(', ')} ms; worst stall ${r.worstStallMs} ms (${r.worstStallApp}), ` +
    `bound: failover + 2 s = ${bound} ms; duplicates ${r.duplicates}`);
  assert.ok(r.worstStallMs <= bound, `worst stall ${r.worstStallMs} ms over ${bound} ms`);
});

// A slot moves to another master with Redis's own protocol (IMPORTING /
// MIGRATING, MIGRATE in small batches with pauses) while its user chats: the
// services meet ASK for keys already moved, TRYAGAIN for a script whose keys
// are on both sides, and MOVED once it is done; the user's numbering, inbox
// and lease move with the slot, and its messages keep their order (a
// script retried after TRYAGAIN was once overtaken by the user's next one:
// 10 11 13 12). Then a bridge dies (kill -9): its users' leases expire on
// the cluster and the other bridge takes them over; then that one is stopped
// (SIGTERM) with a new bridge up, and hands its users over.
itest('cluster fault: a busy user\'s slot migrated to another master under load, then kill -9 of a bridge, then SIGTERM of the other', { timeout: 150000 }, async (t, stack) => {
  let moved = null;
  const r = await runFaults(t, stack, {
    cluster: { masters: 3, replicasPer: 0 },
    users: N,
    msgs: M,
    pace: PACE,
    // (A killed bridge may have copies the phones drop by id: counted, and
    // a message shown twice still fails the run.)
    minGapMs: 500,
    steps: [
      {
        at: 0.3,
        name: 'migrate p1\'s slot',
        run: async ({ redis }) => {
          const slot = redis.keySlot('{p1@localhost}');
          const from = await redis.masterForSlot(slot);
          const to = redis.masterPorts().find((p) => p !== from);
          moved = await redis.migrateSlot(slot, to, { batch: 1, pauseMs: 200 });
          return `slot ${slot}: ${moved.keys} keys from ${moved.from} to ${moved.to} in ${moved.batches} batches, ${moved.ms} ms`;
        },
      },
      {
        at: 0.6,
        name: 'kill -9 a whole xmppd',
        run: async (ctx) => {
          const victim = ctx.xmppds[0];
          ctx.xmppds.splice(0, 1);
          const pids = await killHard(victim);
          return `killed ${victim.name} (pids ${pids.join(' ')}); the other takes its users over`;
        },
      },
      {
        at: 0.8,
        name: 'start a bridge, SIGTERM the old one (it hands its users over)',
        run: async (ctx) => {
          const fresh = await ctx.startXmppd();
          const old = ctx.xmppds[0];
          ctx.xmppds.splice(0, 1, fresh);
          const r = await old.stop({ signal: 'SIGTERM', timeout: 8000 });
          return `started ${fresh.name}; ${old.name} stopped (code ${r.code})`;
        },
      },
    ],
  });
  const maps = r.procs.flatMap((p) => p.lines('stderr')).filter((l) => /redis_cluster_map /.test(l)).length;
  t.diagnostic(`migration: ${JSON.stringify(moved)}; worst stall ${r.worstStallMs} ms; duplicates ${r.duplicates}; ` +
    `slot maps re-read by the services: ${maps}`);
  assert.ok(moved.keys >= 3, `the user's keys moved with the slot (${moved.keys})`);
});

itest('cluster: a seed list that is not host:port is refused by --check-config', async () => {
  for (const bin of ['imb-edge', 'imb-xmppd']) {
    const r = spawnSync(binPath(bin), ['--check-config', '--cred-key', randomCredKey(),
      '--redis-cluster', '127.0.0.1:7000,127.0.0.1'], { encoding: 'utf8' });
    assert.equal(r.status, 2, `${bin}: ${r.stderr}`);
    assert.match(r.stderr, /redis_cluster: "127.0.0.1" is not host:port/);
  }
});
