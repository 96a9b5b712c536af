// Chat features, part 1 (docs/PROTOCOL.md section 10): presence both ways,
// client state indication, the roster and subscriptions, receipts and read
// markers, typing. A phone on one side, xmpp.js (a real XMPP client) on the
// other, real Prosody and Redis in between.
import assert from 'node:assert/strict';
import { itest, startBridge, bareJid, xml, sleep } from '../harness/index.mjs';

const isPresence = (from, type) => (el) => el.is('presence') &&
  bareJid(el.attrs.from) === from && (el.attrs.type ?? 'available') === type;

/** Mutual presence subscription between a phone user and a desktop user. */
export async function befriend(phone, desk, phoneBare) {
  await desk.getRoster();
  phone.send({ t: 'sub', to: desk.bare, type: 'subscribe' });
  await desk.nextStanza(isPresence(phoneBare, 'subscribe'), 5000, 'subscribe');
  await desk.sendXml(xml('presence', { to: phoneBare, type: 'subscribed' }));
  await desk.sendXml(xml('presence', { to: phoneBare, type: 'subscribe' }));
  await phone.expect({ t: 'sub', type: 'subscribe', from: desk.bare });
  phone.send({ t: 'sub', to: desk.bare, type: 'subscribed' });
  await phone.expect({ t: 'presence', from: desk.jid });
}

itest('roster, subscriptions both ways, presence both ways, client state', async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');
  await bob.getRoster();

  // Add a contact: answered ok, and the roster push reaches the phone.
  alice.send({ t: 'roster_set', id: 'r1', jid: 'bob@localhost', name: 'Bob', group: 'Friends' });
  await alice.expect({ t: 'ok', id: 'r1' });
  const push = await alice.expect({ t: 'roster_push', jid: 'bob@localhost' });
  assert.equal(push.name, 'Bob');
  assert.equal(push.group, 'Friends');
  assert.equal(push.sub, 'none');

  // Alice asks to see Bob's presence; Bob approves.
  alice.send({ t: 'sub', to: 'bob@localhost', type: 'subscribe' });
  await bob.nextStanza(isPresence('alice@localhost', 'subscribe'), 5000, 'subscribe');
  await bob.sendXml(xml('presence', { to: 'alice@localhost', type: 'subscribed' }));
  const approved = await alice.expect({ t: 'sub', type: 'subscribed', from: 'bob@localhost' });
  assert.ok(approved.seq > 0, 'a subscription answer is stored and numbered');
  const online = await alice.expect({ t: 'presence', from: bob.jid });
  assert.equal(online.show, 'online');

  // Bob asks the same; Alice approves from the phone.
  await bob.sendXml(xml('presence', { to: 'alice@localhost', type: 'subscribe' }));
  const ask = await alice.expect({ t: 'sub', type: 'subscribe', from: 'bob@localhost' });
  assert.ok(ask.seq > approved.seq);
  alice.send({ t: 'sub', to: 'bob@localhost', type: 'subscribed' });
  await bob.nextStanza(isPresence('alice@localhost', 'subscribed'), 5000, 'subscribed');

  alice.send({ t: 'roster', id: 'r2' });
  const roster = await alice.expect({ t: 'roster', id: 'r2' });
  const item = roster.items.find((i) => i.jid === 'bob@localhost');
  assert.deepEqual(item, { jid: 'bob@localhost', name: 'Bob', group: 'Friends', sub: 'both' });

  // The phone's presence becomes XMPP presence...
  alice.send({ t: 'presence', show: 'away', status: 'at lunch' });
  const away = await bob.nextStanza((el) => isPresence('alice@localhost', 'available')(el) &&
    el.getChildText('show') === 'away', 5000, 'away presence');
  assert.equal(away.getChildText('status'), 'at lunch');
  alice.send({ t: 'presence', show: 'busy' });
  await bob.nextStanza((el) => isPresence('alice@localhost', 'available')(el) &&
    el.getChildText('show') === 'dnd', 5000, 'dnd presence');

  // ...and the contact's reaches the phone.
  await bob.sendXml(xml('presence', {}, xml('show', {}, 'dnd'), xml('status', {}, 'coding')));
  await alice.expect({ t: 'presence', from: bob.jid, show: 'busy', status: 'coding' });

  // A second phone of Alice's gets what is known at once.
  const alice2 = await b.loginPhone('alice', 'alice-2');
  const snap = await alice2.expect({ t: 'presence', from: bob.jid });
  assert.equal(snap.show, 'busy');

  // Both phones go to the background: the bridge tells the server
  // (XEP-0352) and the phones stop getting presence; back to the front.
  alice.send({ t: 'state', active: false });
  await sleep(200);
  assert.equal(b.xmppd.lines().some((l) => /csi jid=alice@localhost state=inactive/.test(l)), false,
    'one phone still in front: the session stays active');
  alice2.send({ t: 'state', active: false });
  await b.xmppd.waitForLine(/csi jid=alice@localhost state=inactive/);
  await bob.sendXml(xml('presence', {}, xml('show', {}, 'away')));
  assert.ok(await alice.noFrame({ t: 'presence', show: 'away' }, 800), 'no presence to a phone in the background');
  alice2.send({ t: 'state', active: true });
  await b.xmppd.waitForLine(/csi jid=alice@localhost state=active/);
  await bob.sendXml(xml('presence', {}, xml('show', {}, 'away'), xml('status', {}, 'back soon')));
  await alice2.expect({ t: 'presence', from: bob.jid, status: 'back soon' });

  // Bob logs off: the phone sees him offline.
  await bob.stop();
  await alice2.expect({ t: 'presence', from: bob.jid, show: 'offline' });

  // Removing the contact: ok, and a push saying so.
  alice2.send({ t: 'roster_remove', id: 'r3', jid: 'bob@localhost' });
  await alice2.expect({ t: 'ok', id: 'r3' });
  await alice2.expect({ t: 'roster_push', jid: 'bob@localhost', sub: 'remove' });
});

