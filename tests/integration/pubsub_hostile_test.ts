/**
 * Pub/sub fan-out and scale-out under hostile use: re-entrancy inside a
 * publish's fan-out, odd topics and payloads, the "latest" policy's memory
 * and ordering (fast-check: random publishes, backlogs and drains on
 * connections with several subscriptions), counters against what the
 * subscribers really got; then the Redis broker: two hubs in one process
 * over separate Redis connections (no echo, every byte value, 1 MiB),
 * Redis killed and restarted with topics changing during the outage,
 * subscribe/unsubscribe churn, a stalled (SIGSTOPped) Redis, and a fake
 * RESP server that splits every reply at random byte boundaries and answers
 * PUBLISH with an error.
 *
 * Runs under both `deno test -A` and `bun test`.
 */

import assert from "node:assert/strict";
import { after, before, describe, test as syncTest } from "node:test";
import { createServer, type Server as NetServer, type Socket } from "node:net";
import process from "node:process";
import fc from "fast-check";
import { createClient } from "@redis/client";
import { PubSub, type PubSubOptions, type SlowPolicy } from "../../src/pubsub.ts";
import type { FanOutTarget } from "../../src/pubsub_port.ts";
import { BrokerLink } from "../../src/broker.ts";
import { RedisBroker } from "../../src/redis_broker.ts";
import { delay, test, within } from "../_watch.ts";
import { RedisProcess, redisSkipReason } from "../_redis.ts";

const decoder = new TextDecoder();

// ---------------------------------------------------------------------------
// A connection as the hub sees it. Frames are parsed here (RFC 6455 §5.2),
// independently of src/. Writes add to bufferedAmount when `grows` is set,
// as a real connection's backlog does.

interface Frame {
  opcode: number;
  payload: Uint8Array;
}

function parseFrame(bytes: Uint8Array): Frame {
  const opcode = bytes[0] & 0x0f;
  assert.equal(bytes[0] & 0x80, 0x80, "FIN");
  assert.equal(bytes[1] & 0x80, 0, "unmasked");
  let length = bytes[1] & 0x7f;
  let at = 2;
  if (length === 126) {
    length = (bytes[2] << 8) | bytes[3];
    at = 4;
  } else if (length === 127) {
    length = Number(new DataView(bytes.buffer, bytes.byteOffset + 2, 8).getBigUint64(0));
    at = 10;
  }
  assert.equal(bytes.length, at + length, "exactly one frame");
  return { opcode, payload: bytes.subarray(at) };
}

class Fake implements FanOutTarget {
  readonly frames: Uint8Array[] = [];
  closed: { code: number; reason: string } | null = null;
  bufferedAmount = 0;
  readonly _compressionKey: string | null = null;
  /** Writes add their size to bufferedAmount. */
  grows: boolean;
  /** Called after each accepted write (to re-enter the hub from a "send"). */
  onWrite: ((frame: Uint8Array) => void) | null = null;
  /** Called by _closeWith (a real connection tells the hub it finished). */
  onClose: (() => void) | null = null;
  readonly name: string;

  constructor(name: string, grows = false) {
    this.name = name;
    this.grows = grows;
  }

  _writeFrame(frame: Uint8Array): boolean {
    if (this.closed !== null) return false;
    this.frames.push(frame);
    if (this.grows) this.bufferedAmount += frame.length;
    this.onWrite?.(frame);
    return true;
  }

  _writeMessage(_data: string | Uint8Array): boolean {
    throw new Error("not used: no compression here");
  }

  _closeWith(code: number, reason: string): void {
    if (this.closed !== null) return;
    this.closed = { code, reason };
    this.onClose?.();
  }

  texts(): string[] {
    return this.frames.map((f) => {
      const frame = parseFrame(f);
      assert.equal(frame.opcode, 1, "text frame");
      return decoder.decode(frame.payload);
    });
  }
}

function hub(options: PubSubOptions<Fake> = {}): PubSub<Fake> {
  return new PubSub<Fake>({ onError: () => {}, ...options });
}

// ---------------------------------------------------------------------------

