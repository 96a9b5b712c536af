// Deployment files, checked for real: docker-compose.yml validates (and wires
// the services the way docs/DEPLOY.md says: health-gated start order, the
// Openfire console on loopback, its plugins pinned), debian/ matches the
// release and the build, deploy/haproxy.cfg validates and
// balances two real edges on loopback (with one of them then stopped),
// imtap taps a live bridge without ever printing a secret and survives a
// Redis restart, the Redis ACL users of DEPLOY.md work, the sample config
// files list every option, the container healthcheck script works, and
// deploy/Dockerfile's sources build and its runtime packages cover what the
// binaries link. (No Docker engine here: images are not built or run.)
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  itest, startBridge, startRedis, startProsody, startXmppd, startEdge, connectPhone,
  startDesktop, randomCredKey, freePort, waitFor, sleep, binPath, bareJid, REPO_ROOT, HOST,
  canConnect, loopbackHaproxyCfg, haproxyStates, redisSubscriber, httpAddr, PLAIN_RUN_ONLY, plainRunRepeats, xml, userKey,
  startRedisCluster,
} from '../harness/index.mjs';

const DEPLOY = path.join(REPO_ROOT, 'deploy');
const COMPOSE = path.join(REPO_ROOT, 'docker-compose.yml');
const COMPOSE_CLUSTER = path.join(DEPLOY, 'docker-compose.cluster.yml');
const CLUSTER_INIT = path.join(DEPLOY, 'redis-cluster-init.sh');
const HAPROXY_CFG = path.join(DEPLOY, 'haproxy.cfg');

function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

const noCompose = has('docker-compose') ? false
  : 'docker-compose is not installed (apt-get install docker-compose; scripts/deps.sh does it)';
const noHaproxy = has('haproxy') ? false
  : 'haproxy is not installed (apt-get install haproxy; scripts/deps.sh does it)';

/** Option names (snake_case) and their --help defaults, from a service binary. */
function helpOptions(bin) {
  const out = execFileSync(bin, ['--help'], { encoding: 'utf8' });
  const opts = new Map();
  for (const line of out.split('\n')) {
    const m = /^ {2}--(\S+)\s+.* \(default: (.*?)\)( \[SIGHUP\])?$/.exec(line);
    if (m) opts.set(m[1].replace(/-/g, '_'), m[2]);
  }
  assert.ok(opts.size > 10, `${bin} --help lists options:\n${out}`);
  return opts;
}

// ---------------------------------------------------------------------------
// (a) docker-compose.yml

