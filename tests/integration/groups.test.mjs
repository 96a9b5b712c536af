// Chat features, part 2 (docs/PROTOCOL.md section 10): several devices of one
// user (shared session, copies of what each sends, carbons of the user's
// other XMPP clients, a cursor per device), group chat rooms (XEP-0045) and
// history pages (XEP-0313), against Prosody and xmpp.js.
import assert from 'node:assert/strict';
import { itest, startBridge, bareJid, xml, sleep, connectPhone, chatWithReceiptsAndMarkers } from '../harness/index.mjs';

const ROOM = 'lobby@conference.localhost';

itest('two phones of one user: both receive, each sees what the other sent, carbons', async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  const a1 = await connectPhone(stack, b.edge.port, 'alice-pixel');
  await a1.login(b.jid('alice'), b.pass('alice'), { dev: 'pixel' });
  const a2 = await connectPhone(stack, b.edge.port, 'alice-tablet');
  await a2.login(b.jid('alice'), b.pass('alice'), { dev: 'tablet' });

  await bob.send('alice@localhost', 'to both of you');
  const m1 = await a1.nextMsg({ body: 'to both of you' });
  const m2 = await a2.nextMsg({ body: 'to both of you' });
  assert.equal(m1.seq, m2.seq, 'one stream, one numbering');

  // What one phone sends, the other sees as sent; the sender gets the same
  // copy (its id tells it apart), so its stream has no holes.
  await a1.msg('bob@localhost', 'sent from the pixel', { id: 'p1' });
  const copy = await a2.nextMsg({ body: 'sent from the pixel' });
  assert.equal(copy.sent, true);
  assert.equal(copy.to, 'bob@localhost');
  assert.equal(copy.id, 'p1');
  const own = await a1.nextMsg({ body: 'sent from the pixel' });
  assert.equal(own.seq, copy.seq);
  assert.equal(own.seq, m1.seq + 1, 'no hole in the numbering');
  await bob.nextMessage({ body: 'sent from the pixel' });

  // Alice also runs a desktop client: carbons bring its traffic to the phones.
  const aliceDesk = await b.desktop('alice', 'laptop');
  await aliceDesk.send('bob@localhost', 'typed on the laptop');
  const carbon = await a1.nextMsg({ body: 'typed on the laptop' });
  assert.equal(carbon.sent, true);
  assert.equal(bareJid(carbon.to), 'bob@localhost');
  assert.equal(carbon.from, aliceDesk.jid);
  await a2.nextMsg({ body: 'typed on the laptop' });
  await bob.sendXml(xml('message', { to: aliceDesk.jid, type: 'chat', id: 'to-laptop' }, xml('body', {}, 'to the laptop only')));
  const rc = await a1.nextMsg({ body: 'to the laptop only' });
  assert.equal(rc.sent, undefined);
  assert.equal(rc.from, bob.jid);

  // Each device keeps its own place: the tablet goes away, the pixel acks
  // everything, the tablet still gets what it missed.
  const before = (await (async () => { a2.send({ t: 'ack', seq: rc.seq }); return rc.seq; })());
  await a2.nextMsg({ body: 'to the laptop only' });
  a2.destroy();
  await sleep(200);
  await bob.send('alice@localhost', 'while the tablet was away 1');
  await bob.send('alice@localhost', 'while the tablet was away 2');
  const last = await a1.nextMsg({ body: 'while the tablet was away 2' });
  a1.send({ t: 'ack', seq: last.seq });
  await sleep(300);
  const back = await connectPhone(stack, b.edge.port, 'alice-tablet-back');
  const sync = (await back.login(b.jid('alice'), b.pass('alice'), { dev: 'tablet', epoch: m2.epoch ?? undefined, seq: before }));
  assert.equal(sync.t, 'welcome');
  const r1 = await back.nextMsg({ body: 'while the tablet was away 1' });
  const r2 = await back.nextMsg({ body: 'while the tablet was away 2' });
  assert.ok(r2.seq > r1.seq && r1.seq > before);
  const s = back.frames.find((f) => f.t === 'sync'); // login() waited for it
  assert.equal(s.missed, undefined, 'nothing missed: the other phone\'s acks did not drop them');
});

