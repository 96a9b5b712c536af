// A steady, numbered chat load between N phone apps p1..pN and N desktop
// users d1..dN (pi <-> di, M messages each way) through the whole stack,
// while a schedule of faults runs: the delivery guarantees of
// docs/ARCHITECTURE.md ("Guarantees") under fire.  The clients are the
// well-behaved ones of tests/harness/chaos.mjs (PROTOCOL.md section 8 for the
// phones; resend-until-pinged for the desktops).  Afterwards every user must
// have seen exactly the messages sent to it, each once, in order, no sync may
// report a loss (missed; reset only where allowReset says it is expected),
// no sender may wait longer than maxStallMs for its next ack, and with
// noDuplicates no app may have had to drop a copy by its id; allowLate lets
// a phone be shown a message after a newer one from the same sender (counted).  The
// counts (sent, acked, delivered, lost, duplicated, worst stall) are printed.
//
//   runFaults(t, stack, { steps: [{ at, name, run(ctx) }], ... })
// Each step fires once the traffic reached its mark (a fraction of all
// messages) and at least minGapMs after the previous one; ctx holds the
// stack's parts (redis, prosody, xmppds, edges, phones, desktops) and
// startXmppd() / startEdge() for replacements.
import assert from 'node:assert/strict';
import { startRedis } from './redis.mjs';
import { startRedisCluster } from './rediscluster.mjs';
import { startProsody } from './prosody.mjs';
import { startXmppd, startEdge, waitBridgeReady } from './services.mjs';
import { ReliablePhone, ReliableDesktop, BusTap } from './chaos.mjs';
import { randomCredKey, sleep, waitFor } from './util.mjs';

const PASS = 'secret';

/** BusTap on each of several Redis nodes (a cluster's masters), read as one. */
class MultiTap {
  constructor(ports) { this.taps = ports.map((p) => new BusTap(p).start()); }
  get connects() { return this.taps.reduce((n, t) => n + t.connects, 0); }
  find(...args) { return this.taps.flatMap((t) => t.find(...args)).sort((x, y) => x.at - y.at); }
  stop() { for (const t of this.taps) t.stop(); }
}

/** "k" numbers of `msgs` whose ids are "<prefix>-k" (NaN for other ids). */
const ksOf = (msgs, prefix) => msgs.map((m) => (typeof m.id === 'string' && m.id.startsWith(`${prefix}-`)
  ? Number(m.id.slice(prefix.length + 1)) : NaN));

/** Problems with an app-visible sequence of k: must be exactly 1..n, strictly
 * increasing (late: how many came after a later one, when lateOk; else each
 * such is a problem). */
function checkSequence(who, ks, n, late = null) {
  const problems = [];
  const want = new Set(Array.from({ length: n }, (_, i) => i + 1));
  const got = new Set(ks);
  const missing = [...want].filter((k) => !got.has(k));
  const extra = ks.filter((k) => !want.has(k));
  if (missing.length) problems.push(`${who}: missing k=${missing.join(',')}`);
  if (extra.length) problems.push(`${who}: unexpected k=${extra.join(',')}`);
  if (got.size !== ks.length) problems.push(`${who}: shown twice: ${ks.filter((k, i) => ks.indexOf(k) !== i).join(',')}`);
  let top = -Infinity;
  for (let i = 0; i < ks.length; i++) {
    if (ks[i] > top) { top = ks[i]; continue; }
    if (late) { late.count++; continue; }
    problems.push(`${who}: out of order at position ${i}: ... ${ks.slice(Math.max(0, i - 3), i + 3).join(' ')} ...`);
    break;
  }
  return problems;
}

/** Count each log event (4th field of the services' stderr lines) over procs. */
function eventCounts(procs, names) {
  const counts = Object.fromEntries(names.map((n) => [n, 0]));
  for (const p of procs) {
    for (const l of p.lines('stderr')) {
      const ev = /^\S+ \S+ \S+ (\w+)/.exec(l)?.[1];
      if (ev in counts) counts[ev]++;
    }
  }
  return counts;
}

