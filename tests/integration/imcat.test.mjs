// bin/imcat (the C phone client) in its scriptable --json mode:
//   bin/imcat --host H --port P --user JID --password PASS --json
// logs in, prints every received frame as one JSON line (welcome first) and
// sends each stdin JSON line as a frame.
import assert from 'node:assert/strict';
import { itest, startBridge, startImcat, bareJid } from '../harness/index.mjs';

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
