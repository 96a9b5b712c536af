// bench/idle-login.mjs - how long phones wait to log in on a bridge that was
// idle: starts Redis, Prosody, one edge and xmppd (2 workers) with the test
// harness, lets everything sit idle, then logs in 26 phones in two batches
// of 13 and prints the total and the slowest logins.
//   node bench/idle-login.mjs [--idle-ms 2000] [--runs 5]
import { Stack, startBridge, connectPhone, sleep } from '../tests/harness/index.mjs';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const IDLE_MS = arg('idle-ms', 2000);
const RUNS = arg('runs', 5);

const totals = [];
for (let r = 0; r < RUNS; r++) {
  const st = new Stack('idle-login');
  try {
    const users = Array.from({ length: 26 }, (_, i) => [`u${i}`, `pw-u${i}`]);
    const b = await startBridge(st, { users, workers: 2 });
    await sleep(IDLE_MS);
    const t0 = Date.now();
    const each = [];
    for (let i = 0; i < users.length; i += 13) {
      await Promise.all(users.slice(i, i + 13).map(async ([u, pw]) => {
        const p = await connectPhone(st, b.edge.port, u);
        const s = Date.now();
        await p.login(`${u}@localhost`, pw);
        each.push(Date.now() - s);
      }));
    }
    const total = Date.now() - t0;
    totals.push(total);
    each.sort((x, y) => y - x);
    console.log(`run ${r + 1}: 26 logins in ${total} ms; slowest ${each.slice(0, 3).join(', ')} ms`);
  } finally {
    await st.cleanup();
  }
}
totals.sort((x, y) => x - y);
console.log(`median ${totals[Math.floor(totals.length / 2)]} ms (${totals[0]}–${totals[totals.length - 1]}) after ${IDLE_MS} ms idle`);
