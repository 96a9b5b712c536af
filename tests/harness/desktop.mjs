// "The desktop user": an XMPP client the project did not write (xmpp.js),
// connected straight to Prosody's c2s over plain TCP (SCRAM-SHA-1).
import { client, xml } from '@xmpp/client';

export { xml };
import { bareJid, HOST, toPredicate, uniqueId, withTimeout } from './util.mjs';

export class DesktopPeer {
  /**
   * opts.sm (default false): let xmpp.js negotiate XEP-0198 stream management.
   * Off by default: xmpp.js 0.14 miscounts 'h' when stanzas are exchanged
   * right after login (Prosody then closes the stream with "Client
   * acknowledged less stanzas than already acknowledged").
   */
  constructor({ port, user, pass, domain = 'localhost', resource = 'desktop', host = HOST, sm = false }) {
    this.port = port;
    this.user = user;
    this.domain = domain;
    this.resource = resource;
    this.bare = `${user}@${domain}`;
    this.jid = null;            // full JID once online
    this.messages = [];         // every received <message/> (parsed), for diagnostics
    this._queue = [];           // not yet consumed by nextMessage
    this._waiters = [];
    this.errors = [];
    this.online = false;
    this.xmpp = client({
      service: `xmpp://${host}:${port}`,
      domain,
      resource,
      username: user,
      password: pass,
    });
    this.xmpp.reconnect.stop(); // a test decides itself when to reconnect
    if (!sm) {
      // Hide the <sm/> stream feature from xmpp.js before its middleware sees it.
      this.xmpp.prependListener('element', (el) => {
        if (el.is('features', 'http://etherx.jabber.org/streams')) el.remove('sm', 'urn:xmpp:sm:3');
      });
    }
    this.xmpp.on('error', (e) => { this.errors.push(e); });
    this.xmpp.on('offline', () => { this.online = false; });
    this.stanzas = [];          // every stanza that is not a message, unconsumed
    this._stWaiters = [];
    this.xmpp.on('stanza', (st) => {
      if (!st.is('message')) {
        this.stanzas.push(st);
        this._pumpStanzas();
        return;
      }
      const m = {
        from: st.attrs.from,
        to: st.attrs.to,
        id: st.attrs.id,
        type: st.attrs.type ?? 'normal',
        body: st.getChildText('body'),
        error: st.getChild('error') ? st.getChild('error').toString() : undefined,
        delayed: !!st.getChild('delay', 'urn:xmpp:delay'),
        stanza: st,
      };
      this.messages.push(m);
      this._queue.push(m);
      this._pump();
    });
  }

  /** Connect, authenticate, bind, send initial presence. */
  async start(timeout = 10000) {
    const address = await withTimeout(this.xmpp.start(), timeout, `xmpp.js login of ${this.bare}`);
    this.jid = address.toString();
    await this.xmpp.send(xml('presence'));
    this.online = true;
    return this;
  }

  /** Send a chat message; returns its id. */
  async send(to, body, { id = uniqueId('d'), type = 'chat' } = {}) {
    await this.xmpp.send(xml('message', { to, type, id }, xml('body', {}, body)));
    return id;
  }

  /**
   * Fetch the roster (as real clients do at login): the server then treats
   * this resource as "interested" (RFC 6121) and sends it subscription
   * requests, answers and roster pushes. Resolves the <query/> element.
   */
  async getRoster() {
    const r = await this.iq(xml('iq', { type: 'get' }, xml('query', { xmlns: 'jabber:iq:roster' })));
    return r;
  }

  /** Send any stanza built with xml(). */
  async sendXml(el) {
    await this.xmpp.send(el);
  }

  /** An IQ request; resolves the result stanza (throws on an error reply). */
  iq(el, timeout = 5000) {
    return withTimeout(this.xmpp.iqCaller.request(el, timeout), timeout + 500, 'iq');
  }

  _pumpStanzas() {
    for (let wi = 0; wi < this._stWaiters.length; wi++) {
      const w = this._stWaiters[wi];
      const i = this.stanzas.findIndex(w.pred);
      if (i >= 0) {
        const [st] = this.stanzas.splice(i, 1);
        this._stWaiters.splice(wi, 1);
        wi -= 1;
        w.resolve(st);
      }
    }
  }

  /** Next non-message stanza (an xml element, consumed) for which pred(el) is true. */
  nextStanza(pred, timeout = 5000, what = 'stanza') {
    const i = this.stanzas.findIndex(pred);
    if (i >= 0) return Promise.resolve(this.stanzas.splice(i, 1)[0]);
    let w;
    const prom = new Promise((resolve) => { w = { pred, resolve }; });
    this._stWaiters.push(w);
    return withTimeout(prom, timeout, `${this.bare}: ${what}`).catch((e) => {
      this._stWaiters = this._stWaiters.filter((x) => x !== w);
      e.message += `; other stanzas: ${this.stanzas.map((x) => x.toString()).join(' ')}`;
      throw e;
    });
  }

