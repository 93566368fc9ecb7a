/**
 * The pub/sub hub against fake connections: encode-once fan-out (counted
 * encoder calls, identical bytes), shared compression per key, the three
 * slow-subscriber policies, user-code failures, bookkeeping and counters.
 *
 * Frames are read back with a parser written here, and compressed payloads
 * inflated with node:zlib, so the checks do not share code with the hub.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { constants, inflateRawSync } from "node:zlib";
import { Buffer } from "node:buffer";
import { formatPrometheus, PubSub, type PubSubOptions } from "../src/pubsub.ts";
import type { FanOutTarget } from "../src/pubsub_port.ts";
import { pattern, utf8 } from "./_bytes.ts";

const decoder = new TextDecoder();

/** A connection as the hub sees it, recording what it is given. */
class FakeConnection implements FanOutTarget {
  frames: Uint8Array[] = [];
  messages: (string | Uint8Array)[] = [];
  closed: { code: number; reason: string } | null = null;
  bufferedAmount = 0;
  _compressionKey: string | null;
  readonly name: string;

  constructor(name = "ws", compressionKey: string | null = null) {
    this.name = name;
    this._compressionKey = compressionKey;
  }

  _writeFrame(frame: Uint8Array): boolean {
    if (this.closed !== null) return false;
    this.frames.push(frame);
    return true;
  }

  _writeMessage(data: string | Uint8Array): boolean {
    if (this.closed !== null) return false;
    this.messages.push(data);
    return true;
  }

  _closeWith(code: number, reason: string): void {
    this.closed ??= { code, reason };
  }

  /** The text of every frame received, in order (asserting each is one unmasked text frame). */
  texts(): string[] {
    return this.frames.map((frame) => {
      const parsed = parseFrame(frame);
      assert.equal(parsed.opcode, 0x1);
      assert.equal(parsed.rsv1, false);
      return decoder.decode(parsed.payload);
    });
  }
}

interface ParsedFrame {
  fin: boolean;
  rsv1: boolean;
  opcode: number;
  payload: Uint8Array;
}

/** Parses exactly one whole unmasked frame (RFC 6455 §5.2), written independently of src/. */
function parseFrame(bytes: Uint8Array): ParsedFrame {
  const fin = (bytes[0] & 0x80) !== 0;
  const rsv1 = (bytes[0] & 0x40) !== 0;
  const opcode = bytes[0] & 0x0f;
  assert.equal(bytes[1] & 0x80, 0, "server frames are unmasked");
  let length = bytes[1] & 0x7f;
  let at = 2;
  if (length === 126) {
    length = (bytes[2] << 8) | bytes[3];
    at = 4;
  } else if (length === 127) {
    length = 0;
    for (let i = 2; i < 10; i++) length = length * 256 + bytes[i];
    at = 10;
  }
  assert.equal(bytes.length, at + length, "one whole frame, nothing after it");
  return { fin, rsv1, opcode, payload: bytes.subarray(at) };
}

/** Inflates a permessage-deflate payload (RFC 7692 §7.2.2) with node:zlib. */
function inflate(payload: Uint8Array): Uint8Array {
  const input = Buffer.concat([payload, Buffer.from([0x00, 0x00, 0xff, 0xff])]);
  return new Uint8Array(inflateRawSync(input, { finishFlush: constants.Z_SYNC_FLUSH }));
}

function hubWith<T extends FanOutTarget>(options: PubSubOptions<T> = {}): PubSub<T> {
  return new PubSub<T>({ onError: () => {}, ...options });
}

