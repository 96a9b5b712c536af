// Redis keys a Redis Cluster can hold (issue 20, common/keys.h): every key
// that names a user carries the user's bare JID as hash tag,
// "<prefix>:<kind>:{<jid>}", and every command and script touches the keys
// of one slot only. The scenario (chat both ways, acks, presence, a room,
// pushes while the phone is away, a resume, a wrong password) runs on a
// redis-server in cluster mode holding all 16384 slots: a script whose KEYS
// span two slots is refused there (CROSSSLOT) as on a real cluster. A
// MONITOR tap sees every call, and the commands scripts run inside Redis
// (keys not passed in KEYS included), and checks their slots. And the
// upgrade path: scripts/migrate-keys.sh renames an older deployment's keys,
// which a bridge then serves.
import assert from 'node:assert/strict';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  itest, startBridge, startRedis, sleep, waitFor, xml, redisSubscriber, redisMonitor, userKey, keySlot,
  USER_KINDS, REPO_ROOT, HOST,
} from '../harness/index.mjs';

const run = promisify(execFile);
const MUC = 'http://jabber.org/protocol/muc';
const ROOM = 'keys@conference.localhost';
const GLOBAL = new Set(['imb:workers', 'imb:edges', 'imb:pushq']);

/** A redis-server in cluster mode that holds every slot itself. */
async function clusterOfOne(stack) {
  const redis = await startRedis(stack, {
    extraArgs: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf'],
  });
  await redis.command('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
  await waitFor(async () => /cluster_state:ok/.test(await redis.command('CLUSTER', 'INFO')),
    { timeout: 10000, what: 'cluster_state:ok' });
  return redis;
}

// Commands (of those the services use) whose keys are not argv[1]:
// none of their arguments is a key.
const NO_KEY = new Set(['PUBLISH', 'SUBSCRIBE', 'UNSUBSCRIBE', 'PSUBSCRIBE', 'PUNSUBSCRIBE', 'PING',
  'AUTH', 'HELLO', 'CLIENT', 'SCRIPT', 'TIME', 'INFO', 'MONITOR', 'CLUSTER', 'SELECT', 'SCAN',
  'PUBSUB', 'CONFIG', 'COMMAND', 'READONLY']);

/**
 * Slots per call: each EVAL/EVALSHA with the keys it declared and the keys
 * of the commands it ran (the 'lua' lines after it), each plain command
 * with its key. Returns {scripts, luaCommands, plain, bad: [text]}.
 */
function slotsPerCall(seen) {
  const bad = [];
  let scripts = 0, luaCommands = 0, plain = 0;
  let cur = null; // the script call being read
  const close = () => {
    if (!cur) return;
    const slots = new Set(cur.keys.map(keySlot));
    if (slots.size > 1) bad.push(`${cur.text}: keys ${JSON.stringify(cur.keys)} in slots ${[...slots]}`);
    cur = null;
  };
  for (const { client, args } of seen) {
    const cmd = (args[0] ?? '').toUpperCase();
    if (client === 'lua') {
      if (!cur) continue; // (the test's own)
      luaCommands++;
      if (!NO_KEY.has(cmd) && args[1] !== undefined) cur.keys.push(args[1]);
      continue;
    }
    close();
    if (cmd === 'EVAL' || cmd === 'EVALSHA') {
      scripts++;
      const n = Number(args[2]);
      cur = { text: `${cmd} ${args.slice(2, 3 + n).join(' ')}`, keys: args.slice(3, 3 + n) };
    } else if (!NO_KEY.has(cmd) && args[1] !== undefined) {
      plain++;
      // Multi-key commands the services might send: every key argument.
      const keys = ['DEL', 'EXISTS', 'MGET', 'UNLINK', 'TOUCH'].includes(cmd) ? args.slice(1) : [args[1]];
      if (new Set(keys.map(keySlot)).size > 1) bad.push(`${args.join(' ')}: several slots`);
    }
  }
  close();
  return { scripts, luaCommands, plain, bad };
}

/** Every key of Redis: a deployment-wide one, or "<prefix>:<kind>:{<id>}". */
async function keyProblems(redis) {
  const keys = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.command('SCAN', cursor, 'COUNT', '1000');
    keys.push(...batch);
    cursor = next;
  } while (cursor !== '0');
  const kinds = {};
  const bad = [];
  for (const k of keys) {
    if (GLOBAL.has(k)) continue;
    const kind = USER_KINDS.find((x) => k.startsWith(`imb:${x}:`));
    const m = kind && /^\{([^{}]+)\}$/.exec(k.slice(`imb:${kind}:`.length));
    if (!m || userKey(kind, decodeURIComponent(m[1])) !== k) bad.push(k);
    else kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return { keys, kinds, bad };
}

itest('every key of a user carries its JID as hash tag; every call touches one slot (a cluster-mode Redis)',
  { timeout: 90000 }, async (t, stack) => {
    const redis = await clusterOfOne(stack);
    const seen = redisMonitor(stack, redis.port);
    const b = await startBridge(stack, { redis, xmppdArgs: ['--push-preview', 'full'] });
    const pushes = await redisSubscriber(stack, redis.port, 'imb:push');
    const bob = await b.desktop('bob');
    let alice = await b.loginPhone('alice');

    // Chat both ways, and acks.
    for (let i = 1; i <= 3; i++) await bob.send('alice@localhost', `hello ${i}`);
    let last;
    for (let i = 1; i <= 3; i++) last = await alice.nextMsg({ body: `hello ${i}` });
    alice.send({ t: 'ack', seq: last.seq });
    const sent = await alice.msg('bob@localhost', 'hi bob');
    assert.equal(sent.t, 'ack', JSON.stringify(sent));
    await bob.nextMessage((m) => m.body === 'hi bob');

    // The user's presence, a room.
    alice.send({ t: 'presence', show: 'away', status: 'in the cluster' });
    await waitFor(async () => (await redis.command('HGET', userKey('pres', 'alice@localhost'), 'show')) === 'away',
      { timeout: 5000, what: 'presence stored' });
    await bob.sendXml(xml('presence', { to: `${ROOM}/Bob` }, xml('x', { xmlns: MUC })));
    await bob.nextStanza((el) => el.is('presence') && el.attrs.from === `${ROOM}/Bob`, 5000, 'room presence');
    await bob.iq(xml('iq', { type: 'set', to: ROOM }, xml('query', { xmlns: `${MUC}#owner` },
      xml('x', { xmlns: 'jabber:x:data', type: 'submit' }))));
    alice.send({ t: 'join', id: 'j1', room: ROOM, nick: 'Alice' });
    await alice.expect({ t: 'ok', id: 'j1' }, 10000);
    await bob.sendXml(xml('message', { to: ROOM, type: 'groupchat', id: 'g1' }, xml('body', {}, 'room hello')));
    const inRoom = await alice.next((f) => f.t === 'msg' && f.body === 'room hello', 5000);
    alice.send({ t: 'ack', seq: inRoom.seq });

    // Away: pushes; back: the resume replays what she missed.
    const epoch = await redis.command('HGET', userKey('seq', 'alice@localhost'), 'epoch');
    const upto = inRoom.seq;
    alice.destroy();
    await b.xmppd.waitForLine(/device_detach jid=alice@localhost/).catch(() => {});
    await sleep(300);
    for (let i = 1; i <= 2; i++) await bob.send('alice@localhost', `missed ${i}`);
    await pushes.next(() => true, 5000);
    await pushes.next(() => true, 5000);
    alice = await b.phone('alice-again');
    await alice.login(b.jid('alice'), b.pass('alice'), { epoch, seq: upto });
    for (let i = 1; i <= 2; i++) await alice.nextMsg({ body: `missed ${i}` });
    assert.equal(await redis.command('LLEN', 'imb:pushq'), 2, 'the push list holds both');

    // A wrong password: the throttle's counts.
    const carol = await b.phone('carol');
    const f = await carol.tryLogin(b.jid('carol'), 'wrong');
    assert.equal(f.t, 'error');
    await sleep(500);

    // No CROSSSLOT (or other script error) anywhere.
    const errors = [...b.xmppd.lines(), ...b.edge.lines()].filter((l) => /CROSSSLOT|delivery_failed|err=/.test(l));
    assert.deepEqual(errors, [], 'no Redis errors in the services\' logs');

    const { keys, kinds, bad } = await keyProblems(redis);
    t.diagnostic(`${keys.length} keys; per-user kinds: ${JSON.stringify(kinds)}`);
    assert.deepEqual(bad, [], 'every per-user key is <prefix>:<kind>:{<id>}');
    for (const k of ['lease', 'fence', 'seq', 'inbox', 'cursor', 'acked', 'pres', 'rooms', 'lf:u', 'lf:ip']) {
      assert.ok(kinds[k] > 0, `the scenario made a ${k} key`);
    }
    const calls = slotsPerCall(seen);
    t.diagnostic(`MONITOR: ${seen.length} commands; ${calls.scripts} script calls running ` +
      `${calls.luaCommands} commands inside Redis, ${calls.plain} plain keyed commands; ` +
      `${calls.bad.length} touching more than one slot`);
    assert.ok(calls.scripts >= 10 && calls.luaCommands > calls.scripts, 'the tap saw the scripts');
    assert.deepEqual(calls.bad.slice(0, 10), [], 'each call touches one slot');
  });

itest('scripts/migrate-keys.sh renames an older deployment\'s keys; the bridge serves them', { timeout: 60000 },
  async (t, stack) => {
    const redis = await startRedis(stack);
    const cmd = (...a) => redis.command(...a);
    // Alice's numbering and two messages a phone has not acked, as an older
    // bridge stored them; and the other kinds, odd ids included.
    const epoch = 'a1b2c3d4e5f6';
    await cmd('HSET', 'imb:seq:alice@localhost', 'epoch', epoch, 'seq', '5');
    await cmd('PEXPIRE', 'imb:seq:alice@localhost', '600000');
    for (const s of [4, 5]) {
      await cmd('ZADD', 'imb:inbox:alice@localhost', String(s), JSON.stringify({
        seq: s, epoch, v: 1, type: 'chat', ts: Date.now(), from: 'bob@localhost/desktop',
        to: 'alice@localhost', body: `stored before the upgrade ${s}`, id: `old-${s}`,
      }));
    }
    await cmd('HSET', 'imb:cursor:alice@localhost', 'p1', `3 ${Date.now()}`, '~top', '3');
    await cmd('HSET', 'imb:pres:alice@localhost', 'show', 'away', 'status', 'old');
    await cmd('SET', 'imb:lf:ip:2001:db8::/64', '2', 'EX', '600');
    await cmd('SET', 'imb:lf:u:}odd{%@localhost', '1');
    await cmd('SET', 'imb:fence:{carol@localhost}', '7'); // tagged already
    await cmd('HSET', 'imb:workers', 'w0', 'x'); // the deployment's: kept
    await cmd('SET', 'other:seq:alice@localhost', '1'); // another prefix: kept
    const script = path.join(REPO_ROOT, 'scripts', 'migrate-keys.sh');
    const { stdout } = await run(script, ['--prefix', 'imb', '-h', HOST, '-p', String(redis.port)]);
    t.diagnostic(`migrate-keys: ${stdout.trim()}`);
    assert.equal(stdout.trim(), 'renamed 6 tagged 1 clashes 0');
    const after = (await cmd('KEYS', '*')).sort();
    assert.deepEqual(after, [
      userKey('cursor', 'alice@localhost'), userKey('fence', 'carol@localhost'),
      userKey('inbox', 'alice@localhost'), userKey('lf:ip', '2001:db8::/64'), userKey('lf:u', '}odd{%@localhost'),
      userKey('pres', 'alice@localhost'), userKey('seq', 'alice@localhost'), 'imb:workers', 'other:seq:alice@localhost',
    ].sort());
    assert.equal(userKey('lf:u', '}odd{%@localhost'), 'imb:lf:u:{%7Dodd%7B%25@localhost}');
    const ttl = Number(await cmd('PTTL', userKey('seq', 'alice@localhost')));
    assert.ok(ttl > 500000, `the TTL is kept (${ttl} ms)`);
    // Again: nothing to do.
    const again = await run(script, ['-p', String(redis.port)]);
    assert.equal(again.stdout.trim(), 'renamed 0 tagged 7 clashes 0');

    // A bridge on the migrated Redis: the phone that had up to seq 3 gets
    // 4 and 5 from the migrated inbox in the same numbering, then new ones.
    await cmd('DEL', 'imb:workers');
    const b = await startBridge(stack, { redis });
    const alice = await b.phone('alice');
    await alice.login(b.jid('alice'), b.pass('alice'), { epoch, seq: 3 });
    const m4 = await alice.nextMsg({ body: 'stored before the upgrade 4' });
    const m5 = await alice.nextMsg({ body: 'stored before the upgrade 5' });
    assert.deepEqual([m4.seq, m5.seq], [4, 5]);
    const bob = await b.desktop('bob');
    await bob.send('alice@localhost', 'after the upgrade');
    const m6 = await alice.nextMsg({ body: 'after the upgrade' });
    assert.equal(m6.seq, 6, 'the numbering goes on');
    assert.equal(alice.sync.epoch, epoch, 'the same numbering');
    t.diagnostic(`after the migration: replayed seqs ${m4.seq},${m5.seq}, next ${m6.seq} in epoch ${epoch}`);
  });
