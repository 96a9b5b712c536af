// Hostile logins must never lock the right password out (issue 13, hole 2):
// each login is judged on its own password, and failed logins are throttled
// per address and per account, shared by every edge through Redis, while a
// device that logged in before (it holds a device token) always gets in.
// A canary pair (carol <-> dave) chats all along each case: a stall over 2 s
// fails the test.
//
// On loopback every client is 127.0.0.1, but Linux routes all of 127/8 to lo:
// the attacker binds 127.0.0.2 (127.0.0.3 ...) as its source address.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  itest, startBridge, startEdge, startRedis, startProsody, startXmppd, connectPhone, PhoneClient,
  binPath, randomCredKey, sleep, startCanary, plainRunRepeats,
} from '../harness/index.mjs';

const STALL_MS = 2000;

// The throttle's options, only for an edge that has them: the same test then
// runs against an older build (the figures "before").
const help = spawnSync(binPath('imb-edge'), ['--help']);
const HAS_THROTTLE = /login-fail-per-ip/.test(`${help.stdout}${help.stderr}`);
const throttleArgs = (args) => (HAS_THROTTLE ? args : []);

/** carol and dave chat both ways until stop() (tests/harness/canary.mjs). */
async function startCanaryPair(b) {
  const carol = await b.loginPhone('carol', 'canary-carol');
  const dave = await b.loginPhone('dave', 'canary-dave');
  return startCanary(carol, b.jid('carol'), dave, b.jid('dave'), { stallMs: STALL_MS });
}

/** The answer to a login frame sent on p: welcome, error or bye. */
function answer(p, timeout = 15000) {
  return p.next((f) => f.t === 'welcome' || f.t === 'error' || f.t === 'bye', timeout);
}

itest('the lockout race: five wrong logins, then the right one 10 ms later: the right one gets in', { timeout: 120000 }, async (t, stack) => {
  // The throttle is out of the way here (high limits): this is the bridge's
  // judging of each login on its own password.
  const b = await startBridge(stack, {
    edgeArgs: throttleArgs(['--login-fail-per-ip', '100000', '--login-fail-per-account', '100000']),
  });
  const canary = await startCanaryPair(b);
  const ROUNDS = 8;
  let rightOk = 0, rightFailed = 0, wrongFailed = 0;
  const failures = [];
  for (let r = 0; r < ROUNDS; r++) {
    const wrong = await Promise.all(Array.from({ length: 5 }, (_, i) => connectPhone(stack, b.edge.port, `wrong${r}.${i}`)));
    const right = await connectPhone(stack, b.edge.port, `right${r}`);
    // Odd rounds: five different wrong passwords; even rounds: one repeated.
    wrong.forEach((p, i) => p.send({ t: 'login', v: 1, jid: b.jid('alice'), pass: r % 2 ? `wrong-${r}-${i}` : `wrong-${r}` }));
    await sleep(10);
    right.send({ t: 'login', v: 1, jid: b.jid('alice'), pass: b.pass('alice') });
    const answers = await Promise.all(wrong.map((p) => answer(p)));
    const got = await answer(right);
    for (const a of answers) {
      assert.equal(a.code, 'auth_failed', `a wrong password: ${JSON.stringify(a)}`);
      wrongFailed += 1;
    }
    if (got.t === 'welcome') {
      rightOk += 1;
      await right.next({ t: 'sync' });
      right.send({ t: 'logout' });
      await right.waitClose();
    } else {
      rightFailed += 1;
      failures.push(got);
    }
    wrong.forEach((p) => p.destroy());
    await sleep(100);
  }
  t.diagnostic(`lockout race: ${ROUNDS} rounds of 5 wrong + 1 right: right ok ${rightOk}, right failed ${rightFailed} ${JSON.stringify(failures)}, wrong answered auth_failed ${wrongFailed}`);
  await canary.stop(t);
  assert.equal(rightFailed, 0, 'the right password was refused');
  assert.equal(rightOk, ROUNDS);
});

/** A flood of wrong passwords for alice from 127.0.0.2 while her device
 *  (127.0.0.1) logs in and out 20 times with its token. Resolves the counts. */