describe("encode once", () => {
  test("one publish to 1000 subscribers frames once and hands each the same bytes", () => {
    const hub = hubWith<FakeConnection>();
    const peers = Array.from({ length: 1000 }, (_, i) => new FakeConnection(`s${i}`));
    for (const ws of peers) hub.subscribe(ws, "room");
    const before = hub._encodings;
    assert.equal(hub.publish("room", "hello"), 1000);
    assert.equal(hub._encodings - before, 1, "one encoder call for 1000 subscribers");
    const first = peers[0].frames[0];
    for (const ws of peers) {
      assert.equal(ws.frames.length, 1);
      assert.equal(ws.frames[0], first, "the very same buffer");
    }
    assert.deepEqual([...first], [0x81, 5, ...utf8("hello")]);
  });

  test("strings go as text, bytes, ArrayBuffers and other views as binary", () => {
    const hub = hubWith<FakeConnection>();
    const ws = new FakeConnection();
    hub.subscribe(ws, "t");
    const bytes = pattern(300);
    hub.publish("t", "é");
    hub.publish("t", bytes);
    hub.publish("t", bytes.slice().buffer);
    hub.publish("t", new DataView(bytes.buffer, 10, 20));
    hub.publish("t", new Uint16Array([1, 2]));
    const parsed = ws.frames.map(parseFrame);
    assert.deepEqual(parsed.map((f) => f.opcode), [0x1, 0x2, 0x2, 0x2, 0x2]);
    assert.ok(parsed.every((f) => f.fin && !f.rsv1));
    assert.equal(decoder.decode(parsed[0].payload), "é");
    assert.deepEqual(parsed[1].payload, bytes);
    assert.deepEqual(parsed[2].payload, bytes);
    assert.deepEqual(parsed[3].payload, bytes.subarray(10, 30));
    assert.deepEqual(parsed[4].payload, new Uint8Array(new Uint16Array([1, 2]).buffer));
  });

  test("large payloads get the 16- and 64-bit length forms", () => {
    const hub = hubWith<FakeConnection>();
    const ws = new FakeConnection();
    hub.subscribe(ws, "t");
    hub.publish("t", pattern(200));
    hub.publish("t", pattern(70_000));
    assert.equal(ws.frames[0][1], 126);
    assert.equal(ws.frames[1][1], 127);
    assert.deepEqual(parseFrame(ws.frames[1]).payload, pattern(70_000));
  });

  test("compresses once per shared key, per connection only under context takeover", () => {
    const hub = new PubSub<FakeConnection>({}, { threshold: 1024 });
    const plain = new FakeConnection("plain", null);
    const w15 = [1, 2, 3].map((i) => new FakeConnection(`a${i}`, "no-context-takeover:15"));
    const w10 = [1, 2].map((i) => new FakeConnection(`b${i}`, "no-context-takeover:10"));
    const takeover = [1, 2].map((i) => new FakeConnection(`c${i}`, "context-takeover"));
    const all = [plain, ...w15, ...w10, ...takeover];
    for (const ws of all) hub.subscribe(ws, "t");
    const text = "the quick brown fox ".repeat(200); // 4000 bytes, compressible
    const before = hub._encodings;
    assert.equal(hub.publish("t", text), all.length);
    // 1 frame + 1 compression per shared key (2 keys) + 1 per takeover connection (2).
    assert.equal(hub._encodings - before, 5);
    assert.equal(plain.texts()[0], text);
    for (const group of [w15, w10]) {
      for (const ws of group) assert.equal(ws.frames[0], group[0].frames[0], "shared within a key");
      const frame = parseFrame(group[0].frames[0]);
      assert.equal(frame.rsv1, true, "RSV1 marks a compressed message");
      assert.equal(frame.opcode, 0x1);
      assert.ok(frame.payload.length < text.length / 4);
      assert.equal(decoder.decode(inflate(frame.payload)), text);
    }
    assert.notEqual(w15[0].frames[0], w10[0].frames[0]);
    for (const ws of takeover) {
      assert.deepEqual(ws.messages, [text]);
      assert.equal(ws.frames.length, 0);
    }
  });

  test("messages under the threshold share the plain frame with uncompressed connections", () => {
    const hub = new PubSub<FakeConnection>({}, { threshold: 1024 });
    const plain = new FakeConnection("plain", null);
    const shared = new FakeConnection("shared", "no-context-takeover:15");
    hub.subscribe(plain, "t");
    hub.subscribe(shared, "t");
    const before = hub._encodings;
    hub.publish("t", "short");
    assert.equal(hub._encodings - before, 1);
    assert.equal(shared.frames[0], plain.frames[0]);
    assert.equal(parseFrame(shared.frames[0]).rsv1, false);
  });
});