describe("PubSub: re-entrancy inside a fan-out", () => {
  syncTest('a "close" subscriber finished mid-loop: the others still get the message', () => {
    const h = hub();
    const [a, slow, c] = [new Fake("a"), new Fake("slow"), new Fake("c")];
    // A real connection reports finished() synchronously from its close.
    slow.onClose = () => h.finished(slow);
    h.subscribe(a, "t");
    h.subscribe(slow, "t", { policy: "close", maxBuffered: 10 });
    h.subscribe(c, "t");
    slow.bufferedAmount = 11;
    assert.equal(h.publish("t", "m1"), 2);
    assert.deepEqual(a.texts(), ["m1"]);
    assert.deepEqual(c.texts(), ["m1"]);
    assert.equal(slow.closed?.code, 1008);
    assert.equal(h.subscriberCount("t"), 2);
    assert.equal(h.publish("t", "m2"), 2);
    const s = h.stats();
    assert.equal(s.slowCloses, 1);
    assert.equal(s.messagesDelivered, 4);
    assert.equal(s.subscriptions, 2);
  });

  syncTest(
    "onDrop unsubscribing a later subscriber and publishing: no crash, no stale delivery",
    () => {
      const fast = new Fake("fast");
      const order: string[] = [];
      const h: PubSub<Fake> = hub({
        onDrop: (ws, topic, skipped) => {
          order.push(`${ws.name} skipped ${skipped}`);
          h.unsubscribe(fast, topic); // a later subscriber leaves mid-loop
          h.publish("notices", `${ws.name} missed ${skipped}`); // publish from inside the fan-out
        },
      });
      const dropper = new Fake("dropper");
      const watcher = new Fake("watcher");
      h.subscribe(dropper, "t", { maxBuffered: 0 });
      h.subscribe(fast, "t");
      h.subscribe(watcher, "notices");
      dropper.bufferedAmount = 1;
      h.publish("t", "m1"); // dropped for dropper
      dropper.bufferedAmount = 0;
      assert.equal(h.publish("t", "m2"), 1, "dropper only: fast left during the loop");
      assert.deepEqual(dropper.texts(), ["m2"]);
      assert.deepEqual(fast.texts(), ["m1"], "unsubscribed mid-loop: not delivered");
      assert.deepEqual(watcher.texts(), ["dropper missed 1"]);
      assert.deepEqual(order, ["dropper skipped 1"]);
      assert.equal(h.stats().messagesDropped, 1);
    },
  );

  syncTest(
    "a subscriber whose send fails is not counted; a write that re-enters publish keeps order",
    () => {
      const h = hub();
      const dead = new Fake("dead");
      dead.closed = { code: 1006, reason: "" }; // _writeFrame returns false
      const echo = new Fake("echo");
      const other = new Fake("other");
      // A "send" that publishes to another topic (what a relay or handler might do).
      let depth = 0;
      echo.onWrite = (frame) => {
        if (depth++ === 0) h.publish("u", `re:${decoder.decode(parseFrame(frame).payload)}`);
        depth--;
      };
      h.subscribe(dead, "t");
      h.subscribe(echo, "t");
      h.subscribe(other, "t");
      h.subscribe(other, "u");
      assert.equal(h.publish("t", "x"), 2);
      assert.deepEqual(other.texts(), ["re:x", "x"]);
      assert.equal(h.stats().messagesDelivered, 3);
    },
  );

  syncTest("a publish made before the hub hears of the drain sends held values first", () => {
    const h = hub();
    const ws = new Fake("ws");
    h.subscribe(ws, "p", { policy: "latest", key: (d) => String(d).split(" ")[0], maxBuffered: 0 });
    ws.bufferedAmount = 5;
    h.publish("p", "A 1");
    h.publish("p", "B 1");
    h.publish("p", "A 2");
    ws.bufferedAmount = 0;
    // Publishing from a drain handler before the hub's own drained():
    h.publish("p", "A 3");
    h.drained(ws);
    assert.deepEqual(ws.texts(), ["A 2", "B 1", "A 3"]);
    assert.equal(h.stats().messagesConflated, 1);
  });
});