async function flood(t, stack, edgeArgs) {
  const b = await startBridge(stack, { edgeArgs: ['--http-listen', '127.0.0.1:0', ...edgeArgs] });
  const canary = await startCanaryPair(b);
  // The legitimate device logs in once before the attack: its token.
  const first = await b.loginPhone('alice', 'alice-first');
  let token = first.welcome.token;
  first.send({ t: 'logout' });
  await first.waitClose();

  const st = { attempts: 0, authFailed: 0, rateLimited: 0, other: 0, conns: 0, retry: 0 };
  let stop = false;
  const attacker = async (k) => {
    while (!stop) {
      const p = await PhoneClient.connect(b.edge.port, { name: `attacker${k}`, localAddress: '127.0.0.2' });
      st.conns += 1;
      try {
        while (!stop && !p.isClosed) {
          p.send({ t: 'login', v: 1, jid: b.jid('alice'), pass: `guess-${k}-${st.attempts}` });
          st.attempts += 1;
          const f = await answer(p).catch(() => null);
          if (!f || f.t === 'bye') break;
          if (f.code === 'auth_failed') st.authFailed += 1;
          else if (f.code === 'rate_limited') {
            st.rateLimited += 1;
            st.retry = Math.max(st.retry, f.retry ?? 0);
            await sleep(2); // (hostile, but this machine is shared)
          } else st.other += 1;
        }
      } finally {
        p.destroy();
      }
    }
  };
  const attackers = Array.from({ length: 8 }, (_, k) => attacker(k));

  const LOGINS = 20;
  let ok = 0, failed = 0, slowest = 0;
  const failures = [];
  await sleep(300); // the flood is on
  for (let i = 0; i < LOGINS; i++) {
    const p = await connectPhone(stack, b.edge.port, `alice-${i}`);
    const t0 = Date.now();
    const f = await p.tryLogin(b.jid('alice'), b.pass('alice'), { token, timeout: 30000 });
    slowest = Math.max(slowest, Date.now() - t0);
    if (f.t === 'welcome') {
      ok += 1;
      token = f.token ?? token;
      await p.next({ t: 'sync' });
      p.send({ t: 'logout' });
      await p.waitClose();
    } else {
      failed += 1;
      failures.push(f);
      p.destroy();
    }
    await sleep(50);
  }
  while (st.attempts < 300) await sleep(50);
  stop = true;
  await Promise.all(attackers);
  t.diagnostic(`flood from 127.0.0.2: ${st.attempts} attempts on ${st.conns} connections: auth_failed ${st.authFailed}, rate_limited ${st.rateLimited} (retry up to ${st.retry} s), other ${st.other}`);
  t.diagnostic(`legitimate device (127.0.0.1, device token): correct logins ok ${ok}, failed ${failed} ${JSON.stringify(failures.slice(0, 3))}, slowest answer ${slowest} ms`);
  await canary.stop(t);
  assert.equal(failed, 0, 'a correct login failed under the flood');
  assert.equal(ok, LOGINS);
  return { b, st };
}

itest('a wrong-password flood from one address: the device that has a token logs in 20 times out of 20; the attacker is rate_limited', { timeout: 180000 }, async (t, stack) => {
  // Default limits (20 per address, 10 per account, 300 s).
  const { b, st } = await flood(t, stack, []);
  assert.ok(st.rateLimited > 0, 'the attacker was never rate_limited');
  // Each of the 8 attackers may have had one attempt in flight when the
  // count reached its limit.
  assert.ok(st.authFailed <= 10 + 8, `auth_failed ${st.authFailed}: the per-account limit (10) did not hold`);
  assert.ok(st.retry > 0 && st.retry <= 300, `retry ${st.retry}`);
  const http = /http_serving addr=(\S+)/.exec(b.edge.stderr)?.[1];
  const metrics = await (await fetch(`http://${http}/metrics`)).text();
  t.diagnostic(`edge metrics: ${metrics.split('\n').filter((l) => /throttled|token_logins/.test(l) && !l.startsWith('#')).join('; ')}`);
  assert.match(metrics, /imb_edge_logins_throttled_total\{reason="(account|ip)"\} [1-9]/);
  assert.match(b.edge.stderr, /login_throttled reason=(account|ip) jid=alice@localhost peer=127\.0\.0\.2/);
});

