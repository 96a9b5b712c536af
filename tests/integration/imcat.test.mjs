// bin/imcat (the C phone client) in its scriptable --json mode:
//   bin/imcat --host H --port P --user JID --password PASS --json
// logs in, prints every received frame as one JSON line (welcome first) and
// sends each stdin JSON line as a frame. Without --json it is a chat prompt:
// commands and chat lines in, one readable line per received frame out.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { itest, startBridge, startImcat, bareJid, binPath, sleep, xml, FrameTap } from '../harness/index.mjs';

itest('imcat --json: login, message to the desktop and back', { bins: ['imb-edge', 'imb-xmppd', 'imcat'] }, async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  const cat = startImcat(stack, { port: b.edge.port, user: b.jid('alice'), pass: b.pass('alice') });
  const first = await cat.nextJson(() => true, 10000);
  assert.equal(first.t, 'welcome', `first line is the welcome frame: ${JSON.stringify(first)}`);
  assert.equal(first.jid, 'alice@localhost');

  cat.sendJson({ t: 'msg', id: 'i1', to: 'bob@localhost', body: 'from imcat' });
  assert.deepEqual(await cat.nextJson({ t: 'ack', id: 'i1' }), { t: 'ack', id: 'i1' });
  const m = await bob.nextMessage({ body: 'from imcat' });
  assert.equal(bareJid(m.from), 'alice@localhost');

  await bob.send('alice@localhost', 'to imcat');
  const got = await cat.nextJson({ t: 'msg', body: 'to imcat' });
  assert.equal(got.from, bob.jid);

  cat.sendJson({ t: 'hb' });
  assert.deepEqual(await cat.nextJson({ t: 'hb' }), { t: 'hb' });
  // imcat --help: "End of input logs out"; exit status 0 when all went well.
  cat.endStdin();
  assert.deepEqual(await cat.nextJson({ t: 'bye' }), { t: 'bye', reason: 'logout' });
  const r = await cat.waitExit(5000);
  assert.equal(r.code, 0, 'imcat exits 0 after end of input');
});

itest('imcat --json: wrong password is reported', { bins: ['imb-edge', 'imb-xmppd', 'imcat'] }, async (t, stack) => {
  const b = await startBridge(stack);
  const cat = startImcat(stack, { port: b.edge.port, user: b.jid('alice'), pass: 'wrong' });
  const f = await cat.nextJson(() => true, 10000);
  assert.equal(f.t, 'error');
  assert.equal(f.code, 'auth_failed');
  cat.endStdin();
  // imcat --help: exit status 1 = login failed.
  const r = await cat.waitExit(5000);
  assert.equal(r.code, 1, 'imcat exit status 1: login failed');
});

// ---------------------------------------------------------------------------
// The chat features (docs/PROTOCOL.md section 10) through imcat: its
// interactive mode (commands in, one readable line per frame out) and the
// acks it sends for stored events.

const ROOM = 'lobby@conference.localhost';
const isPresence = (from, type) => (el) => el.is('presence') &&
  bareJid(el.attrs.from) === from && (el.attrs.type ?? 'available') === type;
const CLOCK = String.raw`\[\d\d:\d\d:\d\d\]`;
const DATE_CLOCK = String.raw`\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\]`;
const esc = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/**
 * bin/imcat in its interactive mode, as a person would run it (password from
 * $IMCAT_PASSWORD). say(line) types a line; line(re) resolves the next stdout
 * line matching re (others stay queued); errLine(re) waits for a stderr line.
 */
async function startChat(stack, b, user, extraArgs = []) {
  // Through a relay that checks every frame both ways against the schema.
  const tap = await FrameTap.start(stack, b.edge.port, `frametap ${user}`);
  const proc = stack.spawn(`imcat-${user}`, binPath('imcat'),
    ['--host', '127.0.0.1', '--port', String(tap.port), '--user', b.jid(user), ...extraArgs],
    { stdin: 'pipe', envExtra: { IMCAT_PASSWORD: b.pass(user) } });
  proc.say = (text) => proc.write(`${text}\n`);
  proc.line = (re, timeout = 5000) => proc.nextStdoutLine((l) => re.test(l), timeout).catch((e) => {
    e.message += `; wanted ${re}; stdout so far:\n${proc.stdout}`;
    throw e;
  });
  proc.errLine = (re, timeout = 5000) => proc.waitForLine(re, { timeout });
  proc.tap = tap;
  await proc.errLine(new RegExp(`^\\* logged in as ${esc(b.jid(user))}`), 10000);
  return proc;
}

/** Every frame imcat (the client library) sent and was sent fits
 *  docs/protocol.schema.json; the frame types seen go to the test's log. */
