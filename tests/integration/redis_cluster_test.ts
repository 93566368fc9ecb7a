/**
 * Three Sluice processes (Deno and Bun mixed: `cli.ts serve --mode broadcast
 * --broker redis://…`) on one real redis-server, with subscribers spread over
 * them: a publish in any process reaches every subscriber in all three
 * exactly once, in publish order; then Redis is killed and restarted, and
 * delivery recovers without restarting any process.
 */

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { after, describe } from "node:test";
import { createClient } from "@redis/client";
import { connect, type Message, type WebSocketConnection } from "../../mod.ts";
import { delay, test, within } from "../_watch.ts";
import { findExecutable, REPO_ROOT, RUNTIME } from "../_executables.ts";
import { RedisProcess, redisSkipReason } from "../_redis.ts";

const skip = redisSkipReason();
const CLI = join(REPO_ROOT, "cli.ts");
const CHANNEL = "sluice:broadcast";

/** Deno, Bun, Deno (or the running runtime only, loudly, when the other is missing). */
function runtimes(): ("deno" | "bun")[] {
  const other = RUNTIME === "deno" ? "bun" : "deno";
  if (findExecutable(other) !== null) return [RUNTIME, other, RUNTIME];
  const message = `${other} not found: the three-process Redis test runs on ${RUNTIME} only`;
  if (process.env.CI === "true") throw new Error(message);
  console.error(`\n*** ${message} ***\n`);
  return [RUNTIME, RUNTIME, RUNTIME];
}

const children: ChildProcess[] = [];

function startSluice(runtime: "deno" | "bun", redisUrl: string): Promise<string> {
  const exec = findExecutable(runtime)!;
  const serveArgs = [
    "serve",
    "--mode",
    "broadcast",
    "--port",
    "0",
    "--hostname",
    "127.0.0.1",
    "--broker",
    redisUrl,
  ];
  const args = runtime === "deno" ? ["run", "--allow-all", CLI, ...serveArgs] : [CLI, ...serveArgs];
  const child = spawn(exec, args, { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  let output = "";
  return within(
    new Promise<string>((resolve, reject) => {
      const onData = (chunk: Uint8Array) => {
        output += new TextDecoder().decode(chunk);
        const match = /listening on (ws:\/\/\S+)/.exec(output);
        if (match) resolve(match[1]);
      };
      child.stdout!.on("data", onData);
      child.stderr!.on("data", onData);
      child.on(
        "exit",
        (code) => reject(new Error(`${runtime} server exited (${code}): ${output}`)),
      );
    }),
    30_000,
    `${runtime} server start`,
  );
}

async function numSub(url: string): Promise<number> {
  const client = createClient({ url, socket: { reconnectStrategy: false } });
  client.on("error", () => {});
  await client.connect();
  try {
    const reply = await client.sendCommand(["PUBSUB", "NUMSUB", CHANNEL]) as unknown[];
    return Number(reply[1]);
  } finally {
    client.destroy();
  }
}

async function until(check: () => boolean | Promise<boolean>, what: string, ms = 20_000) {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) assert.fail(`gave up waiting: ${what}`);
    await delay(20);
  }
}

const decoder = new TextDecoder();

/** A /sub client: messages as text, binary ones marked `bin:`. */
async function subscribe(url: string) {
  const ws = await connect(url + "sub");
  ws.binaryType = "arraybuffer";
  const received: string[] = [];
  ws.addEventListener("message", (event) => {
    const data = (event as MessageEvent).data as Message;
    received.push(
      typeof data === "string" ? data : `bin:${decoder.decode(data as unknown as ArrayBuffer)}`,
    );
  });
  return { ws, received };
}

/** What publisher `p` sends as message `n` of a round: every 4th one binary. */
function sendNumbered(pub: WebSocketConnection, p: number, round: string, n: number): string {
  const text = `${round}:p${p}:${n}`;
  if (n % 4 === 0) {
    pub.send(new TextEncoder().encode(text));
    return `bin:${text}`;
  }
  pub.send(text);
  return text;
}

describe("three Sluice processes on one Redis", { skip: skip ?? false }, () => {
  let redis: RedisProcess | null = null;
  after(async () => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    await redis?.stop();
  });

  test("every publish reaches every subscriber once, in order; Redis restart, then recovery", async () => {
    redis = await RedisProcess.start();
    const kinds = runtimes();
    const urls = await Promise.all(kinds.map((kind) => startSluice(kind, redis!.url)));
    const subs: { ws: WebSocketConnection; received: string[] }[] = [];
    for (const url of urls) subs.push(await subscribe(url), await subscribe(url));
    const pubs = await Promise.all(urls.map((url) => connect(url + "pub")));
    await until(async () => await numSub(redis!.url) === 3, "three processes subscribed");

    /** Sends `count` numbered messages from each publisher; checks every subscriber. */
    const round = async (name: string, count: number) => {
      const expected: string[][] = pubs.map(() => []);
      for (let n = 0; n < count; n++) {
        pubs.forEach((pub, p) => expected[p].push(sendNumbered(pub, p, name, n)));
      }
      const mine = (m: string) => m.replace(/^bin:/, "").startsWith(`${name}:`);
      await until(
        () => subs.every((s) => s.received.filter(mine).length >= count * pubs.length),
        `round ${name} delivered`,
      );
      await delay(300); // A duplicate would have arrived by now.
      subs.forEach(({ received }, i) => {
        const got = received.filter(mine);
        assert.equal(got.length, count * pubs.length, `subscriber ${i}: each message once`);
        pubs.forEach((_, p) => {
          const from = got.filter((m) => m.includes(`:p${p}:`));
          assert.deepEqual(from, expected[p], `subscriber ${i}: publisher ${p} in order`);
        });
      });
    };

    await within(round("one", 40), 60_000, "round one");

    // Redis goes away: each process keeps serving its own subscribers.
    await redis.stop();
    await delay(300);
    pubs[0].send("outage");
    await until(
      () => subs.slice(0, 2).every((s) => s.received.includes("outage")),
      "local delivery during the outage",
    );
    await redis.restart();
    await until(async () => await numSub(redis!.url) === 3, "resubscribed after the restart");
    // Publish connections may come back a moment after subscriber ones:
    // probe until every publisher reaches every subscriber again.
    await within(
      (async () => {
        for (let k = 0;; k++) {
          pubs.forEach((pub, p) => pub.send(`probe:p${p}:${k}`));
          await delay(100);
          const all = subs.every((s) =>
            pubs.every((_, p) => s.received.some((m) => m.startsWith(`probe:p${p}:`)))
          );
          if (all) break;
        }
      })(),
      20_000,
      "cross-process delivery resumed",
    );
    await within(round("two", 20), 60_000, "round two");
    subs.slice(2).forEach((s) => assert.ok(!s.received.includes("outage"), "lost: at most once"));

    for (const ws of [...pubs, ...subs.map((s) => s.ws)]) ws.close();
    for (const child of children) child.kill("SIGTERM");
  });
});
