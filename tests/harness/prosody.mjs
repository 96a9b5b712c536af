import { randomBytes } from 'node:crypto';
// A real Prosody per test, configured by scripts/prosody-conf.sh in a temp dir.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { canConnect, freePort, SCRIPTS_DIR, sleep, waitFor } from './util.mjs';
import { childEnv } from './stack.mjs';

const execFileP = promisify(execFile);

export const DEFAULT_USERS = [
  ['alice', 'secret'],
  ['bob', 'secret'],
  ['carol', 'secret'],
  ['dave', 'secret'],
];

export class ProsodyServer {
  constructor(stack, { dir, domain, tls = false, push = false }) {
    this.stack = stack;
    this.tls = tls; // c2s requires STARTTLS; this.caFile verifies it
    // push: an external component push.DOMAIN that mod_cloud_notify notifies
    // (this.push = {jid, port, secret} once configured)
    this.wantPush = push;
    this.push = null;
    this.dir = dir;
    this.domain = domain;
    this.cfg = path.join(dir, 'prosody.cfg.lua');
    this.logFile = path.join(dir, 'prosody.log');
    this.c2sPort = 0;
    this.httpPort = 0;
    this.proc = null;
    this.users = new Map();
  }

  /** (Re)write the config for the given ports. */
  async configure(c2sPort, httpPort) {
    const extra = this.tls ? { PROSODY_TLS: '1' } : {};
    if (this.wantPush) {
      this.push = { jid: `push.${this.domain}`, port: await freePort(), secret: randomBytes(12).toString('hex') };
      extra.PROSODY_PUSH = `${this.push.port}:${this.push.secret}`;
    }
    const { stdout, stderr } = await execFileP(path.join(SCRIPTS_DIR, 'prosody-conf.sh'),
      [this.dir, String(c2sPort), String(httpPort), this.domain],
      { env: childEnv(extra) });
    if (this.tls) this.caFile = path.join(this.dir, 'certs', `${this.domain}.crt`);
    if (stdout || stderr) throw new Error(`prosody-conf.sh printed output:\n${stdout}${stderr}`);
    this.c2sPort = c2sPort;
    this.httpPort = httpPort;
  }

  /** Create an account (works whether Prosody is running or not). */
  async register(user, pass) {
    try {
      await execFileP('prosodyctl', ['--config', this.cfg, 'register', user, this.domain, pass],
        { env: childEnv(), timeout: 15000 });
    } catch (e) {
      throw new Error(`prosodyctl register ${user}: ${e.message}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
    }
    this.users.set(user, pass);
  }

  jid(user) {
    return `${user}@${this.domain}`;
  }

  password(user) {
    return this.users.get(user);
  }

  /** Start prosody in the foreground and wait until c2s and http accept. */
  async start({ timeout = 10000 } = {}) {
    this.proc = this.stack.spawn(`prosody:${this.c2sPort}`, 'prosody', ['--config', this.cfg, '-F'], {
      cwd: this.dir,
      late: true,
    });
    const proc = this.proc;
    const r = await waitFor(async () => {
      if (!proc.running) return 'exited';
      if (this.logText().includes('Failed to open server port')) return 'bindfail';
      return (await canConnect(this.c2sPort)) && (await canConnect(this.httpPort)) ? 'up' : false;
    }, { timeout, interval: 25, what: `prosody c2s on ${this.c2sPort}` });
    if (r === 'up') return this;
    await proc.stop({ timeout: 2000 });
    const err = new Error(`prosody failed to start (${r}):\n${this.logText().slice(-4000)}\n${proc.stdout}${proc.stderr}`);
    err.code = r;
    throw err;
  }

  async stop() {
    if (this.proc) await this.proc.stop({ timeout: 5000 });
  }

  logText() {
    try { return fs.readFileSync(this.logFile, 'utf8'); } catch { return ''; }
  }

  get running() {
    return !!this.proc && this.proc.running;
  }
}

/**
 * startProsody(stack, {users:[[user,pass],...], domain='localhost'}) ->
 * ProsodyServer (started, users registered).  Retries with new ports when a
 * port turns out to be taken.
 */
export async function startProsody(stack, { users = DEFAULT_USERS, domain = 'localhost', tls = false, push = false } = {}) {
  const dir = stack.tempDir('imb-prosody-');
  const p = new ProsodyServer(stack, { dir, domain, tls, push });
  await p.configure(await freePort(), await freePort());
  await Promise.all(users.map(([u, pw]) => p.register(u, pw)));
  stack.onCleanup('prosody-log', () => {}, () => {
    const t = p.logText();
    return `----- prosody log (${p.logFile}) -----\n${t.length > 6000 ? '...\n' + t.slice(-6000) : t}`;
  });
  let lastErr;
  for (let attempt = 0; attempt < 4; attempt++) {
    try {
      return await p.start();
    } catch (e) {
      lastErr = e;
      if (e.code !== 'bindfail' && e.code !== 'exited') throw e;
      await sleep(50);
      await p.configure(await freePort(), await freePort());
    }
  }
  throw lastErr;
}