function assertFramesFit(t, ...cats) {
  for (const c of cats) t.diagnostic(c.tap.describe(c.name));
  assert.deepEqual(cats.flatMap((c) => c.tap.problems), [], 'every frame fits docs/protocol.schema.json');
}

/** After a phone quit: log in again and return every stored frame replayed before the sync. */
async function replayedAfterLogin(b, user) {
  const p = await b.loginPhone(user, `${user}-check`);
  const n = p.frames.findIndex((f) => f.t === 'sync');
  return p.frames.slice(0, n).filter((f) => typeof f.seq === 'number');
}

itest('imcat chat mode: contacts, subscriptions, presence, typing, receipts, read, filter', {
  bins: ['imb-edge', 'imb-xmppd', 'imcat'], timeout: 90000,
}, async (t, stack) => {
  const dir = stack.tempDir('imb-rules-');
  const rules = path.join(dir, 'filter.rules');
  fs.writeFileSync(rules, 'mask darn\nreject spamword\n');
  const b = await startBridge(stack, { xmppdArgs: ['--filter-rules', rules] });
  await b.xmppd.waitForLine(/filter_rules_loaded .*rules=2/);
  const bob = await b.desktop('bob');
  await bob.getRoster();
  const cat = await startChat(stack, b, 'alice', ['--to', 'bob@localhost']);

  // A contact: added (the answer and the roster push), then subscriptions both ways.
  cat.say('/add bob@localhost Bob');
  await cat.line(/^\* contact bob@localhost saved$/);
  await cat.line(/^\* contact bob@localhost \(Bob\): no presence shared$/);
  cat.say('/sub bob@localhost');
  await bob.nextStanza(isPresence('alice@localhost', 'subscribe'), 5000, 'subscribe');
  await bob.sendXml(xml('presence', { to: 'alice@localhost', type: 'subscribed' }));
  await cat.line(/^\* bob@localhost lets you see their presence$/);
  await cat.line(/^\* bob@localhost\/desktop is online$/);
  await bob.sendXml(xml('presence', { to: 'alice@localhost', type: 'subscribe' }));
  await cat.line(/^\* bob@localhost asks to see your presence: \/allow bob@localhost or \/deny bob@localhost$/);
  cat.say('/allow bob@localhost');
  await bob.nextStanza(isPresence('alice@localhost', 'subscribed'), 5000, 'subscribed');
  cat.say('/roster');
  await cat.line(/^\* roster: 1 contact$/);
  await cat.line(/^ {4}bob@localhost \(Bob\): you see each other's presence$/);

  // Presence: the desktop sees the phone's, the phone prints the desktop's.
  cat.say('/presence away at lunch');
  const away = await bob.nextStanza((el) => isPresence('alice@localhost', 'available')(el) &&
    el.getChildText('show') === 'away', 5000, 'away presence');
  assert.equal(away.getChildText('status'), 'at lunch');
  await bob.sendXml(xml('presence', {}, xml('show', {}, 'dnd'), xml('status', {}, 'coding')));
  await cat.line(/^\* bob@localhost\/desktop is busy: coding$/);

  // Typing both ways.
  await bob.sendXml(xml('message', { to: 'alice@localhost', type: 'chat' },
    xml('composing', { xmlns: 'http://jabber.org/protocol/chatstates' })));
  await cat.line(/^\* bob@localhost\/desktop is typing$/);
  cat.say('/typing');
  await bob.nextMessage((m) => !!m.stanza.getChild('composing', 'http://jabber.org/protocol/chatstates'));

  // A line to the --to recipient: accepted, delivered, read, each on its line.
  cat.say('did you get this?');
  const ackLine = await cat.line(/^\(delivered to server: \S+\)$/);
  const id = /: (\S+)\)$/.exec(ackLine)[1];
  const m = await bob.nextMessage({ body: 'did you get this?' });
  assert.equal(m.id, id);
  await bob.sendXml(xml('message', { to: m.from, id: 'rc1' }, xml('received', { xmlns: 'urn:xmpp:receipts', id })));
  await cat.line(new RegExp(`^\\(delivered to bob@localhost/desktop: ${esc(id)}\\)$`));
  await bob.sendXml(xml('message', { to: m.from, type: 'chat' }, xml('displayed', { xmlns: 'urn:xmpp:chat-markers:0', id })));
  await cat.line(new RegExp(`^\\(read by bob@localhost/desktop: ${esc(id)}\\)$`));

  // An incoming message, then /read: a read marker for it.
  await bob.sendXml(xml('message', { to: 'alice@localhost', type: 'chat', id: 'd1' },
    xml('body', {}, 'tell me when you read it'), xml('markable', { xmlns: 'urn:xmpp:chat-markers:0' })));
  await cat.line(new RegExp(`^${CLOCK} bob@localhost/desktop: tell me when you read it$`));
  cat.say('/read');
  const disp = await bob.nextMessage((x) => !!x.stanza.getChild('displayed', 'urn:xmpp:chat-markers:0'));
  assert.equal(disp.stanza.getChild('displayed', 'urn:xmpp:chat-markers:0').attrs.id, 'd1');

  // The filter: masked words are marked, a refusal names its reason.
  await bob.send('alice@localhost', 'oh darn');
  await cat.line(new RegExp(`^${CLOCK} bob@localhost/desktop: oh \\*\\*\\*\\* \\(words masked by the filter\\)$`));
  cat.say('buy spamword now');
  await cat.line(/^! error filtered \(banned_word\): .+ \(id \S+\)$/);

  // Arguments are checked before anything goes out.
  cat.say('/presence sleepy');
  await cat.errLine(/^imcat: usage: \/presence online\|away\|busy\|offline \[TEXT\]$/);
  cat.say('/remove');
  await cat.errLine(/^imcat: usage: \/remove JID$/);
  cat.say('/allow bob@localhost/desktop');
  await cat.errLine(/^imcat: give the bare JID, without \/resource: bob@localhost\/desktop$/);
  cat.say('/history bob@localhost 500');
  await cat.errLine(/^imcat: \/history: N must be a number from 1 to 100$/);
  cat.say('/subject no room here');
  await cat.errLine(/^imcat: \/subject: no current room; pick one with \/room ROOM$/);
  cat.say('/join nowhere');
  await cat.errLine(/^imcat: not a room JID \(name@service\): nowhere$/);

  // Background and front: the bridge tells the XMPP server (XEP-0352).
  cat.say('/bg');
  await b.xmppd.waitForLine(/csi jid=alice@localhost state=inactive/);
  cat.say('/fg');
  await b.xmppd.waitForLine(/csi jid=alice@localhost state=active/);

  cat.say('/quit');
  assert.equal((await cat.waitExit(5000)).code, 0);
  assertFramesFit(t, cat);
  assert.equal(cat.lines('stderr').some((l) => /unknown_frame/.test(l)), false, 'every frame has a line');
  // Everything numbered that imcat printed was acked: nothing comes again.
  assert.deepEqual(await replayedAfterLogin(b, 'alice'), []);
});

