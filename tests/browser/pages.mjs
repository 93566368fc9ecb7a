// Drives the example pages in headless Chromium (Debian's, through
// playwright-core) against a running examples server. Run by
// tests/browser/examples_test.ts under Node:
//
//   node tests/browser/pages.mjs http://127.0.0.1:PORT/ chat|ticker|leaderboard
//
// Exits 0 when the scenario held, 1 with the reason otherwise. For the ticker
// it talks to the test over stdio: it prints "stop-feed" and waits for
// "stopped" on stdin, so that the feed is quiet while it counts.

import assert from "node:assert/strict";
import { createInterface } from "node:readline";
import process from "node:process";
import { chromium } from "playwright-core";

const [base, scenario] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
// Without the background-networking flags Chromium's connections are
// refused on machines without internet access.
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-background-timer-throttling",
  "--disable-renderer-backgrounding",
  "--disable-backgrounding-occluded-windows",
];

const stdinLines = createInterface({ input: process.stdin });
const waiting = [];
stdinLines.on("line", (line) => waiting.shift()?.(line));
function readLine() {
  return new Promise((resolve) => waiting.push(resolve));
}

const log = (...parts) => console.log(`[${scenario}]`, ...parts);

/** Polls `fn` in the page until it returns a truthy value; fails with `what` after `ms`. */
async function until(page, fn, arg, what, ms = 15_000) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout: ms, polling: 50 });
    return await handle.jsonValue();
  } catch (err) {
    const state = await page.evaluate(() =>
      JSON.stringify(
        globalThis.app ?? null,
        (k, v) => v instanceof Map ? `Map(${v.size})` : (k === "socket" ? undefined : v),
      )
    ).catch(() => "(page gone)");
    throw new Error(`Timed out after ${ms} ms: ${what}\npage state: ${state.slice(0, 2000)}`, {
      cause: err,
    });
  }
}

/** Opens a page and waits until its socket opened: a page whose socket never opens fails here. */
async function openPage(context, path) {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(err));
  page.on("console", (msg) => {
    if (msg.type() === "error") log(`console error on ${path}: ${msg.text()}`);
  });
  page.errors = errors;
  await page.goto(new URL(path, base).href);
  await until(page, () => globalThis.app?.opens >= 1, null, `the socket of ${path} opened`);
  return page;
}

function noPageErrors(pages) {
  for (const page of pages) {
    assert.deepEqual(page.errors.map(String), [], `no uncaught error in ${page.url()}`);
  }
}

async function chat(browser) {
  const ada = await openPage(await browser.newContext(), "/chat?nick=ada&room=lobby");
  const bob = await openPage(await browser.newContext(), "/chat?nick=bob&room=lobby");
  await until(
    ada,
    () => document.getElementById("log").textContent.includes("bob joined"),
    null,
    "ada sees bob join",
  );

  // Typing shows at the other page.
  await ada.fill("#text", "ada 1");
  await until(
    bob,
    () => document.getElementById("typing").textContent.includes("ada"),
    null,
    "bob sees ada typing",
  );
  await ada.press("#text", "Enter");

  const expected = ["ada 1"];
  for (let i = 1; i <= 10; i++) {
    if (i > 1) {
      await ada.fill("#text", `ada ${i}`);
      await ada.press("#text", "Enter");
      expected.push(`ada ${i}`);
    }
    await bob.fill("#text", `bob ${i}`);
    await bob.press("#text", "Enter");
    expected.push(`bob ${i}`);
  }
  const lines = (page) => page.evaluate(() => app.lines.map((l) => `${l.nick}:${l.text}`));
  for (const page of [ada, bob]) {
    await until(page, (n) => app.lines.length >= n, expected.length, `${expected.length} lines`);
  }
  const adaLines = await lines(ada);
  const bobLines = await lines(bob);
  assert.deepEqual(adaLines, bobLines, "both pages show the same conversation, in order");
  assert.equal(adaLines.length, expected.length, "no line lost, none doubled");
  for (const nick of ["ada", "bob"]) {
    assert.deepEqual(
      adaLines.filter((l) => l.startsWith(`${nick}:`)).map((l) => l.slice(nick.length + 1)),
      expected.filter((t) => t.startsWith(nick)),
      `${nick}'s lines in the order sent`,
    );
  }
  // A third page joins later and gets the history.
  const carol = await openPage(await browser.newContext(), "/chat?nick=carol&room=lobby");
  await until(carol, (n) => app.lines.length === n, expected.length, "carol got the history");
  assert.deepEqual(await lines(carol), adaLines);

  // The handshake refuses a made-up token: the page's socket never opens.
  const refused = await carol.evaluate(() =>
    new Promise((resolve) => {
      const ws = new WebSocket(
        new URL("/chat?token=made-up", location.href).href.replace("http", "ws"),
      );
      ws.onopen = () => resolve("opened");
      ws.onclose = (e) => resolve(`closed ${e.code}`);
    })
  );
  assert.equal(refused, "closed 1006", "a bad token never opens a socket");

  await ada.close();
  await until(
    bob,
    () => document.getElementById("log").textContent.includes("ada left"),
    null,
    "bob sees ada leave",
  );
  noPageErrors([ada, bob, carol]);
  log(`ok: ${expected.length} lines on both pages, history for a third, 401 for a bad token`);
}

