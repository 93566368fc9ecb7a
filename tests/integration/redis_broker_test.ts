/**
 * `RedisBroker` against a real redis-server (started here on a free
 * loopback port, no persistence, stopped by pid): delivery between two
 * servers, Redis unreachable at start (an error, or a degraded start), and
 * Redis killed and restarted mid-run.
 */

import assert from "node:assert/strict";
import { after, before, describe } from "node:test";
import { createClient } from "@redis/client";
import {
  type BrokerHealth,
  connect,
  type Message,
  serve,
  type Server,
  type WebSocketConnection,
} from "../../mod.ts";
import { RedisBroker } from "../../src/redis_broker.ts";
import { delay, test, within } from "../_watch.ts";
import { freePort, RedisProcess, redisSkipReason } from "../_redis.ts";

const skip = redisSkipReason();

/** Subscribers per Redis channel, asked of Redis itself. */
async function numSub(url: string, channel: string): Promise<number> {
  const client = createClient({ url, socket: { reconnectStrategy: false } });
  client.on("error", () => {});
  await client.connect();
  try {
    const reply = await client.sendCommand(["PUBSUB", "NUMSUB", channel]) as unknown[];
    return Number(reply[1]);
  } finally {
    client.destroy();
  }
}

async function until(check: () => boolean | Promise<boolean>, what: string, ms = 15_000) {
  await within(
    (async () => {
      const end = Date.now() + ms - 500;
      while (!(await check())) {
        if (Date.now() > end) assert.fail(`gave up waiting: ${what}`);
        await delay(20);
      }
    })(),
    ms,
    what,
  );
}

function startServer(
  url: string,
  events: BrokerHealth[] = [],
  startDegraded = false,
): Promise<Server> {
  return serve<string>({
    port: 0,
    hostname: "127.0.0.1",
    broker: new RedisBroker({ url, startDegraded, minReconnectDelay: 20, maxReconnectDelay: 200 }),
    onBrokerHealth: (health) => events.push(health),
    onUpgrade: (request) => ({ data: request.url.searchParams.get("topic") ?? "" }),
  }, {
    open(ws: WebSocketConnection<string>) {
      if (ws.data !== "") ws.subscribe(ws.data);
    },
  });
}

async function subscriber(server: Server, topic: string) {
  const ws = await connect(`${server.url}?topic=${topic}`);
  const received: Message[] = [];
  ws.addEventListener("message", (event) => received.push((event as MessageEvent).data));
  return { ws, received };
}

describe("RedisBroker with a real redis-server", { skip: skip ?? false }, () => {
  let redis: RedisProcess;
  before(async () => {
    redis = await RedisProcess.start();
  });
  after(async () => {
    await redis?.stop();
  });

  test("two servers: each publish reaches every subscriber once, text and binary kept", async () => {
    const a = await startServer(redis.url);
    const b = await startServer(redis.url);
    try {
      const subs = [await subscriber(a, "r1"), await subscriber(b, "r1")];
      await until(async () => await numSub(redis.url, "sluice:r1") === 2, "both subscribed");
      a.publish("r1", "from a");
      b.publish("r1", new Uint8Array([1, 2, 3]));
      await until(() => subs.every((s) => s.received.length >= 2), "delivered");
      await delay(100); // a duplicate would arrive by now
      for (const { received } of subs) {
        assert.equal(received.length, 2, "exactly once");
        assert.ok(received.includes("from a"));
        const binary = received.find((m) => typeof m !== "string");
        assert.deepEqual(
          new Uint8Array(binary as unknown as ArrayBuffer),
          new Uint8Array([1, 2, 3]),
        );
      }
      assert.equal(a.stats().broker?.health, "up");
      for (const { ws } of subs) ws.close();
    } finally {
      await a.shutdown();
      await b.shutdown();
    }
  });

  test("unreachable at start: serve() fails with an error naming the URL", async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    await assert.rejects(
      startServer(url),
      (error: Error) => {
        assert.match(error.message, /Cannot reach the Redis broker at redis:\/\/127\.0\.0\.1:\d+/);
        assert.match(error.message, /startDegraded/);
        return true;
      },
    );
  });

  test("startDegraded: serves at once, comes up when Redis does", async () => {
    const late = new RedisProcess(await freePort());
    const events: BrokerHealth[] = [];
    const server = await startServer(late.url, events, true);
    try {
      const { ws, received } = await subscriber(server, "d");
      assert.equal(server.publish("d", "local only"), 1, "local delivery while down");
      await until(() => server.stats().broker?.health === "down", "reported down");
      await late.restart();
      await until(() => server.stats().broker?.health === "up", "up once Redis is");
      await until(async () => await numSub(late.url, "sluice:d") === 1, "subscribed");
      const other = await startServer(late.url);
      other.publish("d", "from elsewhere");
      await until(() => received.length === 2, "cross-process delivery");
      assert.deepEqual(received, ["local only", "from elsewhere"]);
      assert.ok(events.includes("down") && events.at(-1) === "up", String(events));
      ws.close();
      await other.shutdown();
    } finally {
      await server.shutdown();
      await late.stop();
    }
  });

  test("Redis killed and restarted: local delivery goes on, then resubscribed and delivering", async () => {
    const eventsA: BrokerHealth[] = [];
    const a = await startServer(redis.url, eventsA);
    const b = await startServer(redis.url);
    try {
      const atA = await subscriber(a, "k");
      const atB = await subscriber(b, "k");
      await until(async () => await numSub(redis.url, "sluice:k") === 2, "subscribed");
      a.publish("k", "before");
      await until(() => atB.received.length === 1, "before delivered");

      await redis.stop();
      await until(() => a.stats().broker?.health === "down", "a reports down");
      a.publish("k", "during");
      await until(() => atA.received.length === 2, "local delivery during the outage");
      assert.equal(a.stats().broker?.outages, 1);
      assert.match(a.stats().broker?.lastError ?? "", /\w/);

      await redis.restart();
      await until(
        () => a.stats().broker?.health === "up" && b.stats().broker?.health === "up",
        "both up again",
      );
      await until(async () => await numSub(redis.url, "sluice:k") === 2, "resubscribed");
      b.publish("k", "after");
      await until(() => atA.received.length === 3, "delivery resumed");
      assert.deepEqual(atA.received, ["before", "during", "after"]);
      assert.deepEqual(atB.received, ["before", "after"], "lost during the outage: at most once");
      assert.deepEqual(eventsA, ["up", "down", "up"]);
      atA.ws.close();
      atB.ws.close();
    } finally {
      await a.shutdown();
      await b.shutdown();
    }
  });
});
