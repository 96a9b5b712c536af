import net from 'node:net';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { Stack, startEdge, startRedis, randomCredKey, sleep } from '/work/wt/storm/tests/harness/index.mjs';
const st = new Stack('p');
const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
try {
  const dir = st.tempDir('c');
  const cert = path.join(dir, 'edge.crt'), key = path.join(dir, 'edge.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', key, '-out', cert], { stdio: 'ignore' });
  const redis = await startRedis(st);
  const edge = await startEdge(st, { redisPort: redis.port, credKey: randomCredKey(), loginTimeout: 1, tls: { cert, key }, extraArgs: ['--max-unauth-per-ip', '100000'] });
  const mode = process.argv[2] || 'silent';
  console.log('base', rss(edge.pid));
  for (let r = 0; r < 3; r++) {
    const socks = [];
    for (let i = 0; i < 2000; i++) {
      const s = net.connect(edge.port, '127.0.0.1');
      s.on('error', () => {}); s.resume();
      if (mode === 'half') s.on('connect', () => s.write(Buffer.from('1603010200010001fc0303', 'hex')));
      socks.push(s);
    }
    await sleep(800);
    const peak = rss(edge.pid);
    await sleep(3000);
    console.log(mode, 'round', r, 'peak', peak, 'after', rss(edge.pid), 'fds', fs.readdirSync(`/proc/${edge.pid}/fd`).length);
    for (const s of socks) s.destroy();
  }
} finally { await st.cleanup(); }
