// Room requests answered as XEP-0045 rooms behave (docs/PROTOCOL.md 10.6):
// a join completes with the room's subject, a leave when the room confirms
// it, an invitation once the room took it or refused it; each request gets
// exactly one answer with its id. Against Prosody's mod_muc.
import assert from 'node:assert/strict';
import { itest, startBridge, xml, sleep } from '../harness/index.mjs';

const MUC = 'http://jabber.org/protocol/muc';
const ROOM = 'lobby@conference.localhost';

// Answers (ok or error) a phone got for request id, all of them.
const answers = (phone, id) => phone.frames.filter((f) => (f.t === 'ok' || f.t === 'error') && f.id === id);
const indexOf = (phone, pred) => phone.frames.findIndex(pred);

itest('a join is answered after the occupants and the subject; a leave after the room confirms it', async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');
  // Bob opens the room and sets a subject.
  await bob.sendXml(xml('presence', { to: `${ROOM}/Bob` }, xml('x', { xmlns: MUC })));
  await bob.nextStanza((el) => el.is('presence') && el.attrs.from === `${ROOM}/Bob`, 5000, 'own room presence');
  await bob.iq(xml('iq', { type: 'set', to: ROOM }, xml('query', { xmlns: `${MUC}#owner` },
    xml('x', { xmlns: 'jabber:x:data', type: 'submit' }))));
  await bob.sendXml(xml('message', { to: ROOM, type: 'groupchat' }, xml('subject', {}, 'Friday: pizza')));
  await bob.nextMessage((m) => m.stanza.getChildText('subject') === 'Friday: pizza');

  const t0 = Date.now();
  alice.send({ t: 'join', id: 'j1', room: ROOM, nick: 'Alice' });
  await alice.expect({ t: 'ok', id: 'j1' }, 10000);
  const ms = Date.now() - t0;
  const iOk = indexOf(alice, (f) => f.t === 'ok' && f.id === 'j1');
  const iSubj = indexOf(alice, (f) => f.t === 'subject' && f.room === ROOM);
  const iBob = indexOf(alice, (f) => f.t === 'occupant' && f.nick === 'Bob');
  const iMe = indexOf(alice, (f) => f.t === 'occupant' && f.nick === 'Alice' && f.me);
  console.log(`# join of a room with a subject: ok after ${ms} ms; frame order bob=${iBob} me=${iMe} subject=${iSubj} ok=${iOk}`);
  assert.ok(iSubj >= 0 && iSubj < iOk, `the subject comes before the ok (subject ${iSubj}, ok ${iOk})`);
  assert.ok(iBob < iMe && iMe < iOk, 'the occupants, the user last, before the ok');
  assert.equal(alice.frames[iSubj].subject, 'Friday: pizza');
  assert.equal(alice.frames[iSubj].by, 'Bob');

  // A new room (created by the join) has an empty subject: still before the ok.
  alice.send({ t: 'join', id: 'j2', room: 'fresh@conference.localhost', nick: 'Alice' });
  await alice.expect({ t: 'ok', id: 'j2' }, 10000);
  const i2 = indexOf(alice, (f) => f.t === 'ok' && f.id === 'j2');
  const s2 = indexOf(alice, (f) => f.t === 'subject' && f.room === 'fresh@conference.localhost');
  assert.ok(s2 >= 0 && s2 < i2, `a new room's (empty) subject before the ok (subject ${s2}, ok ${i2})`);
  assert.equal(alice.frames[s2].subject, '');

  // Leave: ok once the room said she is out (her own unavailable presence).
  alice.send({ t: 'leave', id: 'l1', room: ROOM });
  await alice.expect({ t: 'ok', id: 'l1' }, 10000);
  const iLeft = indexOf(alice, (f) => f.t === 'occupant' && f.nick === 'Alice' && f.me && f.show === 'offline');
  const iLeaveOk = indexOf(alice, (f) => f.t === 'ok' && f.id === 'l1');
  console.log(`# leave: frame order out=${iLeft} ok=${iLeaveOk}`);
  assert.ok(iLeft >= 0 && iLeft < iLeaveOk, `the room confirms before the ok (out ${iLeft}, ok ${iLeaveOk})`);
  await sleep(300);
  for (const id of ['j1', 'j2', 'l1']) assert.equal(answers(alice, id).length, 1, `one answer for ${id}`);
});

itest('an invitation is answered once the room took it, and refused with the room\'s reason', async (t, stack) => {
  const b = await startBridge(stack);
  const CLUB = 'club@conference.localhost';
  const bob = await b.desktop('bob');
  const carol = await b.desktop('carol');
  // Bob owns a members-only room; Dave is a member (members may not invite).
  await bob.sendXml(xml('presence', { to: `${CLUB}/Bob` }, xml('x', { xmlns: MUC })));
  await bob.nextStanza((el) => el.is('presence') && el.attrs.from === `${CLUB}/Bob`, 5000, 'own room presence');
  await bob.iq(xml('iq', { type: 'set', to: CLUB }, xml('query', { xmlns: `${MUC}#owner` },
    xml('x', { xmlns: 'jabber:x:data', type: 'submit' },
      xml('field', { var: 'FORM_TYPE' }, xml('value', {}, `${MUC}#roomconfig`)),
      xml('field', { var: 'muc#roomconfig_membersonly' }, xml('value', {}, '1'))))));
  await bob.iq(xml('iq', { type: 'set', to: CLUB }, xml('query', { xmlns: `${MUC}#admin` },
    xml('item', { jid: 'dave@localhost', affiliation: 'member' }))));
  const dave = await b.loginPhone('dave');
  dave.send({ t: 'join', id: 'j1', room: CLUB, nick: 'Dave' });
  await dave.expect({ t: 'ok', id: 'j1' }, 10000);

  const t0 = Date.now();
  dave.send({ t: 'invite', id: 'i1', room: CLUB, to: 'carol@localhost', reason: 'come along' });
  const refused = await dave.expect((f) => (f.t === 'ok' || f.t === 'error') && f.id === 'i1', 10000);
  console.log(`# refused invitation answered in ${Date.now() - t0} ms: ${JSON.stringify(refused)}`);
  assert.equal(refused.t, 'error', JSON.stringify(refused));
  assert.equal(refused.code, 'refused');
  assert.match(refused.msg, /invitation: forbidden/);

  // In an open room the same request is answered ok, and Carol has it.
  const alice = await b.loginPhone('alice');
  alice.send({ t: 'join', id: 'j2', room: ROOM, nick: 'Alice' });
  await alice.expect({ t: 'ok', id: 'j2' }, 10000);
  alice.send({ t: 'invite', id: 'i2', room: ROOM, to: 'carol@localhost' });
  const ok = await alice.expect((f) => (f.t === 'ok' || f.t === 'error') && f.id === 'i2', 10000);
  assert.equal(ok.t, 'ok', JSON.stringify(ok));
  await carol.nextMessage((m) => m.stanza.getChild('x', `${MUC}#user`)?.getChild('invite') && m.from === ROOM);
  await sleep(500);
  assert.equal(answers(dave, 'i1').length, 1, 'one answer, no ok after the error');
  assert.equal(answers(alice, 'i2').length, 1);
  assert.ok(!dave.frames.some((f) => f.t === 'error' && f.code === 'undeliverable'), 'the bounce is the answer, not an undeliverable message');
});
