// deploy/prometheus: the alerting rules load (promtool check rules), behave
// (promtool test rules with deploy/prometheus/alerts.test.yml: a login
// failure rate of 1% does not fire, 50% does; capacity and latency in base
// units), and the scrape configuration that names the jobs they match loads.
// No services: promtool only (Debian package prometheus). The live /metrics
// of both services are linted in observe.test.mjs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT, PLAIN_RUN_ONLY } from '../harness/index.mjs';

const DIR = path.join(REPO_ROOT, 'deploy', 'prometheus');
const noPromtool = spawnSync('sh', ['-c', 'command -v promtool'], { stdio: 'ignore' }).status === 0 ? false
  : 'promtool is not installed (apt-get install prometheus; scripts/deps.sh does it)';

function promtool(...args) {
  const r = spawnSync('promtool', args, { cwd: DIR, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test('deploy/prometheus/alerts.yml: promtool check rules', { skip: noPromtool || PLAIN_RUN_ONLY }, (t) => {
  const r = promtool('check', 'rules', 'alerts.yml');
  assert.equal(r.status, 0, r.out);
  t.diagnostic(r.out.trim().split('\n').pop().trim());
});

test('deploy/prometheus/alerts.yml: promtool test rules (1% failed logins quiet, 50% fires)', { skip: noPromtool || PLAIN_RUN_ONLY }, () => {
  const r = promtool('test', 'rules', 'alerts.test.yml');
  assert.equal(r.status, 0, r.out);
  assert.match(r.out, /SUCCESS/);
});

test('deploy/prometheus/prometheus.yml: promtool check config (jobs imb-edge, imb-xmppd)', { skip: noPromtool || PLAIN_RUN_ONLY }, () => {
  const r = promtool('check', 'config', 'prometheus.yml');
  assert.equal(r.status, 0, r.out);
});
