/**
 * The three example apps in a real browser: headless Chromium (Debian's
 * `chromium`) driven by `playwright-core` from Node (tests/browser/pages.mjs),
 * against the examples server started here, so the server side runs on the
 * runtime under test.
 *
 * - chat: two pages talk (every line on both pages, in order), a third gets
 *   the history, a made-up token never opens a socket;
 * - ticker: a page with 20 symbols gets every tick; a page whose main thread
 *   is blocked gets conflated updates, and once the feed is quiet its
 *   skipped count equals what the server conflated for it, exactly;
 * - leaderboard: a viewer's table follows another page's posts, pushed only
 *   on change, and `GET /api/top` agrees.
 *
 * Each scenario fails if a page's socket never opens or a message is lost.
 *
 * Runs under `deno test --allow-all` only: a browser run takes ~20 s, and
 * the example apps' server logic is tested on both runtimes by
 * tests/examples/. Under `bun test` it is skipped with a message saying so,
 * unless SLUICE_BROWSER_ON_BUN=1.
 * Without Chromium, Node or playwright-core it is skipped loudly on a
 * developer's machine and fails in CI (CI=true).
 */

import { describe } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { test } from "../_watch.ts";
import { findExecutable, REPO_ROOT, RUNTIME } from "../_executables.ts";
import { type Examples, startExamples } from "../../examples/start.ts";
import type { ExamplesOptions } from "../../examples/start.ts";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const DRIVER = fileURLToPath(new URL("./pages.mjs", import.meta.url));
const CI = process.env.CI === "true" || process.env.CI === "1";

/** Why the browser tests cannot run here, or `null`. */
function missing(): string | null {
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (apt-get install chromium)`;
  if (findExecutable("node") === null) return "no Node.js on PATH";
  if (!existsSync(`${REPO_ROOT}node_modules/playwright-core/package.json`)) {
    return "no playwright-core in node_modules (npm install)";
  }
  return null;
}

const ON_BUN = process.env.SLUICE_BROWSER_ON_BUN === "1";
const runs = RUNTIME === "deno" || ON_BUN;
const absent = runs ? missing() : null;
if (absent !== null) {
  const message = `BROWSER TESTS NOT RUN: ${absent}`;
  if (!CI) console.warn(`\n${"!".repeat(72)}\n${message}\n${"!".repeat(72)}\n`);
}
if (!runs) {
  console.log(
    "tests/browser: skipped under bun test (run once per npm test, under deno test; " +
      "the apps' server logic runs on Bun in tests/examples/; SLUICE_BROWSER_ON_BUN=1 runs it)",
  );
}

/**
 * Runs one scenario of pages.mjs against a fresh examples server. `control`
 * answers the driver's requests (a line on its stdout) with a line on its
 * stdin, or `null` for ordinary output.
 */
async function runScenario(
  scenario: string,
  options: ExamplesOptions = {},
  control: (examples: Examples, line: string) => string | null = () => null,
): Promise<void> {
  const examples = await startExamples({ hostname: "127.0.0.1", port: 0, ...options });
  let output = "";
  try {
    const child = spawn(findExecutable("node")!, [DRIVER, examples.url, scenario], {
      cwd: REPO_ROOT,
      stdio: ["pipe", "pipe", "pipe"],
    });
    let pending = "";
    child.stdout!.setEncoding("utf8");
    child.stderr!.setEncoding("utf8");
    child.stdout!.on("data", (chunk: string) => {
      output += chunk;
      pending += chunk;
      let newline;
      while ((newline = pending.indexOf("\n")) !== -1) {
        const answer = control(examples, pending.slice(0, newline));
        pending = pending.slice(newline + 1);
        if (answer !== null) child.stdin!.write(`${answer}\n`);
      }
    });
    child.stderr!.on("data", (chunk: string) => (output += chunk));
    // Bounded: the driver's own waits end well before this.
    const timer = setTimeout(() => child.kill("SIGKILL"), 150_000);
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    clearTimeout(timer);
    console.log(output.trimEnd());
    assert.equal(code, 0, `the ${scenario} scenario failed (exit ${code}):\n${output}`);
  } finally {
    await examples.close();
  }
}

const skip = !runs || (absent !== null && !CI);

describe("examples in headless Chromium", { skip }, () => {
  test("chat: two pages talk, a third gets the history, a bad token is refused", async () => {
    assert.equal(absent, null, `browser tests cannot run in CI: ${absent}`);
    await runScenario("chat", { ticker: { autoStart: false } });
  });

  test("ticker: a fast page gets every tick, a throttled page conflated ones and its skipped count", async () => {
    assert.equal(absent, null, `browser tests cannot run in CI: ${absent}`);
    // 50 000 updates/s, so that a blocked page falls behind within seconds;
    // paused when the driver asks, and the pages' counts compared then.
    await runScenario(
      "ticker",
      { ticker: { updatesPerSecond: 50_000, interval: 20 } },
      (examples, line) => {
        if (line !== "stop-feed") return null;
        examples.ticker.pause();
        return "stopped";
      },
    );
  });

  test("leaderboard: a viewer's table follows another page's posts", async () => {
    assert.equal(absent, null, `browser tests cannot run in CI: ${absent}`);
    await runScenario("leaderboard", { ticker: { autoStart: false } });
  });
});
