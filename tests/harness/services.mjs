// The project's own binaries (bin/imb-xmppd, bin/imb-edge, bin/imcat) and a
// whole-stack helper.
import path from 'node:path';
import { binPath, HOST, missingBins, randomCredKey, sleep } from './util.mjs';
import { startRedis } from './redis.mjs';
import { DEFAULT_USERS, startProsody } from './prosody.mjs';
import { startEjabberd } from './ejabberd.mjs';
import { startDesktop } from './desktop.mjs';
import { connectPhone, PhoneClient } from './phone.mjs';

const LOG_LEVEL = () => process.env.IMB_TEST_LOG_LEVEL || 'info';

function requireBin(name) {
  const miss = missingBins([name]);
  if (miss.length) throw new Error(`${binPath(name)} is missing or not executable (run make first)`);
  return binPath(name);
}

function commonArgs({ redisPort, credKey, logLevel = LOG_LEVEL() }) {
  return [
    '--redis-host', HOST,
    '--redis-port', String(redisPort),
    '--cred-key', credKey,
    '--log-level', logLevel,
  ];
}

let serial = 0;

/**
 * startXmppd(stack, {redisPort, xmppPort, workers=2, credKey, extraArgs=[],
 *   xmppHost='127.0.0.1', wait=true, timeout=10000}) -> Proc
 * Spawns bin/imb-xmppd with --xmpp-tls disabled and waits for one
 * `worker_ready` stderr line per worker.  proc.workers = workers.
 */
export async function startXmppd(stack, {
  redisPort, xmppPort, workers = 2, credKey, extraArgs = [], xmppHost = HOST,
  wait = true, timeout = 10000, name,
} = {}) {
  if (!redisPort || !xmppPort || !credKey) throw new Error('startXmppd: redisPort, xmppPort, credKey required');
  const bin = requireBin('imb-xmppd');
  serial += 1;
  const pname = name ?? `imb-xmppd#${serial}`;
  const logDir = stack.tempDir('imb-xmppd-');
  const args = [
    ...commonArgs({ redisPort, credKey }),
    '--xmpp-host', xmppHost,
    '--xmpp-port', String(xmppPort),
    '--xmpp-tls', 'disabled',
    '--workers', String(workers),
    ...extraArgs,
  ];
  const proc = stack.spawn(pname, bin, args, { logFile: path.join(logDir, 'imb-xmppd.log') });
  proc.workers = workers;
  if (wait) await proc.waitForLines(/worker_ready/, { count: workers, timeout });
  return proc;
}

/**
 * startEdge(stack, {redisPort, credKey, heartbeat, loginTimeout, maxFrame,
 *   extraArgs=[], timeout=10000, tls, wrap}) -> Proc with .port (parsed from the
 *   `listening addr=127.0.0.1:PORT` stderr line).  Listens on 127.0.0.1:0.
 *   wrap: a command run in front of the binary, e.g. ['prlimit', '--nofile=300:300'].
 */
export async function startEdge(stack, {
  redisPort, credKey, heartbeat, loginTimeout, maxFrame, extraArgs = [], timeout = 10000, name, tls, wrap,
} = {}) {
  if (!redisPort || !credKey) throw new Error('startEdge: redisPort, credKey required');
  const bin = requireBin('imb-edge');
  serial += 1;
  const pname = name ?? `imb-edge#${serial}`;
  const logDir = stack.tempDir('imb-edge-');
  const args = [...commonArgs({ redisPort, credKey }), '--listen', `${HOST}:0`];
  if (heartbeat !== undefined) args.push('--heartbeat', String(heartbeat));
  if (loginTimeout !== undefined) args.push('--login-timeout', String(loginTimeout));
  if (maxFrame !== undefined) args.push('--max-frame', String(maxFrame));
  // Plaintext unless a test hands a certificate: {cert, key} file paths.
  if (tls) args.push('--tls', 'on', '--tls-cert', tls.cert, '--tls-key', tls.key);
  else args.push('--tls', 'off');
  args.push(...extraArgs);
  const proc = stack.spawn(pname, bin, args, { logFile: path.join(logDir, 'imb-edge.log'), wrap });
  const line = await proc.waitForLine(/listening addr=127\.0\.0\.1:\d+/, { timeout });
  proc.port = Number(/listening addr=127\.0\.0\.1:(\d+)/.exec(line)[1]);
  if (!(proc.port > 0)) throw new Error(`imb-edge: bad listening line: ${line}`);
  return proc;
}

