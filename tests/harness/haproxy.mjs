// haproxy (mode tcp) in front of edges on loopback, configured from
// deploy/haproxy.cfg as shipped: only the addresses change.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { HOST, freePort, canConnect, waitFor } from './util.mjs';

const HAPROXY_CFG = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'deploy', 'haproxy.cfg');

/**
 * deploy/haproxy.cfg for loopback: the phones bind on 127.0.0.1:port, the
 * server-template (Docker DNS) replaced by real servers, the stats port moved.
 * Everything else (timeouts, checks, balancing) is the file as shipped.
 * servers: edge phone ports, or {port, httpPort} for edges started with
 * --http-listen: haproxy then checks their /healthz as shipped. With bare
 * ports (edges without http_listen) the HTTP check lines are dropped and
 * haproxy falls back to a TCP connect check.
 */
export function loopbackHaproxyCfg({ port, statsPort, servers }) {
  let cfg = fs.readFileSync(HAPROXY_CFG, 'utf8');
  const http = servers.every((s) => typeof s === 'object' && s.httpPort);
  if (!http) cfg = cfg.replace(/^[ \t]*(option httpchk|http-check)\b.*\n/gm, '');
  const swap = (re, by, what) => {
    const n = (cfg.match(new RegExp(re.source, `${re.flags}g`)) ?? []).length;
    assert.equal(n, 1, `deploy/haproxy.cfg: expected one ${what} line (${re})`);
    cfg = cfg.replace(re, by);
  };
  swap(/^(\s*)bind :7222\b.*$/m, `$1bind ${HOST}:${port}`, 'phone bind');
  swap(/^(\s*)bind :8404\b.*$/m, `$1bind ${HOST}:${statsPort}`, 'stats bind');
  swap(/^(\s*)server-template edge .*$/m,
    (_, ind) => servers.map((s, i) => (http
      ? `${ind}server edge${i + 1} ${HOST}:${s.port} check port ${s.httpPort}`
      : `${ind}server edge${i + 1} ${HOST}:${s.port ?? s} check`)).join('\n'),
    'server-template');
  return cfg;
}

/** haproxy's per-server state from its stats CSV: {edge1: 'UP', ...}. */
export async function haproxyStates(statsPort) {
  const csv = await new Promise((resolve, reject) => {
    http.get({ host: HOST, port: statsPort, path: '/stats;csv' }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { b += d; });
      res.on('end', () => resolve(b));
    }).on('error', reject);
  });
  const lines = csv.split('\n');
  const head = lines[0].replace(/^# /, '').split(',');
  const col = (n) => head.indexOf(n);
  const out = {};
  for (const l of lines.slice(1)) {
    const f = l.split(',');
    if (f[col('pxname')] === 'edges' && /^edge\d+$/.test(f[col('svname')])) {
      out[f[col('svname')]] = {
        status: f[col('status')], stot: Number(f[col('stot')]), check: f[col('check_status')], lastChk: f[col('last_chk')],
      };
    }
  }
  return out;
}


/**
 * startHaproxy(stack, {servers: [edgePort...]}) -> {port, statsPort, proc,
 * states()}: waits until haproxy listens and every edge is UP.
 */
export async function startHaproxy(stack, { servers }) {
  const port = await freePort();
  const statsPort = await freePort();
  const dir = stack.tempDir('imb-haproxy-');
  const cfgFile = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(cfgFile, loopbackHaproxyCfg({ port, statsPort, servers }));
  const check = spawnSync('haproxy', ['-c', '-f', cfgFile], { encoding: 'utf8' });
  assert.equal(check.status, 0, `${check.stdout}${check.stderr}`);
  const proc = stack.spawn('haproxy', 'haproxy', ['-db', '-f', cfgFile], { logFile: path.join(dir, 'haproxy.log') });
  await waitFor(async () => {
    if (!proc.running) throw new Error(`haproxy exited: ${proc.stderr}`);
    return canConnect(port);
  }, { timeout: 10000, what: `haproxy on ${port}` });
  const states = () => haproxyStates(statsPort);
  await waitFor(async () => {
    const st = await states().catch(() => ({}));
    return servers.every((_, i) => st[`edge${i + 1}`]?.status === 'UP');
  }, { timeout: 15000, what: 'every edge UP in haproxy' });
  return { port, statsPort, proc, states };
}