itest('the presence a phone chose survives a new session (another worker)', async (t, stack) => {
  const b = await startBridge(stack, { xmppdArgs: ['--resume-window', '0'] });
  const bob = await b.desktop('bob');
  let alice = await b.loginPhone('alice');
  await befriend(alice, bob, 'alice@localhost');
  alice.send({ t: 'presence', show: 'away', status: 'on the train' });
  await bob.nextStanza((el) => isPresence('alice@localhost', 'available')(el) &&
    el.getChildText('show') === 'away');
  alice.send({ t: 'logout' });
  await alice.expect({ t: 'bye' });
  await bob.nextStanza(isPresence('alice@localhost', 'unavailable'));
  bob.stanzas.length = 0; // what came before the new session
  // A new login opens a new XMPP session: it shows the same presence.
  alice = await b.loginPhone('alice', 'alice-again');
  const back = await bob.nextStanza(isPresence('alice@localhost', 'available'));
  assert.equal(back.getChildText('show'), 'away');
  assert.equal(back.getChildText('status'), 'on the train');
  // "offline" hides the phone user while the session lives on.
  alice.send({ t: 'presence', show: 'offline' });
  await bob.nextStanza(isPresence('alice@localhost', 'unavailable'));
});

itest('receipts and read markers both ways: three stages for what the phone sent', async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');

  // Phone -> desktop: accepted (ack), delivered (receipt), read (marker).
  const ack = await alice.msg('bob@localhost', 'did you get this?', { id: 'c1' });
  assert.deepEqual(ack, { t: 'ack', id: 'c1' });
  const m = await bob.nextMessage({ body: 'did you get this?' });
  assert.ok(m.stanza.getChild('request', 'urn:xmpp:receipts'), 'asks for a receipt');
  assert.ok(m.stanza.getChild('markable', 'urn:xmpp:chat-markers:0'), 'is markable');
  await bob.sendXml(xml('message', { to: m.from, id: 'rcpt1' }, xml('received', { xmlns: 'urn:xmpp:receipts', id: 'c1' })));
  const delivered = await alice.expect({ t: 'receipt', id: 'c1' });
  assert.equal(delivered.state, 'delivered');
  assert.equal(bareJid(delivered.from), 'bob@localhost');
  assert.ok(delivered.seq > 0, 'receipts are stored until the phone acks them');
  // The same client also says "received" as a chat marker (converse.js
  // does both): the phone hears "delivered" once.
  await bob.sendXml(xml('message', { to: m.from, type: 'chat' }, xml('received', { xmlns: 'urn:xmpp:chat-markers:0', id: 'c1' })));
  await bob.sendXml(xml('message', { to: m.from, type: 'chat' }, xml('displayed', { xmlns: 'urn:xmpp:chat-markers:0', id: 'c1' })));
  const read = await alice.expect({ t: 'receipt', id: 'c1', state: 'read' });
  assert.ok(read.seq > delivered.seq);
  assert.equal(read.seq, delivered.seq + 1, 'no second "delivered" stored between them');

  // Desktop -> phone: the receipt is sent only once the phone acked it.
  await bob.sendXml(xml('message', { to: 'alice@localhost', type: 'chat', id: 'd1' },
    xml('body', {}, 'tell me when you have it'), xml('request', { xmlns: 'urn:xmpp:receipts' })));
  const inMsg = await alice.nextMsg({ body: 'tell me when you have it' });
  assert.equal(inMsg.id, 'd1');
  await sleep(500);
  assert.equal(bob.messages.some((x) => x.stanza.getChild('received', 'urn:xmpp:receipts')), false,
    'no receipt before the phone acked');
  alice.send({ t: 'ack', seq: inMsg.seq });
  const rc = await bob.nextMessage((x) => !!x.stanza.getChild('received', 'urn:xmpp:receipts'));
  assert.equal(rc.stanza.getChild('received', 'urn:xmpp:receipts').attrs.id, 'd1');
  assert.equal(bareJid(rc.from), 'alice@localhost');
  // Acking again (or later acks) does not send a second receipt.
  alice.send({ t: 'ack', seq: inMsg.seq });
  // The phone marks it read: XEP-0333 displayed.
  alice.send({ t: 'read', to: inMsg.from, id: 'd1' });
  const disp = await bob.nextMessage((x) => !!x.stanza.getChild('displayed', 'urn:xmpp:chat-markers:0'));
  assert.equal(disp.stanza.getChild('displayed', 'urn:xmpp:chat-markers:0').attrs.id, 'd1');
  await sleep(300);
  assert.equal(bob.messages.filter((x) => x.stanza.getChild('received', 'urn:xmpp:receipts')).length, 1,
    'one receipt per message');
});

