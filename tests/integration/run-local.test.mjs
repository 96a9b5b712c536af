// `make run` as a newcomer meets it: scripts/run-local.sh started as is (free
// ports and a temp dir picked through its environment), its banner's imcat
// command run exactly as printed with IMCAT_PASSWORD in the environment, a
// desktop contact (bob, already subscribed both ways) chatting with it, then
// SIGINT (Ctrl-C): exit status 0, every process it started gone, its temp
// dir removed.  The password is never on a command line.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { itest, bareJid, randomHex, startDesktop, waitFor, xml } from '../harness/index.mjs';
import { startRunLocal } from '../harness/runlocal.mjs';

/** PIDs of every descendant of pid (from /proc/PID/task/TID/children). */
function descendants(pid) {
  const out = [];
  const walk = (p) => {
    let tids = [];
    try { tids = fs.readdirSync(`/proc/${p}/task`); } catch { return; }
    for (const tid of tids) {
      let kids = '';
      try { kids = fs.readFileSync(`/proc/${p}/task/${tid}/children`, 'utf8'); } catch { continue; }
      for (const k of kids.split(/\s+/).filter(Boolean)) {
        out.push(Number(k));
        walk(k);
      }
    }
  };
  walk(pid);
  return out;
}

const alive = (pid) => {
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch { return false; }
};

/** Command lines (NUL-separated argv) of every process that contains s. */
function cmdlinesWith(s) {
  const hits = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    let c;
    try { c = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8'); } catch { continue; }
    if (c.includes(s)) hits.push(`${d}: ${c.replace(/\0/g, ' ')}`);
  }
  return hits;
}

itest('make run: the banner\'s imcat command chats with a contact; SIGINT stops everything, exit 0',
  { bins: ['imb-edge', 'imb-xmppd', 'imcat'], timeout: 90000 }, async (t, stack) => {
    const password = `pw-${randomHex(12)}`;
    const r = await startRunLocal(stack, { password });
    t.diagnostic(`stack up, banner printed after ${r.ms} ms`);
    assert.equal(r.imcatPassword, password, 'the banner says to export IMCAT_PASSWORD');
    assert.ok(!r.imcatArgv.includes('--password'), `no --password in the imcat command: ${r.imcatArgv.join(' ')}`);
    assert.equal(r.password, password);
    assert.ok(r.url, `the banner names the browser page:\n${r.banner}`);

    // The page, converse.js and the page's login are served by Prosody.
    const page = await fetch(r.url);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /converse\.min\.js/);
    const js = await fetch(new URL('/converse/converse.min.js', r.url));
    assert.equal(js.status, 200);
    assert.ok((await js.arrayBuffer()).byteLength > 100000, 'converse.min.js is served');

    // bob on a desktop client: the banner's c2s port, the demo password.
    const c2s = Number(/server 127\.0\.0\.1 port (\d+)/.exec(r.banner)[1]);
    const bob = await startDesktop(stack, { port: c2s, user: 'bob', pass: password, resource: 'desktop' });

    // The imcat command as printed, the password in the environment only.
    const [cmd, ...args] = r.imcatArgv;
    const cat = stack.spawn('imcat', cmd, args, { stdin: 'pipe', envExtra: { IMCAT_PASSWORD: r.imcatPassword } });
    // alice and bob are contacts from the start: bob sees alice come online.
    const pres = await bob.nextStanza((el) => el.is('presence') && bareJid(el.attrs.from) === 'alice@localhost' &&
      !el.attrs.type, 10000, 'presence of alice');
    assert.ok(pres);
    const t0 = Date.now();
    cat.write('hello bob, from the printed command\n');   // --to bob@localhost
    const m = await bob.nextMessageFrom('alice@localhost', 'hello bob, from the printed command', 10000);
    const rtt1 = Date.now() - t0;
    await bob.send('alice@localhost', 'hi alice, from the desktop');
    await cat.nextStdoutLine((l) => l.includes('hi alice, from the desktop'), 10000);
    const rtt2 = Date.now() - t0;
    assert.equal(m.type, 'chat');
    // imcat shows bob's presence (subscribed both ways, no /sub or /allow).
    assert.ok(cat.lines('stdout').some((l) => /bob@localhost/.test(l) && /online/i.test(l)),
      `imcat shows bob online:\n${cat.stdout}`);
    const leaked = cmdlinesWith(password);
    assert.deepEqual(leaked, [], 'the password is on no command line');

    // The demo room: alice may set its subject (a default room would refuse).
    cat.write('/join demo@conference.localhost\n');
    await cat.nextStdoutLine((l) => /joined demo@conference\.localhost/.test(l), 10000);
    cat.write('/subject first ten minutes\n');
    const subj = await cat.nextStdoutLine((l) => /first ten minutes|refused|error/i.test(l), 10000);
    assert.match(subj, /first ten minutes/, `the subject is set: ${subj}`);

    cat.endStdin();
    const ce = await cat.waitExit(5000);
    assert.equal(ce.code, 0, 'imcat exits 0 at end of input');
    await bob.stop();

    // Ctrl-C.
    const kids = descendants(r.proc.pid);
    assert.ok(kids.length >= 4, `run-local.sh has its services as children: ${kids}`);
    const s0 = Date.now();
    r.proc.kill('SIGINT');
    const ex = await r.proc.waitExit(20000);
    const stopMs = Date.now() - s0;
    assert.deepEqual(ex, { code: 0, signal: null }, `clean exit on SIGINT:\n${r.proc.tail(3000)}`);
    await waitFor(() => kids.every((k) => !alive(k)), { timeout: 2000, what: 'children gone' }).catch(() => {});
    const left = kids.filter(alive);
    assert.deepEqual(left, [], 'no child left running');
    assert.ok(r.runDir && !fs.existsSync(r.runDir), `temp dir ${r.runDir} removed`);
    t.diagnostic(`banner ${r.ms} ms; message to bob ${rtt1} ms, round trip ${rtt2} ms; ` +
      `${kids.length} descendants, all stopped ${stopMs} ms after SIGINT; leaked command lines: ${leaked.length}`);
  });
