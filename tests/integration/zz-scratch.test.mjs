import assert from 'node:assert/strict';
import { itest, startBridge } from '../harness/index.mjs';
const seeds = process.env.SEEDS;
itest('cluster smoke', async (t, stack) => {
  const args = ['--redis-cluster', seeds];
  const b = await startBridge(stack, { xmppdArgs: args, edgeArgs: args });
  const bob = await b.desktop('bob');
  const alice = await b.loginPhone('alice');
  const ack = await alice.msg('bob@localhost', 'hello from the phone', { id: 'c1' });
  assert.deepEqual(ack, { t: 'ack', id: 'c1' });
  await bob.nextMessage({ body: 'hello from the phone' }, 5000);
  for (let i = 0; i < 5; i++) await bob.send('alice@localhost', `hi ${i}`);
  for (let i = 0; i < 5; i++) { const m = await alice.nextMsg({ body: `hi ${i}` }, 5000); assert.ok(m.seq > 0); }
});