async function ticker(browser) {
  const fast = await openPage(await browser.newContext(), "/ticker?symbols=20");
  const slow = await openPage(await browser.newContext(), "/ticker?symbols=all");
  await until(
    fast,
    () => app.snapshots >= 1 && app.received >= 200,
    null,
    "the fast page receives prices",
  );
  await until(
    slow,
    () => app.snapshots >= 1 && app.received >= 200,
    null,
    "the throttled page receives prices",
  );
  const shown = await fast.evaluate(() =>
    document.querySelectorAll("#grid .quote span:not(:empty)").length
  );
  assert.ok(shown > 0, "the fast page shows prices");

  // The throttled page stops reading: its main thread is kept busy (its
  // socket's data is not consumed, so TCP backs up to the server) until the
  // server reports conflation, for at most 20 s.
  const stats = async () => (await fetch(new URL("/api/ticker/stats", base))).json();
  const conflatedBefore = (await stats()).messagesConflated;
  const reached = await slow.evaluate(({ before }) => {
    const end = Date.now() + 20_000;
    let conflated = 0;
    while (Date.now() < end) {
      const spinUntil = Date.now() + 250;
      while (Date.now() < spinUntil);
      const xhr = new XMLHttpRequest();
      xhr.open("GET", "/api/ticker/stats", false); // synchronous: the page stays blocked
      xhr.send();
      conflated = JSON.parse(xhr.responseText).messagesConflated;
      if (conflated >= before + 2000) break;
    }
    return conflated;
  }, { before: conflatedBefore });
  assert.ok(
    reached >= conflatedBefore + 2000,
    `the server conflated for the blocked page (${reached})`,
  );

  // Quiet feed, then both pages must catch up to the newest price of each symbol.
  console.log("stop-feed");
  assert.equal(await readLine(), "stopped");
  const quotes = await (await fetch(new URL("/api/ticker/quotes", base))).json();
  const seqs = Object.fromEntries(quotes.map(([s, , n]) => [s, n]));
  const caughtUp = (seqs) => app.watching.every((s) => app.last.get(s) === seqs[s]);
  await until(fast, caughtUp, seqs, "the fast page has the newest prices", 30_000);
  await until(slow, caughtUp, seqs, "the throttled page has the newest prices", 30_000);
  await until(
    slow,
    () => document.getElementById("skipped").textContent === String(app.skipped),
    null,
    "the skipped count on screen",
  );

  const counts = (page) => page.evaluate(() => ({ received: app.received, skipped: app.skipped }));
  const f = await counts(fast);
  const s = await counts(slow);
  const { messagesConflated } = await stats();
  log(
    `fast page: ${f.received} received, ${f.skipped} skipped; ` +
      `throttled page: ${s.received} received, ${s.skipped} skipped; server conflated ${messagesConflated}`,
  );
  assert.equal(f.skipped, 0, "the fast page got every tick");
  assert.ok(s.skipped > 0, "the throttled page skipped updates");
  // Each skipped update is one the server replaced with a newer one for that
  // page: the page's own count and the server's agree exactly, so nothing
  // was lost beyond what conflation accounts for.
  assert.equal(s.skipped + f.skipped, messagesConflated, "pages' skipped counts = server's");
  assert.equal(await slow.textContent("#skipped"), String(s.skipped));
  noPageErrors([fast, slow]);
  log("ok");
}

async function leaderboard(browser) {
  const viewer = await openPage(await browser.newContext(), "/leaderboard");
  const player = await openPage(await browser.newContext(), "/leaderboard?name=ada");
  await until(viewer, () => app.version === 0, null, "the viewer got the empty list");

  const scores = [["ada", 40], ["bob", 75], ["ada", 90], ["bob", 10]];
  for (const [i, [name, score]] of scores.entries()) {
    await player.fill("#name", name);
    await player.fill("#score", String(score));
    await player.click("#post button");
    await until(player, (n) => app.acks.length === n, i + 1, `the ack for ${name} ${score}`);
  }
  // Three changes (bob's 10 is below his best): versions 1, 2, 3, each pushed once.
  await until(viewer, () => app.version === 3, null, "the viewer's list updated");
  const top = await viewer.evaluate(() => app.top.map((e) => `${e.rank}.${e.name}:${e.score}`));
  assert.deepEqual(top, ["1.ada:90", "2.bob:75"]);
  assert.equal(await viewer.evaluate(() => app.updates), 4, "pushed only when it changed");
  const rows = await viewer.$$eval("#top tr", (trs) => trs.map((tr) => tr.textContent));
  assert.deepEqual(rows, ["1ada90", "2bob75"]);
  const api = await (await fetch(new URL("/api/top", base))).json();
  assert.deepEqual(api.entries.map((e) => `${e.rank}.${e.name}:${e.score}`), top);
  assert.equal(api.version, 3);
  noPageErrors([viewer, player]);
  log("ok: the viewer's table follows another client's posts; /api/top agrees");
}

const scenarios = { chat, ticker, leaderboard };
let browser;
let failed = false;
try {
  assert.ok(scenarios[scenario], `unknown scenario ${scenario}`);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  await scenarios[scenario](browser);
} catch (err) {
  failed = true;
  console.error(`[${scenario}] FAILED:`, err?.stack ?? err);
} finally {
  await browser?.close().catch(() => {});
  stdinLines.close();
}
process.exit(failed ? 1 : 0);
