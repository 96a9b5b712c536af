// Integration-test harness: one import for tests.
//   import { itest, startBridge, ... } from '../harness/index.mjs';
import { test } from 'node:test';
import { runWithStack } from './stack.mjs';
import { binsMissingReason } from './services.mjs';

export * from './util.mjs';
export * from './stack.mjs';
export * from './redis.mjs';
export * from './rediscluster.mjs';
export * from './prosody.mjs';
export * from './ejabberd.mjs';
export * from './desktop.mjs';
export * from './phone.mjs';
export * from './services.mjs';
export * from './haproxy.mjs';
export * from './chaos.mjs';
export * from './faultrun.mjs';
export * from './canary.mjs';
export * from './frametap.mjs';
export * from './keys.mjs';

/**
 * itest(name, [opts], fn): a node:test test that gets a fresh Stack:
 *   itest('x', { bins: ['imb-edge','imb-xmppd'], timeout: 60000 }, async (t, stack) => {...})
 * Everything registered on the stack is cleaned up afterwards; on failure the
 * stack's diagnostics (process stderr, prosody log, phone/desktop traffic)
 * are printed.  opts.bins (default imb-edge + imb-xmppd; [] for none) only
 * leads to a skip when IMB_TEST_SKIP_MISSING=1.
 */
export function itest(name, opts, fn) {
  if (typeof opts === 'function') { fn = opts; opts = {}; }
  const { bins = ['imb-edge', 'imb-xmppd'], timeout = 60000, ...rest } = opts;
  const skip = rest.skip ?? binsMissingReason(bins);
  // A test that runs none of the project's binaries talks to fakes: their
  // frames are not the protocol's (stack.mjs: runWithStack's protocol check).
  return test(name, { timeout, ...rest, skip },
    (t) => runWithStack(t, (stack) => fn(t, stack), name, { protocol: bins.length > 0 }));
}
