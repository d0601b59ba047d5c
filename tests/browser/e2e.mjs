// End-to-end test of the demo page in Debian's headless Chromium, driven by playwright-core
// (no browser download). Run through scripts/browser-test.sh, or:
//
//   DEMO_BIN=target/debug/examples/demo node tests/browser/e2e.mjs
//
// Starts the demo on a free port, opens two tabs and checks, through the DOM: a chat message
// goes from one tab to the other over the WebSocket (both ways); the clock shows at least three
// updates from the HTTP stream; 8 more tabs all load the page within 10 s (the tabs share one
// /clock stream, held by one leader tab, instead of each holding one of the browser's 6
// HTTP/1.1 connections to the host), followers show the leader's ticks, and when the leader
// stops another tab takes over (the extra tabs are closed afterwards); an EventSource on
// /events gets its events in order, reconnects by itself when the server ends the stream
// (sending Last-Event-ID, which the server echoes), and stops for good at the server's 204
// (checked in the page and in /events/stats), and the page's feed panel shows it; 300
// /events requests with a 60,000-character Last-Event-ID leave /events/stats small (at most
// 64 connections kept, ids cut to 64 bytes); a 64 MiB download completes with the size the
// server announced; close codes 1009 and 1000 show on the page; a WebSocket to a second server
// (examples/autobahn.rs with DEFLATE=reset, i.e. Config::deflate_client_context(false)) agrees
// to client_no_context_takeover, which Chromium did not offer, and Chromium then compresses each
// message on its own. Takes a screenshot
// (SCREENSHOT, default /tmp/demo.png). Prints "N passed, N failed" last and exits non-zero if
// anything failed.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const DEMO_BIN = process.env.DEMO_BIN || "target/debug/examples/demo";
// The echo server of examples/autobahn.rs, run with DEFLATE=reset
// (Config::deflate_client_context(false)): Chromium must accept a client_no_context_takeover it
// did not offer, and compress each message on its own.
const ECHO_BIN = process.env.ECHO_BIN || "target/debug/examples/autobahn";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SCREENSHOT = process.env.SCREENSHOT || "/tmp/demo.png";
const DOWNLOAD_MIB = 64;

let passed = 0;
let failed = 0;

async function check(name, body) {
  const started = Date.now();
  try {
    await body();
    passed += 1;
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failed += 1;
    const text = String(error && error.message ? error.message : error).split("\n")[0];
    console.log(`FAIL ${name}: ${text.length > 300 ? text.slice(0, 300) + "…" : text}`);
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

/** Starts the demo on a free port; resolves with its base URL once it listens. */
function startDemo() {
  return startServer(DEMO_BIN, ["--port", "0"], {}, "demo", /listening on (http:\/\/127\.0\.0\.1:\d+)/);
}

/** Starts a server; resolves with the URL its stdout announces (`pattern`'s first group). */
function startServer(bin, args, env, tag, pattern) {
  const child = spawn(bin, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "info", ...env },
  });
  const url = new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`the ${tag} did not start within 30 s`)), 30_000);
    const prefix = (tag) => (data) => {
      for (const line of data.toString().split("\n")) if (line) console.log(`  ${tag} ${line}`);
    };
    child.stdout.on("data", prefix(`${tag}|`));
    child.stderr.on("data", prefix(`${tag}!`));
    child.stdout.on("data", (data) => {
      seen += data.toString().replace(/\x1b\[[0-9;]*m/g, "");
      const m = seen.match(pattern);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on("error", (error) => { clearTimeout(timer); reject(error); });
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`the ${tag} exited with ${code}`)); });
  });
  return { child, url };
}

const demo = startDemo();
const echo = startServer(ECHO_BIN, [], { PORT: "0", DEFLATE: "reset" }, "echo",
  /autobahn echo server on (ws:\/\/127\.0\.0\.1:\d+)/);
