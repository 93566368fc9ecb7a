/**
 * `serve({ broker })` against an in-memory broker shared by servers in this
 * process: what the link does (exactly once, type kept, order, topic
 * interest, outages) whatever the broker behind it. Redis itself is tested
 * in redis_*_test.ts.
 */

import assert from "node:assert/strict";
import { describe } from "node:test";
import {
  type Broker,
  type BrokerHealth,
  type BrokerReceiver,
  connect,
  type Message,
  serve,
  type Server,
  type WebSocketConnection,
} from "../../mod.ts";
import { delay, test, within } from "../_watch.ts";

/** A bus between {@linkcode MemoryBroker}s: delivers asynchronously, like a network. */
class MemoryBus {
  readonly brokers = new Set<MemoryBroker>();
  up = true;

  send(topic: string, payload: Uint8Array): void {
    const copy = payload.slice();
    for (const broker of this.brokers) {
      if (broker.topics.has(topic)) queueMicrotask(() => broker.receive(topic, copy));
    }
  }
}

class MemoryBroker implements Broker {
  health: BrokerHealth = "connecting";
  readonly topics = new Set<string>();
  readonly calls: string[] = [];
  #receiver: BrokerReceiver | null = null;
  readonly #bus: MemoryBus;

  constructor(bus: MemoryBus) {
    this.#bus = bus;
  }