itest('the same flood with the throttle off: every wrong password reaches the XMPP server, and the right one still gets in 20 times out of 20',
  { timeout: 180000, skip: plainRunRepeats('the flood with the throttle on') }, async (t, stack) => {
  // What the bridge alone guarantees (as behind a load balancer that hides
  // addresses, with the limits off): each login judged on its own password.
  const { st } = await flood(t, stack, throttleArgs(['--login-fail-per-ip', '0', '--login-fail-per-account', '0']));
  assert.equal(st.rateLimited, 0);
  assert.ok(st.authFailed >= 100, `only ${st.authFailed} wrong passwords reached the bridge`);
});

itest('a new device without a token for a throttled account is rate_limited until the window ends; a token still gets in', { timeout: 120000 }, async (t, stack) => {
  const b = await startBridge(stack, {
    edgeArgs: throttleArgs(['--login-fail-window', '3', '--login-fail-per-account', '4', '--login-fail-per-ip', '1000']),
  });
  const canary = await startCanaryPair(b);
  const first = await b.loginPhone('alice', 'alice-first');
  const token = first.welcome.token;
  assert.equal(typeof token, 'string', 'welcome carries a device token');
  first.send({ t: 'logout' });
  await first.waitClose();

  // Four wrong passwords from the attacker's address: the account is over.
  const evil = await PhoneClient.connect(b.edge.port, { name: 'evil', localAddress: '127.0.0.2' });
  stack.onCleanup('evil', () => evil.destroy(), () => evil.describe());
  for (let i = 0; i < 2; i++) assert.equal((await evil.tryLogin(b.jid('alice'), `nope${i}`)).code, 'auth_failed');
  const evil2 = await PhoneClient.connect(b.edge.port, { name: 'evil2', localAddress: '127.0.0.2' });
  stack.onCleanup('evil2', () => evil2.destroy(), () => evil2.describe());
  for (let i = 2; i < 4; i++) assert.equal((await evil2.tryLogin(b.jid('alice'), `nope${i}`)).code, 'auth_failed');
  const t0 = Date.now();
  // The right password from a new device (no token): refused, the trade-off.
  const fresh = await connectPhone(stack, b.edge.port, 'alice-new-device');
  const refused = await fresh.tryLogin(b.jid('alice'), b.pass('alice'));
  assert.equal(refused.code, 'rate_limited', JSON.stringify(refused));
  assert.ok(refused.retry >= 1 && refused.retry <= 3, `retry ${refused.retry}`);
  // A rate_limited answer is not an auth failure: the socket stays usable.
  const again = await fresh.tryLogin(b.jid('alice'), b.pass('alice'));
  assert.equal(again.code, 'rate_limited');
  assert.equal(fresh.isClosed, false);
  // A forged or foreign token does not help.
  assert.equal((await fresh.tryLogin(b.jid('alice'), b.pass('alice'), { token: 'AAAA' + token.slice(4) })).code, 'rate_limited');
  const bobPhone = await b.loginPhone('bob', 'bob-phone');
  assert.equal((await fresh.tryLogin(b.jid('alice'), b.pass('alice'), { token: bobPhone.welcome.token })).code, 'rate_limited');
  // The device with its token: in.
  const known = await connectPhone(stack, b.edge.port, 'alice-known-device');
  const w = await known.login(b.jid('alice'), b.pass('alice'), { token });
  assert.equal(w.t, 'welcome');
  known.send({ t: 'logout' });
  await known.waitClose();
  // The window ends: the new device gets in.
  await sleep(Math.max(0, 3200 - (Date.now() - t0)));
  let late;
  for (let i = 0; i < 20; i++) {
    late = await fresh.tryLogin(b.jid('alice'), b.pass('alice'));
    if (late.t === 'welcome') break;
    await sleep(250);
  }
  const waited = Date.now() - t0;
  t.diagnostic(`new device: rate_limited (retry ${refused.retry} s), then welcome ${waited} ms after the fourth failure (window 3 s)`);
  assert.equal(late.t, 'welcome', JSON.stringify(late));
  assert.ok(waited < 5000, `the count outlived its window: ${waited} ms`);
  // A token is no master key: wrong passwords with it are counted against
  // that device (a stolen phone gets the account's limit, per window).
  const thief = [];
  for (let i = 0; i < 4; i++) {
    const p = await connectPhone(stack, b.edge.port, `thief${i}`);
    thief.push((await p.tryLogin(b.jid('alice'), `stolen${i}`, { token })).code);
    p.destroy();
  }
  const p = await connectPhone(stack, b.edge.port, 'thief-last');
  const last = await p.tryLogin(b.jid('alice'), b.pass('alice'), { token });
  t.diagnostic(`the same token with 4 wrong passwords: ${thief.join(',')}; then ${last.code ?? last.t}`);
  assert.deepEqual(thief, Array(4).fill('auth_failed'));
  assert.equal(last.code, 'rate_limited');
  await canary.stop(t);
  assert.match(b.edge.stderr, /login_throttled reason=account jid=alice@localhost peer=127\.0\.0\.1/);
  assert.match(b.edge.stderr, /login_throttled reason=device jid=alice@localhost/);
});