export async function runFaults(t, stack, {
  users: N = 6, msgs: M = 60, pace = [150, 300], appendonly = true,
  xmppdArgs = ['--lease-ms', '3000', '--resume-window', '20'], edgeArgs = [],
  xmppds: nXmppds = 2, edges: nEdges = 2, workers = 2, steps,
  minGapMs = 2000, stepWaitMs = 30000, drainTimeoutMs = 40000, ackStallMs = 8000,
  allowStalls = false, allowReset = false, maxStallMs = 0, noDuplicates = false,
  allowLate = false, cluster = null,
} = {}) {
  const T0 = Date.now();
  const say = (s) => t.diagnostic(`+${((Date.now() - T0) / 1000).toFixed(1)}s ${s}`);
  const credKey = randomCredKey();
  const users = [];
  for (let i = 1; i <= N; i++) users.push([`p${i}`, PASS], [`d${i}`, PASS]);

  // ---- topology: Redis, Prosody, nXmppds x xmppd, nEdges x edge
  // cluster: a Redis Cluster (startRedisCluster options) in place of the
  // one Redis; ctx.redis is then the RedisCluster.
  const [redis, prosody] = await Promise.all([
    cluster ? startRedisCluster(stack, cluster) : startRedis(stack, { appendonly }),
    startProsody(stack, { users }),
  ]);
  const domain = prosody.domain;
  if (appendonly && !cluster) assert.deepEqual(await redis.command('CONFIG', 'GET', 'appendfsync'), ['appendfsync', 'always']);
  // The bus traffic, for failure reports (every master's, on a cluster).
  const tap = cluster ? new MultiTap(redis.masterPorts()) : new BusTap(redis.port).start();
  stack.onCleanup('bus tap', () => tap.stop());
  const redisPort = cluster ? redis.masterPorts()[0] : redis.port;
  const clusterArgs = cluster ? ['--redis-cluster', redis.seeds] : [];
  const xmppdOpts = {
    redisPort, xmppPort: prosody.c2sPort, workers, credKey, extraArgs: [...clusterArgs, ...xmppdArgs],
  };
  const edgeOpts = { redisPort, credKey, extraArgs: [...clusterArgs, ...edgeArgs] };
  const times = (n, f) => Promise.all(Array.from({ length: n }, f));
  const xmppds = await times(nXmppds, () => startXmppd(stack, xmppdOpts));
  const edges = await times(nEdges, () => startEdge(stack, edgeOpts));
  await Promise.all(edges.map((e) => waitBridgeReady(e.port, { domain })));
  const allXmppds = [...xmppds];
  const allEdges = [...edges];
  say(`stack up: redis ${cluster ? `cluster ${redis.seeds}` : redis.port}, prosody ${prosody.c2sPort}, edges ${edges.map((e) => e.port).join(' ')}`);

  // ---- the clients
  const t0 = Date.now();
  const liveEdges = () => edges.map((e) => e.port); // the load balancer's list
  const phones = [];
  const desktops = [];
  for (let i = 1; i <= N; i++) {
    const phone = new ReliablePhone({
      jid: `p${i}@${domain}`, pass: PASS, peer: `d${i}@${domain}`, count: M, edges: liveEdges, pace, t0,
      ackStallMs, stallIsViolation: !allowStalls, allowReset,
    });
    const desk = new ReliableDesktop({
      stack, user: `d${i}`, pass: PASS, domain, port: prosody.c2sPort, peer: `p${i}@${domain}`, count: M, pace, t0,
    });
    phones.push(phone);
    desktops.push(desk);
    stack.onCleanup(`phone app p${i}`, () => phone.stop(), () => phone.describe());
    stack.onCleanup(`desktop app d${i}`, () => desk.stop(), () => desk.describe());
  }
  const apps = [...phones, ...desktops];
  const sentCount = () => phones.reduce((n, p) => n + p.acked.size, 0) + desktops.reduce((n, d) => n + d.confirmed.size, 0);
  const progress = () => sentCount() / (2 * N * M);
  const violations = () => apps.flatMap((a) => a.violations);
  for (const d of desktops) d.start();
  for (const p of phones) p.start();

  // ---- the fault schedule: each step fires once the traffic reached its
  // mark (so every step hits flowing traffic whatever the machine's speed),
  // and at least minGapMs after the previous one ended.
  const ctx = {
    stack, redis, prosody, phones, desktops, xmppds, edges, allXmppds, allEdges, xmppdOpts, edgeOpts,
    /** Start one more xmppd / edge (tracked for the report; the caller puts it in xmppds / edges). */
    startXmppd: async () => { const x = await startXmppd(stack, xmppdOpts); allXmppds.push(x); return x; },
    startEdge: async () => { const e = await startEdge(stack, edgeOpts); allEdges.push(e); return e; },
  };
  const timeline = [];
  const ran = [];                        // {name, start, end}
  let lastEnd = Date.now();
  for (const step of steps) {
    const wait = Math.max(0, lastEnd + minGapMs - Date.now());
    if (wait) await sleep(wait);
    try {
      await waitFor(() => progress() >= step.at || violations().length > 0,
        { timeout: stepWaitMs, interval: 50, what: `traffic to reach ${Math.round(step.at * 100)}%` });
    } catch (e) {
      throw new Error(`traffic stuck at ${(progress() * 100).toFixed(1)}% before step "${step.name}": ${e.message}; ` +
        `violations: ${JSON.stringify(violations())}`);
    }
    const start = Date.now();
    const p = progress();
    const what = await step.run(ctx);
    lastEnd = Date.now();
    ran.push({ name: step.name, start, end: lastEnd });
    timeline.push(`+${((start - t0) / 1000).toFixed(1)}s at ${(p * 100).toFixed(0)}% ${step.name}: ${what} ` +
      `(${lastEnd - start} ms)`);
    say(`${step.name}: ${what}`);
  }
  const chaosEnd = Date.now();
  const progressAtEnd = progress();

  // ---- drain: every outbox confirmed, every receiver complete
  const complete = () => phones.every((p, i) => p.outboxDone && p.complete(`d${i + 1}`, M)) &&
    desktops.every((d, i) => d.outboxDone && d.complete(`p${i + 1}`, M));
  const doneAt = new Map();               // app name + ' out' / ' in' -> ms since t0
  const noteDone = () => {
    phones.forEach((p, i) => {
      if (p.outboxDone && !doneAt.has(`${p.name} out`)) doneAt.set(`${p.name} out`, Date.now() - t0);
      if (p.complete(`d${i + 1}`, M) && !doneAt.has(`${p.name} in`)) doneAt.set(`${p.name} in`, Date.now() - t0);
    });
    desktops.forEach((d, i) => {
      if (d.outboxDone && !doneAt.has(`${d.name} out`)) doneAt.set(`${d.name} out`, Date.now() - t0);
      if (d.complete(`p${i + 1}`, M) && !doneAt.has(`${d.name} in`)) doneAt.set(`${d.name} in`, Date.now() - t0);
    });
    return complete();
  };
  let drained = true;
  try {
    await waitFor(noteDone, { timeout: drainTimeoutMs, interval: 100, what: 'all messages through' });
  } catch {
    drained = false;
  }
  const drainedInMs = Date.now() - chaosEnd;
  const trafficMs = Date.now() - t0;
  await Promise.all(apps.map((a) => a.stop()));

  // ---- report
  say(`traffic ${trafficMs} ms; chaos ended at ${(progressAtEnd * 100).toFixed(0)}% of the messages; ` +
    `drain ${drained ? `${drainedInMs} ms` : `NOT DONE after ${drainTimeoutMs} ms`}`);
  for (const l of timeline) say(`  ${l}`);
  say(`done (s since traffic start; outbox/inbox): ${apps.map((a) => `${a.name} ` +
    `${((doneAt.get(`${a.name} out`) ?? NaN) / 1000).toFixed(1)}/${((doneAt.get(`${a.name} in`) ?? NaN) / 1000).toFixed(1)}`).join(', ')}`);
  const sum = (xs, f) => xs.reduce((n, x) => n + f(x), 0);
  say('per user: phone pi [acked/M, resends, msg errors, reconnects, replayed, dupId, dupSeq, received] ' +
    '| desktop di [confirmed/M, resends, reconnects, dupId, delayed, received]');
  for (let i = 0; i < N; i++) {
    const p = phones[i].stats;
    const d = desktops[i].stats;
    const errs = Object.values(p.errorsById).reduce((a, b) => a + b, 0);
    say(`  p${i + 1} [${phones[i].acked.size}/${M}, ${p.resends}, ${errs}, ${p.connects - 1}, ${p.replayed}, ` +
      `${p.dupIdDropped}, ${p.dupSeqDropped}, ${phones[i].visible.length}] | d${i + 1} [${desktops[i].confirmed.size}/${M}, ` +
      `${d.resends}, ${d.connects - 1}, ${d.dupIdDropped}, ${d.delayed}, ${desktops[i].visible.length}]`);
  }
  const P = (f) => sum(phones, (p) => f(p.stats));
  const D = (f) => sum(desktops, (d) => f(d.stats));
  const merge = (objs) => objs.reduce((acc, o) => { for (const [k, v] of Object.entries(o)) acc[k] = (acc[k] ?? 0) + v; return acc; }, {});
  say(`phones: sent ${sum(phones, (p) => p.acked.size)} (msg frames ${P((s) => s.msgFrames)}, resent ${P((s) => s.resends)}), ` +
    `received ${sum(phones, (p) => p.visible.length)} shown (${P((s) => s.received)} stored), ` +
    `replayed at login ${P((s) => s.replayed)} (in ${P((s) => s.replayLogins)} logins), ` +
    `dup dropped by id ${P((s) => s.dupIdDropped)}, by seq ${P((s) => s.dupSeqDropped)}; ` +
    `connects ${P((s) => s.connects)} (failed ${P((s) => s.connectFailures)}), logins ${P((s) => s.logins)}, ` +
    `login unavailable ${P((s) => s.loginUnavailable)}, msg errors ${JSON.stringify(merge(phones.map((p) => p.stats.errorsById)))}, ` +
    `other errors ${JSON.stringify(merge(phones.map((p) => p.stats.otherErrors)))}, byes ${JSON.stringify(merge(phones.map((p) => p.stats.byes)))}, ` +
    `stale answers ${P((s) => s.staleAnswers)}, stalls ${P((s) => s.stalls)}, max ack latency ${Math.max(...phones.map((p) => p.stats.ackLatencyMax))} ms`);
  say(`desktops: sent ${sum(desktops, (d) => d.confirmed.size)} (stanzas ${D((s) => s.sends)}, resent ${D((s) => s.resends)}), ` +
    `received ${sum(desktops, (d) => d.visible.length)} shown (${D((s) => s.received)} stanzas, ${D((s) => s.delayed)} from offline storage), ` +
    `dup dropped by id ${D((s) => s.dupIdDropped)}; reconnects ${D((s) => s.connects) - N} (failed attempts ${D((s) => s.connectFailures)})`);
  const syncLoss = phones.flatMap((p) => p.stats.syncLoss.map((f) => `${p.name}: ${JSON.stringify(f)}`));
  say(`sync frames ${P((s) => s.syncs)}, with missed/reset: ${syncLoss.length}${syncLoss.length ? ` ${syncLoss.join('; ')}` : ''}` +
    `, numbering resets followed: ${P((s) => s.resets)}`);
  const worst = apps.map((a) => [a.name, a.worstStall()]).sort((x, y) => y[1] - x[1]);
  say(`worst stall (longest time a sender waited for its next ack or confirmation): ${worst[0][1]} ms (${worst[0][0]}); ` +
    `next: ${worst.slice(1, 4).map(([n, ms]) => `${n} ${ms} ms`).join(', ')}`);
  say(`service events: ${JSON.stringify(eventCounts([...allEdges, ...allXmppds], [
    'numbering_reset', 'numbering_lost', 'numbering_went_back', 'delivery_fenced', 'publish_redelivered', 'publish_undelivered', 'relogin', 'relogin_ok', 'relogin_gave_up', 'session_online', 'session_reused', 'session_lost', 'login_forward',
    'lease_taken_over', 'lease_lost', 'login_worker_missing', 'replay_missed', 'replay_failed', 'delivery_failed',
    'delivery_dropped', 'redis_disconnected', 'session_connect_failed', 'envelope_invalid',
  ]))}`);

  // ---- verdict
  const problems = [...violations()];
  if (!drained) problems.push(`not drained within ${drainTimeoutMs} ms`);
  if (maxStallMs && worst[0][1] > maxStallMs) problems.push(`${worst[0][0]} waited ${worst[0][1]} ms (over ${maxStallMs} ms)`);
  // A copy the app recognised by its id is still a duplicate the server sent.
  const dups = P((s) => s.dupIdDropped) + D((s) => s.dupIdDropped);
  if (noDuplicates && dups) problems.push(`${dups} messages delivered twice (dropped by the apps by id)`);
  const late = allowLate ? { count: 0 } : null;
  for (let i = 0; i < N; i++) {
    const p = phones[i];
    const d = desktops[i];
    const pn = `p${i + 1}`;
    const dn = `d${i + 1}`;
    if (!p.outboxDone) problems.push(`${pn}: outbox not acked past k=${p.nextK - 1} (outstanding ${p.outstanding?.id})`);
    if (!d.outboxDone) problems.push(`${dn}: outbox not confirmed past k=${d.nextK - 1}`);
    problems.push(...checkSequence(`${pn} receiving from ${dn}`, ksOf(p.visible, dn), M, late));
    problems.push(...checkSequence(`${dn} receiving from ${pn}`, ksOf(d.visible, pn), M));
    for (const m of p.visible) {
      const k = Number(m.id?.slice(dn.length + 1));
      if (m.body !== `${dn}->${pn} #${k}` || !m.from?.startsWith(`${dn}@${domain}/`)) {
        problems.push(`${pn}: msg ${JSON.stringify(m)}`);
      }
    }
    const seqs = p.visible.map((m) => `${m.epoch}/${m.seq}`); // a reset starts a new numbering
    if (new Set(seqs).size !== seqs.length) problems.push(`${pn}: a seq shown twice`);
  }
  if (late) say(`shown late (after a newer one from the same sender): ${late.count}`);
  // Phone messages that got neither ack nor error: when, and what the bus
  // carried around them (Redis MONITOR).
  const show = (r) => {
    if (!r.env) return `+${r.at - t0}ms ${r.client} ${r.text.slice(0, 300)}`;
    const { v, ts, cred, ...rest } = r.env;
    return `+${r.at - t0}ms ${r.client} ${r.cmd} ${r.channel} ${JSON.stringify(rest)}`;
  };
  for (const p of phones) {
    for (const st of p.stalls) {
      const step = ran.filter((r) => r.start <= st.sentAt + 200).pop();
      say(`STALL ${st.id}: sent at +${st.sentAt - t0}ms on edge ${st.port}` +
        (step ? `, ${st.sentAt - step.start} ms after "${step.name}" began` : '') +
        `; no ack or error for ${st.ms} ms, the socket open; bus (Redis MONITOR, ${tap.connects} connections):`);
      const around = tap.find(`:${p.jid}`, { from: st.sentAt - 1000, to: st.sentAt + 3000 })
        .filter((r) => !r.text.includes(`"${st.id}"`) && r.env?.type !== 'chat' && !r.cmd.startsWith('EVAL'));
      for (const r of [...tap.find(`"${st.id}"`), ...around].sort((x, y) => x.at - y.at)) say(`  ${show(r)}`);
    }
  }
  // Messages a receiver never showed: when they were sent, and what the bus
  // saw of them (an inbox EVAL carries the message when the bridge stored it).
  const lost = [];
  for (let i = 0; i < N; i++) {
    const got = (app, prefix) => new Set(ksOf(app.visible, prefix));
    const pGot = got(phones[i], `d${i + 1}`);
    const dGot = got(desktops[i], `p${i + 1}`);
    for (let k = 1; k <= M; k++) {
      if (!pGot.has(k)) lost.push({ id: `d${i + 1}-${k}`, sender: desktops[i], receiver: phones[i] });
      if (!dGot.has(k)) lost.push({ id: `p${i + 1}-${k}`, sender: phones[i], receiver: desktops[i] });
    }
  }
  for (const { id, sender, receiver } of lost.slice(0, 10)) {
    const evs = sender.events.filter((e) => new RegExp(`\\b${id}\\b`).test(e));
    const at = Number(/^\+(\d+)ms/.exec(evs[0] ?? '')?.[1]);
    const step = Number.isFinite(at) ? ran.filter((r) => r.start - t0 <= at + 200).pop() : null;
    say(`LOST ${id} (${receiver.name} never showed it): sender's events: ${evs.join(' | ') || '(none kept)'}` +
      (step ? `; sent ${t0 + at - step.start} ms after "${step.name}" began` : ''));
    const recs = tap.find(`"${id}"`);
    say(`  bus records with it: ${recs.length ? '' : 'none (never stored in an inbox, never published)'}`);
    for (const r of recs) say(`    ${show(r)}`);
  }
  if (progressAtEnd >= 1) say('WARNING: all messages were through before the last chaos step; raise IMB_CHAOS_MSGS');
  if (problems.length) {
    // The services' log lines about the users concerned, for the report.
    const names = [...new Set(problems.map((p) => /\b([pd]\d+)\b/.exec(p)?.[1]).filter(Boolean))];
    const jids = new Set(names.map((n) => `p${n.slice(1)}@${domain}`));
    for (const jid of jids) {
      const lines = [...allEdges, ...allXmppds].flatMap((p) => p.lines('stderr')
        .filter((l) => l.includes(`jid=${jid}`) || l.includes(`:${jid}`)).map((l) => `${p.name}: ${l}`))
        .sort((a, b) => a.slice(a.indexOf(': ') + 2).localeCompare(b.slice(b.indexOf(': ') + 2)));
      say(`service log lines about ${jid} (${lines.length}):`);
      for (const l of lines.slice(-60)) say(`  ${l}`);
    }
  }
  assert.deepEqual(problems, [], `delivery guarantees broken:\n  ${problems.join('\n  ')}`);
  return { worstStallMs: worst[0][1], worstStallApp: worst[0][0], duplicates: dups, procs: [...allEdges, ...allXmppds] };
}
