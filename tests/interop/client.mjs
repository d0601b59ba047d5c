// Interop check of a webchan echo server against Node's `ws` client (tests/interop/package.json
// pins it). Every text and binary message must come back unchanged.
//
//   node tests/interop/client.mjs ws://127.0.0.1:9001/
//
// Prints "ok NAME" or "FAIL NAME: why" per check, then "ws: N passed, N failed"; exits 1 if any
// check failed. scripts/interop.sh runs it against examples/autobahn.rs and
// examples/autobahn_compat.rs.

import { WebSocket } from 'ws';

const url = process.argv[2];
if (!url) {
  console.error('usage: node client.mjs ws://HOST:PORT/');
  process.exit(2);
}

const STEP_MS = 10_000; // one check's budget
const WATCHDOG_MS = 60_000; // the whole run's

let passed = 0;
let failed = 0;

setTimeout(() => {
  console.log(`FAIL watchdog: the run took more than ${WATCHDOG_MS / 1000} s`);
  console.log(`ws: ${passed} passed, ${failed + 1} failed`);
  process.exit(1);
}, WATCHDOG_MS).unref();

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function check(name, fn) {
  try {
    await withTimeout(fn(), STEP_MS, name);
    passed++;
    console.log(`ok ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.message ? e.message : e}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// A connection with a queue of received messages, the 101's headers and what the close was.
class Conn {
  static open(options = {}, protocols = undefined) {
    const c = new Conn();
    c.ws = protocols ? new WebSocket(url, protocols, options) : new WebSocket(url, options);
    // The request headers as sent (the offer), read before the request goes out.
    c.offeredExtensions = c.ws._req ? c.ws._req.getHeader('sec-websocket-extensions') : undefined;
    c.messages = [];
    c.waiters = [];
    c.error = null;
    c.ws.on('upgrade', (res) => {
      c.upgradeHeaders = res.headers;
    });
    c.ws.on('message', (data, isBinary) => {
      const m = { data, isBinary };
      const w = c.waiters.shift();
      if (w) w.resolve(m);
      else c.messages.push(m);
    });
    c.ws.on('error', (e) => {
      c.error = e;
    });
    c.closed = new Promise((resolve) => {
      c.ws.addEventListener('close', (ev) => {
        const info = { code: ev.code, reason: ev.reason, wasClean: ev.wasClean };
        for (const w of c.waiters.splice(0)) {
          w.reject(new Error(`connection closed (code ${info.code}) while waiting for a message`));
        }
        resolve(info);
      });
    });
    return new Promise((resolve, reject) => {
      c.ws.once('open', () => resolve(c));
      c.ws.once('error', (e) => reject(new Error(`connect failed: ${e.message}`)));
    });
  }

  next() {
    const m = this.messages.shift();
    if (m) return Promise.resolve(m);
    if (this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error(`connection not open (readyState ${this.ws.readyState})`));
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  send(data, options) {
    return new Promise((resolve, reject) =>
      this.ws.send(data, options, (e) => (e ? reject(e) : resolve())),
    );
  }

  async closeAndWait(code = 1000, reason = '') {
    this.ws.close(code, reason);
    return this.closed;
  }
}

function describe(buf) {
  return `${buf.length} bytes`;
}

// The first index where two buffers differ, for failure messages.
function firstDiff(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

async function echo(conn, payload, binary, label) {
  await conn.send(payload, { binary });
  const m = await conn.next();
  const want = Buffer.isBuffer(payload) ? payload : Buffer.from(payload, 'utf8');
  assert(
    m.isBinary === binary,
    `${label}: sent a ${binary ? 'binary' : 'text'} message, got a ${m.isBinary ? 'binary' : 'text'} one`,
  );
  const got = Buffer.isBuffer(m.data) ? m.data : Buffer.from(m.data);
  if (!got.equals(want)) {
    throw new Error(
      `${label}: echo differs: sent ${describe(want)}, got ${describe(got)}, first difference at byte ${firstDiff(want, got)}`,
    );
  }
}

const SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1 << 20];

function binaryOf(size, seed) {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

function asciiOf(size, seed) {
  let s = '';
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  const chunk = Array.from({ length: 1024 }, (_, i) => alphabet[(i + seed) % alphabet.length]).join('');
  while (s.length < size) s += chunk;
  return s.slice(0, size);
}

// 1-, 2-, 3- and 4-byte UTF-8 characters.
const CHARS = ['a', '\u00e9', '\u20ac', '\u{1F600}'];

// Texts whose multi-byte characters straddle each size boundary: for each boundary B, each
// character of length L and each split point o (1..L-1), ASCII up to byte B-o, the character,
// then a tail, so that the character's bytes lie on both sides of byte B.
function boundaryTexts() {
  const texts = [];
  for (const b of [125, 126, 127, 65535, 65536]) {
    for (const ch of CHARS) {
      const len = Buffer.byteLength(ch);
      for (let o = 1; o < len; o++) texts.push(asciiOf(b - o, b) + ch + 'z');
    }
  }
  // And all four kinds mixed, many times over: 1 MiB and a bit more.
  const unit = CHARS.join('') + 'x'; // 11 bytes
  texts.push(unit.repeat(Math.ceil((1 << 20) / Buffer.byteLength(unit))));
  return texts;
}

async function main() {
  console.log(`ws client (node ${process.version}) against ${url}`);

  // The permessage-deflate check: ws offers it by default. EXPECT_DEFLATE=1: the server was
  // started with it on (scripts/interop.sh does so for examples/autobahn.rs), so every echo of
  // this run over 1 KiB (ws' threshold) is compressed both ways; else it must be declined.
  // EXPECT_DEFLATE=reset: on, with Config::deflate_client_context(false): the 101 tells ws to
  // reset its context for each message although it did not offer to.
  const expectReset = process.env.EXPECT_DEFLATE === 'reset';
  const expectDeflate = process.env.EXPECT_DEFLATE === '1' || expectReset;
  const what = expectReset
    ? 'accepted, the client told to reset its context'
    : expectDeflate ? 'accepted' : 'declined';
  await check(`handshake: permessage-deflate offered by ws, ${what} by the server`, async () => {
    const c = await Conn.open();
    assert(
      typeof c.offeredExtensions === 'string' && c.offeredExtensions.includes('permessage-deflate'),
      `ws did not offer permessage-deflate (request header: ${c.offeredExtensions})`,
    );
    const ext = c.upgradeHeaders && c.upgradeHeaders['sec-websocket-extensions'];
    if (expectDeflate) {
      const want = 'permessage-deflate; server_no_context_takeover' +
        (expectReset ? '; client_no_context_takeover' : '');
      assert(ext === want, `the 101 has Sec-WebSocket-Extensions: ${ext}, not ${want}`);
      assert(c.ws.extensions === 'permessage-deflate', `ws reports extensions "${c.ws.extensions}"`);
    } else {
      assert(ext === undefined, `the 101 has Sec-WebSocket-Extensions: ${ext}`);
      assert(c.ws.extensions === '', `ws reports extensions "${c.ws.extensions}"`);
    }
    const proto = c.upgradeHeaders && c.upgradeHeaders['sec-websocket-protocol'];
    assert(proto === undefined, `the 101 picked a subprotocol nobody offered: ${proto}`);
    await echo(c, 'after the negotiation '.repeat(100), false, 'text');
    await echo(c, binaryOf(3000, 1), true, 'binary');
    await echo(c, 'tiny', false, 'tiny text');
    await echo(c, 'after the negotiation '.repeat(100), false, 'text again');
    const info = await c.closeAndWait(1000);
    assert(info.code === 1000, `close code ${info.code}`);
  });

  // EXPECT_PROTOCOL: the server has a Config::protocols list (scripts/interop.sh gives
  // examples/autobahn.rs "superchat,chat"). ws fails a connection whose 101 names none of the
  // subprotocols it offered, so this runs only against that server.
  const expectProtocol = process.env.EXPECT_PROTOCOL;
  if (expectProtocol) {
    await check(`subprotocols chat, superchat offered: the server picks ${expectProtocol}`, async () => {
      const c = await Conn.open({}, ['chat', 'superchat']);
      const proto = c.upgradeHeaders && c.upgradeHeaders['sec-websocket-protocol'];
      assert(proto === expectProtocol, `the 101 names subprotocol ${proto}, not ${expectProtocol}`);
      assert(c.ws.protocol === expectProtocol, `ws reports subprotocol "${c.ws.protocol}"`);
      await echo(c, 'with the subprotocol chosen', false, 'text');
      const info = await c.closeAndWait(1000);
      assert(info.code === 1000, `close code ${info.code}`);
    });
  }

  if (expectDeflate) {
    // ws compressing every message (threshold 0), without keeping its context, asking for a
    // 2^10 server window (the server agrees; its messages then go out plain), and sending a
    // compressed message in fragments.
    await check('permessage-deflate with threshold 0, no client context, a 2^10 server window, fragments', async () => {
      const perMessageDeflate = { threshold: 0, clientNoContextTakeover: true, serverMaxWindowBits: 10 };
      const c = await Conn.open({ perMessageDeflate });
      const ext = c.upgradeHeaders && c.upgradeHeaders['sec-websocket-extensions'];
      const want = 'permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10';
      assert(ext === want, `the 101 has Sec-WebSocket-Extensions: ${ext}, not ${want}`);
      for (const size of [0, 1, 200, 1023, 1024, 70000]) {
        await echo(c, 'webchan deflate é '.repeat(Math.ceil(size / 10) + 1).slice(0, size), false, `text ${size}`);
        await echo(c, binaryOf(size, 3), true, `binary ${size}`);
      }
      const text = 'fragmented and compressed '.repeat(100);
      c.ws.send(text.slice(0, 1000), { fin: false });
      c.ws.send(text.slice(1000), { fin: true });
      const m = await c.next();
      assert(!m.isBinary && m.data.toString() === text, 'the fragmented message came back different');
      const info = await c.closeAndWait(1000);
      assert(info.code === 1000, `close code ${info.code}`);
    });
  }

  {
    let c;
    await check('connect', async () => {
      c = await Conn.open();
    });
    for (const size of SIZES) {
      await check(`text echo, ${size} bytes`, async () => {
        if (!c) throw new Error('no connection');
        await echo(c, asciiOf(size, size), false, `text ${size}`);
      });
      await check(`binary echo, ${size} bytes`, async () => {
        if (!c) throw new Error('no connection');
        await echo(c, binaryOf(size, size), true, `binary ${size}`);
      });
    }
    await check('text echo, 1-4 byte UTF-8 characters across the size boundaries', async () => {
      if (!c) throw new Error('no connection');
      const texts = boundaryTexts();
      for (const [i, t] of texts.entries()) {
        await echo(c, t, false, `utf-8 text #${i} (${Buffer.byteLength(t)} bytes)`);
      }
    });
    await check('fragmented text, a 4-byte character split across fragments', async () => {
      if (!c) throw new Error('no connection');
      const whole = Buffer.from('ab\u{1F600}cd\u20ac\u00e9', 'utf8');
      // Fragments: "ab" + first 2 bytes of the emoji | last 2 bytes + "cd" + first byte of the
      // euro sign | the rest.
      const cuts = [4, 9, whole.length];
      let from = 0;
      for (const [i, to] of cuts.entries()) {
        await c.send(whole.subarray(from, to), { binary: false, fin: i === cuts.length - 1 });
        from = to;
      }
      const m = await c.next();
      assert(!m.isBinary, 'came back binary');
      assert(Buffer.from(m.data).equals(whole), `got ${Buffer.from(m.data).toString('hex')}`);
    });
    await check('fragmented binary (3 fragments, one empty)', async () => {
      if (!c) throw new Error('no connection');
      const parts = [binaryOf(300, 3), Buffer.alloc(0), binaryOf(70000, 4)];
      for (const [i, p] of parts.entries()) {
        await c.send(p, { binary: true, fin: i === parts.length - 1 });
      }
      const m = await c.next();
      assert(m.isBinary, 'came back text');
      const want = Buffer.concat(parts);
      assert(Buffer.from(m.data).equals(want), `got ${m.data.length} bytes, want ${want.length}`);
    });
    await check('100 messages in flight come back in order', async () => {
      if (!c) throw new Error('no connection');
      const n = 100;
      const sends = [];
      for (let i = 0; i < n; i++) {
        // Mixed kinds and sizes, none awaited before the next is sent.
        if (i % 2) sends.push(c.send(`message ${i} ` + asciiOf(i * 37, i), { binary: false }));
        else sends.push(c.send(Buffer.concat([Buffer.from(`m${i}:`), binaryOf(i * 53, i)]), { binary: true }));
      }
      await Promise.all(sends);
      for (let i = 0; i < n; i++) {
        const m = await c.next();
        const want =
          i % 2
            ? Buffer.from(`message ${i} ` + asciiOf(i * 37, i))
            : Buffer.concat([Buffer.from(`m${i}:`), binaryOf(i * 53, i)]);
        const got = Buffer.from(m.data);
        assert(m.isBinary === !(i % 2), `message ${i}: wrong kind`);
        assert(got.equals(want), `message ${i} out of order or changed: got "${got.subarray(0, 16)}..."`);
      }
    });
    await check('ping with a payload gets a pong with the same payload', async () => {
      if (!c) throw new Error('no connection');
      for (const payload of [Buffer.from('webchan interop ping'), binaryOf(125, 9), Buffer.alloc(0)]) {
        // The server's keepalive pings are answered by ws itself; only pongs matter here.
        const pong = new Promise((resolve) => c.ws.once('pong', resolve));
        c.ws.ping(payload);
        const got = await withTimeout(pong, 5000, `pong to a ${payload.length}-byte ping`);
        assert(
          Buffer.from(got).equals(payload),
          `pong payload ${Buffer.from(got).toString('hex')} != ping payload ${payload.toString('hex')}`,
        );
      }
      await echo(c, 'still open after pings', false, 'text');
    });
    await check('close 4000 with a reason: the server echoes 4000, clean close', async () => {
      if (!c) throw new Error('no connection');
      const info = await c.closeAndWait(4000, 'interop done');
      assert(info.code === 4000, `the close code seen was ${info.code} (reason "${info.reason}")`);
      assert(info.wasClean, `not a clean close (close frames sent and received: ${c.ws._closeFrameSent}/${c.ws._closeFrameReceived})`);
      assert(!c.error, `an error event: ${c.error && c.error.message}`);
      console.log(`   (server's close reason: ${JSON.stringify(info.reason)})`);
    });
  }

  await check('a second connection after the first closed', async () => {
    const c = await Conn.open();
    await echo(c, 'second connection', false, 'text');
    await echo(c, binaryOf(65536, 2), true, 'binary');
    const info = await c.closeAndWait(1000, '');
    assert(info.code === 1000 && info.wasClean, `close: code ${info.code}, clean ${info.wasClean}`);
  });

  await check('50 concurrent connections, 20 echoes each', async () => {
    const conns = await Promise.all(Array.from({ length: 50 }, () => Conn.open()));
    await Promise.all(
      conns.map(async (c, k) => {
        for (let i = 0; i < 20; i++) {
          if (i % 2) await echo(c, `conn ${k} message ${i} ` + asciiOf(k * 20 + i, k), false, `conn ${k} #${i}`);
          else await echo(c, binaryOf(k * 100 + i, k + i), true, `conn ${k} #${i}`);
        }
      }),
    );
    const infos = await Promise.all(conns.map((c) => c.closeAndWait(1000)));
    const bad = infos.filter((i) => i.code !== 1000 || !i.wasClean);
    assert(bad.length === 0, `${bad.length} of 50 did not close cleanly with 1000: ${JSON.stringify(bad[0])}`);
  });

  console.log(`ws: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.log(`FAIL unexpected: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