describe("PubSub: odd topics and payloads", () => {
  syncTest("empty, 1 MB, lone-surrogate topics; non-string topics are TypeErrors", () => {
    const h = hub();
    const ws = new Fake("ws");
    const long = "x".repeat(1 << 20);
    const lone = "\uD800";
    h.subscribe(ws, "");
    h.subscribe(ws, long, { policy: "close", maxBuffered: 0 });
    h.subscribe(ws, lone);
    h.publish("", "empty topic");
    h.publish(lone, "lone topic");
    assert.equal(h.publish("\uDC00", "other lone"), 0, "distinct topic");
    assert.deepEqual(ws.texts(), ["empty topic", "lone topic"]);
    for (const bad of [1, null, undefined, Symbol("t"), {}, ["t"]]) {
      assert.throws(() => h.subscribe(ws, bad as unknown as string), TypeError);
      assert.throws(() => h.publish(bad as unknown as string, "x"), TypeError);
    }
    assert.equal(h.stats().messagesPublished, 3, "rejected publishes are not counted");
    ws.bufferedAmount = 1;
    h.publish(long, "too slow");
    assert.equal(ws.closed?.code, 1008);
    assert.ok(new TextEncoder().encode(ws.closed!.reason).length <= 123);
  });

  syncTest("100 000 topics on one connection: all forgotten when it finishes", () => {
    const h = hub();
    const ws = new Fake("ws");
    for (let i = 0; i < 100_000; i++) h.subscribe(ws, `t${i}`);
    assert.equal(h.stats().subscriptions, 100_000);
    h.publish("t99999", "last");
    h.finished(ws);
    h.subscribe(ws, "late"); // ignored after finished
    const s = h.stats();
    assert.equal(s.topics, 0);
    assert.equal(s.subscriptions, 0);
    assert.equal(s.connections, 0);
    assert.deepEqual(ws.texts(), ["last"]);
  });

  syncTest(
    "empty payloads, DataView slices, lone surrogates; held copies survive buffer reuse",
    () => {
      const h = hub();
      const ws = new Fake("ws");
      h.subscribe(ws, "t", { policy: "latest", key: (d) => typeof d === "string" ? "s" : "b" });
      h.publish("t", "");
      h.publish("t", new Uint8Array(0));
      h.publish("t", new ArrayBuffer(0));
      h.publish("t", "a\uD800b");
      const backing = new Uint8Array([9, 1, 2, 3, 9]);
      ws.bufferedAmount = 2 << 20; // slow: held
      h.publish("t", new DataView(backing.buffer, 1, 3));
      backing.fill(0); // the publisher reuses its buffer
      ws.bufferedAmount = 0;
      h.drained(ws);
      const frames = ws.frames.map(parseFrame);
      assert.deepEqual(frames.map((f) => f.opcode), [1, 2, 2, 1, 2]);
      assert.deepEqual(frames.map((f) => f.payload.length), [0, 0, 0, 5, 3]);
      assert.equal(decoder.decode(frames[3].payload), "a\uFFFDb", "lone surrogate as U+FFFD");
      assert.deepEqual([...frames[4].payload], [1, 2, 3]);
      assert.equal(h.stats().bytesPublished, 8);
    },
  );
});

