// --check-config runs the validation start-up runs: every bad configuration
// below must fail it (exit 2, one clear line on stderr) without starting
// anything, and a good one passes. Also: --version, an IMB_* variable that
// names no option (a typo), and start-up refusing an unreadable xmpp_cafile
// (which used to start and answer every login "wrong user or password").
// Fast: no Redis, no XMPP server; each case is one short process.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, after } from 'node:test';
import { binPath, randomCredKey, REPO_ROOT } from '../harness/index.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imb-config-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const KEY = randomCredKey();

function cert(name) {
  const crt = path.join(dir, `${name}.crt`), key = path.join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', key, '-out', crt], { stdio: 'ignore' });
  return { crt, key };
}
const good = cert('good');
const other = cert('other');
const garbage = path.join(dir, 'garbage.pem');
fs.writeFileSync(garbage, 'not a certificate\n');

/** Run prog with args (and extra env), no IMB_* variable inherited but the tests'. */
function run(prog, args, env = {}, timeout = 10000) {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('IMB_') || k.startsWith('IMB_TEST_')));
  const r = spawnSync(binPath(prog), args, { env: { ...base, ...env }, encoding: 'utf8', timeout });
  return { status: r.status, out: `${r.stdout}${r.stderr}`, signal: r.signal };
}

const EDGE_BASE = ['--cred-key', KEY, '--tls', 'off', '--listen', '127.0.0.1:0'];
const XMPPD_BASE = ['--cred-key', KEY, '--xmpp-tls', 'disabled'];
const conf = (name, text) => { const f = path.join(dir, name); fs.writeFileSync(f, text); return f; };

// [name, program, args, env, expected stderr]
const BAD = [
  ['edge: tls = on (the default) without a certificate', 'imb-edge', ['--config', conf('notls.conf', `cred_key = ${KEY}\n`)], {},
    /tls = on needs tls_cert and tls_key/],
  ['edge: a certificate file that does not exist', 'imb-edge',
    ['--cred-key', KEY, '--tls-cert', path.join(dir, 'missing.crt'), '--tls-key', good.key], {}, /tls_cert .*missing\.crt: No such file/],
  ['edge: a key file that does not exist', 'imb-edge',
    ['--cred-key', KEY, '--tls-cert', good.crt, '--tls-key', path.join(dir, 'missing.key')], {}, /tls_key .*missing\.key: No such file/],
  ['edge: a certificate OpenSSL cannot load', 'imb-edge',
    ['--cred-key', KEY, '--tls-cert', garbage, '--tls-key', good.key], {}, /certificate .*garbage\.pem/],
  ['edge: a key that does not match the certificate', 'imb-edge',
    ['--cred-key', KEY, '--tls-cert', good.crt, '--tls-key', other.key], {}, /other\.key: .*(key values mismatch|does not match)/],
  ['edge: tls neither on nor off', 'imb-edge', [...EDGE_BASE, '--tls', 'yes'], {}, /tls must be on or off/],
  ['edge: a listen that does not parse', 'imb-edge', [...EDGE_BASE, '--listen', 'localhost7222'], {}, /listen: 'localhost7222' is not address:port/],
  ['edge: a listen port out of range', 'imb-edge', [...EDGE_BASE, '--listen', '127.0.0.1:72220'], {}, /listen: '127\.0\.0\.1:72220'/],
  ['edge: an http_listen that does not parse', 'imb-edge', [...EDGE_BASE, '--http-listen', '9100'], {}, /http_listen: '9100'/],
  ['edge: a bad edge_id', 'imb-edge', [...EDGE_BASE, '--edge-id', 'a b'], {}, /edge_id must be/],
  ['edge: a bus_prefix with a brace (a Redis Cluster hash tag)', 'imb-edge', [...EDGE_BASE, '--bus-prefix', 'imb{x}'], {},
    /bus_prefix must be without braces or spaces/],
  ['edge: a redis_cluster seed without a port', 'imb-edge', [...EDGE_BASE, '--redis-cluster', '10.0.0.1:6379,10.0.0.2'], {},
    /redis_cluster: "10\.0\.0\.2" is not host:port/],
  ['edge: IMB_HEARTBEET (a typo) in the environment', 'imb-edge', EDGE_BASE, { IMB_HEARTBEET: '5' },
    /IMB_HEARTBEET is not an option \(did you mean IMB_HEARTBEAT\?\)/],
  ['edge: IMB_redis_port (options are read upper case) in the environment', 'imb-edge', EDGE_BASE, { IMB_redis_port: '1' },
    /IMB_redis_port is not an option \(did you mean IMB_REDIS_PORT\?\)/],
  ['xmppd: an xmpp_cafile that does not exist', 'imb-xmppd', [...XMPPD_BASE, '--xmpp-cafile', path.join(dir, 'missing-ca.pem')], {},
    /xmpp_cafile .*missing-ca\.pem: No such file/],
  ['xmppd: an xmpp_cafile with no certificate in it', 'imb-xmppd', [...XMPPD_BASE, '--xmpp-cafile', garbage], {},
    /xmpp_cafile .*garbage\.pem: no certificate OpenSSL can load/],
  ['xmppd: an xmpp_cafile that is a directory', 'imb-xmppd', [...XMPPD_BASE, '--xmpp-cafile', dir], {}, /xmpp_cafile .*Is a directory/],
  ['xmppd: an http_listen that does not parse', 'imb-xmppd', [...XMPPD_BASE, '--http-listen', 'x:y'], {}, /http_listen: 'x:y'/],
  ['xmppd: IMB_WORKER (a typo) in the environment', 'imb-xmppd', XMPPD_BASE, { IMB_WORKER: '4' },
    /IMB_WORKER is not an option \(did you mean IMB_WORKERS\?\)/],
];