itest('group chat: join, occupants, send and receive, subject, invitations, leave', async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');
  const carol = await b.desktop('carol');

  alice.send({ t: 'join', id: 'j1', room: ROOM, nick: 'Alice' });
  const joined = await alice.expect({ t: 'ok', id: 'j1' }, 10000);
  assert.equal(joined.room, ROOM);
  assert.equal(joined.nick, 'Alice');
  const me = await alice.expect({ t: 'occupant', room: ROOM, nick: 'Alice' });
  assert.equal(me.me, true);
  assert.equal(me.affiliation, 'owner', 'the first to join a new room owns it');

  // Bob joins from the desktop: the phone sees him arrive.
  await bob.sendXml(xml('presence', { to: `${ROOM}/Bob` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
  const occ = await alice.expect({ t: 'occupant', room: ROOM, nick: 'Bob' });
  assert.equal(occ.show, 'online');
  await bob.nextStanza((el) => el.is('presence') && el.attrs.from === `${ROOM}/Bob`, 5000, 'own room presence');

  // Room messages both ways.
  await bob.sendXml(xml('message', { to: ROOM, type: 'groupchat', id: 'g1' }, xml('body', {}, 'hello room')));
  const gm = await alice.nextMsg({ body: 'hello room' });
  assert.equal(gm.room, ROOM);
  assert.equal(gm.from, `${ROOM}/Bob`);
  assert.ok(gm.seq > 0, 'room messages are numbered and stored like chats');
  alice.send({ t: 'msg', id: 'g2', to: ROOM, body: 'hi from the phone', group: true });
  await alice.expect({ t: 'ack', id: 'g2' });
  const bm = await bob.nextMessage({ body: 'hi from the phone' });
  assert.equal(bm.type, 'groupchat');
  assert.equal(bm.from, `${ROOM}/Alice`);

  // Subject: set from the phone (the owner may), seen by all occupants.
  alice.send({ t: 'subject', id: 's1', room: ROOM, subject: 'Plans for Friday' });
  await alice.expect({ t: 'ok', id: 's1' });
  const subj = await bob.nextMessage((m) => m.stanza.getChildText('subject') === 'Plans for Friday');
  assert.equal(subj.from, `${ROOM}/Alice`);
  const se = await alice.expect({ t: 'subject', subject: 'Plans for Friday' });
  assert.equal(se.by, 'Alice');

  // Invitations: the phone invites Carol; Bob invites Dave's phone.
  alice.send({ t: 'invite', room: ROOM, to: 'carol@localhost', reason: 'come along' });
  const inv = await carol.nextMessage((m) => !!m.stanza.getChild('x', 'http://jabber.org/protocol/muc#user'));
  const invEl = inv.stanza.getChild('x', 'http://jabber.org/protocol/muc#user').getChild('invite');
  // The room names the inviter by real JID or, in a semi-anonymous room, by nick.
  assert.ok(['alice@localhost', ROOM].includes(bareJid(invEl.attrs.from)), invEl.toString());
  assert.equal(invEl.getChildText('reason'), 'come along');
  const dave = await b.loginPhone('dave');
  await bob.sendXml(xml('message', { to: ROOM }, xml('x', { xmlns: 'http://jabber.org/protocol/muc#user' },
    xml('invite', { to: 'dave@localhost' }, xml('reason', {}, 'join us')))));
  const di = await dave.expect({ t: 'invite' });
  assert.equal(di.room, ROOM);
  assert.ok(['bob@localhost', ROOM].includes(bareJid(di.from)), JSON.stringify(di));
  assert.equal(di.reason, 'join us');
  assert.ok(di.seq > 0, 'an invitation is kept until a phone has it');
  // A refused join (the nickname is taken) answers an error with the reason.
  dave.send({ t: 'join', id: 'j2', room: ROOM, nick: 'Bob' });
  const refused = await dave.expect({ t: 'error', id: 'j2' });
  assert.equal(refused.code, 'refused');
  assert.match(refused.msg, /conflict/);

  // Leave: Bob sees Alice go.
  alice.send({ t: 'leave', id: 'l1', room: ROOM });
  await alice.expect({ t: 'ok', id: 'l1' });
  await bob.nextStanza((el) => el.is('presence') && el.attrs.from === `${ROOM}/Alice` && el.attrs.type === 'unavailable');
  const gone = await alice.expect({ t: 'occupant', room: ROOM, nick: 'Alice', show: 'offline' });
  assert.equal(gone.me, true, 'the room confirms the user is out');
  assert.ok(await alice.noFrame({ t: 'presence' }, 300), 'a room is no contact');
  alice.send({ t: 'msg', id: 'g3', to: ROOM, body: 'after leaving', group: true });
  const err = await alice.expect((f) => (f.t === 'error' || f.t === 'ack') && f.id === 'g3');
  // The room refuses messages from non-occupants (a bounce), never a crash.
  if (err.t === 'ack') await alice.expect({ t: 'error', code: 'undeliverable' });
  // Joining a room with a wrong password is refused with a reason.
});

itest('room joins: a new nickname, a taken one, a JID that never answers', async (t, stack) => {
  const b = await startBridge(stack, { xmppdArgs: ['--muc-join-timeout', '2'] });
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');
  alice.send({ t: 'join', id: 'j1', room: ROOM, nick: 'Alice' });
  await alice.expect({ t: 'ok', id: 'j1' }, 10000);
  await bob.sendXml(xml('presence', { to: `${ROOM}/Bob` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
  await bob.nextStanza((el) => el.is('presence') && el.attrs.from === `${ROOM}/Bob`, 5000, 'own room presence');

  // A join of a room the user is in, with another nickname, renames her.
  alice.send({ t: 'join', id: 'j2', room: ROOM, nick: 'Ally' });
  const renamed = await alice.expect({ t: 'ok', id: 'j2' }, 10000);
  assert.equal(renamed.nick, 'Ally');
  const old = await bob.nextStanza((el) => el.is('presence') && el.attrs.from === `${ROOM}/Alice` &&
    el.attrs.type === 'unavailable', 5000, 'old nickname leaves');
  assert.equal(old.getChild('x', 'http://jabber.org/protocol/muc#user').getChild('item').attrs.nick, 'Ally');
  alice.send({ t: 'msg', id: 'g1', to: ROOM, body: 'my new name', group: true });
  await alice.expect({ t: 'ack', id: 'g1' });
  assert.equal((await bob.nextMessage({ body: 'my new name' })).from, `${ROOM}/Ally`);

  // A taken nickname is refused, and she stays in the room as she was.
  alice.send({ t: 'join', id: 'j3', room: ROOM, nick: 'Bob' });
  const taken = await alice.expect({ t: 'error', id: 'j3' }, 10000);
  assert.equal(taken.code, 'refused');
  assert.match(taken.msg, /nickname: conflict/);
  alice.send({ t: 'msg', id: 'g2', to: ROOM, body: 'still here', group: true });
  await alice.expect({ t: 'ack', id: 'g2' });
  assert.equal((await bob.nextMessage({ body: 'still here' })).from, `${ROOM}/Ally`);

  // A user's JID is no room and never answers: the bridge says so in time.
  const t0 = Date.now();
  alice.send({ t: 'join', id: 'j4', room: 'bob@localhost', nick: 'Alice' });
  const silent = await alice.expect({ t: 'error', id: 'j4' }, 6000);
  assert.equal(silent.code, 'unavailable');
  assert.match(silent.msg, /did not answer/);
  assert.ok(Date.now() - t0 >= 1900, `answered after the timeout (${Date.now() - t0} ms)`);
  alice.send({ t: 'leave', id: 'l1', room: 'bob@localhost' });
  assert.equal((await alice.expect({ t: 'error', id: 'l1' })).code, 'not_in_room', 'the failed join left nothing behind');
  // The real room is unaffected by all this.
  await bob.sendXml(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, 'all fine')));
  assert.equal((await alice.nextMsg({ body: 'all fine' })).room, ROOM);
});

itest('a room survives a bridge restart: the new session rejoins and misses nothing', async (t, stack) => {
  const b = await startBridge(stack, { workers: 1 });
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');
  alice.send({ t: 'join', id: 'j1', room: ROOM, nick: 'Alice' });
  await alice.expect({ t: 'ok', id: 'j1' }, 10000);
  await bob.sendXml(xml('presence', { to: `${ROOM}/Bob` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
  await bob.sendXml(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, 'before')));
  const m0 = await alice.nextMsg({ body: 'before' });
  // The worker dies: the edge re-opens the session, which rejoins the room.
  const pid = Number(/worker_ready .*pid=(\d+)/.exec(b.xmppd.lines().find((l) => /worker_ready/.test(l)) ?? '')?.[1]);
  if (pid > 0) process.kill(pid, 'SIGKILL');
  else b.xmppd.kill('SIGKILL');
  await b.xmppd.waitForLines(/muc_joined jid=alice@localhost room=lobby/, { count: 2, timeout: 20000 });
  await bob.sendXml(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, 'after')));
  const m1 = await alice.nextMsg({ body: 'after' }, 20000);
  assert.ok(m1.seq > m0.seq);
  await sleep(500);
  assert.equal(alice.frames.filter((f) => f.t === 'msg' && f.body === 'before').length, 1, 'history not delivered twice');
});

itest('history pages of a conversation and of a room (XEP-0313)', async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');
  for (let i = 1; i <= 5; i++) await bob.send('alice@localhost', `old ${i}`);
  const m5 = await alice.nextMsg({ body: 'old 5' });
  await alice.msg('bob@localhost', 'my answer', { id: 'h-ans' });
  await bob.nextMessage({ body: 'my answer' });
  await sleep(300);

  alice.send({ t: 'history', id: 'h1', with: 'bob@localhost', max: 4 });
  const page1 = [];
  for (let i = 0; i < 4; i++) page1.push(await alice.expect({ t: 'hist', id: 'h1' }));
  const end1 = await alice.expect({ t: 'history', id: 'h1' });
  assert.equal(end1.complete, false);
  assert.equal(end1.count, 4);
  assert.deepEqual(page1.map((h) => h.body), ['old 3', 'old 4', 'old 5', 'my answer'], 'the newest page, oldest first');
  assert.equal(page1[3].to, 'bob@localhost');
  assert.equal(bareJid(page1[3].from), 'alice@localhost');
  assert.equal(page1[0].first, undefined);
  assert.ok(page1.every((h) => typeof h.aid === 'string' && typeof h.ts === 'number'));
  assert.equal(end1.first, page1[0].aid);

  alice.send({ t: 'history', id: 'h2', with: 'bob@localhost', before: end1.first, max: 4 });
  const p2a = await alice.expect({ t: 'hist', id: 'h2' });
  const p2b = await alice.expect({ t: 'hist', id: 'h2' });
  const end2 = await alice.expect({ t: 'history', id: 'h2' });
  assert.deepEqual([p2a.body, p2b.body], ['old 1', 'old 2']);
  assert.equal(end2.complete, true);
  assert.ok(m5.seq > 0);

  // A room's archive.
  alice.send({ t: 'join', id: 'j1', room: ROOM, nick: 'Alice' });
  await alice.expect({ t: 'ok', id: 'j1' }, 10000);
  await bob.sendXml(xml('presence', { to: `${ROOM}/Bob` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
  for (let i = 1; i <= 3; i++) {
    await bob.sendXml(xml('message', { to: ROOM, type: 'groupchat' }, xml('body', {}, `room ${i}`)));
  }
  await alice.nextMsg({ body: 'room 3' });
  await sleep(300);
  alice.send({ t: 'history', id: 'h3', room: ROOM });
  const rh = [];
  for (let i = 0; i < 3; i++) rh.push(await alice.expect({ t: 'hist', id: 'h3' }));
  assert.deepEqual(rh.map((h) => h.body), ['room 1', 'room 2', 'room 3']);
  assert.ok(rh.every((h) => h.room === ROOM && h.from === `${ROOM}/Bob`));
  const end3 = await alice.expect({ t: 'history', id: 'h3' });
  assert.equal(end3.complete, true);

  // An archive the server will not give: an error with the request's id.
  alice.send({ t: 'history', id: 'h4', room: 'nowhere@conference.localhost' });
  const e4 = await alice.expect({ t: 'error', id: 'h4' });
  assert.equal(e4.code, 'refused');
});

itest('history pages hold messages, not the receipts and read markers sent between them', async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');
  const RECEIPTS = 'urn:xmpp:receipts', MARKERS = 'urn:xmpp:chat-markers:0';
  // Bob asks for receipts; the phone acks (a delivery receipt goes out) and
  // marks each message read (a displayed marker), and answers; Bob's client
  // sends a receipt and a marker for each answer too, with no hint: Prosody
  // archives those, so they take places in the archive's pages and the
  // bridge asks again until a page holds max messages with a body.
  const bodies = await chatWithReceiptsAndMarkers(alice, bob, 3);
  await sleep(300);

  alice.send({ t: 'history', id: 'h1', with: 'bob@localhost', max: 4 });
  const hist = [];
  let end;
  while (!end) {
    const f = await alice.next((x) => x.id === 'h1');
    if (f.t === 'hist') hist.push(f);
    else end = f;
  }
  assert.equal(end.t, 'history', JSON.stringify(end));
  assert.deepEqual(hist.map((h) => h.body), bodies.slice(-4), 'a page of 4 holds the 4 newest messages');
  assert.equal(end.count, 4);
  assert.equal(end.complete, false);
  // The page before holds the rest, and is the last.
  alice.send({ t: 'history', id: 'h2', with: 'bob@localhost', before: end.first, max: 4 });
  const older = [];
  let end2;
  while (!end2) {
    const f = await alice.next((x) => x.id === 'h2');
    if (f.t === 'hist') older.push(f);
    else end2 = f;
  }
  assert.deepEqual(older.map((h) => h.body), bodies.slice(0, 2));
  assert.equal(end2.complete, true);
  assert.equal(end2.count, 2);
  console.log(`# pages of max 4 over 6 messages and 6 receipts/markers: ${end.count} (complete ${end.complete}), ${end2.count} (complete ${end2.complete})`);
  // Forward from the oldest: the page after the first message holds the next 4.
  alice.send({ t: 'history', id: 'h3', with: 'bob@localhost', after: older[0].aid, max: 4 });
  const newer = [];
  let end3;
  while (!end3) {
    const f = await alice.next((x) => x.id === 'h3');
    if (f.t === 'hist') newer.push(f);
    else end3 = f;
  }
  assert.deepEqual(newer.map((h) => h.body), bodies.slice(1, 5));
  assert.equal(end3.count, 4);
  assert.equal(end3.complete, false);
});

itest('room subject: a mere participant is refused once, with the request id; the owner gets ok', async (t, stack) => {
  const b = await startBridge(stack);
  const PLANS = 'plans@conference.localhost';
  const alice = await b.loginPhone('alice');
  const dave = await b.loginPhone('dave');
  alice.send({ t: 'join', id: 'j1', room: PLANS, nick: 'Alice' });
  await alice.expect({ t: 'ok', id: 'j1' }, 10000);
  dave.send({ t: 'join', id: 'j2', room: PLANS, nick: 'Dave' });
  await dave.expect({ t: 'ok', id: 'j2' }, 10000);
  const role = await dave.expect({ t: 'occupant', room: PLANS, nick: 'Dave' });
  assert.equal(role.role, 'participant', 'a default room: only moderators may set the subject');

  // The participant: one error, with the request's id, and no ok.
  dave.send({ t: 'subject', id: 's1', room: PLANS, subject: 'not mine to set' });
  const refused = await dave.expect((f) => (f.t === 'ok' || f.t === 'error') && f.id === 's1', 10000);
  assert.equal(refused.t, 'error', JSON.stringify(refused));
  assert.equal(refused.code, 'refused');
  assert.match(refused.msg, /subject: forbidden/);
  await sleep(1000);
  assert.deepEqual(dave.pending().filter((f) => f.t === 'ok' || f.t === 'error'), [],
    'nothing more: no ok, no second error');
  assert.ok(!dave.pending().some((f) => f.t === 'subject' && f.subject === 'not mine to set'));

  // The owner: ok once the room has it, and everyone sees it.
  alice.send({ t: 'subject', id: 's2', room: PLANS, subject: 'Friday: pizza' });
  const se = await alice.expect({ t: 'subject', room: PLANS, subject: 'Friday: pizza' }, 10000);
  assert.equal(se.by, 'Alice');
  await alice.expect({ t: 'ok', id: 's2' });
  assert.equal((await dave.expect({ t: 'subject', room: PLANS, subject: 'Friday: pizza' })).by, 'Alice');
  // The same subject again changes nothing (the room says nothing): ok.
  alice.send({ t: 'subject', id: 's3', room: PLANS, subject: 'Friday: pizza' });
  await alice.expect({ t: 'ok', id: 's3' });
  await sleep(500);
  assert.deepEqual(alice.pending().filter((f) => f.t === 'error'), []);
});

itest('receipts and read markers for ids no phone sent never reach the phone', async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');
  const RECEIPTS = 'urn:xmpp:receipts', MARKERS = 'urn:xmpp:chat-markers:0';
  await alice.msg('bob@localhost', 'a real one', { id: 'c1' });
  const m = await bob.nextMessage({ body: 'a real one' });
  alice.send({ t: 'roster', id: 'r1' });
  await alice.expect({ t: 'roster', id: 'r1' });
  // Made up, a request's id (not a message), then the real receipt, in order.
  const forged = [['received', RECEIPTS, 'never-sent'], ['received', MARKERS, 'r1'],
    ['displayed', MARKERS, 'r1'], ['displayed', MARKERS, 'never-sent'], ['received', RECEIPTS, 'r1']];
  for (const [name, xmlns, id] of forged) {
    await bob.sendXml(xml('message', { to: m.from, type: 'chat' }, xml(name, { xmlns, id })));
  }
  await bob.sendXml(xml('message', { to: m.from, type: 'chat' }, xml('received', { xmlns: RECEIPTS, id: 'c1' })));
  await bob.sendXml(xml('message', { to: m.from, type: 'chat' }, xml('displayed', { xmlns: MARKERS, id: 'c1' })));
  await alice.expect({ t: 'receipt', id: 'c1', state: 'delivered' });
  await alice.expect({ t: 'receipt', id: 'c1', state: 'read' });
  await sleep(300);
  const receipts = alice.frames.filter((f) => f.t === 'receipt');
  console.log(`# forged receipts sent ${forged.length}, receipt events ${receipts.length}: ${receipts.map((f) => f.id).join(',')}`);
  assert.deepEqual(receipts.map((f) => `${f.id}:${f.state}`), ['c1:delivered', 'c1:read']);
});
