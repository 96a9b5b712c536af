// Health and metrics over HTTP: /healthz proves the real paths (a publish ->
// receive round trip through Redis; the XMPP server reachable for xmppd) and
// /metrics speaks the Prometheus text format.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { itest, startBridge, waitFor, httpGet, httpAddr, metricValue, REPO_ROOT } from '../harness/index.mjs';

const hasPromtool = spawnSync('sh', ['-c', 'command -v promtool'], { stdio: 'ignore' }).status === 0;

/** `promtool check metrics` on one exposition: its complaints ('' when none). */
function promtoolLint(text) {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return r.status === 0 ? '' : `${r.stdout}${r.stderr}`.trim() || `exit ${r.status}`;
}

const get = httpGet;
const metric = metricValue;

itest('/healthz and /metrics on edge and xmppd, through a Redis and an XMPP outage', { timeout: 90000 }, async (t, stack) => {
  const http = ['--http-listen', '127.0.0.1:0'];
  const b = await startBridge(stack, { edgeArgs: http, xmppdArgs: http });
  const edge = httpAddr(b.edge);
  const bridge = httpAddr(b.xmppd);
  await waitFor(async () => (await get(bridge, '/healthz')).status === 200, { timeout: 8000 });
  assert.deepEqual(await get(edge, '/healthz'), { status: 200, text: 'ok\n' });

  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  await alice.msg('bob@localhost', 'counted');
  await bob.nextMessage({ body: 'counted' });
  await bob.send('alice@localhost', 'counted back');
  await alice.next({ t: 'msg', body: 'counted back' });
  alice.send({ t: 'roster', id: 'r1' });
  await alice.next({ t: 'roster', id: 'r1' });

  const em = (await get(edge, '/metrics')).text;
  assert.match(em, /^# TYPE imb_logins_total counter$/m);
  assert.ok(metric(em, 'imb_logins_total{result="ok"}') >= 1, em);
  assert.match(em, /^imb_build_info\{service="edge",version="\d+\.\d+\.\d+[^"]*"\} 1$/m);
  assert.equal(metric(em, 'imb_edge_connections{state="ready"}'), 1);
  assert.ok(metric(em, 'imb_edge_messages_total{direction="from_phone"}') >= 1);
  assert.ok(metric(em, 'imb_edge_messages_total{direction="to_phone"}') >= 1);
  assert.ok(metric(em, 'imb_edge_acks_total') >= 1);
  assert.equal(metric(em, 'imb_edge_feature_frames_total{direction="from_phone"}'), 1);
  assert.ok(metric(em, 'imb_edge_feature_frames_total{direction="to_phone"}') >= 1);
  assert.ok(metric(em, 'imb_envelope_latency_seconds_count') >= 1);
  assert.ok(metric(em, 'imb_bus_roundtrip_seconds') < 1, 'round trip in seconds');
  assert.ok(metric(em, 'imb_edge_max_connections') >= 1);
  assert.equal(metric(em, 'imb_bus_up'), 1);

  // Workers report to the supervisor once a second: wait for the report
  // that covers the exchange above, then check it exactly.
  let xm;
  const sum = (name) => [0, 1].reduce((a, w) => a + (metric(xm, `${name}{worker="${w}"}`) ?? 0), 0);
  await waitFor(async () => {
    xm = (await get(bridge, '/metrics')).text;
    return sum('imb_xmppd_sessions') === 1 && sum('imb_xmppd_acks_total') >= 1 &&
      sum('imb_xmppd_messages_from_xmpp_total') >= 1 && sum('imb_xmppd_requests_total') >= 1;
  }, { timeout: 5000 });
  assert.equal(sum('imb_xmppd_messages_to_xmpp_total'), 1);
  assert.equal(sum('imb_xmppd_messages_from_xmpp_total'), 1);
  assert.equal(sum('imb_xmppd_acks_total'), 1);
  assert.equal(sum('imb_xmppd_pings_total'), 1, 'one message, one ping proving it');
  assert.equal([0, 1].reduce((a, w) => a + metric(xm, `imb_logins_total{worker="${w}",result="ok"}`), 0), 1);
  assert.equal(metric(xm, 'imb_xmppd_max_sessions{worker="0"}'), 800);
  assert.equal(sum('imb_xmppd_delivery_queued'), 0);
  assert.match(xm, /^imb_build_info\{service="xmppd",version="[^"]+"\} 1$/m);

  // Every metric the runbook and the shipped alerts name is served (the
  // paragraph listing renamed metrics aside).
  const families = new Set([...`${em}\n${xm}`.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]));
  const named = (file) => {
    const text = fs.readFileSync(path.join(REPO_ROOT, file), 'utf8').replace(/^Renamed in [^]*?\n\n/m, '');
    return [...text.matchAll(/\bimb_[a-z_]+[a-z]\b/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''));
  };
  const docNames = [...new Set([...named('docs/DEPLOY.md'), ...named('deploy/prometheus/alerts.yml')])];
  const unknown = docNames.filter((n) => !families.has(n));
  t.diagnostic(`metric names in DEPLOY.md and alerts.yml: ${docNames.length}, served: ${docNames.length - unknown.length} of ${families.size} families`);
  assert.deepEqual(unknown, [], 'metrics named in docs/DEPLOY.md or alerts.yml but not served');

  // Both expositions pass Prometheus' own linter (base units, _total on
  // counters, HELP on every family...).
  if (hasPromtool) {
    const lint = { edge: promtoolLint(em), xmppd: promtoolLint(xm) };
    t.diagnostic(`promtool check metrics: edge ${em.split('\n').length} lines, xmppd ${xm.split('\n').length} lines`);
    assert.deepEqual(lint, { edge: '', xmppd: '' });
  } else {
    t.diagnostic('promtool not installed (Debian package prometheus): /metrics not linted');
  }

  // Redis goes away: both turn unhealthy, then healthy again.
  await b.redis.stop();
  await waitFor(async () => (await get(edge, '/healthz')).status === 503, { timeout: 8000 });
  const down = await get(edge, '/healthz');
  assert.match(down.text, /redis|round trip/);
  await waitFor(async () => (await get(bridge, '/healthz')).status === 503, { timeout: 8000 });
  await b.redis.start();
  await waitFor(async () => (await get(edge, '/healthz')).status === 200, { timeout: 10000 });
  await waitFor(async () => (await get(bridge, '/healthz')).status === 200, { timeout: 10000 });

  // The XMPP server goes away: xmppd says so.
  await b.prosody.stop();
  await waitFor(async () => /XMPP/.test((await get(bridge, '/healthz')).text), { timeout: 12000 });
  assert.equal((await get(edge, '/nothing')).status, 404);
});

itest('SIGHUP reloads the log level from the config file, in edge and in every xmppd worker', async (t, stack) => {
  const { startRedis, startProsody, binPath, randomCredKey } = await import('../harness/index.mjs');
  const fs = await import('node:fs');
  const path = await import('node:path');
  const redis = await startRedis(stack);
  const prosody = await startProsody(stack);
  const dir = stack.tempDir('imb-hup-');
  const key = randomCredKey();
  const common = `redis_port = ${redis.port}\ncred_key = ${key}\n`;
  const edgeConf = path.join(dir, 'edge.conf');
  const xmppdConf = path.join(dir, 'xmppd.conf');
  fs.writeFileSync(edgeConf, `${common}listen = 127.0.0.1:0\ntls = off\nlog_level = info\n`);
  fs.writeFileSync(xmppdConf, `${common}xmpp_port = ${prosody.c2sPort}\nxmpp_tls = disabled\nworkers = 2\nlog_level = info\n`);
  const edge = stack.spawn('imb-edge-hup', binPath('imb-edge'), ['--config', edgeConf]);
  const xmppd = stack.spawn('imb-xmppd-hup', binPath('imb-xmppd'), ['--config', xmppdConf]);
  await edge.waitForLine(/ listening addr=/);
  await xmppd.waitForLines(/worker_ready/, { count: 2 });
  assert.doesNotMatch(edge.stderr, / DEBUG /);
  fs.writeFileSync(edgeConf, `${common}listen = 127.0.0.1:0\ntls = off\nlog_level = debug\n`);
  fs.writeFileSync(xmppdConf, `${common}xmpp_port = ${prosody.c2sPort}\nxmpp_tls = disabled\nworkers = 2\nlog_level = warn\n`);
  edge.kill('SIGHUP');
  xmppd.kill('SIGHUP');
  await edge.waitForLine(/reloaded log_level=DEBUG/);
  await xmppd.waitForLines(/reloaded log_level=WARN/, { count: 2 });
  // The new level is in force: the edge now logs DEBUG lines (a connection).
  const net = await import('node:net');
  const port = Number(/ listening addr=127\.0\.0\.1:(\d+)/.exec(edge.stderr)[1]);
  const s = net.connect(port, '127.0.0.1');
  await edge.waitForLine(/ DEBUG edge conn_open/);
  s.destroy();
});