test('docker-compose.yml: `docker-compose config -q` accepts it', { skip: noCompose || PLAIN_RUN_ONLY }, () => {
  const r = spawnSync('docker-compose', ['-f', COMPOSE, 'config', '-q'], { cwd: REPO_ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, `docker-compose config -q failed:\n${r.stdout}${r.stderr}`);
});

test('docker-compose.yml: services wired as documented', { skip: noCompose || PLAIN_RUN_ONLY }, (t) => {
  const r = spawnSync('docker-compose', ['-f', COMPOSE, 'config'], { cwd: REPO_ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  // Debian's docker-compose is Python and brings PyYAML: read the normalized
  // file with it.
  const y = spawnSync('/usr/bin/python3', ['-c',
    'import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'], { input: r.stdout, encoding: 'utf8' });
  if (y.status !== 0) {
    t.skip('no /usr/bin/python3 with PyYAML to read the normalized compose file');
    return;
  }
  const c = JSON.parse(y.stdout);
  const s = c.services;
  // `config` lists every service, those of profiles (`cluster`: see the
  // next test) too; a plain `up` starts the others.
  const byDefault = Object.keys(s).filter((n) => !s[n].profiles?.length);
  assert.deepEqual(byDefault.sort(), ['edge', 'haproxy', 'openfire', 'redis', 'xmppd']);
  for (const name of byDefault) {
    for (const dep of Object.keys(s[name].depends_on ?? {})) {
      assert.ok(byDefault.includes(dep), `${name} (default) depends on ${dep}, which only a profile starts`);
    }
  }

  // Edges scale: no fixed name, no host port; haproxy owns 7222 on the host.
  assert.equal(s.edge.container_name, undefined, 'edge must not have a container_name');
  assert.equal(s.edge.ports, undefined, 'edge must not publish host ports');
  assert.ok((s.haproxy.ports ?? []).some((p) => String(p.published ?? p).includes('7222')),
    `haproxy publishes 7222: ${JSON.stringify(s.haproxy.ports)}`);
  // Volumes come back as "source:target[:mode]" strings (or objects).
  const mounts = (svc) => (svc.volumes ?? []).map((v) => (typeof v === 'string' ? v : `${v.source}:${v.target}`));
  assert.ok(mounts(s.haproxy).some((v) => v.includes('deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg')),
    `haproxy mounts deploy/haproxy.cfg: ${mounts(s.haproxy)}`);

  // Redis keeps the inbox across restarts and has AUTH.
  const redisCmd = s.redis.command.join(' ');
  assert.match(redisCmd, /--appendonly yes/);
  assert.match(redisCmd, /--requirepass \S+/);

  // Openfire: the official image, the autosetup directory mounted, ports.
  assert.match(s.openfire.image, /^igniterealtime\/openfire:/);
  assert.ok(mounts(s.openfire).some((v) => /deploy\/openfire:/.test(v)), `openfire mounts deploy/openfire: ${mounts(s.openfire)}`);
  assert.ok(mounts(s.redis).some((v) => v.endsWith(':/data') || v.includes(':/data:')), 'redis keeps /data in a volume');
  const ofPorts = JSON.stringify(s.openfire.ports);
  for (const p of ['5222', '7070', '9090']) assert.ok(ofPorts.includes(p), `openfire port ${p}: ${ofPorts}`);

  // edge and xmppd: one image built from deploy/Dockerfile, the same bus and
  // cred_key, and every IMB_* variable names a real option of the service.
  for (const name of ['edge', 'xmppd']) {
    assert.equal(s[name].build.dockerfile, 'deploy/Dockerfile');
    const env = s[name].environment;
    assert.match(env.IMB_CRED_KEY, /^[0-9a-fA-F]{64}$/);
    const opts = helpOptions(binPath(`imb-${name}`));
    for (const k of Object.keys(env).filter((x) => x.startsWith('IMB_'))) {
      const opt = k.slice(4).toLowerCase();
      if (opt === 'http_listen' && !opts.has(opt)) {
        t.diagnostic(`${name}: IMB_HTTP_LISTEN is set for the health/metrics endpoint the service does not have yet`);
        continue;
      }
      assert.ok(opts.has(opt), `${name}: ${k} is not an option of imb-${name}`);
    }
  }
  assert.equal(s.edge.environment.IMB_CRED_KEY, s.xmppd.environment.IMB_CRED_KEY);
  assert.equal(s.edge.environment.IMB_REDIS_PASSWORD, s.xmppd.environment.IMB_REDIS_PASSWORD);
  assert.match(redisCmd, new RegExp(`--requirepass ${s.edge.environment.IMB_REDIS_PASSWORD}`));
  assert.equal(s.edge.environment.IMB_LISTEN, '0.0.0.0:7222', 'edges must listen beyond loopback');
  assert.equal(s.xmppd.environment.IMB_XMPP_HOST, 'openfire');

  // Start-up is health-gated: every dependency is waited for with
  // condition service_healthy, and a service others wait on has a
  // healthcheck (else compose refuses, or waits forever).
  let gated = 0;
  for (const [name, svc] of Object.entries(s)) {
    for (const [dep, how] of Object.entries(svc.depends_on ?? {})) {
      assert.equal(how?.condition, 'service_healthy', `${name} depends on ${dep} with ${JSON.stringify(how)}`);
      assert.ok(s[dep]?.healthcheck?.test && !s[dep].healthcheck.disable, `${dep} (needed by ${name}) has a healthcheck`);
      gated++;
    }
  }
  for (const name of ['redis', 'openfire', 'edge', 'xmppd']) {
    assert.ok(s[name].healthcheck?.test, `${name} has a healthcheck`);
  }
  assert.deepEqual(Object.keys(s.xmppd.depends_on).sort(), ['openfire', 'redis']);
  assert.deepEqual(Object.keys(s.haproxy.depends_on), ['edge']);
  t.diagnostic(`${gated} health-gated dependencies`);

  // Published ports: only what phones and XMPP clients need listens on every
  // interface; the admin console and haproxy's stats are for this host only.
  // docker-compose 1.29 normalizes "HOST:PUB:TARGET" to "HOST:PUB:TARGET/tcp"
  // and "PUB:TARGET" to {published, target}.
  const published = (svc) => (svc.ports ?? []).map((p) => (typeof p === 'string'
    ? (() => { const f = p.replace(/\/(tcp|udp)$/, '').split(':'); return { ip: f.length === 3 ? f[0] : '', published: f[f.length - 2], target: f[f.length - 1] }; })()
    : { ip: p.host_ip ?? '', published: String(p.published), target: String(p.target) }));
  const everywhere = ['5222', '7070', '7222'];
  for (const [name, svc] of Object.entries(s)) {
    for (const p of published(svc)) {
      if (!everywhere.includes(p.published)) {
        assert.equal(p.ip, '127.0.0.1', `${name} publishes ${p.published} on ${p.ip || 'every interface'}`);
      }
    }
  }
  const console9090 = published(s.openfire).find((p) => p.target === '9090');
  assert.equal(console9090?.ip, '127.0.0.1', 'the Openfire admin console is published on 127.0.0.1 only');

  // The Openfire image: at least 4.8.0, whose autosetup no longer breaks
  // every start after the first with the embedded database (OF-2592).
  const ofVersion = /:v?(\d+)\.(\d+)\.(\d+)/.exec(s.openfire.image);
  assert.ok(ofVersion, `openfire image pinned to a version: ${s.openfire.image}`);
  assert.ok(Number(ofVersion[1]) * 100 + Number(ofVersion[2]) >= 408, `openfire ${s.openfire.image} >= 4.8.0 (OF-2592)`);

  // Push: xmppd's component secret is the one openfire.xml gives Openfire.
  const ofXml = fs.readFileSync(path.join(DEPLOY, 'openfire', 'openfire.xml'), 'utf8');
  const secret = /<component>[\s\S]*<defaultSecret>([^<]+)<\/defaultSecret>/.exec(ofXml)?.[1];
  assert.equal(s.xmppd.environment.IMB_PUSH_SECRET, secret, 'IMB_PUSH_SECRET = xmpp.component.defaultSecret');
  assert.equal(s.xmppd.environment.IMB_PUSH_PORT, '5275', "Openfire's component port");
  assert.match(s.xmppd.environment.IMB_PUSH_JID, /\.imbridge\.local$/);
});

/** `docker-compose -f FILE... config`, read with PyYAML; null (after t.skip) without PyYAML. */
function composeConfig(t, files, extra = []) {
  const r = spawnSync('docker-compose', [...files.flatMap((f) => ['-f', f]), ...extra, 'config'],
    { cwd: REPO_ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, `docker-compose ${files.join(' ')} config:\n${r.stderr}`);
  const y = spawnSync('/usr/bin/python3', ['-c',
    'import json,sys,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'], { input: r.stdout, encoding: 'utf8' });
  if (y.status !== 0) {
    t.skip('no /usr/bin/python3 with PyYAML to read the normalized compose file');
    return null;
  }
  return JSON.parse(y.stdout);
}

/** `--flag value` pairs of a command list as a Map (a flag given twice: the last). */
function flagMap(cmd) {
  const m = new Map();
  for (let i = 0; i < cmd.length; i++) {
    if (cmd[i].startsWith('--') && i + 1 < cmd.length && !cmd[i + 1].startsWith('--')) m.set(cmd[i].slice(2), cmd[++i]);
  }
  return m;
}

test('docker-compose.yml: profile `cluster` (3 masters + 3 replicas, a one-shot create) and deploy/docker-compose.cluster.yml',
  { skip: noCompose || PLAIN_RUN_ONLY }, (t) => {
    const c = composeConfig(t, [COMPOSE]);
    if (!c) return;
    const s = c.services;
    const inCluster = Object.keys(s).filter((n) => s[n].profiles?.includes('cluster')).sort();
    const nodes = ['redis-c1', 'redis-c2', 'redis-c3', 'redis-c4', 'redis-c5', 'redis-c6'];
    assert.deepEqual(inCluster, [...nodes, 'redis-cluster-init']);
    const password = s.edge.environment.IMB_REDIS_PASSWORD;
    const volumes = new Set();
    for (const name of nodes) {
      const n = s[name];
      assert.deepEqual(n.profiles, ['cluster'], `${name}: only in the cluster profile`);
      assert.equal(n.image, s.redis.image, `${name}: the single redis's image`);
      assert.equal(n.command[0], 'redis-server');
      const f = flagMap(n.command);
      assert.equal(f.get('cluster-enabled'), 'yes', `${name}: cluster mode`);
      assert.match(f.get('cluster-config-file') ?? '', /^\/data\//, `${name}: nodes.conf in the data volume`);
      const timeout = Number(f.get('cluster-node-timeout'));
      assert.ok(timeout >= 1000 && timeout <= 15000, `${name}: cluster-node-timeout ${timeout}`);
      assert.equal(f.get('cluster-require-full-coverage'), 'no', `${name}: the other shards serve while one fails over`);
      assert.equal(f.get('appendonly'), 'yes', `${name}: inboxes and counters survive a restart`);
      assert.equal(f.get('maxmemory-policy'), 'noeviction', name);
      assert.equal(f.get('requirepass'), password, `${name}: the services' IMB_REDIS_PASSWORD`);
      assert.equal(f.get('masterauth'), password, `${name}: replicas authenticate to their master`);
      assert.equal(f.get('client-output-buffer-limit'), flagMap(s.redis.command).get('client-output-buffer-limit'), name);
      assert.ok(n.healthcheck?.test, `${name} has a healthcheck`);
      assert.equal(n.ports, undefined, `${name} publishes no port`);
      assert.ok(Object.keys(n.networks ?? {}).includes('imb'), `${name} on the imb network`);
      const data = (n.volumes ?? []).map((v) => (typeof v === 'string' ? v : `${v.source}:${v.target}`))
        .find((v) => /:\/data(:|$)/.test(v));
      assert.ok(data, `${name} keeps /data in a volume`);
      volumes.add(data.split(':')[0]);
    }
    assert.equal(volumes.size, nodes.length, `one data volume per node: ${[...volumes]}`);

    // The one-shot: after all six answer, creates 3 masters + 3 replicas once.
    const init = s['redis-cluster-init'];
    assert.deepEqual(Object.keys(init.depends_on).sort(), nodes);
    for (const [dep, how] of Object.entries(init.depends_on)) assert.equal(how.condition, 'service_healthy', dep);
    assert.equal(String(init.restart), 'no', 'a one-shot is not restarted');
    assert.equal(init.environment.REDISCLI_AUTH, password, 'redis-cli gets the password from the environment');
    assert.ok(!init.command.includes(password), 'no password on the command line');
    const initMount = (init.volumes ?? []).map((v) => (typeof v === 'string' ? v : `${v.source}:${v.target}`))
      .find((v) => v.includes('deploy/redis-cluster-init.sh:'));
    assert.ok(initMount, `redis-cluster-init mounts deploy/redis-cluster-init.sh: ${JSON.stringify(init.volumes)}`);
    assert.ok(init.command.some((a) => initMount.split(':')[1] === a), `it runs the mounted script: ${init.command}`);
    const ri = init.command.indexOf('--replicas');
    const replicas = Number(init.command[ri + 1]);
    const targets = init.command.filter((a) => /^redis-c\d:6379$/.test(a));
    assert.equal(replicas, 1);
    assert.deepEqual(targets, nodes.map((n) => `${n}:6379`));
    assert.equal(targets.length / (1 + replicas), 3, '3 masters');
    const script = fs.readFileSync(CLUSTER_INIT, 'utf8');
    assert.match(script, /redis-cli --cluster create \$addrs --cluster-replicas "\$replicas" --cluster-yes/);
    assert.equal(spawnSync('sh', ['-n', CLUSTER_INIT]).status, 0, 'sh -n redis-cluster-init.sh');
    if (has('shellcheck')) {
      const sc = spawnSync('shellcheck', [CLUSTER_INIT], { encoding: 'utf8' });
      assert.equal(sc.status, 0, `shellcheck:\n${sc.stdout}`);
    }
    // The default profile does not know the cluster.
    for (const name of ['edge', 'xmppd']) assert.equal(s[name].environment.IMB_REDIS_CLUSTER, undefined, name);

    // deploy/docker-compose.cluster.yml: edge and xmppd on the cluster,
    // once the one-shot has made it.
    const o = composeConfig(t, [COMPOSE, COMPOSE_CLUSTER], ['--profile', 'cluster']);
    if (!o) return;
    for (const name of ['edge', 'xmppd']) {
      const svc = o.services[name];
      const seeds = svc.environment.IMB_REDIS_CLUSTER?.split(',') ?? [];
      assert.deepEqual(seeds, nodes.map((n) => `${n}:6379`), `${name}: IMB_REDIS_CLUSTER lists every node`);
      assert.equal(svc.depends_on['redis-cluster-init']?.condition, 'service_completed_successfully', name);
      assert.equal(svc.environment.IMB_REDIS_PASSWORD, password, name);
      const opts = helpOptions(binPath(`imb-${name}`));
      if (!opts.has('redis_cluster')) {
        t.diagnostic(`${name}: IMB_REDIS_CLUSTER is set for the redis_cluster option imb-${name} does not have yet`);
      }
      for (const k of Object.keys(svc.environment).filter((x) => x.startsWith('IMB_'))) {
        const opt = k.slice(4).toLowerCase();
        if (['http_listen', 'redis_cluster'].includes(opt) && !opts.has(opt)) continue;
        assert.ok(opts.has(opt), `${name}: ${k} is not an option of imb-${name}`);
      }
    }
    // Nothing else changes: the override only adds. (docker-compose 1.29
    // prints an empty mapping as null in one run and {} in the other.)
    const norm = (v) => JSON.parse(JSON.stringify(v, (k, x) => (x === null ? {} : x)));
    for (const name of Object.keys(s)) {
      if (['edge', 'xmppd'].includes(name)) continue;
      assert.deepEqual(norm(o.services[name]), norm(s[name]), `${name} is the same with the override`);
    }
    t.diagnostic(`cluster profile: ${nodes.length} nodes, ${replicas} replica per master, ` +
      `node timeout ${flagMap(s['redis-c1'].command).get('cluster-node-timeout')} ms`);
  });

itest('deploy/redis-cluster-init.sh makes six fresh nodes one cluster (3 masters + 3 replicas); a second run creates nothing',
  { bins: [], timeout: 60000, skip: PLAIN_RUN_ONLY }, async (t, stack) => {
    const password = 'init-script-secret';
    const c = await startRedisCluster(stack, { create: false, password });
    // The first by name: the script resolves names (compose: redis-cN).
    const addrs = c.nodes.map((n, i) => `${i === 0 ? 'localhost' : HOST}:${n.port}`);
    const run = () => new Promise((resolve) => {
      execFile('sh', [CLUSTER_INIT, '--replicas', '1', ...addrs],
        { env: { ...process.env, REDISCLI_AUTH: password }, timeout: 60000 },
        (err, stdout, stderr) => resolve({ code: err ? err.code ?? 1 : 0, out: stdout + stderr }));
    });
    const t0 = Date.now();
    const first = await run();
    const firstMs = Date.now() - t0;
    assert.equal(first.code, 0, first.out);
    assert.doesNotMatch(first.out, new RegExp(password), 'the password is not printed');
    await c.waitHealthy({ timeoutMs: 20000 });
    const masters = c.nodes.filter((n) => n.role === 'master');
    const replicas = c.nodes.filter((n) => n.role === 'replica');
    assert.equal(masters.length, 3);
    assert.equal(replicas.length, 3);
    assert.deepEqual(new Set(replicas.map((r) => r.masterId)), new Set(masters.map((m) => m.id)));
    assert.equal(await c.command(['SET', '{init}k', 'v']), 'OK');
    const second = await run();
    assert.equal(second.code, 0, second.out);
    assert.match(second.out, /the cluster exists/);
    assert.equal(await c.command(['GET', '{init}k']), 'v', 'a second run changed nothing');
    t.diagnostic(`first run ${firstMs} ms; second run: ${second.out.trim().split('\n').join(' | ')}`);
  });

test('deploy/openfire: Monitoring (archive) and Push Notification plugins pinned and installed by init.sh', { skip: PLAIN_RUN_ONLY }, (t) => {
  const list = fs.readFileSync(path.join(DEPLOY, 'openfire', 'plugins.txt'), 'utf8').split('\n')
    .filter((l) => l.trim() && !l.startsWith('#')).map((l) => l.trim().split(/\s+/));
  const byName = new Map(list.map(([name, version, sha, url]) => [name, { version, sha, url }]));
  assert.deepEqual([...byName.keys()].sort(), ['monitoring', 'pushnotification']);
  let pinned = 0;
  for (const [name, p] of byName) {
    assert.match(p.version, /^\d+\.\d+\.\d+$/, `${name}: a pinned version`);
    assert.match(p.sha, /^(-|[0-9a-f]{64})$/, `${name}: sha256 or "-"`);
    if (p.sha !== '-') pinned++;
    assert.ok(p.url.startsWith('https://') && p.url.includes(`/v${p.version}/`) && p.url.endsWith(`/${name}.jar`),
      `${name}: https URL of that version's ${name}.jar: ${p.url}`);
  }
  t.diagnostic(`${byName.size} plugins, ${pinned} with a pinned sha256`);
  // Archiving on (the plugin's defaults are off), external components on.
  const x = fs.readFileSync(path.join(DEPLOY, 'openfire', 'openfire.xml'), 'utf8');
  const outside = x.replace(/<!--[\s\S]*?-->/g, '').replace(/<autosetup>[\s\S]*<\/autosetup>/, '');
  assert.match(outside, /<conversation>[\s\S]*<messageArchiving>true<\/messageArchiving>/);
  assert.match(outside, /<component>\s*<socket>\s*<active>true<\/active>/);
  const init = fs.readFileSync(path.join(DEPLOY, 'openfire', 'init.sh'), 'utf8');
  assert.match(init, /plugins\.txt/);
  assert.match(init, /sha256sum/);
  assert.match(init, /exec \/sbin\/entrypoint\.sh/);
});

test('deploy/openfire: openfire.xml has the autosetup block (domain, embedded db, admin, demo users)', { skip: PLAIN_RUN_ONLY }, () => {
  const x = fs.readFileSync(path.join(DEPLOY, 'openfire', 'openfire.xml'), 'utf8');
  const autosetup = /<autosetup>([\s\S]*)<\/autosetup>/.exec(x)?.[1];
  assert.ok(autosetup, 'an <autosetup> block');
  assert.match(autosetup, /<run>true<\/run>/);
  assert.match(autosetup, /<domain>imbridge\.local<\/domain>/);
  assert.match(autosetup, /<database>\s*<mode>embedded<\/mode>/);
  assert.match(autosetup, /<admin>[\s\S]*<password>[^<]+<\/password>[\s\S]*<\/admin>/);
  for (const [i, u] of ['alice', 'bob', 'carol'].entries()) {
    const re = new RegExp(`<user${i + 1}>\\s*<username>${u}</username>\\s*<password>[^<]+</password>`);
    assert.match(autosetup, re, `user${i + 1} = ${u} with a password`);
  }
  if (has('xmllint')) execFileSync('xmllint', ['--noout', path.join(DEPLOY, 'openfire', 'openfire.xml')]);
  const init = path.join(DEPLOY, 'openfire', 'init.sh');
  execFileSync('bash', ['-n', init]);
  assert.ok(fs.statSync(init).mode & 0o111, 'init.sh is executable');
});

// ---------------------------------------------------------------------------
// (b) haproxy -c

test('deploy/haproxy.cfg: `haproxy -c` validates it offline', { skip: noHaproxy || PLAIN_RUN_ONLY }, () => {
  const r = spawnSync('haproxy', ['-c', '-f', HAPROXY_CFG], { encoding: 'utf8' });
  const out = `${r.stdout}${r.stderr}`;
  assert.equal(r.status, 0, out);
  assert.doesNotMatch(out, /\[(WARNING|ALERT)\]/, out);
  const cfg = fs.readFileSync(HAPROXY_CFG, 'utf8');
  assert.match(cfg, /^\s*mode tcp\b/m);
  assert.match(cfg, /^\s*balance roundrobin\b/m);
  assert.match(cfg, /^\s*option httpchk GET \/healthz$/m, 'haproxy checks the edges\' /healthz');
  assert.match(cfg, /^\s*server-template edge .* check port 9100\b/m, 'on their http_listen port');
  assert.match(cfg, /^\s*timeout client\s+\d+h\b/m, 'long client timeout');
  assert.match(cfg, /^\s*timeout server\s+\d+h\b/m, 'long server timeout');
});

// ---------------------------------------------------------------------------
// (c) haproxy in front of two edges, on loopback

const HA_USERS = Array.from({ length: 12 }, (_, i) => [`ph${i + 1}`, `pw-ph${i + 1}`]);

itest('haproxy (deploy/haproxy.cfg) balances phones over 2 edges; with one edge stopped, logins still work; '
  + 'an edge without Redis fails the /healthz check and is taken out',
  { skip: noHaproxy || plainRunRepeats('scale.test.mjs (52 phones through haproxy)'), timeout: 120000 }, async (t, stack) => {
    const credKey = randomCredKey();
    const [redis, prosody] = await Promise.all([
      startRedis(stack),
      startProsody(stack, { users: [...HA_USERS, ['desk', 'pw-desk']] }),
    ]);
    await startXmppd(stack, { redisPort: redis.port, xmppPort: prosody.c2sPort, credKey, workers: 2 });
    const edges = [];
    for (let i = 0; i < 2; i++) {
      edges.push(await startEdge(stack, {
        redisPort: redis.port, credKey, extraArgs: ['--edge-id', `lb${i}`, '--http-listen', '127.0.0.1:0'],
      }));
    }
    const servers = edges.map((e) => ({ port: e.port, httpPort: Number(httpAddr(e).split(':').pop()) }));
    const port = await freePort();
    const statsPort = await freePort();
    const dir = stack.tempDir('imb-haproxy-');
    const cfgFile = path.join(dir, 'haproxy.cfg');
    fs.writeFileSync(cfgFile, loopbackHaproxyCfg({ port, statsPort, servers }));
    const check = spawnSync('haproxy', ['-c', '-f', cfgFile], { encoding: 'utf8' });
    assert.equal(check.status, 0, `${check.stdout}${check.stderr}`);
    const ha = stack.spawn('haproxy', 'haproxy', ['-db', '-f', cfgFile], { logFile: path.join(dir, 'haproxy.log') });
    await waitFor(async () => {
      if (!ha.running) throw new Error(`haproxy exited: ${ha.stderr}`);
      return canConnect(port);
    }, { timeout: 10000, what: `haproxy on ${port}` });
    // Both edges pass haproxy's HTTP health check (their /healthz).
    await waitFor(async () => {
      const st = await haproxyStates(statsPort).catch(() => ({}));
      return st.edge1?.status === 'UP' && st.edge2?.status === 'UP';
    }, { timeout: 15000, what: 'both edges UP in haproxy' });
    await sleep(1200); // edges read the worker list every second
    const desk = await startDesktop(stack, { port: prosody.c2sPort, user: 'desk', pass: 'pw-desk', domain: 'localhost' });

    // 10 phones through haproxy, logged in one after the other (round robin
    // then alternates deterministically).
    const phones = [];
    for (const [u, pw] of HA_USERS.slice(0, 10)) {
      const p = await connectPhone(stack, port, u);
      await p.login(`${u}@localhost`, pw);
      phones.push(p);
    }
    const logins = edges.map((e) => e.lines().filter((l) => / login_ok .*jid=ph\d+@localhost/.test(l)).length);
    t.diagnostic(`logins per edge: ${logins.join(', ')}`);
    assert.equal(logins[0] + logins[1], 10, `every login seen by exactly one edge: ${logins}`);
    assert.ok(logins[0] >= 3 && logins[1] >= 3, `both edges got phones: ${logins}`);
    const st = await haproxyStates(statsPort);
    assert.ok(st.edge1.stot > 0 && st.edge2.stot > 0, `haproxy counted sessions on both: ${JSON.stringify(st)}`);

    // Chat both ways through the balancer.
    for (const [i, p] of phones.entries()) {
      const ack = await p.msg('desk@localhost', `via haproxy ${i}`);
      assert.equal(ack.t, 'ack', JSON.stringify(ack));
    }
    for (let i = 0; i < phones.length; i++) {
      const m = await desk.nextMessage((x) => x.body === `via haproxy ${i}`, 10000);
      assert.equal(bareJid(m.from), `ph${i + 1}@localhost`);
    }
    await desk.send('ph1@localhost', 'to the phone through haproxy');
    assert.equal((await phones[0].nextMsg({ body: 'to the phone through haproxy' }, 10000)).from.split('/')[0], 'desk@localhost');

    // Stop edge 2 (gracefully: it says bye to its phones). New phones still
    // get in, at once (a failed connect is redispatched) and after haproxy
    // marks the edge down.
    await edges[1].stop();
    const before = edges[0].lines().filter((l) => / login_ok /.test(l)).length;
    for (const [u, pw] of HA_USERS.slice(10)) {
      const p = await connectPhone(stack, port, `${u}-after`);
      const w = await p.login(`${u}@localhost`, pw);
      assert.equal(w.jid, `${u}@localhost`);
      const ack = await p.msg('desk@localhost', `after stop ${u}`);
      assert.equal(ack.t, 'ack');
    }
    await waitFor(async () => (await haproxyStates(statsPort)).edge2?.status?.startsWith('DOWN'),
      { timeout: 15000, what: 'haproxy marks the stopped edge DOWN' });
    // A phone of the stopped edge comes back through haproxy and logs in again.
    const back = await connectPhone(stack, port, 'ph2-back');
    await back.login('ph2@localhost', 'pw-ph2');
    const after = edges[0].lines().filter((l) => / login_ok /.test(l)).length;
    assert.equal(after - before, 3, 'the surviving edge served every later login');
    assert.ok(ha.running, 'haproxy still running');

    // Redis goes away: the edge's process and phone port are fine (a TCP
    // check would pass) but its /healthz says 503, and haproxy takes it out.
    assert.equal((await haproxyStates(statsPort)).edge1?.status, 'UP');
    const t0 = Date.now();
    await redis.stop();
    await waitFor(async () => (await haproxyStates(statsPort)).edge1?.status?.startsWith('DOWN'),
      { timeout: 20000, what: 'haproxy marks the edge without Redis DOWN' });
    const down = (await haproxyStates(statsPort)).edge1;
    t.diagnostic(`edge without Redis marked DOWN after ${Date.now() - t0} ms (check ${down.check}, ${down.lastChk})`);
    assert.ok(await canConnect(edges[0].port), 'the edge itself still accepts TCP');
    assert.match(`${down.check} ${down.lastChk}`, /L7STS|503/, 'failed on the HTTP status, not the connect');
  });

// ---------------------------------------------------------------------------
// (d) imtap

/** Send commands on one connection; resolves the first line of each reply. */
function rawCommands(port, cmds) {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: HOST });
    let buf = '';
    const timer = setTimeout(() => { s.destroy(); reject(new Error('redis: no answer')); }, 3000);
    s.on('connect', () => s.write(cmds.map((c) => `*${c.length}\r\n${c.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`).join('')));
    s.on('data', (d) => {
      buf += d;
      const lines = buf.split('\r\n').filter(Boolean);
      if (lines.length >= cmds.length) {
        clearTimeout(timer);
        s.destroy();
        resolve(lines.slice(0, cmds.length));
      }
    });
    s.on('error', reject);
  });
}

function startTap(stack, redisPort, args = [], name = 'imb-tap', envExtra = undefined) {
  const p = stack.spawn(name, binPath('imtap'), ['--redis-port', String(redisPort), ...args], { envExtra });
  return p;
}

const TAP_PASS = 'Tap-Pw-9c41e7-never-printed';

itest('imtap prints login and chat envelopes live and never a password or sealed credential',
  { bins: ['imb-edge', 'imb-xmppd', 'imtap'], timeout: 60000 }, async (t, stack) => {
    const b = await startBridge(stack, { users: [['tapper', TAP_PASS], ['bob', 'secret'], ['carol', 'secret']] });
    const raw = (await redisSubscriber(stack, b.redis.port, 'imb:*')).messages;
    const tap = startTap(stack, b.redis.port);
    const tapJson = startTap(stack, b.redis.port, ['--json', '--user', 'TAPPER@localhost', '--type', 'login,login_ok,chat,ack'], 'imb-tap-json');
    await Promise.all([tap, tapJson].map((p) => p.waitForLine(/subscribed imb:\* on/, { timeout: 5000 })));

    const bob = await b.desktop('bob');
    const phone = await b.loginPhone('tapper');
    const ack = await phone.msg('bob@localhost', 'tap me if you can', { id: 'tap-1' });
    assert.equal(ack.t, 'ack');
    await bob.nextMessage({ body: 'tap me if you can' });
    await bob.send('tapper@localhost', 'and back to the phone');
    await phone.nextMsg({ body: 'and back to the phone' });
    const carol = await b.loginPhone('carol'); // someone else, for the filter
    await carol.msg('bob@localhost', 'carol talks');

    // Line mode: login and chat on the worker's w:, and on the edge's e:
    // the login_ok, the ack and the chat back.
    const want = [
      / w:\S+ login tapper@localhost -> - .*cred=<sealed>/,
      / e:\S+ login_ok - -> tapper@localhost /,
      / w:\S+ chat tapper@localhost -> bob@localhost .*body="tap me if you can" .*id=tap-1/,
      / e:\S+ ack - -> tapper@localhost .*ids=tap-1/,
      / e:\S+ chat bob@localhost\/\S+ -> tapper@localhost .*body="and back to the phone"/,
    ];
    for (const re of want) await tap.waitForLines(re, { stream: 'stdout', timeout: 5000 });
    const lines = tap.lines('stdout').filter(Boolean);
    assert.ok(lines.every((l) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \w+(:\S+)? /.test(l)), lines.join('\n'));
    assert.ok(!lines.some((l) => / bus:/.test(l)), 'heartbeat channels are skipped without --all');

    // JSON mode with filters: only tapper's envelopes of the chosen types.
    await waitFor(() => tapJson.lines('stdout').filter(Boolean).length >= 5, { what: 'json tap lines' });
    await sleep(300);
    const objs = tapJson.lines('stdout').filter(Boolean).map((l) => JSON.parse(l));
    for (const o of objs) {
      assert.equal(typeof o.rx, 'number');
      assert.match(o.channel, /^imb:[we]:/);
      assert.ok(['login', 'login_ok', 'chat', 'ack'].includes(o.env.type), JSON.stringify(o));
      const who = [o.channel.split(':').slice(2).join(':'), o.env.from, o.env.to, o.env.jid].map((x) => bareJid(x ?? ''));
      assert.ok(who.includes('tapper@localhost'), `filtered to tapper: ${JSON.stringify(o)}`);
      if (o.env.type === 'login') assert.equal(o.env.cred, '<sealed>');
    }
    assert.ok(objs.some((o) => o.env.type === 'login'), 'json: the login');
    assert.ok(objs.some((o) => o.env.type === 'chat' && o.env.body === 'tap me if you can'), 'json: the chat');

    // No secret anywhere: not the password, not the sealed credential that
    // really crossed Redis.
    const creds = raw.map(([, p]) => { try { return JSON.parse(p); } catch { return null; } })
      .filter((e) => e && e.type === 'login' && typeof e.cred === 'string').map((e) => e.cred);
    assert.ok(creds.length >= 1, 'a login with a sealed cred crossed Redis');
    for (const p of [tap, tapJson]) {
      const all = p.stdout + p.stderr;
      assert.ok(!all.includes(TAP_PASS), `${p.name} printed the password`);
      for (const c of creds) assert.ok(!all.includes(c), `${p.name} printed a sealed credential`);
      assert.ok(!all.includes(c16(creds[0])), `${p.name} printed part of a sealed credential`);
    }
  });

// Issue 19: an operator can watch the bus without reading what people write,
// and a req or event reads as the frame it carries.
itest('imtap --no-bodies shows no message text; req/event print as req/<t>, event/<t>; --type selects frame types; no raw pts/ts',
  { bins: ['imb-edge', 'imb-xmppd', 'imtap'], timeout: 60000 }, async (t, stack) => {
    const ROOM = 'tapped@conference.localhost';
    // Distinctive texts, each of which crosses the bus at least once.
    const TEXT = {
      chatOut: 'Qx7 phone says plums', chatIn: 'Qx7 desk says pears', old: 'Qx7 archived quince',
      subject: 'Qx7 room subject figs', reason: 'Qx7 invite reason kiwi',
      myStatus: 'Qx7 my status lime', bobStatus: 'Qx7 bob status melon',
    };
    const b = await startBridge(stack);
    // This one gets --no-bodies from the environment (IMB_TAP_NO_BODIES=1).
    const nb = startTap(stack, b.redis.port, [], 'imb-tap-nb', { IMB_TAP_NO_BODIES: '1' });
    const nbJson = startTap(stack, b.redis.port, ['--no-bodies', '--json'], 'imb-tap-nb-json');
    const typed = startTap(stack, b.redis.port, ['--type', 'presence,typing'], 'imb-tap-typed');
    const plain = startTap(stack, b.redis.port, [], 'imb-tap-plain');
    await Promise.all([nb, nbJson, typed, plain].map((p) => p.waitForLine(/subscribed imb:\* on/, { timeout: 5000 })));

    const alice = await b.loginPhone('alice');
    const bob = await b.desktop('bob');
    // Mutual subscription, so presence flows both ways.
    await bob.getRoster();
    alice.send({ t: 'sub', to: 'bob@localhost', type: 'subscribe' });
    await bob.nextStanza((el) => el.is('presence') && el.attrs.type === 'subscribe', 5000, 'subscribe');
    await bob.sendXml(xml('presence', { to: 'alice@localhost', type: 'subscribed' }));
    await bob.sendXml(xml('presence', { to: 'alice@localhost', type: 'subscribe' }));
    await alice.expect({ t: 'sub', type: 'subscribe', from: 'bob@localhost' });
    alice.send({ t: 'sub', to: 'bob@localhost', type: 'subscribed' });
    await alice.expect({ t: 'presence', from: bob.jid });

    alice.send({ t: 'presence', show: 'away', status: TEXT.myStatus });
    await bob.sendXml(xml('presence', {}, xml('show', {}, 'dnd'), xml('status', {}, TEXT.bobStatus)));
    await alice.expect({ t: 'presence', from: bob.jid, status: TEXT.bobStatus });
    alice.send({ t: 'typing', to: bob.jid, state: 'composing' });
    await bob.sendXml(xml('message', { to: 'alice@localhost', type: 'chat' },
      xml('composing', { xmlns: 'http://jabber.org/protocol/chatstates' })));
    await alice.expect({ t: 'typing', state: 'composing' });

    await bob.send('alice@localhost', TEXT.old);
    await alice.nextMsg({ body: TEXT.old });
    await alice.msg('bob@localhost', TEXT.chatOut);
    await bob.nextMessage({ body: TEXT.chatOut });
    await bob.send('alice@localhost', TEXT.chatIn);
    await alice.nextMsg({ body: TEXT.chatIn });
    await sleep(300);
    alice.send({ t: 'history', id: 'h1', with: 'bob@localhost', max: 10 });
    await alice.expect({ t: 'hist', id: 'h1', body: TEXT.old });
    await alice.expect({ t: 'history', id: 'h1' });

    alice.send({ t: 'join', id: 'j1', room: ROOM, nick: 'Alice' });
    await alice.expect({ t: 'ok', id: 'j1' }, 10000);
    alice.send({ t: 'subject', id: 's1', room: ROOM, subject: TEXT.subject });
    await alice.expect({ t: 'ok', id: 's1' });
    await alice.expect({ t: 'subject', room: ROOM, subject: TEXT.subject });
    alice.send({ t: 'invite', id: 'i1', room: ROOM, to: 'bob@localhost', reason: TEXT.reason });
    await alice.expect({ t: 'ok', id: 'i1' });

    // The plain tap shows every text: each really crossed the bus.
    for (const s of Object.values(TEXT)) await plain.waitForLines(new RegExp(s), { stream: 'stdout', timeout: 5000 });
    await nb.waitForLines(/ req\/invite /, { stream: 'stdout', timeout: 5000 });
    await sleep(300);

    const lines = (p) => p.lines('stdout').filter(Boolean);
    const nbLines = lines(nb);
    const nbOut = nb.stdout + nbJson.stdout;
    const leaked = Object.values(TEXT).filter((s) => nbOut.includes(s) || nbOut.includes(s.slice(4)));
    const masked = nbLines.join('\n').match(/(body|subject|reason|status)=<\d+ chars>/g) ?? [];
    console.log(`# imtap --no-bodies: ${nbLines.length} lines, ${lines(nbJson).length} JSON lines, ` +
      `${masked.length} texts shown as their length, ${leaked.length}/${Object.keys(TEXT).length} texts leaked`);
    assert.deepEqual(leaked, [], 'no message text in --no-bodies output');
    const want = [
      new RegExp(` w:\\S+ chat alice@localhost -> bob@localhost .*body=<${TEXT.chatOut.length} chars>`),
      new RegExp(` e:\\S+ chat bob@localhost/\\S+ -> alice@localhost .*body=<${TEXT.chatIn.length} chars>`),
      new RegExp(` w:\\S+ req/presence alice@localhost .*show=away status=<${TEXT.myStatus.length} chars>`),
      new RegExp(` e:\\S+ event/presence bob@localhost/\\S+ -> alice@localhost .*status=<${TEXT.bobStatus.length} chars>`),
      / w:\S+ req\/typing alice@localhost -> bob@localhost\/\S+ .*state=composing/,
      / e:\S+ event\/typing bob@localhost\/\S+ -> alice@localhost .*state=composing/,
      new RegExp(` e:\\S+ event/hist .*id=h1 .*body=<${TEXT.old.length} chars>`),
      / e:\S+ event\/history - -> alice@localhost .*id=h1 /,
      new RegExp(` w:\\S+ req/subject .*subject=<${TEXT.subject.length} chars>`),
      new RegExp(` e:\\S+ event/subject .*subject=<${TEXT.subject.length} chars>`),
      new RegExp(` w:\\S+ req/invite .*reason=<${TEXT.reason.length} chars>`),
      / w:\S+ req\/join .*nick=Alice/,
    ];
    for (const re of want) assert.ok(nbLines.some((l) => re.test(l)), `a line like ${re}:\n${nbLines.join('\n')}`);
    // Frames read as k=v, never as an escaped JSON string; no raw stamps.
    assert.ok(!nbLines.some((l) => /frame=|\\"/.test(l)), 'no frame=JSON');
    assert.ok(!nbLines.some((l) => / pts=| ts=\d+( |$)/.test(l)), 'no raw pts or ts in line mode');
    assert.ok(nbLines.some((l) => / lat=-?\d+ms/.test(l)), 'the publish-to-receive latency');
    assert.ok(nbLines.some((l) => / event\/hist .* ts=\d{4}-\d\d-\d\dT/.test(l)), "an archived message's time, as a date");
    // --json keeps the raw values, with the texts masked too.
    const objs = lines(nbJson).map((l) => JSON.parse(l));
    assert.ok(objs.some((o) => typeof o.env?.pts === 'number'), 'json: raw pts');
    assert.ok(objs.some((o) => o.env?.type === 'chat' && o.env.body === `<${TEXT.chatOut.length} chars>`), 'json: chat body masked');

    // --type presence,typing: those frames both ways, nothing else.
    const tl = lines(typed);
    const kinds = [...new Set(tl.map((l) => l.split(' ')[2]))].sort();
    console.log(`# imtap --type presence,typing: ${tl.length} lines, types ${kinds.join(',')}`);
    assert.deepEqual(kinds, ['event/presence', 'event/typing', 'req/presence', 'req/typing'], tl.join('\n'));
    assert.ok(tl.some((l) => l.includes(`status="${TEXT.bobStatus}"`)), 'without --no-bodies the status shows');
  });

/** A 16-character slice from the middle of a credential. */
function c16(s) {
  const i = Math.max(0, Math.floor(s.length / 2) - 8);
  return s.slice(i, i + 16);
}

test('IMB_TAP_NO_BODIES: a bad value is a usage error of imtap; the services do not call it unknown', { skip: PLAIN_RUN_ONLY }, () => {
  // (An imtap that ignored the variable would wait for Redis: the timeout.)
  const r = spawnSync(binPath('imtap'), ['--count', '1', '--redis-port', '1'],
    { encoding: 'utf8', timeout: 5000, env: { ...process.env, IMB_TAP_NO_BODIES: 'maybe' } });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /IMB_TAP_NO_BODIES/);
  const env = { ...process.env, IMB_TAP_NO_BODIES: '1', IMB_CRED_KEY: randomCredKey(), IMB_TLS: 'off' };
  const c = spawnSync(binPath('imb-edge'), ['--check-config'], { encoding: 'utf8', env });
  assert.equal(c.status, 0, `${c.stdout}${c.stderr}`);
  assert.doesNotMatch(c.stderr, /unknown_env|IMB_TAP/);
});

itest('imtap survives a Redis restart and resubscribes', { bins: ['imtap'], timeout: 30000 }, async (t, stack) => {
  const redis = await startRedis(stack);
  const tap = startTap(stack, redis.port, ['--prefix', 'demo']);
  await tap.waitForLine(/subscribed demo:\* on/, { timeout: 5000 });
  const env = (body) => JSON.stringify({ v: 1, type: 'chat', ts: Date.now(), from: 'a@x', to: 'b@x', body });
  assert.equal(await redis.command('PUBLISH', 'demo:x:a@x', env('before restart')), 1);
  assert.equal(await redis.command('PUBLISH', 'imb:x:a@x', env('other prefix')), 0);
  await tap.waitForLines(/body="before restart"/, { stream: 'stdout' });
  await redis.restart({ downMs: 500 });
  await tap.waitForLine(/resubscribed demo:\* on/, { timeout: 10000 });
  assert.equal(await redis.command('PUBLISH', 'demo:x:a@x', env('after restart')), 1);
  await tap.waitForLines(/body="after restart"/, { stream: 'stdout' });
  assert.ok(!tap.stdout.includes('other prefix'));
  assert.ok(tap.running);
});

// The Redis ACL users docs/DEPLOY.md recommends: the services confined to the
// prefix's keys and channels, the tap to PSUBSCRIBE on them.
const ACL_SERVICE = ['imbridge', 'on', '>svc-pw-3d9f', 'resetkeys', '~imb:*', 'resetchannels', '&imb:*', '+@all'];
const ACL_TAP = ['imtap', 'on', '>tap-pw-51c2', 'resetchannels', '&imb:*', '-@all', '+ping', '+psubscribe', '+punsubscribe'];

itest('the Redis ACL users of docs/DEPLOY.md: services confined to imb:*, a tap that can only PSUBSCRIBE',
  { bins: ['imb-edge', 'imb-xmppd', 'imtap'], timeout: 60000 }, async (t, stack) => {
    const doc = fs.readFileSync(path.join(REPO_ROOT, 'docs', 'DEPLOY.md'), 'utf8');
    // The same lines as in the doc, but for the passwords.
    for (const [u, ph] of [[ACL_SERVICE, '>SERVICE-PASSWORD'], [ACL_TAP, '>TAP-PASSWORD']]) {
      const line = `user ${u.map((w) => (w.startsWith('>') ? ph : w)).join(' ')}`;
      assert.ok(doc.includes(line), `DEPLOY.md shows: ${line}`);
    }
    const credKey = randomCredKey();
    const [redis, prosody] = await Promise.all([
      startRedis(stack, {
        extraArgs: ['--user', 'default', 'on', 'nopass', '-@all', '+ping', '--user', ...ACL_SERVICE, '--user', ...ACL_TAP],
      }),
      startProsody(stack),
    ]);
    const svcAuth = ['--redis-user', 'imbridge', '--redis-password', 'svc-pw-3d9f'];
    await startXmppd(stack, { redisPort: redis.port, xmppPort: prosody.c2sPort, credKey, extraArgs: svcAuth });
    const edge = await startEdge(stack, { redisPort: redis.port, credKey, extraArgs: svcAuth });
    const tap = startTap(stack, redis.port, ['--redis-user', 'imtap', '--redis-password', 'tap-pw-51c2']);
    await tap.waitForLine(/subscribed imb:\* on/, { timeout: 5000 });
    await sleep(1200);
    const bob = await startDesktop(stack, { port: prosody.c2sPort, user: 'bob', pass: 'secret', domain: 'localhost' });
    const alice = await connectPhone(stack, edge.port, 'alice');
    await alice.login('alice@localhost', 'secret');
    assert.equal((await alice.msg('bob@localhost', 'under ACL')).t, 'ack');
    await bob.nextMessage({ body: 'under ACL' });
    await bob.send('alice@localhost', 'back under ACL');
    await alice.nextMsg({ body: 'back under ACL' });
    await tap.waitForLines(/ w:\S+ chat alice@localhost .*body="under ACL"/, { stream: 'stdout' });
    // The tap user cannot publish or read keys.
    const replies = await rawCommands(redis.port, [['AUTH', 'imtap', 'tap-pw-51c2'],
      ['PUBLISH', 'imb:w:w0', '{}'], ['GET', userKey('lease', 'alice@localhost')]]);
    assert.deepEqual(replies.map((r) => r.split(' ')[0]), ['+OK', '-NOPERM', '-NOPERM'], replies.join(' | '));
  });

// ---------------------------------------------------------------------------
// Sample configuration files

for (const svc of ['edge', 'xmppd']) {
  test(`deploy/${svc}.conf lists every option of imb-${svc} with its default, and loads`, () => {
    const bin = binPath(`imb-${svc}`);
    const opts = helpOptions(bin);
    const file = path.join(DEPLOY, `${svc}.conf`);
    const text = fs.readFileSync(file, 'utf8');
    const seen = new Map();
    for (const line of text.split('\n')) {
      const m = /^#?\s*([a-z_]+)\s*=\s*(.*)$/.exec(line);
      if (m && opts.has(m[1])) seen.set(m[1], m[2].trim());
    }
    for (const [name, def] of opts) {
      assert.ok(seen.has(name), `deploy/${svc}.conf lacks option ${name}`);
      const want = def === '""' || def === '<secret>' ? '' : def;
      assert.equal(seen.get(name), want, `deploy/${svc}.conf: default of ${name}`);
    }
    // As shipped (all commented out) it is a valid config file (the edge's
    // tls = on needs certificates of the operator's own: off here).
    const extra = svc === 'edge' ? ['--tls', 'off'] : [];
    const r = spawnSync(bin, ['--config', file, '--check-config', '--cred-key', randomCredKey(), ...extra], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  });
}

// ---------------------------------------------------------------------------
// The container healthcheck (deploy/healthcheck.sh, no curl)

itest('deploy/healthcheck.sh: HTTP /healthz 200 and 503, TCP check against a real edge', { bins: ['imb-edge'] }, async (t, stack) => {
  const script = path.join(DEPLOY, 'healthcheck.sh');
  // Asynchronous: the HTTP server below lives in this very process.
  const run = (args, env = {}) => new Promise((resolve) => {
    execFile('bash', [script, ...args], {
      encoding: 'utf8', env: { ...process.env, IMB_HEALTHCHECK_BIN_DIR: path.dirname(binPath('imb-edge')), ...env },
    }, (err, stdout) => resolve({ status: err ? err.code : 0, stdout }));
  });
  let healthy = true;
  const srv = http.createServer((req, res) => {
    if (req.url !== '/healthz') { res.writeHead(404); res.end(); return; }
    res.writeHead(healthy ? 200 : 503, { 'Content-Type': 'text/plain' });
    res.end(healthy ? 'ok\n' : 'redis down\n');
  });
  await new Promise((r) => srv.listen(0, HOST, r));
  stack.onCleanup('http', () => new Promise((r) => srv.close(r)));
  const hp = srv.address().port;

  let r = await run(['http', `0.0.0.0:${hp}`]);
  assert.equal(r.status, 0, r.stdout);
  healthy = false;
  r = await run(['http', `${HOST}:${hp}`]);
  assert.equal(r.status, 1);
  assert.match(r.stdout, /503.*redis down/);
  const closed = await freePort();
  assert.equal((await run(['http', `${HOST}:${closed}`])).status, 1);
  assert.equal((await run(['tcp', `${HOST}:${closed}`])).status, 1);
  assert.equal((await run(['bogus'])).status, 2);

  const redis = await startRedis(stack);
  const edge = await startEdge(stack, { redisPort: redis.port, credKey: randomCredKey() });
  r = await run(['tcp', `${HOST}:${edge.port}`]);
  assert.equal(r.status, 0, r.stdout);
  // Auto mode for the edge: the HTTP check when the binary has http_listen,
  // else the TCP check on IMB_LISTEN.
  const hasHttp = helpOptions(binPath('imb-edge')).has('http_listen');
  r = await run(['edge'], { IMB_LISTEN: `${HOST}:${edge.port}`, IMB_HTTP_LISTEN: `${HOST}:${hp}` });
  assert.equal(r.status, hasHttp ? 1 : 0, r.stdout); // the fake endpoint says 503
});

// ---------------------------------------------------------------------------
// make install: a staged tree (DESTDIR) with the programs, the healthcheck,
// sample configs never overwritten, and units pointing at the real paths.

test('make install DESTDIR=... PREFIX=/usr: files, man pages, unit paths, configs kept; make uninstall', (t) => {
  const dest = fs.mkdtempSync(path.join(os.tmpdir(), 'imb-install-'));
  t.after(() => fs.rmSync(dest, { recursive: true, force: true }));
  // The binaries under test, without building (-o all).
  const mk = (target) => spawnSync('make', ['--no-print-directory', '-o', 'all', target, `DESTDIR=${dest}`, 'PREFIX=/usr',
    `BIN=${path.dirname(binPath('imb-edge'))}`], { cwd: REPO_ROOT, encoding: 'utf8' });
  let r = mk('install');
  assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
  const files = (dir) => fs.readdirSync(path.join(dest, dir)).sort();
  assert.deepEqual(files('usr/bin'), ['imb-edge', 'imb-healthcheck', 'imb-xmppd', 'imcat', 'imtap']);
  assert.deepEqual(files('etc/imbridge'), ['edge.conf', 'filter.rules', 'xmppd.conf']);
  // The man pages (man/, tests/integration/manpages.test.mjs).
  assert.deepEqual(files('usr/share/man/man1'), ['imcat.1', 'imtap.1']);
  assert.deepEqual(files('usr/share/man/man8'), ['imb-edge.8', 'imb-xmppd.8']);
  assert.equal(fs.readFileSync(path.join(dest, 'usr/share/man/man8/imb-edge.8'), 'utf8'),
    fs.readFileSync(path.join(REPO_ROOT, 'man/imb-edge.8'), 'utf8'));
  const unit = fs.readFileSync(path.join(dest, 'usr/lib/systemd/system/imb-edge.service'), 'utf8');
  assert.match(unit, /^ExecStart=\/usr\/bin\/imb-edge --config \/etc\/imbridge\/edge\.conf$/m);
  const installed = spawnSync(path.join(dest, 'usr/bin/imb-edge'), ['--version'], { encoding: 'utf8' });
  assert.match(installed.stdout, /^imb-edge \d+\.\d+\.\d+/);
  // An edited config survives a second install; uninstall leaves it.
  fs.appendFileSync(path.join(dest, 'etc/imbridge/edge.conf'), 'heartbeat = 45\n');
  r = mk('install');
  assert.match(r.stdout, /keeping \/etc\/imbridge\/edge\.conf/);
  assert.match(fs.readFileSync(path.join(dest, 'etc/imbridge/edge.conf'), 'utf8'), /heartbeat = 45\n$/);
  r = mk('uninstall');
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(files('usr/bin'), []);
  assert.deepEqual([...files('usr/share/man/man1'), ...files('usr/share/man/man8')], []);
  assert.deepEqual(files('etc/imbridge'), ['edge.conf', 'filter.rules', 'xmppd.conf']);
});

// ---------------------------------------------------------------------------
// debian/: the package `make deb-test` builds (scripts/deb-test.sh builds,
// lints, installs and purges it; CI's "debian package" stage runs it). Here,
// without building: its version is the release, it build-depends on every
// -dev package the Makefile compiles against, and its units are the
// deploy/systemd ones with the packaged paths.

test('debian/: version = VERSION, Build-Depends cover scripts/deps.sh\'s -dev packages, sysusers user = units\' User', { skip: PLAIN_RUN_ONLY }, (t) => {
  const deb = (f) => fs.readFileSync(path.join(REPO_ROOT, 'debian', f), 'utf8');
  const version = fs.readFileSync(path.join(REPO_ROOT, 'VERSION'), 'utf8').trim();
  assert.equal(/^imbridge \(([^)]+)\)/.exec(deb('changelog'))?.[1], version, 'debian/changelog version = VERSION');
  assert.match(deb('control'), /debhelper-compat \(= 13\)/);
  const buildDeps = new Set([.../^Build-Depends:([^]*?)\n(?=\S)/m.exec(deb('control'))[1].matchAll(/([a-z0-9.+-]+)/g)].map((m) => m[1]));
  const deps = fs.readFileSync(path.join(REPO_ROOT, 'scripts', 'deps.sh'), 'utf8');
  const devs = [...new Set([...deps.matchAll(/\b(lib[a-z0-9.+-]+-dev)\b/g)].map((m) => m[1]))];
  assert.ok(devs.length >= 5, `-dev packages in deps.sh: ${devs}`);
  for (const d of [...devs, 'pkg-config']) assert.ok(buildDeps.has(d), `Build-Depends has ${d}`);
  assert.match(deb('control'), /^Depends: \$\{shlibs:Depends\}, \$\{misc:Depends\}/m);
  assert.ok(fs.statSync(path.join(REPO_ROOT, 'debian', 'rules')).mode & 0o111, 'debian/rules is executable');
  assert.match(deb('rules'), /dh_auto_install -- PREFIX=\/usr SYSCONFDIR=\/etc/);
  const user = /^u\s+(\S+)/m.exec(deb('imbridge.sysusers'))?.[1];
  for (const u of ['imb-edge', 'imb-xmppd']) {
    const unit = fs.readFileSync(path.join(DEPLOY, 'systemd', `${u}.service`), 'utf8');
    assert.match(unit, new RegExp(`^User=${user}$`, 'm'), `${u}.service runs as ${user}`);
  }
  t.diagnostic(`imbridge ${version}: ${buildDeps.size} build dependencies, system user ${user}`);
});

// ---------------------------------------------------------------------------
// deploy/Dockerfile.dockerignore lets in every COPY source of the Dockerfile
// (a source it excludes fails `docker build` with "not found").

/** Docker's .dockerignore verdict for a context path: the last matching rule wins. */
function dockerIgnored(rules, file) {
  const re = (p) => new RegExp(`^${p.replace(/\/$/, '').replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*\*/g, '\0').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]').replace(/\0/g, '.*')}$`);
  const parts = file.replace(/\/$/, '').split('/');
  // A rule matching a directory matches everything under it.
  const matches = (p) => parts.some((_, i) => re(p).test(parts.slice(0, i + 1).join('/')));
  let ignored = false;
  for (const r of rules) {
    if (r.startsWith('!')) { if (matches(r.slice(1))) ignored = false; } else if (matches(r)) ignored = true;
  }
  return ignored;
}

test('deploy/Dockerfile.dockerignore lets in every COPY source of deploy/Dockerfile', { skip: PLAIN_RUN_ONLY }, (t) => {
  const df = fs.readFileSync(path.join(DEPLOY, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const rules = fs.readFileSync(path.join(DEPLOY, 'Dockerfile.dockerignore'), 'utf8').split('\n')
    .map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  assert.ok(dockerIgnored(rules, 'tests/node_modules/x') && dockerIgnored(rules, 'bin/imb-edge'), 'build output stays out');
  const sources = [...df.matchAll(/^COPY (?!--from)(.*) \S+$/gm)].flatMap((m) => m[1].trim().split(/\s+/));
  assert.ok(sources.length >= 8, `COPY sources: ${sources}`);
  const out = sources.filter((src) => dockerIgnored(rules, src) || !fs.existsSync(path.join(REPO_ROOT, src)));
  t.diagnostic(`COPY sources: ${sources.length}, excluded by the dockerignore or missing: ${out.length}`);
  assert.deepEqual(out, []);
});

// ---------------------------------------------------------------------------
// deploy/Dockerfile without a Docker engine: its build stage's sources build,
// and its runtime packages cover every library the programs link.

test('deploy/Dockerfile: the copied sources build the four programs; runtime packages cover their libraries',
  { timeout: 300000, skip: PLAIN_RUN_ONLY }, (t) => {
    const df = fs.readFileSync(path.join(DEPLOY, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
    const stages = df.split(/^FROM /m).slice(1);
    assert.equal(stages.length, 2, 'two stages');
    assert.match(stages[0], /^debian:bookworm AS build/);
    assert.match(stages[1], /^debian:bookworm-slim/);
    assert.match(stages[1], /^USER (?!root)\S+/m, 'runs as a non-root user');
    assert.match(stages[1], /^HEALTHCHECK /m);

    // Build stage: copy exactly what it COPYs, build as it does.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imb-dockerbuild-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    for (const m of stages[0].matchAll(/^COPY (?!--from)(.+) (\S+)$/gm)) {
      for (const src of m[1].trim().split(/\s+/)) {
        fs.cpSync(path.join(REPO_ROOT, src), path.join(dir, m[2] === './' ? src : m[2]), { recursive: true });
      }
    }
    // A plain build, as in the image: not the sanitized one a `make
    // SANITIZE=1 test` would pass down through MAKEFLAGS.
    const env = { ...process.env };
    for (const k of ['MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'SANITIZE']) delete env[k];
    const mk = spawnSync('make', ['-j2', 'all'], { cwd: dir, encoding: 'utf8', env });
    assert.equal(mk.status, 0, `make in a copy of the build context failed:\n${mk.stderr.slice(-4000)}`);
    const progs = /^COPY --from=build (.*) \/usr\/local\/bin\/$/m.exec(stages[1])[1].split(/\s+/);
    assert.deepEqual(progs.map((p) => path.basename(p)).sort(), ['imb-edge', 'imb-xmppd', 'imcat', 'imtap']);
    for (const p of progs) assert.ok(fs.existsSync(path.join(dir, 'bin', path.basename(p))), `${p} built`);
    for (const m of stages[1].matchAll(/^COPY (?!--from)(.*) (\S+)$/gm)) {
      for (const src of m[1].split(/\s+/)) assert.ok(fs.existsSync(path.join(REPO_ROOT, src)), `${src} exists`);
    }

    // Runtime stage: the packages it installs, plus what they pull in, hold
    // every shared library the programs need.
    const runtime = /apt-get install -y --no-install-recommends (.*?) &&/.exec(stages[1])[1].trim().split(/\s+/);
    const dep = spawnSync('apt-cache', ['depends', '--recurse', '--installed', '--no-recommends', '--no-suggests',
      '--no-conflicts', '--no-breaks', '--no-replaces', '--no-enhances', ...runtime], { encoding: 'utf8' });
    if (dep.status !== 0 || !dep.stdout.trim()) {
      t.diagnostic(`apt-cache depends failed (${dep.stderr.trim()}): runtime package check skipped`);
      return;
    }
    const provided = new Set(dep.stdout.split('\n').filter((l) => l && !l.startsWith(' ')).map((l) => l.split(':')[0]));
    for (const p of runtime) assert.ok(provided.has(p), `runtime package ${p} is installed here`);
    for (const p of progs) {
      const ldd = execFileSync('ldd', [path.join(dir, 'bin', path.basename(p))], { encoding: 'utf8' });
      for (const m of ldd.matchAll(/=> (\/\S+)/g)) {
        const real = fs.realpathSync(m[1]);
        let owner = spawnSync('dpkg', ['-S', real], { encoding: 'utf8' });
        if (owner.status !== 0) owner = spawnSync('dpkg', ['-S', m[1]], { encoding: 'utf8' });
        assert.equal(owner.status, 0, `no package owns ${m[1]}`);
        const pkg = owner.stdout.split(':')[0];
        assert.ok(provided.has(pkg), `${path.basename(p)} needs ${m[1]} from ${pkg}, not among the runtime packages or their dependencies`);
      }
    }
  });