describe("who receives a publish", () => {
  test("exclude skips one connection and the count says how many were reached", () => {
    const hub = hubWith<FakeConnection>();
    const [a, b, c] = [new FakeConnection("a"), new FakeConnection("b"), new FakeConnection("c")];
    for (const ws of [a, b, c]) hub.subscribe(ws, "t");
    assert.equal(hub.publish("t", "x", { exclude: b }), 2);
    assert.deepEqual([a.frames.length, b.frames.length, c.frames.length], [1, 0, 1]);
    assert.equal(hub.publish("nobody", "x"), 0);
  });

  test("closed connections are not counted", () => {
    const hub = hubWith<FakeConnection>();
    const [a, b] = [new FakeConnection("a"), new FakeConnection("b")];
    hub.subscribe(a, "t");
    hub.subscribe(b, "t");
    b.closed = { code: 1000, reason: "" };
    assert.equal(hub.publish("t", "x"), 1);
  });

  test("topics must be strings; data must be a string or bytes", () => {
    const hub = hubWith<FakeConnection>();
    const ws = new FakeConnection();
    assert.throws(() => hub.subscribe(ws, 42 as unknown as string), TypeError);
    assert.throws(() => hub.publish(null as unknown as string, "x"), TypeError);
    assert.throws(() => hub.unsubscribe(ws, {} as unknown as string), TypeError);
    assert.throws(() => hub.publish("t", 5 as unknown as string), TypeError);
    assert.throws(() => hub.subscribe(ws, "t", { policy: "queue" as "drop" }), TypeError);
    assert.throws(() => hub.subscribe(ws, "t", { maxBuffered: -1 }), RangeError);
    assert.throws(
      () => hub.subscribe(ws, "t", { key: "symbol" as unknown as () => string }),
      TypeError,
    );
    assert.throws(() => new PubSub({ policy: "sometimes" as "drop" }), TypeError);
    assert.equal(hub.subscriberCount("t"), 0, "failed subscribes leave nothing behind");
  });

  test("subscribe, unsubscribe, isSubscribed, topicsOf, subscriberCount, topics", () => {
    const hub = hubWith<FakeConnection>();
    const [a, b] = [new FakeConnection("a"), new FakeConnection("b")];
    hub.subscribe(a, "x");
    hub.subscribe(a, "y");
    hub.subscribe(a, "x"); // idempotent
    hub.subscribe(b, "y");
    assert.deepEqual(hub.topicsOf(a), ["x", "y"]);
    assert.deepEqual(hub.topics, ["x", "y"]);
    assert.equal(hub.subscriberCount("y"), 2);
    assert.equal(hub.isSubscribed(b, "x"), false);
    assert.equal(hub.unsubscribe(a, "x"), true);
    assert.equal(hub.unsubscribe(a, "x"), false);
    assert.deepEqual(hub.topics, ["y"]);
    assert.equal(hub.stats().subscriptions, 2);
    hub.finished(a);
    assert.deepEqual(hub.topicsOf(a), []);
    assert.equal(hub.subscriberCount("y"), 1);
    hub.subscribe(a, "y"); // after close: ignored
    assert.equal(hub.subscriberCount("y"), 1);
    hub.finished(b);
    assert.deepEqual(hub.topics, []);
    assert.equal(hub.stats().subscriptions, 0);
  });
});

