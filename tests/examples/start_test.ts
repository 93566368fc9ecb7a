/**
 * The demo as a user starts it: `deno task start` (under deno test) or
 * `bun run examples/start.ts` (under bun test) prints the URL, and the
 * index page and a socket answer there. PORT and HOST pick the address.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import process from "node:process";
import { test, within } from "../_watch.ts";
import { REPO_ROOT, RUNTIME } from "../_executables.ts";
import { JsonClient } from "./_client.ts";

describe("examples: start", () => {
  test(`${RUNTIME === "deno" ? "deno task start" : "bun run examples/start.ts"} prints the URL and serves it`, async () => {
    const args = RUNTIME === "deno" ? ["task", "start"] : ["run", "examples/start.ts"];
    const child = spawn(process.execPath, args, {
      cwd: REPO_ROOT,
      env: { ...process.env, PORT: "0", HOST: "127.0.0.1", NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // its own process group: `deno task` runs the server as a child
    });
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    let output = "";
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (output += chunk));
    try {
      const url = await within(
        new Promise<string>((resolve, reject) => {
          child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
            output += chunk;
            const match = /on (http:\/\/\S+)/.exec(output);
            if (match !== null) resolve(match[1]);
          });
          child.on("exit", (code) => reject(new Error(`exited ${code}: ${output}`)));
        }),
        60_000,
        "the start URL",
      );
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
      const index = await fetch(url);
      assert.equal(index.status, 200);
      assert.match(await index.text(), /Sluice examples/);
      const viewer = await JsonClient.open(new URL("/leaderboard", url).href.replace("http", "ws"));
      assert.equal((await viewer.nextOfType("top")).version, 0);
      await viewer.close();
    } finally {
      process.kill(-child.pid!, "SIGTERM");
      await within(exited, 10_000, "the demo stopped");
    }
  });
});