// Awaited by its check only: a server that fails to start fails that check, not the run.
echo.url.catch(() => {});
const profile = mkdtempSync(join(tmpdir(), "webchan-e2e-"));
let context = null;
const pageErrors = [];

// A hard limit for the whole run: a hung browser must not hang CI.
const watchdog = setTimeout(() => {
  console.log("FAIL the browser test took more than 5 minutes");
  console.log(`${passed} passed, ${failed + 1} failed`);
  demo.child.kill("SIGKILL");
  echo.child.kill("SIGKILL");
  process.exit(1);
}, 300_000);

try {
  const base = await demo.url;
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 860 },
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const open = async (name) => {
    const page = await context.newPage();
    page.on("pageerror", (error) => pageErrors.push(`${name}: ${error.message}`));
    page.on("console", (msg) => {
      if (msg.type() === "error") pageErrors.push(`${name} console: ${msg.text()}`);
    });
    await page.goto(base + "/");
    return page;
  };
  const a = await open("tab A");
  const b = await open("tab B");
  const attr = (page, selector, name) => page.locator(selector).getAttribute(name);

  await check("the page loads in two tabs and both chats open", async () => {
    assert((await a.title()) === "webchan demo", `title is ${await a.title()}`);
    for (const page of [a, b]) {
      await page.waitForSelector('#chat-state[data-state="open"]', { timeout: 10_000 });
      await page.waitForSelector("#chat-id[data-id]", { timeout: 10_000 });
    }
    const [idA, idB] = [await attr(a, "#chat-id", "data-id"), await attr(b, "#chat-id", "data-id")];
    assert(idA && idB && idA !== idB, `tab ids ${idA} and ${idB}`);
  });

  await check("both tabs count two tabs online", async () => {
    await a.waitForFunction(() => document.getElementById("chat-online").textContent === "2", null, { timeout: 10_000 });
    await b.waitForFunction(() => document.getElementById("chat-online").textContent === "2", null, { timeout: 10_000 });
  });

  const say = async (from, to, text) => {
    await from.fill("#chat-input", text);
    await from.click("#chat-send");
    const fromId = await attr(from, "#chat-id", "data-id");
    const line = to.locator("#chat-log li.theirs", { hasText: text });
    await line.waitFor({ timeout: 10_000 });
    assert((await line.getAttribute("data-from")) === fromId, "the message is not marked as from the sender");
    const echoed = await from.locator("#chat-log li.theirs", { hasText: text }).count();
    assert(echoed === 0, "the sender got its own message back");
    assert((await from.locator("#chat-log li.mine", { hasText: text }).count()) === 1, "the sender does not show its message");
  };
  await check("a chat message goes from tab A to tab B over the WebSocket", () =>
    say(a, b, `hello from A ${Date.now()} <b>not bold</b> "quoted" ünïcode ✓`));
  await check("and one from tab B to tab A", () => say(b, a, `reply from B ${Date.now()}`));
  await check("the chat's WebSocket agreed to permessage-deflate, and a long message goes through it", async () => {
    for (const page of [a, b]) {
      const extensions = await page.evaluate(() => ws && ws.extensions);
      assert(extensions === "permessage-deflate; server_no_context_takeover", `the WebSocket's extensions are "${extensions}"`);
    }
    // Over 128 bytes: compressed both ways (Chromium's to the server, the server's to tab B).
    await say(a, b, `long ${"compressible text ".repeat(60)}${Date.now()}`); // the input takes 2,000
  });

  await check("a server that tells clients to reset their compression context: Chromium agrees, and compresses each message on its own", async () => {
    const url = await echo.url;
    const result = await a.evaluate(async (url) => {
      const s = new WebSocket(url);
      await new Promise((resolve, reject) => {
        s.onopen = resolve;
        s.onclose = (e) => reject(new Error(`closed ${e.code} before opening`));
      });
      // Twice the same text: kept context would make the second a reference back into the
      // first, which the server (inflating each message on its own) closes with 1002.
      const text = `compressible text, said twice ${"and again ".repeat(40)}`;
      const got = [];
      const echoed = new Promise((resolve, reject) => {
        s.onmessage = (e) => { got.push(e.data); if (got.length === 2) resolve(); };
        s.onclose = (e) => reject(new Error(`closed ${e.code} ${e.reason}`));
        setTimeout(() => reject(new Error(`${got.length} of 2 echoes in 5 s`)), 5_000);
      });
      s.send(text);
      s.send(text);
      await echoed;
      s.onclose = null;
      s.close(1000);
      return { extensions: s.extensions, same: got.length === 2 && got.every((g) => g === text) };
    }, url);
    const want = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    assert(result.extensions === want, `the WebSocket's extensions are "${result.extensions}"`);
    assert(result.same, "an echo came back different");
  });

  await check("the clock shows at least 3 updates from the HTTP stream", async () => {
    await a.waitForFunction(
      () => Number(document.getElementById("clock-count").dataset.updates) >= 3, null, { timeout: 10_000 });
    assert((await attr(a, "#clock-state", "data-state")) === "streaming", "the clock is not streaming");
    const time = await a.textContent("#clock-time");
    assert(/^\d\d:\d\d:\d\d\.\d{3}$/.test(time), `clock shows "${time}"`);
    const n1 = Number(await a.textContent("#clock-n"));
    await a.waitForFunction((n) => Number(document.getElementById("clock-n").textContent) > n, n1, { timeout: 5_000 });
  });

  // ---- Many tabs: one /clock stream for all of them -----------------------------------------
  // Each tab used to hold a /clock EventSource of its own, and so one of the browser's 6
  // HTTP/1.1 connections to the host, for good: the seventh tab never loaded. Now the tab that
  // holds the "webchan-clock" Web Lock streams and the others follow over a BroadcastChannel.
  const extra = [];
  const role = (page) => attr(page, "#clock-role", "data-role");
  const updates = async (page) => Number(await attr(page, "#clock-count", "data-updates"));
  const leaders = async (pages) => (await Promise.all(pages.map(role))).filter((r) => r === "leader").length;
  await check("8 more tabs all load the page within 10 s and show the clock", async () => {
    // One after the other, as a user opens tabs: each new tab's request for / must find a free
    // connection while the tabs before it have their clocks running.
    const deadline = Date.now() + 10_000;
    const loads = [];
    for (let i = 0; i < 8; i += 1) {
      const page = await context.newPage();
      const name = `extra tab ${i + 1}`;
      page.on("pageerror", (error) => pageErrors.push(`${name}: ${error.message}`));
      page.on("console", (msg) => {
        if (msg.type() === "error") pageErrors.push(`${name} console: ${msg.text()}`);
      });
      extra.push(page);
      loads.push(page.goto(base + "/", { timeout: Math.max(1, deadline - Date.now()) }).then(() => true, () => false));
      await page.waitForFunction(() => document.getElementById("clock-state") !== null, null,
        { polling: 100, timeout: Math.max(1, deadline - Date.now()) }).catch(() => {});
    }
    await Promise.all(loads);
    const titles = await Promise.all(extra.map((page) => page.title().catch(() => "")));
    const loaded = titles.filter((t) => t === "webchan demo").length;
    assert(loaded === 8 && (await Promise.all(loads)).every(Boolean),
      `${loaded} of 8 extra tabs loaded the page in 10 s (titles: ${titles.map((t) => JSON.stringify(t)).join(", ")})`);
    // Tab A leads (it asked first); every other tab follows and shows its ticks.
    const all = [a, b, ...extra];
    assert((await leaders(all)) === 1, `roles ${(await Promise.all(all.map(role))).join(" ")}`);
    assert((await role(a)) === "leader", `tab A is ${await role(a)}`);
    const follower = extra[7];
    assert((await role(follower)) === "follower", `the last extra tab is ${await role(follower)}`);
    const before = await updates(follower);
    await follower.waitForFunction((n) => Number(document.getElementById("clock-count").dataset.updates) >= n + 2,
      before, { polling: 100, timeout: Math.max(3_000, deadline - Date.now()) });
    await follower.waitForSelector('#clock-state[data-state="streaming"]', { timeout: 5_000 });
    const time = await follower.textContent("#clock-time");
    assert(/^\d\d:\d\d:\d\d\.\d{3}$/.test(time), `a follower's clock shows "${time}"`);
    assert((await follower.textContent("#clock-raw")).includes("data: {\"n\":"), "a follower shows no raw lines");
    for (const page of extra) {
      await page.waitForFunction(() => Number(document.getElementById("clock-count").dataset.updates) >= 1,
        null, { polling: 100, timeout: 5_000 });
    }
  });

  await check("Stop in the leading tab hands the clock to another tab; Start makes it a follower", async () => {
    assert(extra.length === 8, "no extra tabs");
    await a.click("#clock-stop");
    assert((await attr(a, "#clock-state", "data-state")) === "closed", "tab A's clock is not closed");
    const others = [b, ...extra];
    const started = Date.now();
    while ((await leaders(others)) !== 1) {
      assert(Date.now() - started < 5_000, `no tab took over: roles ${(await Promise.all(others.map(role))).join(" ")}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const follower = (await Promise.all(others.map(role))).indexOf("follower");
    assert(follower >= 0, "no follower left");
    const page = others[follower];
    const before = await updates(page);
    await page.waitForFunction((n) => Number(document.getElementById("clock-count").dataset.updates) >= n + 2,
      before, { polling: 100, timeout: 5_000 });
    const stopped = await updates(a);
    await new Promise((resolve) => setTimeout(resolve, 1200));
    assert((await updates(a)) === stopped, "tab A still counts ticks after Stop");
    await a.click("#clock-start");
    await a.waitForSelector('#clock-state[data-state="streaming"]', { timeout: 5_000 });
    assert((await role(a)) === "follower", `tab A is ${await role(a)} after Start`);
    assert((await leaders([a, ...others])) === 1, "more than one tab leads");
  });
  await Promise.all(extra.map((page) => page.close().catch(() => {})));

  // ---- Server-Sent Events: EventSource, reconnection with Last-Event-ID, 204 ----------------
  // /events?n=3&stop=9: three connections of three events each (ids 1-9, `retry: 200`, the
  // stream ends after each third), then a fourth connection answered 204. Expected, in order:
  const SSE_EXPECTED = "open feed feed feed error:0 open feed feed feed error:0 open feed feed feed error:0 error:2";
  const sseKey = `e2e-${Date.now()}`;
  // Runs in the page: the EventSource's events as they come, until it is CLOSED, then 1.5 s
  // more of watching for anything else (a reconnect after the 204 would be an `open` or an
  // `error`).
  let sse = null;
  let sseFeeds = [];
  const sseRun = () => a.evaluate(async (key) => {
    const t0 = performance.now();
    const log = [];
    const at = () => Math.round(performance.now() - t0);
    const source = new EventSource(`/events?n=3&stop=9&key=${key}`);
    source.onopen = () => log.push({ type: "open", t: at() });
    source.onmessage = (e) => log.push({ type: "message", t: at(), data: e.data });
    source.addEventListener("feed", (e) =>
      log.push({ type: "feed", t: at(), lastEventId: e.lastEventId, data: e.data }));
    const closed = await new Promise((resolve) => {
      source.onerror = () => {
        log.push({ type: `error:${source.readyState}`, t: at() });
        if (source.readyState === EventSource.CLOSED) resolve(true);
      };
      setTimeout(() => resolve(false), 20_000);
    });
    const closedAt = at();
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const readyState = source.readyState;
    source.close();
    return { closed, closedAt, readyState, log };
  }, sseKey);
  const sseStats = async () => {
    const response = await fetch(`${base}/events/stats?key=${sseKey}`);
    assert(response.ok, `/events/stats answered ${response.status}`);
    return (await response.json()).connections;
  };

  await check("SSE: EventSource gets events 1-9 in order, with their ids and multi-line data", async () => {
    sse = await sseRun();
    sseFeeds = sse.log.filter((e) => e.type === "feed");
    const ids = sseFeeds.map((e) => e.lastEventId).join(",");
    assert(ids === "1,2,3,4,5,6,7,8,9", `event ids (lastEventId) ${ids || "none"}`);
    assert(!sse.log.some((e) => e.type === "message"), "an event came without its `event: feed` type");
    for (const e of sseFeeds) {
      // Sent as one data field ending in CRLF, CR and LF: three `data:` lines, joined with LF.
      const lines = e.data.split("\n");
      assert(lines.length === 3 && lines[1] === "second line" && lines[2] === "third line",
        `event ${e.lastEventId} has data ${JSON.stringify(e.data)}`);
      const m = JSON.parse(lines[0]);
      assert(String(m.id) === e.lastEventId, `event ${e.lastEventId} carries id ${m.id}`);
    }
  });

  await check("SSE: after the server ends the stream, the browser reconnects by itself with Last-Event-ID", async () => {
    assert(sse, "no EventSource run");
    const seq = sse.log.map((e) => e.type).join(" ");
    assert(seq === SSE_EXPECTED, `EventSource events: ${seq}`);
    // What the server saw, echoed in each event: no Last-Event-ID on the first connection,
    // then the last id of the connection before.
    const seen = sseFeeds.map((e) => { const m = JSON.parse(e.data.split("\n")[0]); return `${m.connection}:${m.lastEventId}`; });
    const want = ["1:null", "1:null", "1:null", "2:3", "2:3", "2:3", "3:6", "3:6", "3:6"];
    assert(seen.join(" ") === want.join(" "), `connection:Last-Event-ID seen by the server: ${seen.join(" ")}`);
    // `retry: 200` honoured: each reconnect within 1.5 s of the end of the stream (Chromium's
    // default is 3 s).
    const reconnects = sse.log.flatMap((e, i) =>
      e.type === "error:0" ? [sse.log[i + 1].t - e.t] : []);
    assert(reconnects.length === 3 && reconnects.every((ms) => ms < 1500), `reconnect delays ${reconnects.join(", ")} ms`);
  });

  await check("SSE: a 204 closes the EventSource (readyState 2) and no connection follows in 1.5 s", async () => {
    assert(sse, "no EventSource run");
    assert(sse.closed, "the EventSource was not CLOSED within 20 s");
    assert(sse.readyState === 2, `readyState ${sse.readyState} 1.5 s after it closed`);
    assert(!sse.log.some((e) => e.t > sse.closedAt), `events after CLOSED: ${JSON.stringify(sse.log.filter((e) => e.t > sse.closedAt))}`);
    const connections = await sseStats();
    const got = connections.map((c) => `${c.lastEventId}:${c.status}`).join(" ");
    assert(got === "null:200 3:200 6:200 9:204", `connections the server saw (Last-Event-ID:status): ${got}`);
  });

  await check("SSE: 300 reconnects with a 60,000-character Last-Event-ID leave /events/stats small", async () => {
    // Numerically 10, past stop 9: each one gets a 204 at once.
    const longId = "0".repeat(59_998) + "10";
    const key = `flood-${Date.now()}`;
    for (let i = 0; i < 300; i += 10) {
      const statuses = await Promise.all(Array.from({ length: 10 }, async () => {
        const response = await fetch(`${base}/events?key=${key}`, { headers: { "Last-Event-ID": longId } });
        await response.arrayBuffer();
        return response.status;
      }));
      assert(statuses.every((s) => s === 204), `statuses ${statuses.join(",")}`);
    }
    const response = await fetch(`${base}/events/stats?key=${key}`);
    const text = await response.text();
    const size = Buffer.byteLength(text);
    assert(size < 64 * 1024, `/events/stats is ${size} bytes`);
    const stats = JSON.parse(text);
    assert(stats.total === 300, `total ${stats.total}`);
    assert(stats.connections.length > 0 && stats.connections.length <= 64, `${stats.connections.length} connections listed`);
    for (const c of stats.connections) {
      assert(c.status === 204, `status ${c.status}`);
      assert(typeof c.lastEventId === "string" && Buffer.byteLength(c.lastEventId) <= 64,
        `an id of ${Buffer.byteLength(String(c.lastEventId))} bytes`);
    }
  });

  await check("the page's reconnecting feed shows 9 events over 3 connections, then stops", async () => {
    await a.click("#feed-start");
    await a.waitForSelector('#feed-state[data-state="closed"]', { timeout: 20_000 });
    const [events, opens] = [await attr(a, "#feed-count", "data-events"), await attr(a, "#feed-opens", "data-opens")];
    assert(events === "9" && opens === "3", `${events} events over ${opens} connections`);
    assert((await a.textContent("#feed-last")) === "9", `last id ${await a.textContent("#feed-last")}`);
  });

  await check(`a ${DOWNLOAD_MIB} MiB download completes with the right size`, async () => {
    await a.selectOption("#download-size", String(DOWNLOAD_MIB));
    await a.click("#download-start");
    await a.waitForSelector('#download-state[data-state="done"], #download-state[data-state="error"]', { timeout: 120_000 });
    const state = await attr(a, "#download-state", "data-state");
    const bytes = Number(await attr(a, "#download-text", "data-bytes"));
    const expected = Number(await attr(a, "#download-text", "data-expected"));
    assert(expected === DOWNLOAD_MIB * 1024 * 1024, `the server announced ${expected} bytes`);
    assert(bytes === expected, `received ${bytes} of ${expected} bytes`);
    assert(state === "done", `download state ${state}`);
    const bar = await a.$eval("#download-bar", (el) => [el.value, el.max]);
    assert(bar[0] === bar[1] && bar[1] === expected, `progress bar at ${bar[0]} of ${bar[1]}`);
  });

  await check(`screenshot in ${SCREENSHOT}`, async () => {
    await a.screenshot({ path: SCREENSHOT, fullPage: true });
  });

  await check("a message over the limit closes tab B with 1009, and tab A sees it leave", async () => {
    await b.click("#chat-big");
    await b.waitForSelector('#chat-state[data-state="closed"]', { timeout: 10_000 });
    assert((await attr(b, "#chat-close", "data-code")) === "1009", `close code ${await attr(b, "#chat-close", "data-code")}`);
    await a.locator("#chat-log li.system", { hasText: "left (1009)" }).waitFor({ timeout: 10_000 });
    await a.waitForFunction(() => document.getElementById("chat-online").textContent === "1", null, { timeout: 10_000 });
  });

  await check("tab B reconnects, then /close gives a server close with 1000", async () => {
    await b.click("#chat-connect");
    await b.waitForSelector('#chat-state[data-state="open"]', { timeout: 10_000 });
    await b.fill("#chat-input", "/close");
    await b.click("#chat-send");
    await b.waitForSelector('#chat-state[data-state="closed"]', { timeout: 10_000 });
    const code = await attr(b, "#chat-close", "data-code");
    assert(code === "1000", `close code ${code}`);
    const text = await b.textContent("#chat-close");
    assert(text.includes("you typed /close"), `close reason shown as "${text}"`);
  });

  await check("no errors in the pages", async () => {
    assert(pageErrors.length === 0, pageErrors.join("; "));
  });
} catch (error) {
  failed += 1;
  console.log(`FAIL setup: ${error && error.message ? error.message : error}`);
} finally {
  clearTimeout(watchdog);
  if (context) await context.close().catch(() => {});
  demo.child.kill("SIGTERM");
  echo.child.kill("SIGTERM");
  rmSync(profile, { recursive: true, force: true });
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