describe("slow subscribers", () => {
  test('"drop" skips while slow, counts, and reports the gap before the next message', () => {
    const gaps: [string, string, number][] = [];
    const hub = hubWith<FakeConnection>({
      maxBuffered: 100,
      onDrop: (ws, topic, skipped) => {
        gaps.push([ws.name, topic, skipped]);
        ws._writeFrame(utf8(`gap ${skipped}`)); // arrives before the next message
      },
    });
    const [fast, slow] = [new FakeConnection("fast"), new FakeConnection("slow")];
    hub.subscribe(fast, "t");
    hub.subscribe(slow, "t");
    hub.publish("t", "m0");
    slow.bufferedAmount = 101;
    for (let i = 1; i <= 5; i++) assert.equal(hub.publish("t", `m${i}`), 1);
    slow.bufferedAmount = 100; // not above the limit: no longer slow
    hub.publish("t", "m6");
    assert.deepEqual(fast.texts(), ["m0", "m1", "m2", "m3", "m4", "m5", "m6"]);
    assert.equal(slow.frames.length, 3);
    assert.equal(decoder.decode(slow.frames[1]), "gap 5");
    assert.equal(decoder.decode(parseFrame(slow.frames[2]).payload), "m6");
    assert.deepEqual(gaps, [["slow", "t", 5]]);
    assert.equal(hub.droppedFor(slow), 5);
    assert.equal(hub.stats().messagesDropped, 5);
  });

  test('"close" closes with 1008 and a reason naming the topic, at most 123 bytes', () => {
    const hub = hubWith<FakeConnection>({ policy: "close", maxBuffered: 10 });
    const [fast, slow] = [new FakeConnection("fast"), new FakeConnection("slow")];
    const topic = "prices/" + "é".repeat(100);
    hub.subscribe(fast, topic);
    hub.subscribe(slow, topic);
    slow.bufferedAmount = 11;
    assert.equal(hub.publish(topic, "x"), 1);
    assert.equal(slow.closed?.code, 1008);
    assert.ok(slow.closed!.reason.includes("prices/é"));
    assert.ok(utf8(slow.closed!.reason).length <= 123);
    assert.equal(fast.frames.length, 1);
    assert.equal(hub.stats().slowCloses, 1);
    // It is unsubscribed at once: later publishes neither reach nor close it again.
    assert.equal(hub.subscriberCount(topic), 1);
    assert.deepEqual(hub.topicsOf(slow), []);
    slow.closed = null;
    hub.publish(topic, "y");
    assert.equal(slow.closed, null);
    assert.equal(hub.stats().slowCloses, 1);
  });

  test('"latest" holds the newest per key and sends them in first-held-back order', () => {
    const hub = hubWith<FakeConnection>({ maxBuffered: 0 });
    const [fast, slow] = [new FakeConnection("fast"), new FakeConnection("slow")];
    const symbol = (data: string | Uint8Array) => String(data).split("=")[0];
    hub.subscribe(fast, "prices", { policy: "latest", key: symbol });
    hub.subscribe(slow, "prices", { policy: "latest", key: symbol });
    hub.publish("prices", "B=1");
    slow.bufferedAmount = 1;
    const sequence = ["A=1", "B=2", "A=2", "C=1", "B=3", "A=3"];
    for (const m of sequence) assert.equal(hub.publish("prices", m), 2);
    assert.deepEqual(slow.texts(), ["B=1"]);
    assert.equal(hub.stats().messagesConflated, 3);
    slow.bufferedAmount = 0;
    hub.drained(slow);
    assert.deepEqual(slow.texts(), ["B=1", "A=3", "B=3", "C=1"]);
    assert.deepEqual(fast.texts(), ["B=1", ...sequence]);
    hub.drained(slow); // nothing left
    assert.equal(slow.frames.length, 4);
  });

  test('"latest" without a key keeps the newest message of the topic', () => {
    const hub = hubWith<FakeConnection>({ policy: "latest", maxBuffered: 0 });
    const ws = new FakeConnection();
    hub.subscribe(ws, "t");
    ws.bufferedAmount = 5;
    for (let i = 0; i < 10_000; i++) hub.publish("t", `v${i}`);
    assert.equal(ws.frames.length, 0);
    ws.bufferedAmount = 0;
    hub.drained(ws);
    assert.deepEqual(ws.texts(), ["v9999"]);
  });

  test('"latest": a publish after the backlog cleared sends held values first', () => {
    const hub = hubWith<FakeConnection>({ policy: "latest", maxBuffered: 0 });
    const ws = new FakeConnection();
    hub.subscribe(ws, "t");
    ws.bufferedAmount = 5;
    hub.publish("t", "old");
    ws.bufferedAmount = 0; // drained, but no drained() call yet
    hub.publish("t", "new");
    assert.deepEqual(ws.texts(), ["old", "new"]);
  });

  test('"latest": draining stops when the connection is slow again and resumes later', () => {
    const hub = hubWith<FakeConnection>({ policy: "latest", maxBuffered: 10 });
    const ws = new FakeConnection();
    const realWrite = ws._writeFrame.bind(ws);
    ws._writeFrame = (frame) => {
      ws.bufferedAmount += frame.length;
      return realWrite(frame);
    };
    hub.subscribe(ws, "t", { key: (d) => String(d)[0] });
    ws.bufferedAmount = 11;
    for (const m of ["a1", "b1", "c1", "d1"]) hub.publish("t", m);
    ws.bufferedAmount = 0;
    hub.drained(ws); // a1 (4 bytes), b1 (8), c1 (12 > 10): stop
    assert.deepEqual(ws.texts(), ["a1", "b1", "c1"]);
    hub.publish("t", "d2"); // still slow: replaces d1
    ws.bufferedAmount = 0;
    hub.drained(ws);
    assert.deepEqual(ws.texts(), ["a1", "b1", "c1", "d2"]);
  });

  test("policies are per subscription", () => {
    const hub = hubWith<FakeConnection>({ maxBuffered: 0 });
    const ws = new FakeConnection();
    hub.subscribe(ws, "news"); // default "drop"
    hub.subscribe(ws, "prices", { policy: "latest" });
    ws.bufferedAmount = 1;
    hub.publish("news", "n1");
    hub.publish("prices", "p1");
    hub.publish("prices", "p2");
    ws.bufferedAmount = 0;
    hub.drained(ws);
    assert.deepEqual(ws.texts(), ["p2"]);
    assert.equal(hub.droppedFor(ws), 1);
  });

  test("a throwing key closes that connection with 1011, reports, and spares the others", () => {
    const errors: [string, string][] = [];
    const hub = hubWith<FakeConnection>({
      onError: (error, ws) => errors.push([error.message, ws.name]),
    });
    const [bad, fast] = [new FakeConnection("bad"), new FakeConnection("fast")];
    hub.subscribe(bad, "t", {
      policy: "latest",
      maxBuffered: 0,
      key: () => {
        throw new Error("boom");
      },
    });
    hub.subscribe(fast, "t");
    bad.bufferedAmount = 1;
    assert.equal(hub.publish("t", "x"), 1);
    assert.equal(bad.closed?.code, 1011);
    assert.deepEqual(errors, [["boom", "bad"]]);
    assert.equal(fast.frames.length, 1);
  });

  test("a throwing onDrop (and a throwing onError) close only that connection", () => {
    const hub = new PubSub<FakeConnection>({
      maxBuffered: 0,
      onDrop: () => {
        throw new Error("drop handler");
      },
      onError: () => {
        throw new Error("error handler");
      },
    });
    const ws = new FakeConnection();
    hub.subscribe(ws, "t");
    ws.bufferedAmount = 1;
    hub.publish("t", "a");
    ws.bufferedAmount = 0;
    assert.equal(hub.publish("t", "b"), 0);
    assert.equal(ws.closed?.code, 1011);
  });

  test("finished forgets held messages; unsubscribing drops that topic's", () => {
    const hub = hubWith<FakeConnection>({ policy: "latest", maxBuffered: 0 });
    const ws = new FakeConnection();
    hub.subscribe(ws, "a");
    hub.subscribe(ws, "b");
    ws.bufferedAmount = 1;
    hub.publish("a", "a1");
    hub.publish("b", "b1");
    hub.unsubscribe(ws, "a");
    ws.bufferedAmount = 0;
    hub.drained(ws);
    assert.deepEqual(ws.texts(), ["b1"]);
    ws.bufferedAmount = 1;
    hub.publish("b", "b2");
    hub.finished(ws);
    ws.bufferedAmount = 0;
    hub.drained(ws);
    assert.deepEqual(ws.texts(), ["b1"]);
  });
});

