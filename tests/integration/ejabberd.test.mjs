// The bridge against a second XMPP server: Debian's ejabberd (23.01), each
// test with a private one (tests/harness/ejabberd.mjs) and xmpp.js as the
// desktop user.  The same scenarios as the Prosody suites (core, rooms,
// groups, policy) where servers differ: room requests answered once with
// their id (PROTOCOL.md 10.6), history pages among receipts and markers
// (10.7, ejabberd's mod_mam), receipts for ids no phone sent, and the XEP-0357
// push component (xmppd/push.c) that ejabberd, unlike Prosody, disconnects
// for any stanza without a 'from'.
import assert from 'node:assert/strict';
import net from 'node:net';
import { itest, startBridge, xml, sleep, bareJid, freePort, redisSubscriber, waitFor } from '../harness/index.mjs';

const MUC = 'http://jabber.org/protocol/muc';
const RECEIPTS = 'urn:xmpp:receipts';
const MARKERS = 'urn:xmpp:chat-markers:0';
const CONF = 'conference.localhost';
const XMPP = 'ejabberd';

// Answers (ok or error) a phone got for request id, all of them.
const answers = (phone, id) => phone.frames.filter((f) => (f.t === 'ok' || f.t === 'error') && f.id === id);
const indexOf = (phone, pred) => phone.frames.findIndex(pred);

/** Frames of one history request up to its end frame: {hist, end}. */
async function historyPage(phone, req) {
  phone.send({ t: 'history', ...req });
  const hist = [];
  for (;;) {
    const f = await phone.next((x) => x.id === req.id, 10000);
    if (f.t === 'hist') hist.push(f);
    else return { hist, end: f };
  }
}

itest('ejabberd: phone and desktop chat both ways, acks, receipts, offline delivery', async (t, stack) => {
  const t0 = Date.now();
  const b = await startBridge(stack, { xmpp: XMPP });
  const up = Date.now() - t0;
  const alice = await b.loginPhone('alice');
  const bob = await b.desktop('bob');
  let sent = 0, ok = 0;
  let worst = 0;
  for (let i = 1; i <= 5; i++) {
    const s0 = Date.now();
    const a = await alice.msg('bob@localhost', `phone ${i}`, { id: `p${i}` });
    assert.equal(a.t, 'ack', JSON.stringify(a));
    await bob.nextMessage({ body: `phone ${i}` });
    await bob.send('alice@localhost', `desk ${i}`);
    const m = await alice.nextMsg({ body: `desk ${i}` });
    assert.equal(bareJid(m.from), 'bob@localhost');
    alice.send({ t: 'ack', seq: m.seq });
    sent += 2; ok += 2;
    worst = Math.max(worst, Date.now() - s0);
  }
  // A receipt and a read marker from the desktop for the phone's message.
  const last = bob.messages.find((m) => m.body === 'phone 5');
  await bob.sendXml(xml('message', { to: last.from, type: 'chat' }, xml('received', { xmlns: RECEIPTS, id: 'p5' })));
  await bob.sendXml(xml('message', { to: last.from, type: 'chat' }, xml('displayed', { xmlns: MARKERS, id: 'p5' })));
  await alice.expect({ t: 'receipt', id: 'p5', state: 'delivered' });
  await alice.expect({ t: 'receipt', id: 'p5', state: 'read' });
  // The phone logs out; what Bob sends meanwhile waits in ejabberd's offline
  // store and arrives at the next login.
  alice.send({ t: 'logout' });
  await alice.expect({ t: 'bye' });
  await sleep(300);
  await bob.send('alice@localhost', 'while you were out');
  await sleep(300);
  const back = await b.loginPhone('alice', 'alice-back');
  await back.nextMsg({ body: 'while you were out' }, 10000);
  console.log(`# ejabberd up + bridge ready in ${up} ms; chat sent ${sent}, ok ${ok}, failed ${sent - ok}, worst round trip ${worst} ms`);
});
