// Faults that production meets every week, each on its own under a steady
// numbered chat load (tests/harness/faultrun.mjs: nothing lost, nothing shown
// twice, every phone message answered, the counts and the worst stall
// printed).
import assert from 'node:assert/strict';
import { itest, runFaults, startBridge, sleep, descendantPids } from '../harness/index.mjs';

const N = Number(process.env.IMB_FAULT_USERS || 4);
const M = Number(process.env.IMB_FAULT_MSGS || 40);
const PACE = [80, 160]; // ms between one sender's messages

/** Redis restarted empty (no persistence): every counter, inbox and lease gone. */
const restartRedisEmpty = async ({ redis }) => {
  const t1 = Date.now();
  await redis.stop();
  await redis.start();
  return `redis down ${Date.now() - t1} ms, ${await redis.command('DBSIZE')} keys after restart`;
};

// A forgotten numbering: the phone learns of the new epoch (sync with reset)
// before any message numbered in it, so a client that drops a seq it already
// stored (PROTOCOL.md section 8) loses nothing; what the bridge had stored
// lately is stored again in the new numbering (Redis drops what it was still
// sending to subscribers when it stops, and the inbox of phones that were
// away), and phones drop by id what they already had. Each restart also
// breaks every Redis link: the answers owed to phones (acks, login answers)
// that reach nobody while the edges resubscribe are sent again.
itest('fault: Redis restarted without persistence, with phones connected and with phones away', { timeout: 150000 }, (t, stack) => runFaults(t, stack, {
  users: N,
  msgs: M,
  pace: PACE,
  appendonly: false,
  allowReset: true,
  maxStallMs: 5000,
  steps: [
    { at: 0.3, name: 'restart Redis empty', run: restartRedisEmpty },
    { at: 0.5, name: 'restart Redis empty again', run: restartRedisEmpty },
    {
      at: 0.7,
      name: 'drop every phone, restart Redis empty while they are away',
      run: async (ctx) => {
        for (const p of ctx.phones) p.drop({ rst: true });
        await sleep(50);
        return restartRedisEmpty(ctx);
      },
    },
  ],
}));

// Desktop clients that number their messages per session (1, 2, 3... again
// after every reconnect) or reuse an id: each distinct message reaches the
// phone once; a true resend (same sender, id and text) still once.
itest('fault: a desktop client that reuses message ids loses nothing', { timeout: 60000 }, async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  const sent = [];
  let bob = await b.desktop('bob');
  for (let i = 1; i <= 5; i++) {
    await bob.send('alice@localhost', `first session #${i}`, { id: String(i) });
    sent.push(`first session #${i}`);
  }
  await bob.send('alice@localhost', 'same id, new text', { id: '5' });
  sent.push('same id, new text');
  await bob.stop();
  bob = await b.desktop('bob'); // a new session numbers from 1 again
  for (let i = 1; i <= 5; i++) {
    await bob.send('alice@localhost', `second session #${i}`, { id: String(i) });
    sent.push(`second session #${i}`);
  }
  await bob.send('alice@localhost', 'second session #5', { id: '5' }); // a true resend
  await bob.send('alice@localhost', 'the end', { id: 'end' });
  await alice.nextMsg({ body: 'the end' }, 10000);
  await sleep(300);
  const got = alice.frames.filter((f) => f.t === 'msg').map((f) => f.body);
  t.diagnostic(`sent ${sent.length + 2} stanzas (${sent.length + 1} distinct), the phone got ${got.length}`);
  for (const body of sent) assert.equal(got.filter((x) => x === body).length, 1, `"${body}" once: ${JSON.stringify(got)}`);
  assert.equal(got.length, sent.length + 1);
});

const LEASE_MS = 3000;

/** SIGSTOP every process of an xmppd (supervisor and workers) for ms, then
 * SIGCONT: a VM pause, a swap storm, a partition that heals. */
const freezeXmppd = (ms) => async ({ xmppds }) => {
  const victim = xmppds[Math.floor(Math.random() * xmppds.length)];
  const pids = [victim.pid, ...descendantPids(victim.pid)];
  for (const pid of pids) process.kill(pid, 'SIGSTOP');
  await sleep(ms);
  for (const pid of pids) process.kill(pid, 'SIGCONT');
  return `froze ${victim.name} (pids ${pids.join(' ')}) for ${ms} ms`;
};

// A bridge that hangs longer than its lease and wakes up: its users move to
// another worker within lease + 2 s, and when it wakes it can no longer
// store, number or answer anything for them (fencing): nothing shown twice.
itest('fault: an xmppd frozen (SIGSTOP) past its lease, then woken (SIGCONT)', { timeout: 150000 }, (t, stack) => runFaults(t, stack, {
  users: N,
  msgs: 2 * M,
  pace: PACE,
  xmppdArgs: ['--lease-ms', String(LEASE_MS), '--resume-window', '20'],
  maxStallMs: LEASE_MS + 2000,
  noDuplicates: true,
  steps: [
    { at: 0.2, name: `freeze an xmppd for ${LEASE_MS + 2000} ms`, run: freezeXmppd(LEASE_MS + 2000) },
    { at: 0.5, name: `freeze an xmppd for ${LEASE_MS + 2000} ms`, run: freezeXmppd(LEASE_MS + 2000) },
  ],
}));