describe("counters", () => {
  test("stats count publishes, deliveries, bytes and closes; Prometheus renders them", () => {
    const hub = hubWith<FakeConnection>();
    const [a, b] = [new FakeConnection("a"), new FakeConnection("b")];
    hub.subscribe(a, "t");
    hub.subscribe(b, "t");
    hub.publish("t", "hello"); // 5 bytes, frame 7 bytes, to 2
    hub.publish("u", "nobody");
    hub.recordClose(1000);
    hub.recordClose(1006);
    hub.recordClose(1000);
    const stats = hub.stats(2);
    assert.equal(stats.connections, 2);
    assert.equal(stats.topics, 1);
    assert.equal(stats.subscriptions, 2);
    assert.equal(stats.messagesPublished, 2);
    assert.equal(stats.bytesPublished, 11);
    assert.equal(stats.messagesDelivered, 2);
    assert.equal(stats.bytesDelivered, 14);
    assert.deepEqual(stats.closes, { 1000: 2, 1006: 1 });
    const text = formatPrometheus(stats);
    assert.match(text, /^# HELP sluice_connections /);
    assert.match(text, /\n# TYPE sluice_messages_delivered_total counter\n/);
    assert.match(text, /\nsluice_messages_delivered_total 2\n/);
    assert.match(text, /\nsluice_closes_total\{code="1000"\} 2\n/);
    assert.match(text, /\nsluice_closes_total\{code="1006"\} 1\n$/);
    for (const line of text.trimEnd().split("\n")) {
      assert.match(line, /^(# (HELP|TYPE) sluice_\w+ .+|sluice_\w+(\{code="\d+"\})? \d+)$/);
    }
    assert.doesNotMatch(text, /sluice_broker/, "no broker lines without a broker");
  });

  test("Prometheus renders the broker link's health and counters", () => {
    const stats = hubWith<FakeConnection>().stats(0);
    const broker = {
      health: "down" as const,
      outages: 3,
      messagesSent: 40,
      messagesReceived: 12,
      ownEchoesSkipped: 40,
      malformed: 0,
      topics: 2,
      lastError: "connection refused",
    };
    const down = formatPrometheus({ ...stats, broker });
    assert.match(down, /\nsluice_broker_up 0\n/);
    assert.match(down, /\nsluice_broker_outages_total 3\n/);
    assert.match(down, /\nsluice_broker_messages_sent_total 40\n/);
    assert.match(down, /\nsluice_broker_messages_received_total 12\n/);
    assert.match(down, /\nsluice_broker_topics 2\n/);
    const up = formatPrometheus({ ...stats, broker: { ...broker, health: "up" } });
    assert.match(up, /\nsluice_broker_up 1\n/);
  });
});
