/**
 * Which npm Redis client the Redis broker uses: `redis` (node-redis) and
 * `ioredis` measured on the runtime running this file, plus Bun's built-in
 * `Bun.RedisClient` on Bun. Two things matter to a broker:
 *
 * - throughput: PUBLISH of 64-byte binary payloads, 50 000 of them with at
 *   most 1 000 unanswered, timed until a SUBSCRIBE connection received all;
 * - reconnect: redis-server killed and restarted on the same port while a
 *   subscriber is subscribed: does the client reconnect and resubscribe on
 *   its own, how long until a publish reaches the subscriber again, and what
 *   happens to a publish made during the outage.
 *
 * `ioredis` is not a dependency: `npm install --no-save ioredis` first.
 *
 * ```sh
 * deno run -A bench/redis_clients.ts
 * bun bench/redis_clients.ts
 * ```
 *
 * @module
 */

import { RedisProcess } from "../tests/_redis.ts";

const N = 50_000;
const WINDOW = 1_000;
const payload = new Uint8Array(64).fill(7);

interface Candidate {
  name: string;
  /** Publisher + subscriber pair; `onMessage` gets each payload. */
  open(url: string, onMessage: (data: Uint8Array) => void): Promise<Pair>;
}

interface Pair {
  publish(data: Uint8Array): Promise<unknown>;
  close(): Promise<void>;
}

const candidates: Candidate[] = [
  {
    name: "redis (node-redis, @redis/client)",
    async open(url, onMessage) {
      const { createClient } = await import("@redis/client");
      const reconnectStrategy = (retries: number) => Math.min(50 * 2 ** retries, 1000);
      const pub = createClient({ url, socket: { reconnectStrategy } });
      const sub = createClient({ url, socket: { reconnectStrategy } });
      pub.on("error", () => {});
      sub.on("error", () => {});
      await pub.connect();
      await sub.connect();
      await sub.subscribe("t", (message: Uint8Array) => onMessage(message), true);
      return {
        publish: (data) => pub.publish("t", Buffer.from(data.buffer, data.byteOffset, data.length)),
        close() {
          pub.destroy();
          sub.destroy();
          return Promise.resolve();
        },
      };
    },
  },
  {
    name: "ioredis",
    async open(url, onMessage) {
      const { Redis } = await import("ioredis");
      const retryStrategy = (times: number) => Math.min(50 * 2 ** times, 1000);
      const pub = new Redis(url, { retryStrategy });
      const sub = new Redis(url, { retryStrategy });
      pub.on("error", () => {});
      sub.on("error", () => {});
      sub.on("messageBuffer", (_channel: Uint8Array, message: Uint8Array) => onMessage(message));
      await sub.subscribe("t");
      return {
        publish: (data) => pub.publish("t", Buffer.from(data.buffer, data.byteOffset, data.length)),
        close() {
          pub.disconnect();
          sub.disconnect();
          return Promise.resolve();
        },
      };
    },
  },
];

interface BunRedis {
  connect(): Promise<void>;
  publish(channel: string, message: string): Promise<number>;
  subscribe(channel: string, listener: (message: string) => void): Promise<number>;
  close(): void;
  onclose: ((error: Error) => void) | null;
}
const bunGlobal = (globalThis as {
  Bun?: { RedisClient: new (url: string, options?: object) => BunRedis };
}).Bun;
if (bunGlobal !== undefined) {
  candidates.push({
    name: "Bun.RedisClient",
    async open(url, onMessage) {
      const options = { autoReconnect: true, maxRetries: 100 };
      const pub = new bunGlobal.RedisClient(url, options);
      const sub = new bunGlobal.RedisClient(url, options);
      await pub.connect();
      await sub.connect();
      // Messages arrive as strings: binary payloads would need an encoding.
      const decoder = new TextEncoder();
      await sub.subscribe("t", (message) => onMessage(decoder.encode(message)));
      const text = "x".repeat(64);
      return {
        publish: () => pub.publish("t", text),
        close() {
          pub.close();
          sub.close();
          return Promise.resolve();
        },
      };
    },
  });
}

function sleep(ms: number) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function measure(candidate: Candidate): Promise<string> {
  const redis = await RedisProcess.start();
  let received = 0;
  let wake: (() => void) | null = null;
  const pair = await candidate.open(redis.url, () => {
    received++;
    wake?.();
  });
  try {
    // Throughput.
    const start = performance.now();
    let inFlight = 0;
    let slot: (() => void) | null = null;
    for (let i = 0; i < N; i++) {
      while (inFlight >= WINDOW) await new Promise<void>((r) => (slot = r));
      inFlight++;
      pair.publish(payload).finally(() => {
        inFlight--;
        const s = slot;
        slot = null;
        s?.();
      });
    }
    const deadline = Date.now() + 60_000;
    while (received < N && Date.now() < deadline) {
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 50);
      });
    }
    const seconds = (performance.now() - start) / 1000;
    const got = received;
    const rate = Math.round(got / seconds);
    // Reconnect.
    await redis.stop();
    const during = await Promise.race([
      pair.publish(payload).then(() => "resolved", (e: Error) => `rejected (${e.message})`),
      sleep(500).then(() => "pending after 500 ms"),
    ]);
    await sleep(300);
    await redis.restart();
    const restarted = performance.now();
    const before = received;
    let recovered = "no recovery in 10 s";
    while (performance.now() - restarted < 10_000) {
      pair.publish(payload).catch(() => {});
      await sleep(20);
      if (received > before) {
        recovered = `delivery again ${Math.round(performance.now() - restarted)} ms after restart`;
        break;
      }
    }
    return `${candidate.name}: ${rate.toLocaleString("en")} msg/s (${got}/${N} in ${
      seconds.toFixed(2)
    } s); publish during outage: ${during}; ${recovered}`;
  } finally {
    await pair.close().catch(() => {});
    await redis.stop();
  }
}

const runtime = "Deno" in globalThis ? "Deno" : "Bun";
for (const candidate of candidates) {
  try {
    console.log(`${runtime} ${await measure(candidate)}`);
  } catch (error) {
    console.log(`${runtime} ${candidate.name}: failed: ${(error as Error).message}`);
  }
}
(await import("node:process")).default.exit(0);