  start(receiver: BrokerReceiver): Promise<void> {
    if (!this.#bus.up) return Promise.reject(new Error("memory bus unreachable"));
    this.#receiver = receiver;
    this.#bus.brokers.add(this);
    this.health = "up";
    return Promise.resolve();
  }

  publish(topic: string, payload: Uint8Array): void {
    if (this.health === "up") this.#bus.send(topic, payload);
  }

  subscribe(topic: string): void {
    this.calls.push(`+${topic}`);
    this.topics.add(topic);
  }

  unsubscribe(topic: string): void {
    this.calls.push(`-${topic}`);
    this.topics.delete(topic);
  }

  receive(topic: string, payload: Uint8Array): void {
    if (this.health === "up") this.#receiver?.message(topic, payload);
  }

  setHealth(health: BrokerHealth, error: Error | null): void {
    this.health = health;
    this.#receiver?.health(health, error);
  }

  close(): Promise<void> {
    this.health = "closed";
    this.#bus.brokers.delete(this);
    return Promise.resolve();
  }
}

/** A subscriber client that records what it receives. */
async function subscriber(server: Server, topic: string) {
  const ws = await connect(`${server.url}?topic=${topic}`);
  const received: Message[] = [];
  ws.addEventListener("message", (event) => received.push((event as MessageEvent).data));
  ws.binaryType = "arraybuffer";
  return { ws, received };
}

/** A server whose connections subscribe to `?topic=` and publish what they send. */
function startServer(broker: Broker, events: [BrokerHealth, string | null][] = []) {
  return serve<string>({
    port: 0,
    hostname: "127.0.0.1",
    broker,
    onBrokerHealth: (health, error) => events.push([health, error?.message ?? null]),
    onUpgrade: (request) => ({ data: request.url.searchParams.get("topic") ?? "" }),
  }, {
    open(ws: WebSocketConnection<string>) {
      if (ws.data !== "") ws.subscribe(ws.data);
    },
  });
}

async function until(check: () => boolean, what: string): Promise<void> {
  await within(
    (async () => {
      for (let i = 0; i < 500 && !check(); i++) await delay(10);
      assert.ok(check(), what);
    })(),
    10_000,
    what,
  );
}

describe("serve({ broker }) with an in-memory broker", () => {
  test("a publish reaches every subscriber in both servers exactly once, in order, type kept", async () => {
    const bus = new MemoryBus();
    const a = await startServer(new MemoryBroker(bus));
    const b = await startServer(new MemoryBroker(bus));
    try {
      const subs = [
        await subscriber(a, "t"),
        await subscriber(a, "t"),
        await subscriber(b, "t"),
      ];
      await until(() => a.subscriberCount("t") === 2 && b.subscriberCount("t") === 1, "subs");
      for (let i = 0; i < 100; i++) {
        const server = i % 2 === 0 ? a : b;
        server.publish("t", i % 3 === 0 ? new Uint8Array([i]) : `m${i}`);
      }
      await until(() => subs.every((s) => s.received.length >= 100), "all 100 delivered");
      await delay(50); // Anything extra (a duplicate) would arrive by now.
      const expected = Array.from(
        { length: 100 },
        (_, i) => i % 3 === 0 ? `bin:${i}` : `m${i}`,
      );
      // Per publisher, order is kept; between publishers the broker may interleave.
      for (const { received } of subs) {
        const seen = received.map((m) =>
          typeof m === "string" ? m : `bin:${new Uint8Array(m as unknown as ArrayBuffer)[0]}`
        );
        assert.equal(seen.length, 100, "exactly once each");
        assert.deepEqual([...seen].sort(), [...expected].sort());
        for (const parity of [0, 1]) {
          assert.deepEqual(
            seen.filter((m) => Number(m.replace(/\D/g, "")) % 2 === parity),
            expected.filter((_, i) => i % 2 === parity),
            "publish order per publisher",
          );
        }
      }
      const stats = a.stats().broker!;
      assert.equal(stats.health, "up");
      assert.equal(stats.messagesSent, 50);
      assert.equal(stats.messagesReceived, 50);
      assert.equal(stats.ownEchoesSkipped, 50, "own messages came back and were skipped");
      for (const { ws } of subs) ws.close();
    } finally {
      await a.shutdown();
      await b.shutdown();
    }
  });

  test("the broker is subscribed only to topics with local subscribers", async () => {
    const bus = new MemoryBus();
    const broker = new MemoryBroker(bus);
    const server = await startServer(broker);
    try {
      const one = await subscriber(server, "x");
      const two = await subscriber(server, "x");
      await until(() => server.subscriberCount("x") === 2, "two subscribers");
      assert.deepEqual(broker.calls, ["+x"], "one SUBSCRIBE for two local subscribers");
      one.ws.close();
      await until(() => server.subscriberCount("x") === 1, "one left");
      assert.deepEqual(broker.calls, ["+x"]);
      two.ws.close();
      await until(() => broker.calls.length === 2, "unsubscribed");
      assert.deepEqual(broker.calls, ["+x", "-x"]);
    } finally {
      await server.shutdown();
    }
    assert.equal(broker.health, "closed", "shutdown closes the broker");
  });

  test("an outage: local delivery goes on, health and stats report it, delivery resumes", async () => {
    const bus = new MemoryBus();
    const brokerA = new MemoryBroker(bus);
    const events: [BrokerHealth, string | null][] = [];
    const a = await startServer(brokerA, events);
    const b = await startServer(new MemoryBroker(bus));
    try {
      const local = await subscriber(a, "t");
      const remote = await subscriber(b, "t");
      await until(() => a.subscriberCount("t") === 1 && b.subscriberCount("t") === 1, "subs");
      brokerA.setHealth("down", new Error("connection reset"));
      a.publish("t", "during");
      await until(() => local.received.length === 1, "local delivery during the outage");
      assert.deepEqual(events, [["down", "connection reset"]]);
      const stats = a.stats().broker!;
      assert.equal(stats.health, "down");
      assert.equal(stats.outages, 1);
      assert.equal(stats.lastError, "connection reset");
      brokerA.setHealth("up", null);
      a.publish("t", "after");
      await until(() => remote.received.length === 1, "cross-process delivery resumed");
      assert.deepEqual(
        remote.received,
        ["after"],
        "the message of the outage is lost (at most once)",
      );
      assert.deepEqual(local.received, ["during", "after"]);
      assert.deepEqual(events, [["down", "connection reset"], ["up", null]]);
      local.ws.close();
      remote.ws.close();
    } finally {
      await a.shutdown();
      await b.shutdown();
    }
  });

  test("a broker that cannot start makes serve() fail, and nothing listens", async () => {
    const bus = new MemoryBus();
    bus.up = false;
    await assert.rejects(startServer(new MemoryBroker(bus)), /memory bus unreachable/);
  });

  test("a broker that throws does not break publishing", async () => {
    const bus = new MemoryBus();
    const broker = new MemoryBroker(bus);
    broker.publish = () => {
      throw new Error("broker bug");
    };
    const errors: Error[] = [];
    const server = await serve({
      port: 0,
      hostname: "127.0.0.1",
      broker,
      onError: (error) => errors.push(error),
    }, (ws) => ws.subscribe("t"));
    try {
      const { ws, received } = await subscriber(server, "t");
      await until(() => server.subscriberCount("t") === 1, "subscribed");
      assert.equal(server.publish("t", "still here"), 1);
      await until(() => received.length === 1, "delivered locally");
      assert.match(errors[0]?.message ?? "", /broker bug/);
      ws.close();
    } finally {
      await server.shutdown();
    }
  });
});