/**
 * startImcat(stack, {port, user, pass, host='127.0.0.1', extraArgs=[]}) -> Proc
 * running `bin/imcat --host H --port P --user JID --password PASS --json`
 * with stdin piped.  Helpers added on the Proc:
 *   sendJson(obj)            write one JSON line to stdin
 *   nextJson(pred, timeout)  next stdout line parsed as JSON satisfying pred
 *                            (function or partial pattern); other lines stay queued
 */
export function startImcat(stack, { port, user, pass, host = HOST, extraArgs = [], name } = {}) {
  const bin = requireBin('imcat');
  serial += 1;
  const proc = stack.spawn(name ?? `imcat#${serial}`, bin,
    ['--host', host, '--port', String(port), '--user', user, '--password', pass, '--json', ...extraArgs],
    { stdin: 'pipe' });
  proc.sendJson = (obj) => proc.write(JSON.stringify(obj) + '\n');
  proc.nextJson = async (pred, timeout = 5000) => {
    const p = typeof pred === 'function' ? pred : (o) => matchesShallow(o, pred ?? {});
    const line = await proc.nextStdoutLine((l) => {
      let o;
      try { o = JSON.parse(l); } catch { return false; }
      return o !== null && typeof o === 'object' && p(o);
    }, timeout);
    return JSON.parse(line);
  };
  return proc;
}

function matchesShallow(o, pat) {
  return Object.entries(pat).every(([k, v]) => (v instanceof RegExp ? v.test(String(o[k])) : o[k] === v));
}

/**
 * Wait until the edge at `port` routes logins to a bridge: a probe logs in as
 * a nonexistent user (imb-probe@domain) with a wrong password on a fresh
 * connection until the answer is something other than error `unavailable`
 * (normally auth_failed, which proves edge -> Redis -> xmppd -> XMPP server
 * all work).  Resolves the time it took in ms; throws after `timeout`.
 */
export async function waitBridgeReady(port, { domain = 'localhost', timeout = 10000 } = {}) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < timeout) {
    const p = await PhoneClient.connect(port, { name: 'probe' });
    try {
      last = await p.tryLogin(`imb-probe@${domain}`, 'not-the-password', { timeout: Math.max(500, timeout - (Date.now() - t0)) });
    } catch (e) {
      last = { exception: e.message };
    } finally {
      p.destroy();
    }
    if (last.t === 'error' && last.code === 'unavailable') {
      await sleep(100);
      continue;
    }
    if (last.exception) throw new Error(`bridge readiness probe: ${last.exception}`);
    return Date.now() - t0;
  }
  throw new Error(`bridge not ready after ${timeout} ms: last probe answer ${JSON.stringify(last)}`);
}

/**
 * startXmppServer(stack, {xmpp='prosody'|'ejabberd', users, push}) -> the
 * XMPP server (ProsodyServer or EjabberdServer: same shape), started.
 */
export function startXmppServer(stack, { xmpp = 'prosody', ...opts } = {}) {
  if (xmpp === 'prosody') return startProsody(stack, opts);
  if (xmpp === 'ejabberd') return startEjabberd(stack, opts);
  throw new Error(`startXmppServer: unknown server ${xmpp}`);
}

