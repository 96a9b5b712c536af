// The browser side of `make run`: scripts/run-local.sh's chat page
// (converse.js served by the local Prosody, logged in as bob over websocket)
// in a real headless Chromium driven by puppeteer-core, and a phone (the
// harness's PhoneClient, TLS to imb-edge, logged in as alice).  Both ways:
// messages, the phone's presence and typing in the page, a delivery receipt
// for the page's message, the page's typing on the phone, and both posting in
// the demo room, whose subject the phone (a plain participant) sets.
// A screenshot is saved in the test's temp dir (IMB_TEST_KEEP=1 keeps it;
// IMB_TEST_SCREENSHOT=FILE copies it there, e.g. to refresh docs/).
// Skipped, with the reason, when there is no Chromium (apt-get install chromium).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { once } from 'node:events';
import { itest, PhoneClient, randomHex } from '../harness/index.mjs';
import { startRunLocal } from '../harness/runlocal.mjs';

const CHROMIUM = process.env.IMB_TEST_CHROMIUM || '/usr/bin/chromium';
const ROOM = 'demo@conference.localhost';
const noChromium = fs.existsSync(CHROMIUM) ? undefined
  : `no Chromium at ${CHROMIUM}: apt-get install chromium (or set IMB_TEST_CHROMIUM)`;

/** A PhoneClient over TLS to the edge, verified with the banner's certificate. */
async function tlsPhone(stack, port, caFile, name) {
  const s = tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(caFile), servername: 'localhost' });
  await once(s, 'secureConnect');
  const p = new PhoneClient(s, name);
  stack.onCleanup(name, () => p.destroy(), () => p.describe());
  return p;
}

