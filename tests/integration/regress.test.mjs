// A user's numbering that goes backwards (tests/harness/faultrun.mjs: a
// steady numbered chat load; nothing lost, nothing shown twice, the counts
// and the worst stall printed). Redis comes back with an older copy of the
// counters: restarted from an older snapshot, or, in a Redis Cluster, a
// replica promoted before it got the last writes. The epoch is the same but
// the seq is below what the phones already have: messages numbered again
// under seqs the phones hold would be dropped as already seen. The writer
// knows the highest seq it stored: the numbering must move to a new epoch,
// and the phones resync (docs/ARCHITECTURE.md, "Lost numbering").
import { itest, runFaults, waitFor, userKey } from '../harness/index.mjs';

const N = Number(process.env.IMB_FAULT_USERS || 4);
const M = Number(process.env.IMB_FAULT_MSGS || 80);
const PACE = [80, 160]; // ms between one sender's messages

/** The counters of the phone users: "p1=12 p2=9 ...". */
async function counters(redis) {
  const out = [];
  for (let i = 1; i <= N; i++) {
    const seq = await redis.command('HGET', userKey('seq', `p${i}@localhost`), 'seq');
    out.push(`p${i}=${seq ?? '-'}`);
  }
  return out.join(' ');
}

/** kill -9 Redis and start it again on its port and dir: it loads the
 * dump.rdb the last SAVE wrote (appendonly no). */
async function restartFromSnapshot(redis) {
  const before = await counters(redis);
  redis.proc.kill('SIGKILL');
  await redis.proc.exited;
  await redis.start();
  return `counters ${before} before, ${await counters(redis)} after`;
}

const save = async ({ redis }) => {
  await redis.command('SAVE');
  return `dump.rdb with counters ${await counters(redis)}`;
};

// Twice: once with the phones connected (their edges see the bus come back
// and replay), once while they are away until more messages than they
// missed were numbered again (they come back positioned past the counter's
// restored value, and the server's head is past their position again).
itest('fault: Redis restarted from an older snapshot (the numbering goes back, same epoch)', { timeout: 150000 },
  (t, stack) => runFaults(t, stack, {
    users: N,
    msgs: M,
    pace: PACE,
    appendonly: false,
    allowReset: true,
    maxStallMs: 5000,
    steps: [
      { at: 0.1, name: 'SAVE a snapshot', run: save },
      {
        at: 0.25,
        name: 'kill -9 Redis, restart it from the older snapshot, phones connected',
        run: ({ redis }) => restartFromSnapshot(redis),
      },
      { at: 0.4, name: 'SAVE a snapshot again', run: save },
      {
        at: 0.55,
        name: 'phones away: kill -9 Redis, restart it from the older snapshot, more messages than they lost',
        run: async ({ redis, edges, phones, desktops }) => {
          const all = edges.splice(0); // the load balancer lists no edge
          for (const p of phones) p.drop({ rst: true });
          const had = phones.map((p) => p.maxSeq);
          const what = await restartFromSnapshot(redis);
          const restored = [];
          for (let i = 1; i <= N; i++) restored.push(Number(await redis.command('HGET', userKey('seq', `p${i}@localhost`), 'seq')));
          // Away until each desktop sent more than the numbers that went
          // back (its outbox may end first).
          const from = desktops.map((d) => d.confirmed.size);
          const t1 = Date.now();
          await waitFor(() => desktops.every((d, i) => d.outboxDone ||
            d.confirmed.size - from[i] > had[i] - restored[i] + 2), { timeout: 20000, interval: 50, what: 'desktops sending' });
          edges.push(...all);
          return `${what}; phones had ${had.join(' ')}, away ${Date.now() - t1} ms more while desktops sent ` +
            `${desktops.map((d, i) => d.confirmed.size - from[i]).join(' ')}; counters then ${await counters(redis)}`;
        },
      },
    ],
  }));
