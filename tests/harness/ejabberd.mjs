// A real ejabberd per test (Debian's package), the second XMPP server the
// bridge is tested against (the first is Prosody: prosody.mjs).  Each server
// is private: its config, Mnesia spool, logs and HOME in a temp dir, every
// listener on 127.0.0.1 on a free port, and the Erlang VM started with no
// distribution (no node name, no cookie, no epmd), so it cannot meet the
// system's ejabberd (the package's service) or another test's.  Accounts are
// created through ejabberd's own HTTP API (the `register` command that
// ejabberdctl runs, allowed from loopback only).  The object has the same
// shape as ProsodyServer: domain, c2sPort, httpPort, push, jid(), password(),
// register(), logText(), stop(), running.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { canConnect, freePort, sleep, waitFor, HOST } from './util.mjs';
import { DEFAULT_USERS } from './prosody.mjs';

/** ERL_LIBS for Debian's ejabberd: the directory holding ejabberd-VERSION/
 *  (and its deps); read from the package's ejabberdctl, else found. */
function ejabberdLibs() {
  const has = (d) => {
    try { return fs.readdirSync(d).some((n) => /^ejabberd-\d/.test(n)); } catch { return false; }
  };
  try {
    const m = /^ERL_LIBS='([^']+)'/m.exec(fs.readFileSync('/usr/sbin/ejabberdctl', 'utf8'));
    if (m && has(m[1])) return m[1];
  } catch { /* look below */ }
  for (const d of ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib']) {
    if (has(d)) return d;
  }
  throw new Error('ejabberd is not installed (Debian package ejabberd: scripts/deps.sh installs it)');
}

/** YAML for one private server.  Strings are written as JSON (YAML 1.2 reads
 *  them).  Module set: Debian's sample ejabberd.yml (roster, carbons, offline,
 *  MUC with archived rooms, push, stream management, ...) plus mod_mam
 *  archiving every chat (`default: always`, what Conversations-style
 *  deployments run).  mod_fail2ban as docs/DEPLOY.md asks: the bridges'
 *  addresses (here loopback) exempt, unless fail2ban: 'ban' (every login
 *  comes from the bridge's address: a few wrong passwords in a row ban them
 *  all).  Left out on purpose: the c2s shaper (3000 B/s per stream would
 *  pace the tests' bursts), s2s, TLS listeners, STUN, MQTT.  Stream-management and push-keepalive resume
 *  timeouts are 2 s instead of 300 s / 72 h (a client that drops without
 *  closing its stream would hold messages otherwise; Prosody's harness does
 *  the same with smacks_hibernation_time).  mod_push tells the sender and
 *  the text (ejabberd's defaults: no sender, and "New message" for every
 *  body), as docs/DEPLOY.md asks: the bridge applies push_preview itself. */
function configYaml({ domain, c2sPort, httpPort, push, fail2ban, fail2banMax }) {
  const j = JSON.stringify;
  const listen = [
    `  - port: ${c2sPort}
    ip: "${HOST}"
    module: ejabberd_c2s
    max_stanza_size: 262144
    access: c2s
    starttls_required: false`,
    `  - port: ${httpPort}
    ip: "${HOST}"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api`,
  ];
  if (push) {
    listen.push(`  - port: ${push.port}
    ip: "${HOST}"
    module: ejabberd_service
    hosts:
      ${j(push.jid)}:
        password: ${j(push.secret)}`);
  }
  return `# written by tests/harness/ejabberd.mjs
loglevel: info
log_rotate_count: 0
hosts:
  - ${j(domain)}
listen:
${listen.join('\n')}
auth_method: internal
auth_password_format: scram
disable_sasl_mechanisms:
  - "digest-md5"
  - "X-OAUTH2"
acl:
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8
access_rules:
  local:
    allow: local
  c2s:
    deny: blocked
    allow: all
  muc_create:
    allow: local
  trusted_network:
    allow: loopback
api_permissions:
  "loopback admin":
    who:
      ip: 127.0.0.1/8
    what:
      - "register"
      - "status"
shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages: 100
modules:
  mod_adhoc: {}
  mod_blocking: {}
  mod_caps: {}
  mod_carboncopy: {}
  mod_client_state: {}
  mod_disco: {}
  mod_fail2ban:
    c2s_max_auth_failures: ${fail2banMax}
    access: ${fail2ban === 'exempt' ? 'trusted_network' : 'none'}
  mod_http_api: {}
  mod_last: {}
  mod_mam:
    default: always
  mod_muc:
    access:
      - allow
    access_create: muc_create
    access_persistent: muc_create
    access_mam:
      - allow
    default_room_options:
      mam: true
  mod_muc_admin: {}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {}
  mod_privacy: {}
  mod_private: {}
  mod_pubsub:
    access_createnode: local
    plugins:
      - flat
      - pep
  mod_push:
    include_sender: true
    include_body: true
  mod_push_keepalive:
    resume_timeout: 2
  mod_roster:
    versioning: true
  mod_stream_mgmt:
    resume_timeout: 2
  mod_vcard: {}
`;
}

