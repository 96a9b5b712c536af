// FrameTap: a TCP relay between a phone client under test (the C client
// library's programs: imb-client-example, imcat) and an edge. It passes
// every byte on unchanged and reads the phone protocol's frames on the way
// (4-byte big-endian length + UTF-8 JSON, docs/PROTOCOL.md section 2) in
// both directions, checking each against docs/protocol.schema.json: what
// the client sends against #/$defs/client, what the edge answers against
// #/$defs/server. Plaintext only (a TLS link carries no readable frames).
import net from 'node:net';
import { HOST } from './util.mjs';
import { frameProblems } from './phone.mjs';

export class FrameTap {
  /** A relay on a free port of HOST to the edge at HOST:targetPort. */
  static async start(stack, targetPort, name = 'frametap') {
    const tap = new FrameTap(targetPort);
    await new Promise((resolve, reject) => {
      tap.server.once('error', reject);
      tap.server.listen(0, HOST, resolve);
    });
    tap.port = tap.server.address().port;
    stack?.onCleanup(name, () => tap.close(), () => tap.describe(name));
    return tap;
  }

  constructor(targetPort) {
    this.targetPort = targetPort;
    this.frames = { client: [], server: [] }; // every frame read, by side
    this.problems = [];                        // { side, frame, problems }
    this.links = new Set();
    this.server = net.createServer((down) => this.relay(down));
  }

  relay(down) {
    const up = net.connect(this.targetPort, HOST);
    this.links.add(down);
    this.links.add(up);
    const reader = (side) => {
      let buf = Buffer.alloc(0);
      return (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        while (buf.length >= 4) {
          const n = buf.readUInt32BE(0);
          if (buf.length < 4 + n) break;
          const text = buf.subarray(4, 4 + n).toString('utf8');
          buf = buf.subarray(4 + n);
          let frame;
          try {
            frame = JSON.parse(text);
          } catch {
            this.problems.push({ side, frame: text, problems: 'not JSON' });
            continue;
          }
          this.frames[side].push(frame);
          const p = frameProblems(side, frame);
          if (p) this.problems.push({ side, frame, problems: p });
        }
      };
    };
    const fromClient = reader('client'), fromServer = reader('server');
    down.on('data', (c) => { fromClient(c); up.write(c); });
    up.on('data', (c) => { fromServer(c); down.write(c); });
    const end = () => { down.destroy(); up.destroy(); this.links.delete(down); this.links.delete(up); };
    down.on('close', end);
    up.on('close', end);
    down.on('error', end);
    up.on('error', end);
  }

  /** Frame types seen from side, with their counts: { login: 1, msg: 20, ... }. */
  types(side) {
    const out = {};
    for (const f of this.frames[side]) out[f.t] = (out[f.t] ?? 0) + 1;
    return out;
  }

  describe(name) {
    return `${name}: ${this.frames.client.length} frames from the client ${JSON.stringify(this.types('client'))}, ` +
      `${this.frames.server.length} from the edge ${JSON.stringify(this.types('server'))}, ` +
      `${this.problems.length} against the schema` +
      this.problems.slice(0, 5).map((p) => `\n  ${p.side}: ${JSON.stringify(p.frame).slice(0, 200)}: ${p.problems}`).join('');
  }

  close() {
    for (const s of this.links) s.destroy();
    this.links.clear();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