describe('PubSub: the "latest" policy', () => {
  syncTest(
    '"latest" with two subscriptions of different maxBuffered: a held value is never overtaken',
    () => {
      // Regression: #flushHeld stopped at the first held entry whose own subscription
      // was still slow, so a later entry of a subscription that is no longer slow
      // stays held while #deliver writes that subscription's newer message:
      // the subscriber gets b2 and then the stale b1 (ends on the old value).
      const h = hub();
      const ws = new Fake("ws");
      h.subscribe(ws, "a", { policy: "latest", maxBuffered: 0 });
      h.subscribe(ws, "b", { policy: "latest", maxBuffered: 10 });
      ws.bufferedAmount = 20; // slow for both
      h.publish("a", "a1");
      h.publish("b", "b1");
      ws.bufferedAmount = 5; // still slow for "a", no longer for "b"
      h.publish("b", "b2");
      ws.bufferedAmount = 0;
      h.drained(ws);
      const b = ws.texts().filter((m) => m.startsWith("b"));
      assert.equal(b.at(-1), "b2", `b1 must not arrive after b2 (got ${b})`);
      assert.ok(b.length <= 2 && (b.length === 1 || b[0] === "b1"), String(b));
      assert.deepEqual(ws.texts().filter((m) => m.startsWith("a")), ["a1"]);
    },
  );

  syncTest('"latest" with a new key per message: held memory stays bounded while slow', () => {
    // Regression: every distinct key got its own held slot, with no limit, so a
    // key function that returns a new key per message (an id, a timestamp)
    // turned the policy into an unbounded queue.
    const h = hub();
    const ws = new Fake("ws");
    const maxBuffered = 4096;
    h.subscribe(ws, "t", { policy: "latest", key: (d) => String(d), maxBuffered });
    ws.bufferedAmount = maxBuffered + 1;
    const n = 50_000;
    for (let i = 0; i < n; i++) h.publish("t", `message ${String(i).padStart(24, "0")}`);
    ws.bufferedAmount = 0;
    h.drained(ws);
    const heldBytes = ws.frames.reduce((sum, f) => sum + f.length, 0);
    assert.ok(
      heldBytes <= 1024 * 1024,
      `${ws.frames.length} messages (${heldBytes} bytes) were held for one slow subscriber ` +
        `with maxBuffered ${maxBuffered}`,
    );
  });

  syncTest(
    "fast-check: per-key order, convergence and counters across policies, backlogs and drains",
    () => {
      const TOPICS = ["t0", "t1", "t2"];
      const KEYS = ["k0", "k1", "k2"];
      type Op =
        | { kind: "pub"; topic: number; key: number; by: number }
        | { kind: "backlog"; conn: number; bytes: number }
        | { kind: "drain"; conn: number };
      const op: fc.Arbitrary<Op> = fc.oneof(
        {
          weight: 6,
          arbitrary: fc.record({
            kind: fc.constant("pub" as const),
            topic: fc.nat(2),
            key: fc.nat(2),
            by: fc.nat(2),
          }),
        },
        {
          weight: 2,
          arbitrary: fc.record({
            kind: fc.constant("backlog" as const),
            conn: fc.nat(1),
            bytes: fc.nat(80),
          }),
        },
        {
          weight: 2,
          arbitrary: fc.record({ kind: fc.constant("drain" as const), conn: fc.nat(1) }),
        },
      );
      const subSpec = fc.record({
        policy: fc.constantFrom<SlowPolicy>("drop", "latest"),
        maxBuffered: fc.constantFrom(0, 10, 30, 60),
      });
      fc.assert(
        fc.property(
          fc.array(fc.array(subSpec, { minLength: 3, maxLength: 3 }), {
            minLength: 2,
            maxLength: 2,
          }),
          fc.array(op, { maxLength: 120, size: "max" }),
          (specs, ops) => {
            const h = hub();
            const conns = [new Fake("c0", true), new Fake("c1", true)];
            specs.forEach((perTopic, c) =>
              perTopic.forEach((spec, t) =>
                h.subscribe(conns[c], TOPICS[t], {
                  ...spec,
                  key: (d) => String(d).split("|")[1],
                })
              )
            );
            // Per connection: topic|key -> the last seq published to it.
            const last = [new Map<string, number>(), new Map<string, number>()];
            let seq = 0;
            let reached = 0; // subscriber-messages the publishes addressed
            for (const o of ops) {
              if (o.kind === "pub") {
                seq++;
                const topic = TOPICS[o.topic];
                const key = KEYS[o.key];
                // by: 0 = server, 1/2 = a connection publishing to the others.
                const exclude = o.by === 0 ? undefined : conns[o.by - 1];
                conns.forEach((c, i) => c !== exclude && last[i].set(`${topic}|${key}`, seq));
                reached += conns.filter((c) => c !== exclude).length;
                h.publish(topic, `${topic}|${key}|${seq}`, { exclude });
              } else if (o.kind === "backlog") {
                conns[o.conn].bufferedAmount = o.bytes;
              } else {
                conns[o.conn].bufferedAmount = 0;
                h.drained(conns[o.conn]);
              }
            }
            // Drain everything, as the socket eventually would.
            for (let round = 0; round < 1000; round++) {
              for (const c of conns) {
                c.bufferedAmount = 0;
                h.drained(c);
              }
            }
            let frames = 0;
            for (const [c, ws] of conns.entries()) {
              frames += ws.frames.length;
              const got = ws.texts().map((m) => m.split("|"));
              for (const [t, topic] of TOPICS.entries()) {
                const mine = got.filter((m) => m[0] === topic);
                const spec = specs[c][t];
                if (spec.policy === "drop") {
                  const seqs = mine.map((m) => Number(m[2]));
                  assert.deepEqual(
                    seqs,
                    [...seqs].sort((x, y) => x - y),
                    `${ws.name} ${topic} in order`,
                  );
                }
                for (const key of KEYS) {
                  const seqs = mine.filter((m) => m[1] === key).map((m) => Number(m[2]));
                  assert.deepEqual(
                    seqs,
                    [...new Set(seqs)].sort((x, y) => x - y),
                    `${ws.name} ${topic} ${key}: increasing, no duplicates (${spec.policy} ${spec.maxBuffered})`,
                  );
                  const newest = last[c].get(`${topic}|${key}`);
                  if (spec.policy === "latest" && newest !== undefined) {
                    assert.equal(
                      seqs.at(-1),
                      newest,
                      `${ws.name} ${topic} ${key}: ends on the newest`,
                    );
                  }
                }
              }
            }
            const s = h.stats();
            assert.equal(s.messagesDelivered, frames, "messagesDelivered = frames received");
            assert.equal(s.messagesDropped, h.droppedFor(conns[0]) + h.droppedFor(conns[1]));
            assert.equal(
              reached,
              s.messagesDelivered + s.messagesDropped + s.messagesConflated,
              "every addressed message was delivered, dropped or conflated",
            );
          },
        ),
        {
          numRuns: 1000,
          seed: 1234,
          examples: [[
            [
              [{ policy: "latest", maxBuffered: 0 }, { policy: "latest", maxBuffered: 30 }, {
                policy: "drop",
                maxBuffered: 0,
              }],
              [{ policy: "drop", maxBuffered: 0 }, { policy: "drop", maxBuffered: 0 }, {
                policy: "drop",
                maxBuffered: 0,
              }],
            ],
            [
              { kind: "backlog", conn: 0, bytes: 40 },
              { kind: "pub", topic: 0, key: 0, by: 0 },
              { kind: "pub", topic: 1, key: 0, by: 0 },
              { kind: "backlog", conn: 0, bytes: 20 },
              { kind: "pub", topic: 1, key: 0, by: 0 },
            ],
          ]],
        },
      );
    },
  );
});

