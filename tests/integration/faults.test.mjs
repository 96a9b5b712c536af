// Faults that production meets every week, each on its own under a steady
// numbered chat load (tests/harness/faultrun.mjs: nothing lost, nothing shown
// twice, every phone message answered, the counts and the worst stall
// printed).
import { itest, runFaults } from '../harness/index.mjs';

const N = Number(process.env.IMB_FAULT_USERS || 4);
const M = Number(process.env.IMB_FAULT_MSGS || 40);

/** Redis restarted empty (no persistence): every counter, inbox and lease gone. */
const restartRedisEmpty = async ({ redis }) => {
  const t1 = Date.now();
  await redis.stop();
  await redis.start();
  return `redis down ${Date.now() - t1} ms, ${await redis.command('DBSIZE')} keys after restart`;
};

// A forgotten numbering: the phone learns of the new epoch (sync with reset)
// before any message numbered in it, so a client that drops a seq it already
// stored (PROTOCOL.md section 8) loses nothing. Each restart also breaks
// every Redis link: the answers owed to phones (acks, login answers) that
// reach nobody while the edges resubscribe are sent again.
// (Phones away while Redis loses their inbox lose what it held: see
// docs/ARCHITECTURE.md, "Redis without persistence".)
itest('fault: Redis restarted without persistence while phones are connected', { timeout: 150000 }, (t, stack) => runFaults(t, stack, {
  users: N,
  msgs: M,
  appendonly: false,
  allowReset: true,
  maxStallMs: 5000,
  steps: [
    { at: 0.3, name: 'restart Redis empty', run: restartRedisEmpty },
    { at: 0.6, name: 'restart Redis empty again', run: restartRedisEmpty },
  ],
}));