  /** Round trip to the server (XEP-0199 ping): everything sent before is processed. */
  async sync(timeout = 5000) {
    await withTimeout(this.xmpp.iqCaller.request(
      xml('iq', { type: 'get', to: this.domain }, xml('ping', { xmlns: 'urn:xmpp:ping' })), timeout,
    ), timeout + 500, 'xmpp ping');
  }

  _pump() {
    for (let wi = 0; wi < this._waiters.length; wi++) {
      const w = this._waiters[wi];
      const i = this._queue.findIndex(w.pred);
      if (i >= 0) {
        const [m] = this._queue.splice(i, 1);
        this._waiters.splice(wi, 1);
        wi -= 1;
        w.resolve(m);
      }
    }
  }

  /**
   * Next received message (consumed) matching `pred` (function or partial
   * pattern like {body:'hi'}; default: any message with a body).  Messages
   * that do not match stay queued for later calls.
   */
  nextMessage(pred, timeout = 5000) {
    const p = pred == null ? (m) => m.body != null : toPredicate(pred);
    const i = this._queue.findIndex(p);
    if (i >= 0) return Promise.resolve(this._queue.splice(i, 1)[0]);
    let w;
    const prom = new Promise((resolve) => { w = { pred: p, resolve }; });
    this._waiters.push(w);
    return withTimeout(prom, timeout, `${this.bare}: message`).catch((e) => {
      this._waiters = this._waiters.filter((x) => x !== w);
      e.message += `; received so far: ${JSON.stringify(this.messages.map(({ stanza, ...m }) => m))}`;
      throw e;
    });
  }

  /** Next message whose sender's bare JID is `fromBare` (and body matches when given). */
  nextMessageFrom(fromBare, body, timeout = 5000) {
    return this.nextMessage((m) => m.body != null && bareJid(m.from) === fromBare &&
      (body === undefined || m.body === body), timeout);
  }

  async stop() {
    if (this._stopped) return;
    this._stopped = true;
    try { await withTimeout(this.xmpp.stop(), 3000, 'xmpp.js stop'); } catch { /* ignore */ }
    this.online = false;
  }

  describe() {
    return `----- desktop ${this.jid ?? this.bare} -----\n` +
      this.messages.map(({ stanza }) => stanza.toString()).join('\n') +
      (this.errors.length ? `\nerrors: ${this.errors.map((e) => e.message).join('; ')}` : '');
  }
}

/**
 * startDesktop(stack, {port, user, pass, domain?, resource?}) -> DesktopPeer
 * online (presence sent); stopped at stack cleanup.
 */
export async function startDesktop(stack, opts) {
  const d = new DesktopPeer(opts);
  stack?.onCleanup(`desktop ${d.bare}`, () => d.stop(), () => d.describe());
  await d.start();
  return d;
}

const RECEIPTS = 'urn:xmpp:receipts', MARKERS = 'urn:xmpp:chat-markers:0';

/**
 * A conversation as desktop clients and phones hold it, every message
 * answered with a receipt and a read marker both ways: rounds times, the
 * desktop sends a message asking for both, the phone acks it, and its
 * receipt and its marker reach the desktop; the phone answers, and the
 * desktop's client sends a receipt and a marker for the answer with no
 * hint. A server's archive then holds 2 × rounds messages among 4 × rounds
 * receipts and markers. Returns the message bodies in order.
 */
export async function chatWithReceiptsAndMarkers(phone, desktop, rounds) {
  const phoneBare = bareJid(phone.jid), phoneUser = phoneBare.split('@')[0];
  const bodies = [];
  for (let i = 1; i <= rounds; i++) {
    await desktop.sendXml(xml('message', { to: phoneBare, type: 'chat', id: `d${i}` },
      xml('body', {}, `from ${desktop.user} ${i}`), xml('request', { xmlns: RECEIPTS }), xml('markable', { xmlns: MARKERS })));
    const m = await phone.nextMsg({ body: `from ${desktop.user} ${i}` });
    phone.send({ t: 'ack', seq: m.seq });
    await desktop.nextMessage((x) => x.stanza.getChild('received', RECEIPTS)?.attrs.id === `d${i}`);
    phone.send({ t: 'read', to: m.from, id: `d${i}` });
    await desktop.nextMessage((x) => x.stanza.getChild('displayed', MARKERS)?.attrs.id === `d${i}`);
    const sent = await phone.msg(desktop.bare, `from ${phoneUser} ${i}`, { id: `a${i}` });
    if (sent.id !== `a${i}`) throw new Error(`the phone's message a${i} was answered as ${sent.id}`);
    const am = await desktop.nextMessage({ body: `from ${phoneUser} ${i}` });
    await desktop.sendXml(xml('message', { to: am.from, type: 'chat' }, xml('received', { xmlns: RECEIPTS, id: `a${i}` })));
    await desktop.sendXml(xml('message', { to: am.from, type: 'chat' }, xml('displayed', { xmlns: MARKERS, id: `a${i}` })));
    await phone.expect({ t: 'receipt', id: `a${i}`, state: 'read' });
    bodies.push(`from ${desktop.user} ${i}`, `from ${phoneUser} ${i}`);
  }
  return bodies;
}