itest('the per-address limit is shared by two edges on one Redis', { timeout: 120000 }, async (t, stack) => {
  const args = throttleArgs(['--login-fail-per-ip', '5', '--login-fail-per-account', '1000']);
  const b = await startBridge(stack, { edgeArgs: args });
  const edge2 = await startEdge(stack, { redisPort: b.redis.port, credKey: b.credKey, extraArgs: args });
  const canary = await startCanaryPair(b);
  // Five wrong logins for five different accounts on edge 1 (a spray).
  const answers = [];
  for (let i = 0; i < 5; i++) {
    const p = await PhoneClient.connect(b.edge.port, { name: `spray${i}`, localAddress: '127.0.0.3' });
    answers.push((await p.tryLogin(`nobody${i}@localhost`, 'guess')).code);
    p.destroy();
  }
  assert.deepEqual(answers, Array(5).fill('auth_failed'));
  // The sixth, on edge 2, from the same address: refused without a bridge.
  const p = await PhoneClient.connect(edge2.port, { name: 'spray5', localAddress: '127.0.0.3' });
  stack.onCleanup('spray5', () => p.destroy(), () => p.describe());
  const sixth = await p.tryLogin('nobody5@localhost', 'guess');
  assert.equal(sixth.code, 'rate_limited', JSON.stringify(sixth));
  // Even the right password of a real account, from that address, without a token.
  const seventh = await p.tryLogin(b.jid('bob'), b.pass('bob'));
  assert.equal(seventh.code, 'rate_limited');
  // Another address is not affected, on either edge.
  const ok = await connectPhone(stack, edge2.port, 'alice-edge2');
  assert.equal((await ok.login(b.jid('alice'), b.pass('alice'))).t, 'welcome');
  t.diagnostic(`per-address limit 5: edge 1 answered ${answers.join(',')}; edge 2 then answered ${sixth.code} (retry ${sixth.retry} s)`);
  await canary.stop(t);
  assert.match(edge2.stderr, /login_throttled reason=ip jid=nobody5@localhost peer=127\.0\.0\.3/);
});

itest('the counts cannot be read (Redis refuses the edge their keys): logins pass unthrottled, and the edge says so', { timeout: 60000 }, async (t, stack) => {
  const credKey = randomCredKey();
  // The bridge may do anything; the edge's user may not touch imb:l* keys
  // (the throttle's imb:lf:*, and nothing else of the edge's).
  const redis = await startRedis(stack, {
    extraArgs: ['--user', 'default', 'on', 'nopass', '-@all', '+ping',
      '--user', 'imb', 'on', '>pw-1', '~*', '&*', '+@all',
      '--user', 'edge', 'on', '>pw-2', '~imb:[^l]*', '&*', '+@all'],
  });
  const prosody = await startProsody(stack);
  await startXmppd(stack, {
    redisPort: redis.port, xmppPort: prosody.c2sPort, credKey, workers: 1,
    extraArgs: ['--redis-user', 'imb', '--redis-password', 'pw-1'],
  });
  const edge = await startEdge(stack, {
    redisPort: redis.port, credKey,
    extraArgs: ['--redis-user', 'edge', '--redis-password', 'pw-2', ...throttleArgs(['--login-fail-per-account', '1'])],
  });
  await sleep(1200);
  // Two wrong passwords for a limit of 1, then the right one: nothing is
  // counted, so nothing is refused.
  const p = await connectPhone(stack, edge.port, 'alice');
  for (let i = 0; i < 2; i++) assert.equal((await p.tryLogin('alice@localhost', `nope${i}`)).code, 'auth_failed');
  assert.equal((await p.login('alice@localhost', 'secret')).t, 'welcome');
  assert.match(edge.stderr, /throttle_unavailable/);
  t.diagnostic('Redis refused the throttle its keys: 2 wrong passwords then the right one, welcome; throttle_unavailable logged');
});
