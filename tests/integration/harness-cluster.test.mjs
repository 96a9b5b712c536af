// The Redis Cluster harness (tests/harness/rediscluster.mjs) against real
// redis-servers: a 3-master + 3-replica cluster comes up healthy in a few
// seconds; its keySlot() is Redis's own (CLUSTER KEYSLOT, hash tags and
// non-ASCII keys included); command() reaches the owning master; a kill -9
// of a master is followed by a replica's promotion, timed; a slot with keys
// in it migrates to another master while writers keep writing, and no acked
// write is lost; a killed master restarts as a replica; commandStats() counts
// commands per node, and the PUBLISH each node got over the cluster bus; stop() leaves no process and no temp dir.  A password-protected
// cluster works the same way.  Runs none of the project's binaries.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  itest, startRedisCluster, keySlot, tagForSlot, RedisError, PLAIN_RUN_ONLY, sleep, waitFor, redisCommand,
} from '../harness/index.mjs';

const NO_BINS = { bins: [], timeout: 60000, skip: PLAIN_RUN_ONLY };

function pidAlive(pid) {
  try { process.kill(pid, 0); return true; } catch (e) { return e.code === 'EPERM'; }
}

itest('redis cluster harness: start, keySlot, failover, slot migration under writes, stop', NO_BINS, async (t, stack) => {
  // -- start ---------------------------------------------------------------
  const t0 = Date.now();
  const c = await startRedisCluster(stack, { masters: 3, replicasPer: 1, nodeTimeoutMs: 1000 });
  const startMs = Date.now() - t0;
  const masters = c.nodes.filter((n) => n.role === 'master');
  const replicas = c.nodes.filter((n) => n.role === 'replica');
  t.diagnostic(`cluster up in ${startMs} ms: seeds ${c.seeds}; replicas ${replicas.map((r) => `${r.port}->${c.nodes.find((m) => m.id === r.masterId)?.port}`).join(' ')}`);
  assert.ok(startMs < 10000, `cluster up in ${startMs} ms (< 10 s)`);
  assert.equal(masters.length, 3);
  assert.equal(replicas.length, 3);
  assert.equal(c.seeds.split(',').length, 3);
  for (const s of c.seeds.split(',')) assert.ok(masters.some((m) => `127.0.0.1:${m.port}` === s), `seed ${s} is a master`);
  assert.deepEqual(new Set(replicas.map((r) => r.masterId)), new Set(masters.map((m) => m.id)), 'one replica per master');
  for (const n of c.nodes) assert.ok(n.pid > 0 && /^[0-9a-f]{40}$/.test(n.id), JSON.stringify(n));

  // -- keySlot = CLUSTER KEYSLOT --------------------------------------------
  assert.equal(keySlot('123456789'), 0x31c3 % 16384, 'CRC16/XMODEM check value');
  const keys = [
    'foo', 'bar', '', '{', '}', '{}', '{}x', 'x{}', 'foo{}{bar}', 'foo{{bar}}zap', 'foo{bar}{zap}', '{user1000}.following',
    '{user1000}.followers', 'imb:inbox:{alice@imbridge.local}', 'imb:lease:{alice@imbridge.local}',
    'imb:inbox:{élodie@exämple.org}', 'imb:seq:{日本語@例え.jp}', '{😀}', 'emoji😀{😀}', 'Straße{Ω}', 'a{b}c{d}',
  ];
  for (let i = 0; i < 60; i++) keys.push(`k${i}:${Math.random().toString(36).slice(2)}{${i % 7 ? `u${i}` : ''}}`);
  const anyMaster = masters[0].port;
  let slotMismatch = 0;
  for (const k of keys) {
    const theirs = await c.commandOn(anyMaster, ['CLUSTER', 'KEYSLOT', k]);
    if (theirs !== keySlot(k)) slotMismatch++;
    assert.equal(keySlot(k), theirs, `keySlot(${JSON.stringify(k)})`);
  }
  t.diagnostic(`keySlot checked against CLUSTER KEYSLOT for ${keys.length} keys: ${slotMismatch} mismatches`);

  // -- command(): the owner answers; another master redirects ----------------
  assert.equal(await c.command(['SET', 'imb:inbox:{élodie@exämple.org}', 'v1']), 'OK');
  assert.equal(await c.command(['GET', 'imb:inbox:{élodie@exämple.org}']), 'v1');
  assert.equal(await c.command(['EVAL', "return redis.call('GET', KEYS[1])", 1, 'imb:inbox:{élodie@exämple.org}'],
    { key: 'imb:inbox:{élodie@exämple.org}' }), 'v1', 'a script routed by its key');
  const fooSlot = keySlot('foo');
  const fooOwner = await c.masterForSlot(fooSlot);
  const other = masters.find((m) => m.port !== fooOwner).port;
  const moved = await c.commandOn(other, ['GET', 'foo']);
  assert.ok(moved instanceof RedisError && moved.message.startsWith(`MOVED ${fooSlot} 127.0.0.1:${fooOwner}`), String(moved));

  // -- commandStats() ---------------------------------------------------------
  await c.resetStats();
  for (let i = 0; i < 10; i++) await c.command(['SET', `{foo}:stat:${i}`, i]);
  const stats = await c.commandStats();
  const ownerStats = stats.find((s) => s.port === fooOwner);
  assert.equal(stats.length, 6);
  assert.ok(ownerStats.calls.set >= 10, JSON.stringify(ownerStats));
  t.diagnostic(`commandStats: SET calls by node ${stats.map((s) => `${s.port}(${s.role})=${s.calls.set ?? 0}`).join(' ')}`);
  // Classic pub/sub: one PUBLISH goes over the cluster bus to every other node.
  await c.resetStats();
  for (let i = 0; i < 7; i++) await c.commandOn(other, ['PUBLISH', 'imb:harness', `m${i}`]);
  const bus = await waitFor(async () => {
    const st = await c.commandStats();
    return st.every((s) => s.port === other || s.bus.publish_received === 7) && st;
  }, { timeout: 3000, what: 'every other node received the 7 PUBLISH over the bus' });
  const pub = bus.find((s) => s.port === other);
  assert.equal(pub.calls.publish, 7);
  assert.equal(pub.bus.publish_sent, 7 * 5);
  t.diagnostic(`7 PUBLISH on ${other}: bus publish_sent ${pub.bus.publish_sent}, publish_received by node ` +
    `${bus.filter((s) => s.port !== other).map((s) => `${s.port}=${s.bus.publish_received}`).join(' ')}`);

  // -- slot migration while writers write ------------------------------------
  const tag = tagForSlot(keySlot('imb-migration-test'), 'mig');
  const slot = keySlot(`{${tag}}`);
  const from = await c.masterForSlot(slot);
  const to = masters.find((m) => m.port !== from).port;
  const PRE = 600;
  for (let i = 0; i < PRE; i += 50) {
    const args = ['MSET'];
    for (let k = i; k < i + 50; k++) args.push(`{${tag}}:pre:${k}`, `p${k}`);
    assert.equal(await c.command(args), 'OK');
  }
  const redirectsBefore = { ...c.redirects };
  let stop = false;
  let seq = 0;
  const acked = [];
  let failed = 0;
  let duringMigration = 0;
  let migrating = false;
  const writer = async () => {
    while (!stop) {
      const i = seq++;
      try {
        const r = await c.command(['SET', `{${tag}}:w:${i}`, `v${i}`]);
        if (r === 'OK') {
          acked.push(i);
          if (migrating) duringMigration++;
        } else {
          failed++;
        }
      } catch {
        failed++;
      }
    }
  };
  const writers = [writer(), writer(), writer(), writer()];
  await sleep(150);
  migrating = true;
  const mig = await c.migrateSlot(slot, to, { batch: 25, pauseMs: 10 });
  migrating = false;
  await sleep(150);
  stop = true;
  await Promise.all(writers);
  const asks = c.redirects.ask - redirectsBefore.ask;
  const moves = c.redirects.moved - redirectsBefore.moved;
  let lost = 0;
  for (const i of acked) {
    if ((await c.command(['GET', `{${tag}}:w:${i}`])) !== `v${i}`) lost++;
  }
  for (let k = 0; k < PRE; k++) {
    if ((await c.command(['GET', `{${tag}}:pre:${k}`])) !== `p${k}`) lost++;
  }
  const onTarget = await c.commandOn(to, ['CLUSTER', 'COUNTKEYSINSLOT', slot]);
  const onSource = await c.commandOn(from, ['CLUSTER', 'COUNTKEYSINSLOT', slot]);
  t.diagnostic(`migrateSlot ${slot} ${from} -> ${to}: ${mig.keys} keys moved in ${mig.batches} batches, ${mig.ms} ms; ` +
    `writes sent ${seq}, acked ${acked.length} (${duringMigration} during the migration), failed ${failed}, ` +
    `ASK ${asks}, MOVED ${moves}; keys in slot: target ${onTarget}, source ${onSource}; lost ${lost}`);
  assert.equal(failed, 0, 'no write failed');
  assert.equal(lost, 0, 'no acked write lost');
  assert.ok(duringMigration > 0, 'writes were acked during the migration');
  assert.ok(asks > 0, 'writers met ASK during the migration');
  // ASK is followed with ASKING on the target: without it the target sends
  // MOVED back to the source, which sends ASK again (hundreds of MOVED).
  assert.ok(moves < 20, `MOVED only once the slot changed hands (${moves})`);
  assert.ok(mig.keys >= PRE, `the migration moved the preloaded keys (${mig.keys})`);
  assert.equal(onSource, 0);
  assert.equal(onTarget, PRE + acked.length);
  assert.equal(await c.masterForSlot(slot), to);

  // -- kill -9 of a master, failover -------------------------------------------
  const victim = await c.masterForSlot(fooSlot);
  const victimId = c.nodes.find((n) => n.port === victim).id;
  const itsReplica = c.nodes.find((n) => n.masterId === victimId).port;
  for (let i = 0; i < 20; i++) await c.command(['SET', `{foo}:f:${i}`, `f${i}`]);
  assert.equal(await c.commandOn(victim, ['WAIT', 1, 2000]), 1, 'the replica has the writes before the kill');
  // A writer on the slot keeps going through the failover: command() retries
  // (CLUSTERDOWN, refused connections) until the replica has taken over.
  const retriesBefore = c.redirects.retries;
  let wStop = false;
  let wAcked = 0;
  let wFailed = 0;
  let worstGap = 0;
  let lastAck = Date.now();
  const failWriter = (async () => {
    for (let i = 0; !wStop; i++) {
      try {
        if ((await c.command(['SET', `{foo}:w:${i}`, i], { timeoutMs: 15000 })) === 'OK') wAcked++; else wFailed++;
        worstGap = Math.max(worstGap, Date.now() - lastAck);
        lastAck = Date.now();
      } catch {
        wFailed++;
      }
    }
  })();
  await sleep(200);
  const killedAt = await c.killMaster(victim);
  assert.ok(Math.abs(Date.now() - killedAt) < 5000);
  const fo = await c.waitFailover(fooSlot, { timeoutMs: 15000 });
  await sleep(300);
  wStop = true;
  await failWriter;
  t.diagnostic(`killMaster ${victim}: replica ${fo.port} promoted, slot ${fooSlot} served again after ${fo.ms} ms ` +
    `(node timeout ${c.nodeTimeoutMs} ms); a writer on the slot: acked ${wAcked}, failed ${wFailed}, ` +
    `worst gap ${worstGap} ms, ${c.redirects.retries - retriesBefore} retries`);
  assert.equal(wFailed, 0, 'the writer waited out the failover');
  assert.ok(c.redirects.retries > retriesBefore, 'command() retried during the failover');
  assert.equal(fo.port, itsReplica);
  assert.equal(fo.promotedFrom, victim);
  assert.ok(fo.ms < 10000, `failover in ${fo.ms} ms`);
  assert.equal(c.nodes.find((n) => n.port === fo.port).role, 'master');
  assert.equal(c.nodes.find((n) => n.port === victim).alive, false);
  let failLost = 0;
  for (let i = 0; i < 20; i++) if ((await c.command(['GET', `{foo}:f:${i}`])) !== `f${i}`) failLost++;
  assert.equal(failLost, 0, 'writes replicated before the kill survive it');

  // -- the killed master comes back as a replica ------------------------------
  const back = await c.restartNode(victim);
  t.diagnostic(`restartNode ${victim}: back as ${back.role} of ${c.nodes.find((n) => n.id === back.masterId)?.port}`);
  assert.equal(back.role, 'replica');
  assert.equal(back.masterId, c.nodes.find((n) => n.port === fo.port).id);

  // -- stop ---------------------------------------------------------------------
  const pids = c.nodes.map((n) => n.pid);
  const dir = c.dir;
  await c.stop();
  await c.stop(); // idempotent
  const alive = pids.filter(pidAlive);
  t.diagnostic(`stop(): ${pids.length} pids, ${alive.length} still alive; temp dir ${fs.existsSync(dir) ? 'kept' : 'removed'}`);
  assert.deepEqual(alive, []);
  if (process.env.IMB_TEST_KEEP !== '1') assert.equal(fs.existsSync(dir), false);
});

itest('redis cluster harness: a password-protected cluster (requirepass + masterauth)', NO_BINS, async (t) => {
  // No stack: the cluster keeps its own and stop() cleans it up.
  const t0 = Date.now();
  const c = await startRedisCluster({ password: 'cluster-secret', nodeTimeoutMs: 1000 });
  try {
    t.diagnostic(`password cluster up in ${Date.now() - t0} ms: ${c.seeds}`);
    const port = c.nodes[0].port;
    const noauth = await redisCommand(port, ['PING']);
    assert.ok(noauth instanceof RedisError && /NOAUTH/.test(noauth.message), String(noauth));
    assert.equal(await c.command(['SET', '{pw}k', 'v']), 'OK');
    assert.equal(await c.command(['GET', '{pw}k']), 'v');
    // The replicas synced with masterauth (waitHealthy checked their links).
    assert.equal(c.nodes.filter((n) => n.role === 'replica').length, 3);
    const owner = await c.masterForSlot(keySlot('{pw}'));
    assert.equal(await c.commandOn(owner, ['WAIT', 1, 2000]), 1);
  } finally {
    const pids = c.nodes.map((n) => n.pid);
    await c.stop();
    assert.deepEqual(pids.filter(pidAlive), []);
  }
});
