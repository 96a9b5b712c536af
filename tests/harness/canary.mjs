// A canary conversation for hostile-input and fault tests: two logged-in
// phones chat both ways (each message through the bridge, the XMPP server
// and back), one at a time, for as long as the test runs; a message that
// takes longer than stallMs to be acked and delivered fails the test.
//
//   const canary = startCanary(alice, 'alice@localhost', bob, 'bob@localhost');
//   ... the attack ...
//   const st = await canary.stop(t); // asserts; st: {n, worstAck, worstDelivery}
import assert from 'node:assert/strict';
import { sleep } from './util.mjs';

const CYCLE_MS = 70;

export function startCanary(a, aJid, b, bJid, { stallMs = 2000, minMessages = 4 } = {}) {
  let stop = false;
  const st = { n: 0, worstAck: 0, worstDelivery: 0, error: null };
  const run = (async () => {
    for (let i = 1; !stop; i++) {
      const cycle = Date.now();
      for (const [from, to, toJid] of [[a, b, bJid], [b, a, aJid]]) {
        const body = `canary ${toJid} ${i}`;
        const t0 = Date.now();
        const ack = await from.msg(toJid, body, { id: `canary-${i}-${st.n}`, timeout: 10000 });
        assert.equal(ack.t, 'ack', `canary: ${JSON.stringify(ack)}`);
        st.worstAck = Math.max(st.worstAck, Date.now() - t0);
        const m = await to.nextMsg({ body }, 10000);
        st.worstDelivery = Math.max(st.worstDelivery, Date.now() - t0);
        to.send({ t: 'ack', seq: m.seq });
        st.n += 1;
      }
      // Each phone sends one message a cycle: a cycle of CYCLE_MS at least
      // keeps it under the edge's max_msg_rate (20 a second, bursts of 40),
      // however fast the path is.
      await sleep(Math.max(20, CYCLE_MS - (Date.now() - cycle)));
    }
  })();
  // (Kept, not left unhandled: a failure elsewhere may close the phones.)
  run.catch((e) => { st.error = e; });
  return {
    stats: st,
    async stop(t) {
      stop = true;
      await run.catch(() => {});
      if (st.error) throw st.error;
      t?.diagnostic(`canary: ${st.n} messages, worst ack ${st.worstAck} ms, worst delivery ${st.worstDelivery} ms`);
      assert.ok(st.n >= minMessages, `canary sent ${st.n}`);
      assert.ok(st.worstAck < stallMs, `canary stalled: an ack took ${st.worstAck} ms`);
      assert.ok(st.worstDelivery < stallMs, `canary stalled: a delivery took ${st.worstDelivery} ms`);
      return st;
    },
  };
}
