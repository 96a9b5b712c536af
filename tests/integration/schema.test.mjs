// docs/protocol.schema.json, the machine-readable phone protocol, against
// the server's code and against docs/PROTOCOL.md:
//   - it compiles under ajv (JSON Schema 2020-12, strict mode);
//   - every frame type the server's C code can write to a phone (edge/,
//     xmppd/: every `"t", "..."` it builds) has a definition, and nothing
//     more; every request type and field the edge accepts (common/proto.c,
//     edge/phone.c) has one, with the same required fields, kinds, length
//     limits and enums; every error code and bye reason the code sends is
//     in the schema's enums;
//   - every example frame in PROTOCOL.md (JSON lines of its code blocks and
//     `{"t":...}` code spans) validates.
// Runs no binaries (the harness checks live traffic against the same schema
// in every other integration test: harness/phone.mjs).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { itest, PLAIN_RUN_ONLY, protocolSchema, frameProblems } from '../harness/index.mjs';

const ROOT = new URL('../../', import.meta.url);
const read = (p) => fs.readFileSync(new URL(p, ROOT), 'utf8');
const cfiles = (dir) => fs.readdirSync(new URL(dir, ROOT)).filter((f) => f.endsWith('.c'))
  .map((f) => ({ name: `${dir}${f}`, text: read(`${dir}${f}`) }));
const NO_BINS = { bins: [], timeout: 10000, skip: PLAIN_RUN_ONLY };

function defs() {
  const { schema } = protocolSchema();
  return { schema, server: schema.$defs.server.$defs, client: schema.$defs.client.$defs };
}

/** A property schema with one level of $ref merged in (ours: #/$defs/<name>). */
function resolve(schema, prop) {
  if (!prop?.$ref) return prop;
  const name = prop.$ref.replace('#/$defs/', '');
  const base = resolve(schema, schema.$defs[name]);
  return { ...base, ...prop, $ref: undefined, ref: name };
}