test('--check-config fails every bad configuration with a clear message', (t) => {
  const failed = [];
  for (const [name, prog, args, env, want] of BAD) {
    const r = run(prog, [...args, '--check-config'], env);
    if (r.status !== 2 || !want.test(r.out)) failed.push(`${name}: exit ${r.status}, said: ${r.out.trim() || '(nothing)'}`);
  }
  t.diagnostic(`bad configurations: ${BAD.length}, refused with the right message: ${BAD.length - failed.length}`);
  assert.deepEqual(failed, []);
});

test('--check-config passes good configurations (TLS files, CA file, IPv6 listen)', () => {
  const cases = [
    ['imb-edge', ['--cred-key', KEY, '--tls-cert', good.crt, '--tls-key', good.key, '--listen', '[::1]:7222',
      '--http-listen', '127.0.0.1:9100']],
    ['imb-edge', EDGE_BASE],
    ['imb-xmppd', ['--cred-key', KEY, '--xmpp-cafile', good.crt, '--http-listen', ':9100']],
  ];
  for (const [prog, args] of cases) {
    const r = run(prog, [...args, '--check-config']);
    assert.equal(r.status, 0, `${prog} ${args.join(' ')}: ${r.out}`);
    assert.match(r.out, /configuration ok/);
  }
});

test('the other service\'s IMB_* options (one environment file for both) are not typos', () => {
  const names = (prog) => new Set([...execFileSync(binPath(prog), ['--help'], { encoding: 'utf8' })
    .matchAll(/^ {2}--([a-z-]+)\s/gm)].map((m) => m[1].replace(/-/g, '_')));
  const edge = names('imb-edge'), xmppd = names('imb-xmppd');
  const env = (only, other) => Object.fromEntries([...only].filter((n) => !other.has(n))
    .map((n) => [`IMB_${n.toUpperCase()}`, 'x']));
  const hint = 'a new option must be added to config_known_names in common/config.c';
  const r1 = run('imb-edge', [...EDGE_BASE, '--check-config'], env(xmppd, edge));
  assert.equal(r1.status, 0, `${r1.out}${hint}`);
  const r2 = run('imb-xmppd', [...XMPPD_BASE, '--check-config'], env(edge, xmppd));
  assert.equal(r2.status, 0, `${r2.out}${hint}`);
  // Tooling variables neither.
  const r3 = run('imb-edge', [...EDGE_BASE, '--check-config'], { IMB_TEST_SOMETHING: '1', IMB_HEALTHCHECK_TIMEOUT: '3', IMB_CONFIG: '' });
  assert.equal(r3.status, 0, r3.out);
});

test('a typo in the environment is a warning at start-up (the service still starts)', async () => {
  const { spawn } = await import('node:child_process');
  const p = spawn(binPath('imb-edge'), [...EDGE_BASE, '--redis-port', '1'], {
    env: { ...process.env, IMB_HEARTBEET: '5' }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no warning in 8 s: ${err}`)), 8000);
    p.stderr.on('data', (d) => {
      err += d;
      if (/ listening addr=/.test(err) && /unknown_env var=IMB_HEARTBEET hint=IMB_HEARTBEAT/.test(err)) {
        clearTimeout(timer);
        resolve();
      }
    });
  }).finally(() => p.kill('SIGKILL'));
  assert.match(err, /WARN/);
});

test('start-up refuses an unreadable xmpp_cafile (exit 2 at once, not a service failing every login)', () => {
  const r = run('imb-xmppd', ['--cred-key', KEY, '--xmpp-cafile', path.join(dir, 'missing-ca.pem'), '--redis-port', '1'], {}, 5000);
  assert.equal(r.signal, null, `still running after 5 s: ${r.out}`);
  assert.equal(r.status, 2, r.out);
  assert.match(r.out, /xmpp_cafile .*No such file/);
});

test('--version on both binaries prints the VERSION file\'s release', () => {
  const version = fs.readFileSync(path.join(REPO_ROOT, 'VERSION'), 'utf8').trim();
  assert.match(version, /^\d+\.\d+\.\d+/);
  for (const prog of ['imb-edge', 'imb-xmppd']) {
    const r = run(prog, ['--version']);
    assert.equal(r.status, 0, r.out);
    assert.ok(r.out.startsWith(`${prog} ${version}`), `${prog} --version: ${r.out}`);
  }
});