/**
 * The whole system for one test, each part on its own free port:
 *   startBridge(stack, {users, workers=2, edge:{heartbeat,...}, xmppdArgs, edgeArgs, probe=true,
 *     push=false, xmpp='prosody'|'ejabberd', xmppOpts (more for the server's start),
 *     redisOpts (more for startRedis: extraArgs, appendonly...), redis (a RedisServer
 *     started already: used instead of a new one),
 *     cluster (a startRedisCluster() result: both services on it, b.redis is it))
 *   (probe: wait with waitBridgeReady() before returning)
 *   (xmpp: default IMB_TEST_XMPP, else prosody: IMB_TEST_XMPP=ejabberd runs a
 *   suite's bridges against ejabberd)
 *   -> { stack, credKey, redis, server (the XMPP server, also as prosody, its
 *        old name), ejabberd (when it is ejabberd), xmppd, edge, domain,
 *        jid(user), pass(user),
 *        phone(name?) -> PhoneClient connected to the edge,
 *        loginPhone(user, name?) -> PhoneClient logged in as user@domain,
 *        desktop(user, resource?) -> DesktopPeer online }
 */
export async function startBridge(stack, {
  users = DEFAULT_USERS, workers = 2, edge: edgeOpts = {}, xmppdArgs = [], edgeArgs = [], probe = true,
  push = false, xmpp = process.env.IMB_TEST_XMPP || 'prosody', xmppOpts = {}, redisOpts = {},
  redis: givenRedis, cluster,
} = {}) {
  requireBin('imb-xmppd');
  requireBin('imb-edge');
  const credKey = randomCredKey();
  const [redis, server] = await Promise.all([
    cluster ?? givenRedis ?? startRedis(stack, redisOpts),
    startXmppServer(stack, { xmpp, users, push, ...xmppOpts }),
  ]);
  if (push) xmppdArgs = [...pushArgs(server), ...xmppdArgs];
  if (cluster) {
    // Both services on the Redis Cluster (startRedisCluster): its seeds
    // replace the single Redis's host and port.
    xmppdArgs = ['--redis-cluster', cluster.seeds, ...xmppdArgs];
    edgeArgs = ['--redis-cluster', cluster.seeds, ...edgeArgs];
  }
  // (With a cluster, --redis-port is given but not used.)
  const redisPort = cluster ? Number(cluster.seeds.split(',')[0].split(':').pop()) : redis.port;
  const [xmppd, edge] = await Promise.all([
    startXmppd(stack, { redisPort, xmppPort: server.c2sPort, workers, credKey, extraArgs: xmppdArgs }),
    startEdge(stack, { redisPort, credKey, extraArgs: edgeArgs, ...edgeOpts }),
  ]);
  if (probe) {
    const ms = await waitBridgeReady(edge.port, { domain: server.domain });
    stack.note(`bridge answered logins ${ms} ms after both services reported ready`);
  }
  const passwords = new Map(users);
  const b = {
    stack, credKey, redis, server, xmppd, edge, domain: server.domain,
    // b.prosody: the XMPP server whichever it is (the suites predate
    // ejabberd and read its ports and push settings from there).
    prosody: server,
    ejabberd: xmpp === 'ejabberd' ? server : undefined,
    jid: (u) => `${u}@${server.domain}`,
    pass: (u) => passwords.get(u),
    phone: (name = 'phone') => connectPhone(stack, edge.port, name),
    async loginPhone(user, name = `phone-${user}`) {
      const p = await connectPhone(stack, edge.port, name);
      await p.login(b.jid(user), passwords.get(user));
      return p;
    },
    desktop: (user, resource = 'desktop') => startDesktop(stack, {
      port: server.c2sPort, user, pass: passwords.get(user), domain: server.domain, resource,
    }),
  };
  return b;
}

/** xmppd flags that make it the push component of a server started with push. */
export function pushArgs(server) {
  const p = server.push;
  return ['--push-jid', p.jid, '--push-secret', p.secret, '--push-port', String(p.port)];
}

/**
 * Value for a test's `skip` option: when IMB_TEST_SKIP_MISSING=1 and some of
 * the binaries are missing, a reason string (test skipped); otherwise false
 * (a missing binary then fails the test with a clear message).
 */
export function binsMissingReason(names = ['imb-edge', 'imb-xmppd']) {
  const miss = missingBins(names);
  if (!miss.length || process.env.IMB_TEST_SKIP_MISSING !== '1') return false;
  return `not built: ${miss.map((n) => `bin/${n}`).join(', ')}`;
}

