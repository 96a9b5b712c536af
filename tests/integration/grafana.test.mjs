// deploy/grafana/imbridge.json, the Grafana dashboard: it imports anywhere
// (the Prometheus data source is a variable, no fixed uid), it has a panel
// for each SLI of the runbook, every PromQL expression in it parses
// (`promtool check rules` on them as recording rules) and names only metrics
// that a running edge and xmppd really serve on /metrics (both started here,
// with a phone logged in and a message each way so every family is there).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { itest, startBridge, waitFor, httpGet, httpAddr, REPO_ROOT, PLAIN_RUN_ONLY } from '../harness/index.mjs';

const DASH = path.join(REPO_ROOT, 'deploy', 'grafana', 'imbridge.json');
const noPromtool = spawnSync('sh', ['-c', 'command -v promtool'], { stdio: 'ignore' }).status === 0 ? false
  : 'promtool is not installed (apt-get install prometheus; scripts/deps.sh does it)';

/** Every panel, rows' nested panels included. */
function allPanels(d) {
  return d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

/** [title, expr] of every PromQL expression: panel targets and query variables. */
function expressions(d) {
  const out = [];
  for (const p of allPanels(d)) for (const tg of p.targets ?? []) out.push([p.title, tg.expr]);
  for (const v of d.templating?.list ?? []) {
    if (v.type === 'query') out.push([`variable ${v.name}`, typeof v.query === 'string' ? v.query : v.query.query]);
  }
  return out;
}

/** Grafana's variables replaced by values Prometheus accepts. */
function concrete(expr) {
  return expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m')
    .replace(/\$\{?instance\}?/g, '.*');
}

/** label_values(METRIC, label) is Grafana's, not PromQL: check METRIC alone. */
function promql(expr) {
  const m = /^label_values\((\w+)\s*,\s*\w+\)$/.exec(expr.trim());
  return m ? m[1] : concrete(expr);
}

const dash = JSON.parse(fs.readFileSync(DASH, 'utf8'));

test('deploy/grafana/imbridge.json: importable, data source is a variable, a panel per SLI', { skip: PLAIN_RUN_ONLY }, (t) => {
  assert.equal(typeof dash.title, 'string');
  assert.equal(dash.__inputs, undefined, 'no __inputs: the data source comes from the variable');
  const ds = dash.templating.list.find((v) => v.type === 'datasource');
  assert.equal(ds?.query, 'prometheus');
  const ids = new Set();
  for (const p of allPanels(dash)) {
    assert.ok(!ids.has(p.id), `panel id ${p.id} unique`);
    ids.add(p.id);
    if (p.type === 'row') continue;
    assert.equal(p.datasource?.uid, `\${${ds.name}}`, `${p.title}: data source \${${ds.name}}`);
    for (const tg of p.targets) assert.equal(tg.datasource?.uid, `\${${ds.name}}`, `${p.title} ${tg.refId}`);
    assert.ok(p.gridPos && p.gridPos.w > 0 && p.gridPos.h > 0, `${p.title}: gridPos`);
  }
  const titles = allPanels(dash).filter((p) => p.type !== 'row').map((p) => p.title.toLowerCase());
  for (const want of ['connections', 'logins by result', 'messages', 'latency', 'errors', 'redis round trip',
    'sessions per worker vs capacity', 'queue depths']) {
    assert.ok(titles.some((x) => x.includes(want)), `a panel for "${want}": ${titles.join(', ')}`);
  }
  const latency = allPanels(dash).find((p) => /latency/i.test(p.title));
  assert.ok(latency.targets.every((tg) => /histogram_quantile\(/.test(tg.expr)), 'latency from the histogram');
  t.diagnostic(`${titles.length} panels, ${expressions(dash).length} expressions`);
});

test('deploy/grafana/imbridge.json: every expression parses (promtool check rules)', { skip: noPromtool || PLAIN_RUN_ONLY }, (t) => {
  const exprs = expressions(dash);
  const rules = exprs.map(([title, e], i) => `      - record: imb:dashboard:expr${i}\n        # ${title.replace(/\n/g, ' ')}\n        expr: ${JSON.stringify(promql(e))}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imb-grafana-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'dashboard-rules.yml');
  fs.writeFileSync(file, `groups:\n  - name: dashboard\n    rules:\n${rules.join('\n')}\n`);
  const r = spawnSync('promtool', ['check', 'rules', file], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  assert.match(r.stdout, new RegExp(`SUCCESS: ${exprs.length} rules found`));
  t.diagnostic(`promtool: ${exprs.length} expressions parse`);
});

itest('deploy/grafana/imbridge.json: every metric it queries is served by a live edge or xmppd', { timeout: 60000 }, async (t, stack) => {
  const http = ['--http-listen', '127.0.0.1:0'];
  const b = await startBridge(stack, { edgeArgs: http, xmppdArgs: http });
  const edge = httpAddr(b.edge);
  const bridge = httpAddr(b.xmppd);
  await waitFor(async () => (await httpGet(bridge, '/healthz')).status === 200, { timeout: 8000 });
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  await alice.msg('bob@localhost', 'graphed');
  await bob.nextMessage({ body: 'graphed' });
  await bob.send('alice@localhost', 'graphed back');
  await alice.next({ t: 'msg', body: 'graphed back' });

  const served = new Map(); // family -> Set of jobs
  const add = (text, job) => {
    for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
      if (!served.has(m[1])) served.set(m[1], new Set());
      served.get(m[1]).add(job);
    }
  };
  add((await httpGet(edge, '/metrics')).text, 'imb-edge');
  // Workers report to the supervisor once a second: wait for their families.
  let xm = '';
  await waitFor(async () => {
    xm = (await httpGet(bridge, '/metrics')).text;
    return /^imb_xmppd_sessions\{worker="\d+"\} 1$/m.test(xm);
  }, { timeout: 5000 });
  add(xm, 'imb-xmppd');

  let checked = 0;
  const missing = [];
  for (const [title, expr] of expressions(dash)) {
    // Each selector: a metric name, and the job it is asked of (if any).
    for (const m of promql(expr).matchAll(/\b(imb_[a-z0-9_]+)(\{[^}]*\})?/g)) {
      const family = m[1].replace(/_(bucket|sum|count)$/, '');
      const job = /job="([^"]+)"/.exec(m[2] ?? '')?.[1];
      const jobs = served.get(family);
      checked++;
      if (!jobs) missing.push(`${title}: ${m[1]} is not served`);
      else if (job && !jobs.has(job)) missing.push(`${title}: ${m[1]} is not served by ${job} (only ${[...jobs]})`);
    }
  }
  t.diagnostic(`metric selectors checked: ${checked}; families served: edge+xmppd ${served.size}`);
  assert.deepEqual(missing, []);
  // The jobs it names are the scrape jobs of deploy/prometheus/prometheus.yml.
  const scrape = fs.readFileSync(path.join(REPO_ROOT, 'deploy', 'prometheus', 'prometheus.yml'), 'utf8');
  for (const job of new Set(expressions(dash).flatMap(([, e]) => [...e.matchAll(/job="([^"]+)"/g)].map((m) => m[1])))) {
    assert.match(scrape, new RegExp(`job_name: ${job}\\b`), `job ${job} is scraped`);
  }
});