itest('typing both ways, never stored: not replayed, not kept offline', async (t, stack) => {
  const b = await startBridge(stack);
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');
  await befriend(alice, bob, 'alice@localhost');

  alice.send({ t: 'typing', to: bob.jid, state: 'composing' });
  const st = await bob.nextMessage((x) => !!x.stanza.getChild('composing', 'http://jabber.org/protocol/chatstates'));
  assert.equal(st.body, null, 'a chat state alone, no body');
  assert.ok(st.stanza.getChild('no-store', 'urn:xmpp:hints'), 'hinted not to be stored');

  await bob.sendXml(xml('message', { to: 'alice@localhost', type: 'chat' },
    xml('composing', { xmlns: 'http://jabber.org/protocol/chatstates' })));
  const typing = await alice.expect({ t: 'typing', state: 'composing' });
  assert.equal(typing.from, bob.jid);
  assert.equal(typing.seq, undefined, 'not numbered: not stored');
  await bob.sendXml(xml('message', { to: 'alice@localhost', type: 'chat' },
    xml('paused', { xmlns: 'http://jabber.org/protocol/chatstates' })));
  await alice.expect({ t: 'typing', state: 'paused' });

  // A phone that logs in later gets no typing from the past.
  const again = await b.loginPhone('alice', 'alice-later');
  assert.ok(await again.noFrame({ t: 'typing' }, 500));

  // Typing to someone offline: the server does not keep it for them.
  alice.send({ t: 'typing', to: 'carol@localhost', state: 'composing' });
  alice.send({ t: 'msg', id: 'c9', to: 'carol@localhost', body: 'a real message' });
  await alice.expect({ t: 'ack', id: 'c9' });
  const carol = await b.desktop('carol');
  await carol.nextMessage({ body: 'a real message' });
  await sleep(300);
  assert.equal(carol.messages.some((x) => x.stanza.getChild('composing', 'http://jabber.org/protocol/chatstates') &&
    x.body == null), false, 'no stored chat state');
});