itest('imcat chat mode: rooms, subject, invitations, history pages', {
  bins: ['imb-edge', 'imb-xmppd', 'imcat'], timeout: 90000,
}, async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  const carol = await b.desktop('carol');
  const cat = await startChat(stack, b, 'alice');
  const room = esc(ROOM);

  // A chat, for the history of a conversation.
  await bob.send('alice@localhost', 'an old chat');
  await cat.line(new RegExp(`^${CLOCK} bob@localhost/desktop: an old chat$`));

  cat.say(`/join ${ROOM} Alice`);
  await cat.line(new RegExp(`^\\* ${room}: you are here as Alice \\[moderator, owner\\]$`), 10000);
  await cat.line(new RegExp(`^\\* joined ${room} as Alice; lines now go there$`), 10000);
  await bob.sendXml(xml('presence', { to: `${ROOM}/Bob` }, xml('x', { xmlns: 'http://jabber.org/protocol/muc' })));
  await cat.line(new RegExp(`^\\* ${room}: Bob( \\(bob@localhost/desktop\\))? is here \\[participant\\]$`));
  await bob.nextStanza((el) => el.is('presence') && el.attrs.from === `${ROOM}/Bob`, 5000, 'own room presence');

  // Room messages both ways: lines go to the room as group messages.
  await bob.sendXml(xml('message', { to: ROOM, type: 'groupchat', id: 'g1' }, xml('body', {}, 'hello room')));
  await cat.line(new RegExp(`^${CLOCK} \\(${room}\\) Bob: hello room$`));
  cat.say('hi from imcat');
  const bm = await bob.nextMessage({ body: 'hi from imcat' });
  assert.equal(bm.type, 'groupchat');
  assert.equal(bm.from, `${ROOM}/Alice`);
  await cat.line(new RegExp(`^${CLOCK} \\(${room}\\) Alice: hi from imcat$`));

  // History of the room, one page at a time, then of the conversation.
  await sleep(500);
  cat.say('/history 1');
  await cat.line(new RegExp(`^${DATE_CLOCK} \\(${room}\\) Alice: hi from imcat$`));
  await cat.line(new RegExp(`^\\* end of history of ${room}: 1 message; /more for older ones$`));
  cat.say('/more');
  await cat.line(new RegExp(`^${DATE_CLOCK} \\(${room}\\) Bob: hello room$`));
  await cat.line(new RegExp(`^\\* end of history of ${room}: 1 message; `));
  cat.say('/history bob@localhost');
  await cat.line(new RegExp(`^${DATE_CLOCK} bob@localhost/desktop: an old chat$`));
  await cat.line(/^\* end of history with bob@localhost: 1 message; nothing older$/);

  // The subject, set from imcat; an invitation from it.
  cat.say('/subject Plans for Friday');
  await cat.line(new RegExp(`^\\* ${room}: subject "Plans for Friday" \\(set by Alice\\)$`));
  await cat.line(new RegExp(`^\\* changed the subject of ${room}$`));
  cat.say('/subject');
  await cat.line(new RegExp(`^\\* ${room}: subject "Plans for Friday"$`));
  cat.say('/invite carol@localhost come along');
  const inv = await carol.nextMessage((x) => !!x.stanza.getChild('x', 'http://jabber.org/protocol/muc#user'));
  assert.equal(inv.stanza.getChild('x', 'http://jabber.org/protocol/muc#user').getChild('invite').getChildText('reason'), 'come along');

  // An invitation to another imcat user: a stored event, printed with a hint.
  const dave = await startChat(stack, b, 'dave');
  await bob.sendXml(xml('message', { to: ROOM }, xml('x', { xmlns: 'http://jabber.org/protocol/muc#user' },
    xml('invite', { to: 'dave@localhost' }, xml('reason', {}, 'join us')))));
  await dave.line(new RegExp(`^\\* \\S+ invites you to ${room}: join us; to accept: /join ${room}$`));

  // Leaving the current room: no recipient any more.
  cat.say('/leave');
  await cat.line(new RegExp(`^\\* left ${room}; no recipient now$`));
  await bob.nextStanza((el) => el.is('presence') && el.attrs.from === `${ROOM}/Alice` && el.attrs.type === 'unavailable');
  cat.say('anyone?');
  await cat.errLine(/^imcat: no recipient yet; set one with \/to JID or \/room ROOM$/);

  cat.say('/quit');
  dave.say('/quit');
  assert.equal((await cat.waitExit(5000)).code, 0);
  assert.equal((await dave.waitExit(5000)).code, 0);
  assertFramesFit(t, cat, dave);
  assert.deepEqual(await replayedAfterLogin(b, 'dave'), [], 'the invitation was acked');
});