// ---------------------------------------------------------------------------
// The Redis broker.

const skip = redisSkipReason();

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

/** A hub with its own RedisBroker connection (a "process"), and subscribers that record. */
class Node {
  readonly hub = hub();
  readonly broker: RedisBroker;
  readonly link: BrokerLink;
  readonly errors: Error[] = [];

  constructor(url: string, startDegraded = false) {
    this.broker = new RedisBroker({
      url,
      startDegraded,
      minReconnectDelay: 20,
      maxReconnectDelay: 200,
    });
    this.link = new BrokerLink(this.broker, { onError: (e) => this.errors.push(e) });
  }

  async start(): Promise<this> {
    await this.link.start();
    this.link.attach(this.hub);
    return this;
  }

  subscriber(name: string, ...topics: string[]): Fake {
    const ws = new Fake(name);
    for (const topic of topics) this.hub.subscribe(ws, topic);
    return ws;
  }

  close(): Promise<void> {
    return this.link.close();
  }
}

describe("RedisBroker: hostile", { skip: skip ?? false }, () => {
  let redis: RedisProcess;
  before(async () => {
    redis = await RedisProcess.start();
  });
  after(async () => {
    if (redis?.pid !== undefined) {
      try {
        process.kill(redis.pid, "SIGCONT");
      } catch {
        // Gone.
      }
    }
    await redis?.stop();
  });

  test("two hubs on separate connections: once each, no echo, every byte value, 1 MiB, text kept", async () => {
    const a = await new Node(redis.url).start();
    const b = await new Node(redis.url).start();
    try {
      const atA = a.subscriber("atA", "bin", "");
      const atB = b.subscriber("atB", "bin", "");
      await until(async () => await numSub(redis.url, "sluice:bin") === 2, "subscribed");
      await until(async () => await numSub(redis.url, "sluice:") === 2, "empty topic subscribed");
      const every = new Uint8Array(512).map((_, i) => i & 0xff);
      const big = new Uint8Array(1 << 20).map((_, i) => (i * 131 + 7) & 0xff);
      a.hub.publish("bin", every);
      a.hub.publish("bin", new Uint8Array(0));
      b.hub.publish("bin", big);
      a.hub.publish("", "a\uD800 é 😀");
      await until(
        () => atA.frames.length === 4 && atB.frames.length === 4,
        "delivered in both",
      );
      await delay(200); // an echo or duplicate would arrive by now
      for (const ws of [atA, atB]) {
        assert.equal(ws.frames.length, 4, `${ws.name}: each message once`);
        const frames = ws.frames.map(parseFrame);
        const binaries = frames.filter((f) => f.opcode === 2).map((f) => f.payload);
        const texts = frames.filter((f) => f.opcode === 1).map((f) => decoder.decode(f.payload));
        assert.deepEqual(texts, ["a\uFFFD é 😀"]);
        assert.equal(binaries.length, 3);
        assert.deepEqual(binaries.find((p) => p.length === 512), every);
        assert.deepEqual(binaries.find((p) => p.length === big.length), big);
        assert.ok(binaries.some((p) => p.length === 0));
      }
      // Order per publisher and topic: a's two "bin" messages in publish order at b.
      const atBbin = atB.frames.map(parseFrame).filter((f) => f.opcode === 2).map((f) =>
        f.payload.length
      );
      assert.ok(atBbin.indexOf(512) < atBbin.indexOf(0), String(atBbin));
      assert.equal(a.link.stats().ownEchoesSkipped, 3);
      assert.equal(b.link.stats().messagesReceived, 3);
      assert.equal(a.link.stats().messagesReceived, 1);
      assert.deepEqual([...a.errors, ...b.errors], []);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("topics with lone surrogates stay distinct and are delivered across processes", async () => {
    // Regression: topics are exact strings locally ("\uD800" and "\uDC00" are two
    // topics), but RedisBroker names the channel `prefix + topic` and node-redis
    // sends it as UTF-8, where both become U+FFFD: Redis's message comes back
    // on "sluice:\uFFFD", which matches no listener, so it is never delivered.
    const a = await new Node(redis.url).start();
    const b = await new Node(redis.url).start();
    try {
      const high = a.subscriber("high", "\uD800");
      const low = a.subscriber("low", "\uDC00");
      const plain = a.subscriber("plain", "ok");
      await until(async () => await numSub(redis.url, "sluice:ok") === 1, "subscribed");
      await delay(100);
      b.hub.publish("\uD800", "to high");
      b.hub.publish("ok", "sentinel"); // after it in the same connection's order
      await until(() => plain.frames.length === 1, "sentinel delivered");
      await delay(100);
      assert.deepEqual(low.texts(), [], "no cross-talk between distinct topics");
      assert.deepEqual(high.texts(), ["to high"], "delivered to its own topic");
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("subscribe/unsubscribe churn on one topic ends in the right Redis subscription", async () => {
    const a = await new Node(redis.url).start();
    const b = await new Node(redis.url).start();
    try {
      const ws = new Fake("ws");
      for (let i = 0; i < 200; i++) {
        a.hub.subscribe(ws, "churn");
        a.hub.unsubscribe(ws, "churn");
        if (i % 7 === 0) await delay(0);
      }
      a.hub.subscribe(ws, "churn");
      await until(async () => await numSub(redis.url, "sluice:churn") === 1, "subscribed once");
      b.hub.publish("churn", "after churn");
      await until(() => ws.frames.length === 1, "delivered");
      a.hub.unsubscribe(ws, "churn");
      await until(async () => await numSub(redis.url, "sluice:churn") === 0, "unsubscribed");
      assert.equal(a.link.stats().topics, 0);
    } finally {
      await a.close();
      await b.close();
    }
  });

  test("killed and restarted: topics changed during the outage are right after it, outage publishes counted", async () => {
    const a = await new Node(redis.url).start();
    const b = await new Node(redis.url).start();
    try {
      const keep = a.subscriber("keep", "keep");
      const gone = a.subscriber("gone", "gone");
      await until(async () => await numSub(redis.url, "sluice:gone") === 1, "subscribed");
      await redis.stop();
      await until(() => a.broker.health === "down" && b.broker.health === "down", "down");
      // During the outage: one topic added, one removed; publishes go nowhere.
      const added = a.subscriber("added", "added");
      a.hub.unsubscribe(gone, "gone");
      for (let i = 0; i < 100; i++) b.hub.publish("keep", `lost ${i}`);
      assert.equal(b.broker.unsent, 100, "outage publishes dropped and counted");
      assert.equal(b.link.stats().messagesSent, 100);
      await redis.restart();
      await until(() => a.broker.health === "up" && b.broker.health === "up", "up again");
      await until(
        async () => await numSub(redis.url, "sluice:added") === 1,
        "added topic subscribed",
      );
      await until(
        async () => await numSub(redis.url, "sluice:keep") === 1,
        "kept topic resubscribed",
      );
      assert.equal(await numSub(redis.url, "sluice:gone"), 0, "removed topic not resubscribed");
      b.hub.publish("keep", "after");
      b.hub.publish("added", "new topic");
      b.hub.publish("gone", "not for a");
      await until(() => keep.frames.length === 1 && added.frames.length === 1, "delivered");
      await delay(100);
      assert.deepEqual(keep.texts(), ["after"]);
      assert.deepEqual(added.texts(), ["new topic"]);
      assert.deepEqual(gone.texts(), []);
      assert.equal(a.link.stats().outages, 1);
    } finally {
      await a.close();
      await b.close();
      if (redis.pid === undefined) await redis.restart();
    }
  });

  test("a stalled Redis (SIGSTOP): publishes are not queued without bound", async () => {
    // Regression: RedisBroker.publish only checked pub.isReady. A Redis that stops
    // reading (stalled process, half-dead network path) keeps the connection
    // "ready", so every publish goes into node-redis's command queue and
    // socket buffer: memory grows with the publish rate and nothing is
    // counted in `unsent`, contrary to "Publishes are not queued during an
    // outage (memory stays bounded)".
    const a = await new Node(redis.url).start();
    const pid = redis.pid!;
    try {
      const payload = new Uint8Array(64 * 1024).fill(7);
      process.kill(pid, "SIGSTOP");
      await delay(50);
      const total = 1024; // 64 MiB handed to a Redis that reads nothing
      for (let i = 0; i < total; i++) {
        a.hub.publish("stalled", payload);
        if (i % 64 === 0) await delay(1);
      }
      await delay(200);
      const unsent = a.broker.unsent;
      process.kill(pid, "SIGCONT");
      assert.ok(
        unsent > 0,
        `${total} publishes of 64 KiB (64 MiB) to a stalled Redis: ${unsent} dropped, ` +
          "all the rest sit in memory",
      );
    } finally {
      try {
        process.kill(pid, "SIGCONT");
      } catch {
        // Gone.
      }
      await within(a.close(), 10_000, "close after the stall");
    }
  });
});

// ---------------------------------------------------------------------------
// A fake Redis: enough RESP3 for node-redis's handshake, SUBSCRIBE, PUBLISH;
// every reply is written in pieces split at the given byte boundaries, each
// piece in its own TCP write after a pause.

function bulk(data: Uint8Array | string): Uint8Array {
  const body = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const head = new TextEncoder().encode(`$${body.length}\r\n`);
  const out = new Uint8Array(head.length + body.length + 2);
  out.set(head);
  out.set(body, head.length);
  out.set([13, 10], head.length + body.length);
  return out;
}

/** A RESP3 push (node-redis speaks RESP3: HELLO 3). */
function push(items: Uint8Array[]): Uint8Array {
  const head = new TextEncoder().encode(`>${items.length}\r\n`);
  const total = items.reduce((n, i) => n + i.length, head.length);
  const out = new Uint8Array(total);
  out.set(head);
  let at = head.length;
  for (const i of items) {
    out.set(i, at);
    at += i.length;
  }
  return out;
}

const line = (text: string) => new TextEncoder().encode(text + "\r\n");

/** Parses complete RESP arrays of bulk strings (what clients send) from `buffer`. */
function parseCommands(buffer: Uint8Array): { commands: Uint8Array[][]; rest: Uint8Array } {
  const commands: Uint8Array[][] = [];
  let at = 0;
  const readLine = (from: number): [string, number] | null => {
    for (let i = from; i + 1 < buffer.length; i++) {
      if (buffer[i] === 13 && buffer[i + 1] === 10) {
        return [decoder.decode(buffer.subarray(from, i)), i + 2];
      }
    }
    return null;
  };
  outer: while (at < buffer.length) {
    const head = readLine(at);
    if (head === null) break;
    assert.equal(head[0][0], "*", "clients send arrays");
    const n = Number(head[0].slice(1));
    let p = head[1];
    const args: Uint8Array[] = [];
    for (let i = 0; i < n; i++) {
      const len = readLine(p);
      if (len === null) break outer;
      const size = Number(len[0].slice(1));
      if (len[1] + size + 2 > buffer.length) break outer;
      args.push(buffer.slice(len[1], len[1] + size));
      p = len[1] + size + 2;
    }
    commands.push(args);
    at = p;
  }
  return { commands, rest: buffer.slice(at) };
}

class FakeRedis {
  readonly server: NetServer;
  readonly sockets = new Set<Socket>();
  readonly subscribers = new Map<Socket, Set<string>>();
  /** Where to cut each reply (byte offsets, applied modulo the reply length). */
  cuts: (length: number) => number[] = () => [];
  publishError: string | null = null;
  readonly published: Uint8Array[] = [];
  #chain = Promise.resolve();

  constructor() {
    this.server = createServer((socket) => this.#serve(socket));
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const address = this.server.address();
    return `redis://127.0.0.1:${
      typeof address === "object" && address !== null ? address.port : 0
    }`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Writes `reply` in pieces; replies on all sockets keep one global order. */
  send(socket: Socket, reply: Uint8Array): Promise<void> {
    const cuts = [...new Set(this.cuts(reply.length).map((c) => c % reply.length))]
      .filter((c) => c > 0)
      .sort((x, y) => x - y);
    this.#chain = this.#chain.then(async () => {
      let from = 0;
      for (const cut of [...cuts, reply.length]) {
        if (socket.destroyed) return;
        socket.write(reply.slice(from, cut));
        from = cut;
        if (cut !== reply.length) await delay(1);
      }
    });
    return this.#chain;
  }

  #serve(socket: Socket): void {
    socket.setNoDelay(true);
    this.sockets.add(socket);
    socket.on("close", () => {
      this.sockets.delete(socket);
      this.subscribers.delete(socket);
    });
    socket.on("error", () => {});
    let pending: Uint8Array = new Uint8Array(0);
    socket.on("data", (chunk: Uint8Array) => {
      const joined = new Uint8Array(pending.length + chunk.length);
      joined.set(pending);
      joined.set(chunk, pending.length);
      const { commands, rest } = parseCommands(joined);
      pending = rest;
      for (const args of commands) this.#command(socket, args);
    });
  }

  #command(socket: Socket, args: Uint8Array[]): void {
    const name = decoder.decode(args[0]).toUpperCase();
    if (name === "SUBSCRIBE" || name === "UNSUBSCRIBE") {
      const set = this.subscribers.get(socket) ?? new Set<string>();
      this.subscribers.set(socket, set);
      for (const channel of args.slice(1)) {
        const c = decoder.decode(channel);
        if (name === "SUBSCRIBE") set.add(c);
        else set.delete(c);
        void this.send(
          socket,
          push([bulk(name.toLowerCase()), bulk(channel), line(`:${set.size}`)]),
        );
      }
    } else if (name === "PUBLISH") {
      if (this.publishError !== null) {
        void this.send(socket, line(`-${this.publishError}`));
        return;
      }
      const channel = decoder.decode(args[1]);
      this.published.push(args[2]);
      let n = 0;
      for (const [s, set] of this.subscribers) {
        if (!set.has(channel)) continue;
        n++;
        void this.send(s, push([bulk("message"), bulk(args[1]), bulk(args[2])]));
      }
      void this.send(socket, line(`:${n}`));
    } else if (name === "PING") {
      void this.send(socket, line("+PONG"));
    } else if (name === "HELLO") {
      void this.send(socket, line("%2\r\n+server\r\n+redis\r\n+proto\r\n:3"));
    } else {
      void this.send(socket, line("+OK")); // CLIENT SETINFO, SELECT, QUIT...
    }
  }
}

describe("RedisBroker against a fake RESP server", () => {
  test("replies split at random byte boundaries (every boundary for one run) deliver each message intact", async () => {
    const fake = new FakeRedis();
    const url = await fake.listen();
    const a = new Node(url);
    const b = new Node(url);
    // The handshake (HELLO's map, CLIENT SETINFO) and SUBSCRIBE's push, one byte per write.
    fake.cuts = (length) => Array.from({ length }, (_, k) => k);
    try {
      await within(a.start(), 10_000, "a started");
      await within(b.start(), 10_000, "b started");
      const ws = a.subscriber("ws", "split");
      await until(
        () => [...fake.subscribers.values()].some((s) => s.has("sluice:split")),
        "subscribed",
      );
      const payloads = fc.sample(fc.uint8Array({ maxLength: 40 }), { numRuns: 12, seed: 7 });
      const plans = fc.sample(fc.array(fc.nat(200), { maxLength: 8 }), { numRuns: 12, seed: 8 });
      let i = 0;
      // First message: cut at every byte boundary.
      fake.cuts = (length) =>
        i === 0 ? Array.from({ length }, (_, k) => k) : plans[i % plans.length];
      for (; i < payloads.length; i++) {
        b.hub.publish("split", payloads[i]);
        await until(() => ws.frames.length === i + 1, `message ${i} delivered`);
      }
      assert.deepEqual(ws.frames.map((f) => parseFrame(f).payload), payloads);
      assert.equal(a.broker.health, "up");
      assert.deepEqual([...a.errors, ...b.errors], []);
    } finally {
      await within(a.close(), 5_000, "a closed");
      await within(b.close(), 5_000, "b closed");
      await fake.close();
    }
  });

  test("an error reply to PUBLISH is counted in unsent and does not break the connection", async () => {
    const fake = new FakeRedis();
    const url = await fake.listen();
    const a = new Node(url);
    try {
      await within(a.start(), 10_000, "started");
      const ws = a.subscriber("ws", "t");
      fake.publishError = "NOPERM this user has no permissions to access the channel";
      assert.equal(a.hub.publish("t", "refused"), 1, "local delivery regardless");
      await until(() => a.broker.unsent === 1, "counted as unsent");
      fake.publishError = null;
      a.hub.publish("t", "accepted");
      await until(() => fake.published.length === 1, "next publish reaches Redis");
      assert.equal(a.broker.health, "up");
      assert.deepEqual(ws.texts(), ["refused", "accepted"]);
    } finally {
      await within(a.close(), 5_000, "closed");
      await fake.close();
    }
  });
});
