// log_format = json: every stderr line of imb-edge and imb-xmppd is one JSON
// object {"ts","level","proc","event", ...the key=value fields as strings},
// including lines whose values were quoted, had spaces, or came from a
// hostile peer (a malformed envelope on the bus, a bad frame length).
import assert from 'node:assert/strict';
import net from 'node:net';
import {
  itest, startRedis, redisCommand, binPath, randomCredKey, freePort, waitFor, HOST,
} from '../harness/index.mjs';

const TS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

/** Every stderr line of proc parsed; throws on the first that is not a log object. */
function parsed(proc) {
  return proc.lines().map((l) => {
    let o;
    try { o = JSON.parse(l); } catch (e) { throw new Error(`${proc.name}: not JSON: ${l}`); }
    assert.equal(typeof o, 'object', l);
    assert.match(o.ts, TS, l);
    assert.ok(['DEBUG', 'INFO', 'WARN', 'ERROR'].includes(o.level), l);
    assert.equal(typeof o.proc, 'string', l);
    assert.equal(typeof o.event, 'string', l);
    assert.deepEqual(Object.keys(o).slice(0, 4), ['ts', 'level', 'proc', 'event'], l);
    for (const v of Object.values(o)) assert.equal(typeof v, 'string', l);
    return o;
  });
}

itest('--log-format json: every imb-edge stderr line is a JSON object, quoted values unquoted',
  { bins: ['imb-edge'], timeout: 30000 }, async (t, stack) => {
    const redis = await startRedis(stack);
    const edge = stack.spawn('imb-edge-json', binPath('imb-edge'), [
      '--redis-host', HOST, '--redis-port', String(redis.port), '--cred-key', randomCredKey(),
      '--listen', `${HOST}:0`, '--tls', 'off', '--log-level', 'debug', '--log-format', 'json']);
    const listening = JSON.parse(await edge.waitForLine(/"event":"listening"/));
    const port = Number(listening.addr.split(':')[1]);
    assert.ok(port > 0, JSON.stringify(listening));

    // A malformed envelope on the edge's own channel: err="..." with spaces.
    const channel = `imb:e:${listening.edge}`;
    await waitFor(async () => (await redisCommand(redis.port, ['PUBLISH', channel, '{not json "x y"'])) >= 1,
      { timeout: 5000 });
    const bad = JSON.parse(await edge.waitForLine(/"event":"envelope_invalid"/));
    assert.equal(bad.channel, channel);
    assert.ok(bad.err.length > 0 && !bad.err.startsWith('"'), `err unquoted: ${bad.err}`);

    // A phone socket announcing an absurd frame length.
    const sock = net.connect(port, HOST);
    await new Promise((r) => sock.once('connect', r));
    sock.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    await edge.waitForLine(/"event":"conn_bad_length"/);
    sock.destroy();

    // SIGHUP (reloaded), then SIGTERM (shutdown, stopped).
    edge.kill('SIGHUP');
    await edge.waitForLine(/"event":"reloaded"/);
    edge.kill('SIGTERM');
    await edge.waitForLine(/"event":"stopped"/);
    await waitFor(() => edge.exitCode !== undefined, { timeout: 5000 });

    const objs = parsed(edge);
    const events = new Set(objs.map((o) => o.event));
    console.log(`# imb-edge json: ${objs.length} lines, all JSON; ${events.size} events: ${[...events].join(' ')}`);
    for (const e of ['listening', 'envelope_invalid', 'conn_bad_length', 'reloaded', 'shutdown', 'stopped'])
      assert.ok(events.has(e), `event ${e} logged`);
    assert.ok(objs.every((o) => o.proc === 'edge'));
    assert.equal(edge.exitCode, 0);
  });

itest('IMB_LOG_FORMAT=json: imb-xmppd supervisor and worker lines are JSON objects',
  { bins: ['imb-xmppd'], timeout: 30000 }, async (t, stack) => {
    const redis = await startRedis(stack);
    const closed = await freePort();
    const x = stack.spawn('imb-xmppd-json', binPath('imb-xmppd'), [
      '--redis-host', HOST, '--redis-port', String(redis.port), '--cred-key', randomCredKey(),
      '--xmpp-host', HOST, '--xmpp-port', String(closed), '--xmpp-tls', 'disabled', '--workers', '2'],
    { envExtra: { IMB_LOG_FORMAT: 'json' } });
    await x.waitForLines(/"event":"worker_ready"/, { count: 2 });
    x.kill('SIGTERM');
    await x.waitForLine(/"event":"bridge_stopped"/);
    await waitFor(() => x.exitCode !== undefined, { timeout: 15000 });
    const objs = parsed(x);
    const procs = new Set(objs.map((o) => o.proc));
    console.log(`# imb-xmppd json: ${objs.length} lines, all JSON; procs: ${[...procs].join(' ')}`);
    assert.ok(procs.has('xmppd'), 'supervisor lines');
    assert.ok([...procs].some((p) => p.startsWith('xmppd/')), 'worker lines');
  });