export class EjabberdServer {
  constructor(stack, { dir, domain, push = false, fail2ban = 'exempt', fail2banMax = 20 }) {
    this.stack = stack;
    this.kind = 'ejabberd';
    this.dir = dir;
    this.domain = domain;
    this.tls = false;
    // push: an external component push.DOMAIN (XEP-0114) that mod_push
    // notifies ({jid, port, secret} once configured)
    this.wantPush = push;
    this.push = null;
    this.fail2ban = fail2ban;       // 'exempt' (loopback never banned) | 'ban'
    this.fail2banMax = fail2banMax; // failed logins in a row that ban an address
    this.cfg = path.join(dir, 'ejabberd.yml');
    this.spool = path.join(dir, 'spool');
    this.logFile = path.join(dir, 'ejabberd.log');
    this.c2sPort = 0;
    this.httpPort = 0;   // HTTP API (account creation)
    this.epmdPort = 0;   // ERL_EPMD_PORT given to the VM: nothing may listen there
    this.proc = null;
    this.users = new Map();
  }

  /** (Re)write the config for new free ports. */
  async configure() {
    this.c2sPort = await freePort();
    this.httpPort = await freePort();
    if (this.wantPush) {
      this.push = { jid: `push.${this.domain}`, port: await freePort(), secret: randomBytes(12).toString('hex') };
    }
    fs.rmSync(this.spool, { recursive: true, force: true });
    fs.mkdirSync(this.spool, { recursive: true });
    fs.writeFileSync(this.cfg, configYaml(this));
  }

  jid(user) {
    return `${user}@${this.domain}`;
  }

  password(user) {
    return this.users.get(user);
  }

  /** Create an account on the running server (HTTP API `register`). */
  async register(user, pass) {
    const res = await fetch(`http://${HOST}:${this.httpPort}/api/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user, host: this.domain, password: pass }),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`ejabberd register ${user}: HTTP ${res.status} ${text}`);
    this.users.set(user, pass);
  }

  /** Start the VM in the foreground (it is the Proc's pid) and wait until
   *  every listener accepts. */
  async start({ timeout = 15000 } = {}) {
    const env = {
      EJABBERD_CONFIG_PATH: this.cfg,
      EJABBERD_LOG_PATH: this.logFile,
      ERL_LIBS: ejabberdLibs(),
      ERL_CRASH_DUMP: path.join(this.dir, 'erl_crash.dump'),
      HOME: this.dir,                 // no ~/.erlang.cookie anywhere else
      ERL_EPMD_PORT: String(this.epmdPort = await freePort()), // belt and braces: distribution is off
    };
    this.proc = this.stack.spawn(`ejabberd:${this.c2sPort}`, 'erl',
      ['-noinput', '-noshell', '+K', 'true', '-mnesia', 'dir', JSON.stringify(this.spool), '-s', 'ejabberd'],
      { cwd: this.dir, envExtra: env, late: true });
    const proc = this.proc;
    const ports = [this.c2sPort, this.httpPort, ...(this.push ? [this.push.port] : [])];
    let r;
    try {
      r = await waitFor(async () => {
        if (!proc.running) return 'exited';
        if (/eaddrinuse/i.test(this.logText())) return 'bindfail';
        for (const p of ports) if (!(await canConnect(p))) return false;
        return 'up';
      }, { timeout, interval: 50, what: `ejabberd c2s on ${this.c2sPort}` });
    } catch (e) {
      r = e.message;
    }
    if (r === 'up') return this;
    await proc.stop({ timeout: 3000 });
    const err = new Error(`ejabberd failed to start (${r}):\n${this.logText().slice(-4000)}\n${proc.stdout}${proc.stderr}`);
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
 * startEjabberd(stack, {users:[[user,pass],...], domain='localhost', push,
 *   fail2ban='exempt'|'ban', fail2banMax=20})
 * -> EjabberdServer (started, users registered).  Retries with new ports
 * when one turns out to be taken.
 */
export async function startEjabberd(stack, {
  users = DEFAULT_USERS, domain = 'localhost', push = false, tls = false, fail2ban, fail2banMax,
} = {}) {
  if (tls) throw new Error('startEjabberd: tls is not supported by this harness (plain c2s only)');
  const dir = stack.tempDir('imb-ejabberd-');
  const e = new EjabberdServer(stack, { dir, domain, push, fail2ban, fail2banMax });
  stack.onCleanup('ejabberd-log', () => {}, () => {
    const t = e.logText();
    return `----- ejabberd log (${e.logFile}) -----\n${t.length > 8000 ? '...\n' + t.slice(-8000) : t}`;
  });
  let lastErr;
  for (let attempt = 0; attempt < 4; attempt++) {
    await e.configure();
    try {
      await e.start();
      lastErr = null;
      break;
    } catch (err) {
      lastErr = err;
      if (err.code !== 'bindfail' && err.code !== 'exited') throw err;
      await sleep(50);
    }
  }
  if (lastErr) throw lastErr;
  await Promise.all(users.map(([u, pw]) => e.register(u, pw)));
  return e;
}
