// Lookalike JIDs (SECURITY.md, "Identity"): the bridge prepares every JID
// as the XMPP server does (RFC 6122 stringprep), so a fullwidth or
// differently cased spelling of an account is that account: the same
// session (no second session kicking the first phone off with `conflict`),
// the same filter verdict; JIDs from the XMPP side reach phones prepared;
// a JID that cannot be prepared is a bad_frame naming the field. A canary
// pair (carol's and dave's phones) chats all along; any stall over 2 s
// fails the test.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { itest, startBridge, xml, sleep, startCanary } from '../harness/index.mjs';

const FW = (s) => [...s].map((c) => (c >= '!' && c <= '~' ? String.fromCodePoint(c.codePointAt(0) + 0xfee0) : c)).join('');

itest('lookalike JIDs: one session, one filter verdict, prepared JIDs both ways; a canary keeps chatting', { timeout: 120000 }, async (t, stack) => {
  const dir = stack.tempDir('imb-jid-rules-');
  const rules = path.join(dir, 'filter.rules');
  fs.writeFileSync(rules, 'block blocked@localhost\n');
  // One worker: a second session would show as a second session_online.
  const b = await startBridge(stack, { workers: 1, xmppdArgs: ['--filter-rules', rules] });
  await b.xmppd.waitForLine(/filter_rules_loaded .*rules=1/);

  // The canary: carol's and dave's phones chat all along (tests/harness/canary.mjs).
  const carol = await b.loginPhone('carol');
  const dave = await b.loginPhone('dave');
  const canary = startCanary(carol, 'carol@localhost', dave, 'dave@localhost', { minMessages: 5 });

  // 1. Bob's phone, then lookalike logins with bob's password: one session.
  const bob1 = await b.loginPhone('bob', 'bob-real');
  assert.equal(bob1.welcome.jid, 'bob@localhost');
  const spellings = [FW('bob') + '@localhost', 'BOB@localhost', FW('B') + FW('ob') + '@' + FW('localhost'),
    'bob@LOCALHOST.', 'b\u00adob@localhost'];
  const others = [];
  for (const jid of spellings) {
    const p = await b.phone(`bob-as-${others.length}`);
    const w = await p.tryLogin(jid, b.pass('bob'));
    assert.equal(w.t, 'welcome', `${JSON.stringify(jid)}: ${JSON.stringify(w)}`);
    assert.equal(w.jid, 'bob@localhost', `welcome jid for ${JSON.stringify(jid)}`);
    await p.next({ t: 'sync' });
    others.push(p);
  }
  await sleep(500);
  const kicked = bob1.pending().filter((f) => f.t === 'bye' || f.t === 'error');
  assert.deepEqual(kicked, [], "bob's first phone was not kicked off");
  assert.equal(bob1.isClosed, false);
  const online = (b.xmppd.stderr.match(/session_online jid=[^ ]*bob@/gi) || []).length;
  const reused = (b.xmppd.stderr.match(/session_reused jid=bob@localhost /g) || []).length;
  t.diagnostic(`bob: ${spellings.length + 1} logins, session_online ${online}, session_reused ${reused}`);
  assert.equal(online, 1, 'one XMPP session for bob');
  assert.equal(reused, spellings.length, 'every lookalike login reused it');
  // All of bob's phones get what is sent to bob, and speak as bob.
  const alice = await b.desktop('alice', FW('Desk') + ' ' + FW('Top'));
  await alice.send('bob@localhost', 'to every bob');
  for (const p of [bob1, ...others]) {
    const m = await p.nextMsg({ body: 'to every bob' });
    // 3. A desktop resource with odd characters: the phone sees it prepared.
    assert.equal(m.from, 'alice@localhost/Desk Top', JSON.stringify(m));
  }
  const ack = await others[0].msg(FW('ALICE') + '@localhost', 'from bob 2');
  assert.equal(ack.t, 'ack', JSON.stringify(ack));
  const got = await alice.nextMessageFrom('bob@localhost', 'from bob 2');
  assert.match(got.from, /^bob@localhost\//);

  // 2. The filter: every spelling of blocked@localhost is refused alike.
  const refused = async (phone, to, id) => {
    phone.send({ t: 'msg', id, to, body: 'hello' });
    const e = await phone.expect({ t: 'error', id });
    assert.equal(e.code, 'filtered', `${JSON.stringify(to)}: ${JSON.stringify(e)}`);
    assert.equal(e.reason, 'blocked', `${JSON.stringify(to)}: ${JSON.stringify(e)}`);
  };
  let n = 0;
  for (const to of ['blocked@localhost', FW('blocked') + '@localhost', FW('BLOCKED') + '@' + FW('LOCALHOST'),
    'Blocked@Localhost/' + FW('Res'), 'blocked@localhost.', 'bl\u00adocked@localhost']) {
    await refused(bob1, to, `blk${n++}`);
  }

  // 4. JIDs that cannot be prepared: bad_frame naming the field, with the id.
  const badFrame = async (phone, frame, field, part) => {
    phone.send(frame);
    const e = await phone.next((f) => f.t === 'error' && f.id === frame.id);
    assert.equal(e.code, 'bad_frame', JSON.stringify(e));
    assert.match(e.msg, new RegExp(`'${field}'`), JSON.stringify(e));
    assert.match(e.msg, part, JSON.stringify(e));
  };
  await badFrame(bob1, { t: 'msg', id: 'bad1', to: `a${FW('"')}b@localhost`, body: 'x' }, 'to', /node/);
  await badFrame(bob1, { t: 'msg', id: 'bad2', to: 'x@\u2100', body: 'x' }, 'to', /domain/);
  await badFrame(bob1, { t: 'msg', id: 'bad3', to: 'bob@localhost/a\u200e', body: 'x' }, 'to', /resource/);
  await badFrame(bob1, { t: 'roster_set', id: 'bad4', jid: `\u00ad@localhost` }, 'jid', /empty/);
  await badFrame(bob1, { t: 'join', id: 'bad5', room: 'room@conference.localhost', nick: 'a\u0007' }, 'nick', /resource/);
  const x = await b.phone('bad-login');
  x.send({ t: 'login', v: 1, jid: `a${FW('@')}b@localhost`, pass: 'x' });
  const le = await x.expect({ t: 'error' });
  assert.equal(le.code, 'bad_frame');
  assert.match(le.msg, /'jid'.*node/);

  // 5. From the XMPP side: a direct invitation naming a lookalike room
  // reaches the phone prepared; one naming a JID that cannot be prepared is
  // dropped (and the session carries on).
  await alice.sendXml(xml('message', { to: 'bob@localhost' },
    xml('x', { xmlns: 'jabber:x:conference', jid: `x@${FW('conference')}.localhost\u2100` })));
  await alice.sendXml(xml('message', { to: 'bob@localhost' },
    xml('x', { xmlns: 'jabber:x:conference', jid: `${FW('Room')}@Conference.LOCALHOST` })));
  const inv = await bob1.expect({ t: 'invite' });
  assert.equal(inv.room, 'room@conference.localhost', JSON.stringify(inv));
  assert.equal(inv.from, 'alice@localhost/Desk Top', JSON.stringify(inv));
  assert.ok(await bob1.noFrame({ t: 'invite' }, 300), 'the unpreparable invitation was dropped');

  await canary.stop(t);
  assert.equal(carol.protocolErrors.length, 0);
  assert.ok(b.edge.running && b.xmppd.running);
});