itest('imcat --json acks stored events: a subscription answer and a receipt are not replayed', {
  bins: ['imb-edge', 'imb-xmppd', 'imcat'],
}, async (t, stack) => {
  const b = await startBridge(stack);
  const bob = await b.desktop('bob');
  await bob.getRoster();
  const opts = { port: b.edge.port, user: b.jid('alice'), pass: b.pass('alice'), extraArgs: ['--dev', 'cli'] };
  let cat = startImcat(stack, opts);
  await cat.nextJson({ t: 'welcome' }, 10000);
  await cat.nextJson({ t: 'sync' });

  cat.sendJson({ t: 'sub', to: 'bob@localhost', type: 'subscribe' });
  await bob.nextStanza(isPresence('alice@localhost', 'subscribe'), 5000, 'subscribe');
  await bob.sendXml(xml('presence', { to: 'alice@localhost', type: 'subscribed' }));
  const answer = await cat.nextJson({ t: 'sub', type: 'subscribed' });
  assert.ok(answer.seq > 0, 'a stored event, numbered');
  cat.sendJson({ t: 'msg', id: 'k1', to: 'bob@localhost', body: 'receipt please' });
  await cat.nextJson({ t: 'ack', id: 'k1' });
  const m = await bob.nextMessage({ body: 'receipt please' });
  await bob.sendXml(xml('message', { to: m.from, id: 'rc1' }, xml('received', { xmlns: 'urn:xmpp:receipts', id: 'k1' })));
  const rc = await cat.nextJson({ t: 'receipt', id: 'k1' });
  assert.ok(rc.seq > answer.seq);
  // The edge handles a connection's frames in order: once this hb is
  // answered, the acks imcat sent before it were handled too.
  cat.sendJson({ t: 'hb' });
  await cat.nextJson({ t: 'hb' });
  cat.endStdin();
  await cat.nextJson({ t: 'bye' });
  assert.equal((await cat.waitExit(5000)).code, 0);

  // The same device again: whatever is replayed comes before the sync.
  cat = startImcat(stack, opts);
  await cat.nextJson({ t: 'welcome' }, 10000);
  await cat.nextJson({ t: 'sync' });
  const replayed = cat.lines('stdout').map((l) => JSON.parse(l)).filter((f) => typeof f.seq === 'number' && f.t !== 'sync');
  assert.deepEqual(replayed, [], 'nothing stored came back');
  cat.endStdin();
  assert.equal((await cat.waitExit(5000)).code, 0);
});
