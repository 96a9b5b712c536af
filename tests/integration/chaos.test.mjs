// Failure injection: the delivery guarantees of docs/ARCHITECTURE.md
// ("Guarantees") under fire.  N phone apps and N desktop users chat (the
// load and the verdict: tests/harness/faultrun.mjs) while phone sockets
// drop, an edge and a whole imb-xmppd are killed -9 (and replaced), Redis
// (AOF, fsync always) restarts and Prosody restarts.
//
// Knobs (env): IMB_CHAOS_USERS (N, default 6), IMB_CHAOS_MSGS (M, default 60),
// IMB_CHAOS_ALLOW_STALLS=1: a phone message that gets neither ack nor error
// (the phone then reconnects and resends it after 8 s) is reported but does
// not fail the test.
import { itest, killHard, runFaults } from '../harness/index.mjs';

const N = Number(process.env.IMB_CHAOS_USERS || 6);
const M = Number(process.env.IMB_CHAOS_MSGS || 60);

const pick = (a) => a[Math.floor(Math.random() * a.length)];
const shuffled = (a) => a.map((x) => [Math.random(), x]).sort((x, y) => x[0] - y[0]).map(([, x]) => x);

const dropSockets = (n, rst) => ({ phones }) => {
  const victims = shuffled(phones).filter((p) => p.sess && !p.sess.conn.isClosed).slice(0, n);
  for (const p of victims) p.drop({ rst });
  return `dropped ${victims.map((p) => p.name).join(' ')}`;
};
const killEdge = async (ctx) => {
  const victim = pick(ctx.edges);
  ctx.edges.splice(ctx.edges.indexOf(victim), 1); // out of the load balancer first
  await killHard(victim);
  const fresh = await ctx.startEdge();
  ctx.edges.push(fresh);
  return `killed ${victim.name} (port ${victim.port}); started ${fresh.name} on ${fresh.port}`;
};
const killXmppd = async (ctx) => {
  const victim = pick(ctx.xmppds);
  ctx.xmppds.splice(ctx.xmppds.indexOf(victim), 1);
  const pids = await killHard(victim);
  const fresh = await ctx.startXmppd();
  ctx.xmppds.push(fresh);
  return `killed ${victim.name} (pids ${pids.join(' ')}); started ${fresh.name}`;
};
const restartRedis = async ({ redis }) => {
  const t1 = Date.now();
  await redis.stop();
  await redis.start();
  const len = await redis.command('DBSIZE');
  return `redis down ${Date.now() - t1} ms, ${len} keys after restart`;
};
const restartProsody = async ({ prosody }) => {
  const t1 = Date.now();
  await prosody.stop();
  await prosody.start();
  return `prosody down ${Date.now() - t1} ms`;
};

itest(`chaos: ${N} phones + ${N} desktops x ${M} messages survive drops, kill -9 of an edge and an xmppd, ` +
  'Redis and Prosody restarts; nothing lost, nothing doubled, in order', { timeout: 150000 }, (t, stack) => runFaults(t, stack, {
  users: N,
  msgs: M,
  allowStalls: process.env.IMB_CHAOS_ALLOW_STALLS === '1',
  steps: [
    { at: 0.06, name: 'drop 2 phone sockets', run: dropSockets(2, false) },
    { at: 0.11, name: 'drop 3 phone sockets (RST)', run: dropSockets(3, true) },
    { at: 0.16, name: 'drop 2 phone sockets', run: dropSockets(2, false) },
    { at: 0.24, name: 'kill -9 an edge, start a new one', run: killEdge },
    { at: 0.38, name: 'kill -9 a whole xmppd, start a replacement', run: killXmppd },
    { at: 0.52, name: 'restart Redis (AOF)', run: restartRedis },
    { at: 0.66, name: 'restart Prosody', run: restartProsody },
  ],
}));
