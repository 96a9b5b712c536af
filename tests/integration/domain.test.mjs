// A JID whose domain the XMPP server does not host: the server closes the
// stream with <host-unknown/>. That is permanent (retrying cannot help), so
// the phone gets unknown_domain (PROTOCOL.md section 6), not unavailable
// ("retry later"), and the connection stays open for a corrected login.
import assert from 'node:assert/strict';
import { itest, startBridge } from '../harness/index.mjs';

itest('login to a domain the XMPP server does not host: unknown_domain, then the right JID logs in', async (t, stack) => {
  const b = await startBridge(stack);
  const phone = await b.phone();
  const t0 = Date.now();
  const f = await phone.tryLogin('alice@not-hosted.example', 'whatever', { timeout: 15000 });
  t.diagnostic(`answer after ${Date.now() - t0} ms: ${JSON.stringify(f)}`);
  assert.equal(f.t, 'error');
  assert.equal(f.code, 'unknown_domain', JSON.stringify(f));
  assert.match(f.msg, /not-hosted\.example/);
  assert.equal(phone.isClosed, false);
  const w = await phone.tryLogin(b.jid('alice'), b.pass('alice'));
  assert.equal(w.t, 'welcome', JSON.stringify(w));
  assert.match(b.xmppd.stderr, /session_login_failed jid=alice@not-hosted\.example code=unknown_domain/);
});