// The same, with Redis restarted empty during the freeze: the users' new
// owner has no archive id to catch up from, so what the server sent to the
// frozen session meanwhile exists only there. Waking, that session may no
// longer store it (fenced): it hands it to the owner (handover), which
// stores what it did not get itself. Before, those messages were lost. They
// come late (after newer ones, with their own time): that session held them
// while the owner went on.
itest('fault: an xmppd frozen past its lease while Redis restarts empty, then woken', { timeout: 150000 }, (t, stack) => runFaults(t, stack, {
  users: N,
  msgs: 2 * M,
  pace: PACE,
  appendonly: false,
  allowReset: true,
  allowLate: true,
  xmppdArgs: ['--lease-ms', String(LEASE_MS), '--resume-window', '20'],
  maxStallMs: LEASE_MS + 3000,
  steps: [
    {
      at: 0.3,
      name: `freeze an xmppd for ${LEASE_MS + 2000} ms, restart Redis empty meanwhile`,
      run: async (ctx) => {
        const victim = ctx.xmppds[Math.floor(Math.random() * ctx.xmppds.length)];
        const pids = [victim.pid, ...descendantPids(victim.pid)];
        for (const pid of pids) process.kill(pid, 'SIGSTOP');
        await sleep(300);
        const r = await restartRedisEmpty(ctx);
        await sleep(LEASE_MS + 1700);
        for (const pid of pids) process.kill(pid, 'SIGCONT');
        return `froze ${victim.name}; ${r}`;
      },
    },
  ],
}));

/** CLIENT KILL the Redis links whose name (CLIENT SETNAME: "imb-<bus>-<link>")
 * matches re; every link when re is omitted. */
const killRedisLinks = (re) => async ({ redis }) => {
  const list = String(await redis.command('CLIENT', 'LIST'));
  const victims = list.split('\n').map((l) => ({
    id: /\bid=(\d+)/.exec(l)?.[1], name: /\bname=(\S*)/.exec(l)?.[1] ?? '',
  })).filter((c) => c.id && /^imb-/.test(c.name) && (!re || re.test(c.name)));
  for (const c of victims) await redis.command('CLIENT', 'KILL', 'ID', c.id);
  return `killed ${victims.length} links: ${[...new Set(victims.map((c) => c.name.replace(/^imb-/, '')))].join(' ')}`;
};

// A broken Redis link (a proxy restart, a failover, CLIENT KILL): every
// process reconnects and resubscribes; every answer owed to a phone (ack,
// error, login answer) reaches it, or the phone is told to resend, and a
// resend is not delivered twice. The bridge's command link alone is the
// hard case: the edges see nothing wrong while the acks it was publishing
// are lost with the link.
itest('fault: Redis links killed: the bridge command links, then every link, repeatedly', { timeout: 150000 }, (t, stack) => runFaults(t, stack, {
  users: N,
  msgs: 2 * M,
  pace: PACE,
  maxStallMs: 5000,
  noDuplicates: true,
  minGapMs: 1000,
  steps: [
    ...[0.1, 0.2, 0.3, 0.4, 0.5].map((at) => ({
      at, name: 'CLIENT KILL every worker command link', run: killRedisLinks(/-w\d+\.\d+-cmd$/),
    })),
    ...[0.6, 0.7].map((at) => ({ at, name: 'CLIENT KILL every link', run: killRedisLinks() })),
  ],
}));

/** SIGSTOP for ms, then SIGCONT, the edge most phones are on; the load
 * balancer's health check takes it out meanwhile (as haproxy's would). */
const freezeEdge = (ms) => async ({ edges, phones }) => {
  const count = (e) => phones.filter((p) => p.sess?.port === e.port).length;
  const victim = [...edges].sort((a, b) => count(b) - count(a))[0];
  const on = count(victim);
  edges.splice(edges.indexOf(victim), 1);
  process.kill(victim.pid, 'SIGSTOP');
  await sleep(ms);
  process.kill(victim.pid, 'SIGCONT');
  edges.push(victim);
  return `froze ${victim.name} (pid ${victim.pid}, ${on} phones on it) for ${ms} ms`;
};

// An edge that hangs: its phones find their link dead (no answer within
// their own timeout, here 4 s) and resume on another edge; what the frozen
// edge still holds when it wakes reaches nobody twice.
itest('fault: an edge frozen (SIGSTOP) for 6 s, then woken', { timeout: 150000 }, (t, stack) => runFaults(t, stack, {
  users: N,
  msgs: 2 * M,
  pace: PACE,
  ackStallMs: 4000,
  allowStalls: true, // (the frozen edge's phones waiting out their own timeout)
  maxStallMs: 4000 + 2000,
  noDuplicates: true,
  steps: [{ at: 0.3, name: 'freeze an edge for 6 s', run: freezeEdge(6000) }],
}));