/** The C field tables of a region of text: {frame: [{name, kind, max, required, choices}]}. */
function cTables(text, defines) {
  const out = {};
  let cur = null;
  const macro = /\b(JID|ID|TEXT|ENUM|BOOL|NICK)\("([a-z_]+)",\s*(?:([^,()]+),\s*)?(true|false)\)/g;
  const literal = /\{"([a-z_]+)",\s*(F_[A-Z]+),\s*([A-Z_0-9]+),\s*(true|false),\s*(NULL|"[^"]*")\}/g;
  for (const line of text.split('\n')) {
    // An entry: `{"name", {FIELDS...` (proto.c) or `[PHONE_X] = {"name",` (phone.c).
    const m0 = /^\s*(?:\[[A-Z_]+\]\s*=\s*\{"([a-z_]+)",|\{"([a-z_]+)",\s*\{)/.exec(line);
    const start = m0 && [m0[0], m0[1] ?? m0[2]];
    if (start) cur = out[start[1]] = [];
    if (!cur) continue;
    for (const m of line.matchAll(macro)) {
      const [, kind, name, arg, req] = m;
      const f = { name, kind: `F_${kind === 'ID' ? 'ID' : kind}`, required: req === 'true' };
      if (kind === 'TEXT') f.max = Number(arg);
      if (kind === 'ID') f.max = 64;
      if (kind === 'ENUM') f.choices = (arg.startsWith('"') ? JSON.parse(arg) : defines[arg]).split('|');
      cur.push(f);
    }
    for (const m of line.matchAll(literal)) {
      const [, name, kind, max, req, choices] = m;
      if (start && name === start[1]) continue;
      cur.push({ name, kind, max: /^\d+$/.test(max) ? Number(max) : defines[max], required: req === 'true',
        choices: choices !== 'NULL' ? JSON.parse(choices).split('|') : undefined });
    }
  }
  return out;
}

/** Compare one C field table with a schema frame definition; problems as strings. */
function compareFields(schema, def, fields, where, { exactRequired, narrowOk }) {
  const problems = [];
  for (const f of fields) {
    const p = resolve(schema, def.properties[f.name]);
    if (!p) { problems.push(`${where}: field '${f.name}' has no definition`); continue; }
    const req = def.required.includes(f.name);
    if (f.required && !req) problems.push(`${where}: '${f.name}' is required by the server, optional in the schema`);
    if (exactRequired && !f.required && req) problems.push(`${where}: '${f.name}' is optional for the server, required in the schema`);
    const want = {
      F_JID: () => p.ref === 'jid' || p.ref === 'bare_jid',
      F_NICK: () => p.ref === 'nick',
      F_ID: () => p.ref === 'id' || (p.pattern ?? '').endsWith(`{1,${f.max}}$`),
      F_TEXT: () => p.type === 'string' && p.maxLength === f.max,
      F_BOOL: () => p.type === 'boolean' || p.const === true,
      // (login's v: const 1, the one version this server speaks; events: the
      // schema may say the bound the bridge keeps, e.g. history's count <= 100.)
      F_INT: () => Number.isInteger(p.const) || (p.type === 'integer' &&
        (f.max ? p.maximum === f.max : p.maximum === undefined || narrowOk)),
      F_ENUM: () => JSON.stringify([...(p.enum ?? [p.const])].sort()) === JSON.stringify([...f.choices].sort()),
      F_LIST: () => p.type === 'array',
    }[f.kind];
    if (!want) problems.push(`${where}: '${f.name}': kind ${f.kind} not known to this test`);
    else if (!want()) problems.push(`${where}: '${f.name}' (${f.kind}${f.max ? ` max ${f.max}` : ''}${f.choices ? ` ${f.choices.join('|')}` : ''}) does not match ${JSON.stringify(p)}`);
  }
  return problems;
}

itest('protocol.schema.json compiles; every frame the server writes has a definition, with the server\'s own field rules', NO_BINS, async (t) => {
  const { ajv, schema, server: sv, client: cv } = protocolSchema();
  assert.equal(schema.$schema, 'https://json-schema.org/draft/2020-12/schema');
  assert.equal(typeof sv, 'function', 'the schema compiles under ajv (strict)');
  assert.equal(typeof cv, 'function');
  assert.ok(ajv.validateSchema(schema), `a valid 2020-12 schema: ${JSON.stringify(ajv.errors)}`);
  const { server, client } = defs();

  // Every "t" the C code builds for a phone (json_pack / json_string, the hb literal).
  const sources = [...cfiles('edge/'), ...cfiles('xmppd/'), ...cfiles('common/')];
  const emitted = new Map(); // t -> files
  for (const { name, text } of sources) {
    for (const m of text.matchAll(/"t",\s*(?:json_string\()?"([a-z_]+)"/g)) {
      emitted.set(m[1], [...(emitted.get(m[1]) ?? []), name]);
    }
    for (const m of text.matchAll(/\\"t\\":\\"([a-z_]+)\\"/g)) emitted.set(m[1], [...(emitted.get(m[1]) ?? []), name]);
  }
  // xmppd/im.c builds a "presence" request to check a stored presence: not sent to a phone,
  // but "presence" is an event type too.
  const missing = [...emitted.keys()].filter((k) => !server[k]);
  assert.deepEqual(missing, [], `frame types the server code builds without a $defs/server definition: ${missing.map((k) => `${k} (${emitted.get(k)})`)}`);
  const unused = Object.keys(server).filter((k) => !emitted.has(k));
  assert.deepEqual(unused, [], 'every server definition is of a frame the code builds');

  // Every error code and bye reason the code sends is in the schema's enums.
  const phoneH = read('edge/phone.h');
  const perr = [...phoneH.matchAll(/#define PERR_[A-Z_]+ "([a-z_]+)"/g)].map((m) => m[1]);
  const codeCalls = /\b(session_error|session_req_error|answer_join|answer_subject|reply_error|reply_login|answer_waiters|worker_error|answer_error)\(|env_set_str\([^,]+,\s*"code"/;
  const literalCodes = new Set();
  for (const { text } of sources) {
    for (const line of text.split('\n')) {
      if (!codeCalls.test(line) || /^\s*(static|void|bool|\/?\*)/.test(line)) continue;
      const args = line.replace(/env_str\([^)]*\)/g, '');
      for (const m of args.matchAll(/"([a-z]+(?:_[a-z]+)*)"/g)) if (m[1] !== 'code') literalCodes.add(m[1]);
    }
  }
  const codes = new Set([...perr, ...literalCodes]);
  const errEnum = server.error.properties.code.enum;
  assert.deepEqual([...codes].filter((c) => !errEnum.includes(c)), [], 'error codes the code sends are in the schema');
  assert.deepEqual(errEnum.filter((c) => !codes.has(c)), [], 'the schema\'s error codes are all sent by the code');
  const byes = new Set();
  for (const { text } of sources) for (const m of text.matchAll(/conn_(?:bye|close_all)\([^,]+,\s*"([a-z_]+)"\)/g)) byes.add(m[1]);
  assert.deepEqual([...byes].sort(), [...server.bye.properties.reason.enum].sort(), 'bye reasons: the code\'s and the schema\'s');

  // The field rules of proto.c's requests and events, and phone.c's core frames.
  const protoH = read('common/proto.h');
  const defines = Object.fromEntries([...protoH.matchAll(/#define (PROTO_[A-Z_]+) "?([^"\n]+)"?/g)].map((m) => [m[1], /^\d+$/.test(m[2]) ? Number(m[2]) : m[2]]));
  const proto = read('common/proto.c');
  const reqText = proto.slice(proto.indexOf('requests[] = {'), proto.indexOf('};', proto.indexOf('requests[] = {')));
  const evText = proto.slice(proto.indexOf('events[] = {'), proto.indexOf('};', proto.indexOf('events[] = {')));
  const phoneC = read('edge/phone.c');
  const coreText = phoneC.slice(phoneC.indexOf('schemas[PHONE_TYPE_COUNT] = {'), phoneC.indexOf('};', phoneC.indexOf('schemas[PHONE_TYPE_COUNT]')));
  const envelope = { ENV_MAX_JID: 1023, ENV_MAX_BODY: 65536, PHONE_MAX_ID: 64, PHONE_MAX_PASS: 1024, PHONE_MAX_TOKEN: 256 };
  const sizes = (text) => text.replace(/PHONE_MAX_[A-Z]+|ENV_MAX_[A-Z]+/g, (k) => String(envelope[k]));
  const requests = cTables(sizes(reqText), defines);
  const events = cTables(sizes(evText), defines);
  const core = cTables(sizes(coreText), defines);
  assert.ok(Object.keys(requests).length >= 13 && Object.keys(events).length >= 12 && Object.keys(core).length === 5,
    `parsed the C tables: ${Object.keys(requests)} / ${Object.keys(events)} / ${Object.keys(core)}`);
  const problems = [];
  for (const [name, fields] of [...Object.entries(requests), ...Object.entries(core)]) {
    if (!client[name]) { problems.push(`client ${name}: no definition`); continue; }
    problems.push(...compareFields(schema, client[name], fields, `client ${name}`, { exactRequired: true }));
  }
  for (const [name, fields] of Object.entries(events)) {
    if (!server[name]) { problems.push(`server ${name}: no definition`); continue; }
    problems.push(...compareFields(schema, server[name], fields, `server ${name}`, { exactRequired: false, narrowOk: true }));
  }
  const extraClient = Object.keys(client).filter((k) => !requests[k] && !core[k]);
  assert.deepEqual(extraClient, [], 'every client definition is of a frame the edge accepts');
  assert.deepEqual(problems, [], 'the schema agrees with the server\'s field tables');

  // The schema is not vacuous: frames the server never writes fail.
  const bad = [
    [{ t: 'msg', from: 'bob@localhost/x', body: 'hi', ts: 1 }, 'server'],                // no seq
    [{ t: 'error', code: 'oops', msg: 'x' }, 'server'],                                  // unknown code
    [{ t: 'welcome', v: 1, jid: 'a@localhost', hb: 30, max: 16384, extra: 1 }, 'server'],
    [{ t: 'bye', reason: 'whatever' }, 'server'],
    [{ t: 'frobnicate' }, 'server'],
    [{ t: 'msg', id: 'bad id', to: 'bob@localhost', body: 'x' }, 'client'],
    [{ t: 'msg', id: 'c1', to: 'bob@localhost', body: '' }, 'client'],
    [{ t: 'login', v: 1, jid: 'alice@localhost/phone', pass: 'x' }, 'client'],
    [{ t: 'history', id: 'h1', max: 101 }, 'client'],
    [{ t: 'join', id: 'j1', room: 'lobby@conference.localhost/Alice', nick: 'A' }, 'client'],
  ];
  for (const [f, side] of bad) assert.ok(frameProblems(side, f), `${side} must refuse ${JSON.stringify(f)}`);
  t.diagnostic(`server frame types in the code: ${emitted.size} (${[...emitted.keys()].sort().join(' ')}); ` +
    `client types: ${Object.keys(client).length}; error codes: ${codes.size}; bye reasons: ${byes.size}; ` +
    `C fields compared: ${[...Object.values(requests), ...Object.values(events), ...Object.values(core)].flat().length}`);
});

itest('every example frame in PROTOCOL.md validates', NO_BINS, async (t) => {
  const doc = read('docs/PROTOCOL.md');
  const examples = [];
  for (const block of doc.matchAll(/```json\n([\s\S]*?)```/g)) {
    for (const line of block[1].split('\n')) if (line.trim()) examples.push({ text: line.trim(), from: 'json block' });
  }
  for (const m of doc.matchAll(/`(\{"t":[^`]*\})`/g)) examples.push({ text: m[1], from: 'code span', span: true });
  let valid = 0, skipped = 0;
  const failures = [];
  for (const ex of examples) {
    let f;
    try { f = JSON.parse(ex.text); } catch (e) {
      // A code span may abbreviate ({"t":"ok","id":...}); a json block may not.
      if (ex.span) { skipped++; continue; }
      failures.push(`${ex.text}: not JSON (${e.message})`);
      continue;
    }
    const asServer = frameProblems('server', f), asClient = frameProblems('client', f);
    if (asServer && asClient) failures.push(`${ex.text}\n    as a server frame: ${asServer}\n    as a client frame: ${asClient}`);
    else valid++;
  }
  t.diagnostic(`PROTOCOL.md examples: ${examples.length} (${valid} valid, ${skipped} abbreviated code spans skipped, ${failures.length} failing)`);
  assert.ok(valid >= 50, `found the examples (${valid})`);
  assert.deepEqual(failures, [], 'every example validates as a server or a client frame');
});