itest('browser page (converse.js) and a phone chat, see presence, typing, receipts, share the room',
  { bins: ['imb-edge', 'imb-xmppd'], timeout: 90000, skip: noChromium }, async (t, stack) => {
    let puppeteer;
    try {
      puppeteer = (await import('puppeteer-core')).default;
    } catch (e) {
      throw new Error(`puppeteer-core is not installed (cd tests && npm ci): ${e.message}`);
    }
    const T0 = Date.now();
    const password = `pw-${randomHex(8)}`;
    // Chromium starts while the stack does.
    const launching = puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      // CI runs as root: no sandbox there.
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
    });
    stack.onCleanup('chromium', () => launching.then((b) => b.close()).catch(() => {}));
    const r = await startRunLocal(stack, { password });
    assert.ok(r.url, `the banner names the page:\n${r.banner}`);
    const browser = await launching;
    const page = await browser.newPage();
    const offsite = [];   // requests that left the machine (there must be none)
    const pageErrors = [];
    page.on('request', (q) => { if (!/^(https?|wss?):\/\/127\.0\.0\.1[:/]|^(data|blob):/.test(q.url())) offsite.push(q.url()); });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    stack.onCleanup('page', () => {}, () => `page errors: ${pageErrors.join('\n')}\noff-site requests: ${offsite.join(' ')}`);
    await page.setViewport({ width: 1100, height: 640 });

    const phoneP = (async () => {
      const p = await tlsPhone(stack, r.edgePort, r.caFile, 'phone-alice');
      await p.login('alice@localhost', password);
      return p;
    })();
    await page.goto(r.url, { waitUntil: 'load' });
    // Logged in: the roster shows alice (a contact from the start).
    await page.waitForSelector('a[data-jid="alice@localhost"]', { timeout: 15000 });
    const tLogin = Date.now() - T0;
    const phone = await phoneP;

    // 1. The phone's presence reaches the page.
    await page.waitForFunction(() => {
      const a = document.querySelector('a[data-jid="alice@localhost"]');
      const st = a?.closest('li')?.dataset.status;
      return st && st !== 'offline';
    }, { timeout: 10000 });

    // 2. Page -> phone, with the page's typing on the phone first.
    await page.click('a[data-jid="alice@localhost"]');
    const chatBox = 'converse-chat[jid="alice@localhost"]';
    await page.waitForSelector(`${chatBox} textarea.chat-textarea`, { timeout: 5000 });
    await page.type(`${chatBox} textarea.chat-textarea`, 'hello phone, from the browser');
    // (opening the chat sends `active` first)
    await phone.next((f) => f.t === 'typing' && /^bob@localhost\//.test(f.from ?? '') && f.state === 'composing', 10000);
    const t1 = Date.now();
    await page.keyboard.press('Enter');
    const got = await phone.nextMsg({ body: 'hello phone, from the browser' }, 10000);
    const toPhoneMs = Date.now() - t1;
    assert.match(got.from, /^bob@localhost\//);
    // The phone stores it and acks: the bridge sends bob a delivery receipt,
    // which the page shows as a check mark on the message.
    phone.send({ t: 'ack', seq: got.seq });
    await page.waitForFunction((box) => [...document.querySelectorAll(`${box} .chat-msg`)]
      .some((m) => m.textContent.includes('hello phone, from the browser') && m.querySelector('.chat-msg__receipt')),
    { timeout: 10000 }, chatBox);
    const receiptMs = Date.now() - t1;

    // 3. Phone -> page: typing, then a message.
    phone.send({ t: 'typing', to: 'bob@localhost', state: 'composing' });
    await page.waitForFunction((box) => /alice is typing/.test(document.querySelector(box)?.textContent ?? ''),
      { timeout: 10000 }, chatBox);
    const t2 = Date.now();
    const ack = await phone.msg('bob@localhost', 'hello browser, from the phone', { timeout: 10000 });
    assert.equal(ack.t, 'ack', JSON.stringify(ack));
    await page.waitForFunction((box) => [...document.querySelectorAll(`${box} .chat-msg__text`)]
      .some((m) => m.textContent.includes('hello browser, from the phone')), { timeout: 10000 }, chatBox);
    const toPageMs = Date.now() - t2;

    // 4. The demo room: the page joined it at login (and so created it); the
    // phone joins as a plain participant, sets the subject, both post.
    phone.send({ t: 'join', id: 'j1', room: ROOM, nick: 'alice' });
    const joined = await phone.next((f) => f.id === 'j1', 10000);
    assert.equal(joined.t, 'ok', JSON.stringify(joined));
    phone.send({ t: 'subject', id: 's1', room: ROOM, subject: 'first ten minutes' });
    const subj = await phone.next((f) => f.id === 's1', 10000);
    assert.equal(subj.t, 'ok', `a participant may set the demo room's subject: ${JSON.stringify(subj)}`);
    await page.click(`a.open-room[data-room-jid="${ROOM}"]`);
    const muc = `converse-muc[jid="${ROOM}"]`;
    await page.waitForSelector(`${muc} textarea.chat-textarea`, { timeout: 5000 });
    phone.send({ t: 'msg', id: 'g1', to: ROOM, body: 'hi room, from the phone', group: true });
    const rAck = await phone.next((f) => f.id === 'g1', 10000);
    assert.equal(rAck.t, 'ack', JSON.stringify(rAck));
    await page.waitForFunction((box) => /first ten minutes/.test(document.querySelector(box)?.textContent ?? ''),
      { timeout: 10000 }, muc);
    await page.type(`${muc} textarea.chat-textarea`, 'hi room, from the browser');
    await page.keyboard.press('Enter');
    const inRoom = await phone.nextMsg({ room: ROOM, body: 'hi room, from the browser' }, 10000);
    assert.match(inRoom.from, new RegExp(`^${ROOM}/`));
    phone.send({ t: 'ack', seq: inRoom.seq });
    await page.waitForFunction((box) => [...document.querySelectorAll(`${box} .chat-msg__text`)]
      .some((m) => m.textContent.includes('hi room, from the phone')), { timeout: 10000 }, muc);

    // The screenshot: the one-to-one chat with the phone.
    await page.click('a[data-jid="alice@localhost"]');
    await page.waitForSelector(`${chatBox} textarea.chat-textarea`, { timeout: 5000 });
    const shot = path.join(stack.tempDir('imb-browser-shot-'), 'browser-and-phone.png');
    await page.screenshot({ path: shot });
    if (process.env.IMB_TEST_SCREENSHOT) fs.copyFileSync(shot, process.env.IMB_TEST_SCREENSHOT);
    assert.deepEqual(offsite, [], 'the page fetches nothing off this machine');
    t.diagnostic(`banner ${r.ms} ms, page logged in ${tLogin} ms after start; page->phone ${toPhoneMs} ms, ` +
      `receipt shown ${receiptMs} ms, phone->page ${toPageMs} ms; total ${Date.now() - T0} ms; screenshot ${shot}`);
    await browser.close();
    phone.close();
    r.proc.kill('SIGINT');
    const ex = await r.proc.waitExit(20000);
    assert.deepEqual(ex, { code: 0, signal: null }, 'run-local.sh exits 0 on SIGINT');
  });
