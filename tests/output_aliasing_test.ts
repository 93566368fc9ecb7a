/**
 * The output path and bytes that change after they were handed out.
 *
 * Sluice shares bytes on its send path instead of copying them: small frames
 * go back to back into a per-connection arena, large server payloads (and
 * received views with room for a header in front) are queued as they are,
 * a pub/sub publish is framed once for every subscriber, and writes that the
 * kernel does not take at once keep pointing at those bytes. These tests pin
 * what that may never break: bytes handed out by `takeOutput()` are final,
 * what `send()` documents as copied is copied (binary payloads up to 16 KiB,
 * everything a client sends), frames never interleave under a slow reader,
 * and every subscriber of one publish gets the same message.
 *
 * Runs under both `deno test -A` and `bun test`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { describe, test as syncTest } from "node:test";
import fc from "fast-check";
import { connect, serve, type Server, type WebSocketConnection } from "../mod.ts";
import { type MessageCodec, WebSocketProtocol } from "../src/protocol/connection.ts";
import { PubSub } from "../src/pubsub.ts";
import { concat, pattern } from "./_bytes.ts";
import { clientFrame, type DecodedFrame, decodeFrames } from "./protocol/_helpers.ts";
import { Op, RawClient } from "./integration/_raw_client.ts";
import { delay, test, within } from "./_watch.ts";

const KiB = 1024;
const HOST = "127.0.0.1";

// --- Sans-I/O helpers ---

/** A server protocol that delivers binary messages as views (as `serve()` handlers get them). */
function serverProtocol(codec: MessageCodec | null = null) {
  const received: Uint8Array[] = [];
  const ws = new WebSocketProtocol(
    { role: "server", maxMessageSize: 1 << 22, codec },
    { text() {}, binary: (data) => received.push(data) },
  );
  ws.deliverViews = true;
  return { ws, received };
}

/** Feeds one masked binary message to a server protocol; returns the view it delivered. */
function deliverView(
  target: { ws: WebSocketProtocol; received: Uint8Array[] },
  payload: Uint8Array,
): Uint8Array {
  target.ws.receive(clientFrame({ opcode: Op.Binary, payload }));
  const view = target.received.pop();
  assert.ok(view !== undefined, "a binary message was delivered");
  assert.deepEqual(view, payload);
  return view;
}

/** The output taken now, as bytes copied at this moment (what a socket would send now). */
function takeSnapshot(ws: WebSocketProtocol): { chunks: Uint8Array[]; copies: Uint8Array[] } {
  const chunks = ws.takeOutput();
  return { chunks, copies: chunks.map((chunk) => chunk.slice()) };
}

/** Byte equality with a short message (deepEqual's diff of large arrays takes seconds). */
function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      assert.fail(`${what}: byte ${i} is ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

function payloadsOf(frames: DecodedFrame[]): Uint8Array[] {
  return frames.map((frame) => frame.payload);
}

describe("sans-I/O: what send() copies", () => {
  // send() documents: "Binary payloads up to 16 KiB are copied at once", and
  // README: received binary messages are Uint8Arrays "the application owns".
  // A received view of 8-16 KiB has room for a header in front, and the room
  // path queues it with no copy whatever `copy` says.
  for (const size of [8 * KiB, 10_000, 16 * KiB]) {
    syncTest(`a received ${size}-byte view echoed by a server is copied at send`, () => {
      const server = serverProtocol();
      const original = pattern(size, 3);
      const view = deliverView(server, original);
      assert.ok(server.ws.sendBinary(view));
      view.fill(0); // the application owns its message and reuses it
      const frames = decodeFrames(server.ws.takeOutput());
      assert.equal(frames.length, 1);
      assert.equal(frames[0].opcode, Op.Binary);
      assertBytes(frames[0].payload, original, "the frame changed after send() returned");
    });
  }

  syncTest("the application's own buffers up to 16 KiB are copied at send (server)", () => {
    const server = serverProtocol();
    const sizes = [0, 1, 125, 126, 8 * KiB - 2, 8 * KiB + 1, 16 * KiB];
    const originals = sizes.map((n, i) => pattern(n, i));
    for (const original of originals) {
      const mine = original.slice();
      server.ws.sendBinary(mine);
      mine.fill(0xee);
    }
    // A subarray the application cut from a received view is its own object:
    // no room is recorded for it, so it is copied like any other small buffer.
    const received = deliverView(server, pattern(20 * KiB, 9));
    const cut = received.subarray(2 * KiB, 14 * KiB);
    const cutOriginal = cut.slice();
    server.ws.sendBinary(cut);
    received.fill(0);
    assert.deepEqual(payloadsOf(decodeFrames(server.ws.takeOutput())), [...originals, cutOriginal]);
  });

  syncTest(
    "a client masks into a copy at any size: the caller's bytes neither change nor matter after send",
    () => {
      const client = new WebSocketProtocol(
        { role: "client", maxMessageSize: 1 << 22 },
        { text() {}, binary() {} },
      );
      const sizes = [3, 9 * KiB, 64 * KiB, 300 * KiB];
      const originals = sizes.map((n, i) => pattern(n, i + 20));
      const mine = originals.map((o) => o.slice());
      for (const bytes of mine) client.sendBinary(bytes);
      for (let i = 0; i < mine.length; i++) {
        assert.deepEqual(mine[i], originals[i], "masking must not touch the caller's buffer");
        mine[i].fill(0x55);
      }
      const frames = decodeFrames(client.takeOutput());
      assert.ok(frames.every((frame) => frame.mask !== null));
      assert.deepEqual(payloadsOf(frames), originals);
    },
  );

  syncTest(
    "one received view relayed by several servers (plain, compressed, twice): every frame intact",
    () => {
      // A stand-in codec: reversible, output in a fresh buffer, and never the
      // same size as a plain frame would suggest (so a wrong header shows).
      const codec: MessageCodec = {
        threshold: 0,
        compress: (data) => concat(new Uint8Array([0xc0, 0xde]), data),
        decompress: (data) => data.slice(2),
      };
      const source = serverProtocol();
      const original = pattern(40 * KiB, 5);
      const view = deliverView(source, original);
      const a = serverProtocol();
      const b = serverProtocol(codec);
      const c = serverProtocol();
      a.ws.sendBinary(view);
      b.ws.sendBinary(view);
      const takenA = takeSnapshot(a.ws);
      c.ws.sendBinary(view);
      c.ws.sendText("after");
      c.ws.sendBinary(view);
      const takenB = takeSnapshot(b.ws);
      const takenC = takeSnapshot(c.ws);
      // Nothing taken earlier changed since.
      for (const { chunks, copies } of [takenA, takenB, takenC]) {
        assert.deepEqual(chunks.map((chunk) => chunk.slice()), copies);
      }
      const framesA = decodeFrames(takenA.chunks);
      const framesB = decodeFrames(takenB.chunks);
      const framesC = decodeFrames(takenC.chunks);
      assert.deepEqual(payloadsOf(framesA), [original]);
      assert.equal(framesA[0].rsv1, false);
      assert.equal(framesB.length, 1);
      assert.equal(framesB[0].rsv1, true);
      assert.deepEqual(codec.decompress(framesB[0].payload, 1 << 22), original);
      assert.deepEqual(framesC.map((f) => f.opcode), [Op.Binary, Op.Text, Op.Binary]);
      assert.deepEqual(framesC[0].payload, original);
      assert.deepEqual(framesC[2].payload, original);
    },
  );
});

describe("sans-I/O: bytes handed out by takeOutput() are final", () => {
  type Step =
    | { kind: "binary"; size: number; seed: number; reuse: boolean }
    | { kind: "view"; size: number; seed: number }
    | { kind: "text"; size: number; seed: number }
    | { kind: "ping" | "pong"; size: number; seed: number }
    | { kind: "take" }
    | { kind: "idle" };

  const sizes = fc.oneof(
    fc.integer({ min: 0, max: 200 }),
    fc.integer({ min: 8 * KiB - 16, max: 8 * KiB + 16 }),
    fc.integer({ min: 16 * KiB - 16, max: 16 * KiB + 16 }),
    fc.integer({ min: 0, max: 70 * KiB }),
  );
  const step: fc.Arbitrary<Step> = fc.oneof(
    fc.record({
      kind: fc.constant("binary" as const),
      size: sizes,
      seed: fc.nat(255),
      reuse: fc.boolean(),
    }),
    fc.record({ kind: fc.constant("view" as const), size: sizes, seed: fc.nat(255) }),
    fc.record({ kind: fc.constant("text" as const), size: sizes, seed: fc.nat(255) }),
    fc.record({
      kind: fc.constantFrom("ping" as const, "pong" as const),
      size: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 125 })),
      seed: fc.nat(255),
    }),
    fc.constant({ kind: "take" as const }),
    fc.constant({ kind: "idle" as const }),
  );

  for (const role of ["server", "client"] as const) {
    syncTest(
      `${role}: random sends, takes and idle releases; the stream decodes and no taken byte changes`,
      () => {
        fc.assert(
          fc.property(fc.array(step, { minLength: 1, maxLength: 40 }), (steps) => {
            const source = serverProtocol();
            const ws = new WebSocketProtocol(
              { role, maxMessageSize: 1 << 22 },
              { text() {}, binary() {} },
            );
            const expected: { opcode: number; payload: Uint8Array }[] = [];
            const taken: { chunk: Uint8Array; copy: Uint8Array }[] = [];
            const take = () => {
              for (const chunk of ws.takeOutput()) taken.push({ chunk, copy: chunk.slice() });
            };
            for (const s of steps) {
              switch (s.kind) {
                case "binary": {
                  const bytes = pattern(s.size, s.seed);
                  ws.sendBinary(bytes);
                  expected.push({ opcode: Op.Binary, payload: bytes.slice() });
                  // Reusing a buffer is allowed for what send() copies (and always on a client).
                  if (s.reuse && (role === "client" || s.size <= 16 * KiB)) bytes.fill(0xa5);
                  break;
                }
                case "view": {
                  if (role === "client") break;
                  const view = deliverView(source, pattern(s.size, s.seed));
                  ws.sendBinary(view);
                  expected.push({ opcode: Op.Binary, payload: view.slice() });
                  break;
                }
                case "text": {
                  const text = "é".repeat(s.size >> 2) + "x".repeat(s.size & 3);
                  ws.sendText(text);
                  expected.push({ opcode: Op.Text, payload: new TextEncoder().encode(text) });
                  break;
                }
                case "ping":
                case "pong": {
                  const payload = pattern(s.size, s.seed);
                  if (s.kind === "ping") ws.ping(payload);
                  else ws.pong(payload);
                  expected.push({ opcode: s.kind === "ping" ? Op.Ping : Op.Pong, payload });
                  break;
                }
                case "take":
                  take();
                  break;
                case "idle":
                  ws.releaseIdleMemory();
                  break;
              }
            }
            take();
            for (const { chunk, copy } of taken) {
              assert.deepEqual(chunk, copy, "bytes changed after takeOutput() handed them out");
            }
            const frames = decodeFrames(taken.map((t) => t.chunk));
            assert.deepEqual(
              frames.map((f) => ({ opcode: f.opcode, payload: f.payload })),
              expected,
            );
            assert.ok(
              frames.every((f) => f.fin && !f.rsv1 && (f.mask !== null) === (role === "client")),
            );
          }),
          { numRuns: 150 },
        );
      },
    );
  }
});

// --- Pub/sub ---

/** A fan-out target that records what it is given, copied at the moment it is given. */
function target(key: string | null) {
  const frames: Uint8Array[] = [];
  const messages: (string | Uint8Array)[] = [];
  return {
    frames,
    messages,
    bufferedAmount: 0,
    _compressionKey: key,
    _writeFrame(frame: Uint8Array) {
      frames.push(frame.slice());
      return true;
    },
    _writeMessage(data: string | Uint8Array) {
      messages.push(typeof data === "string" ? data : data.slice());
      return true;
    },
    _closeWith() {},
  };
}

describe("pub/sub: one publish, the same message for every subscriber", () => {
  syncTest("a plain frame is framed at publish: the publisher may reuse its buffer at once", () => {
    const hub = new PubSub();
    const a = target(null);
    const b = target(null);
    hub.subscribe(a, "t");
    hub.subscribe(b, "t");
    const original = pattern(20 * KiB, 1);
    const mine = original.slice();
    assert.equal(hub.publish("t", mine), 2);
    mine.fill(0);
    assert.equal(a.frames.length, 1);
    assert.deepEqual(a.frames[0], b.frames[0]);
    assert.deepEqual(decodeFrames(a.frames[0])[0].payload, original);
  });

  // A "latest" subscriber that is slow gets the held message when it drains.
  // Plain subscribers were given a frame made at publish; a compressed one
  // is given the publisher's own buffer, read only at that later moment.
  for (const key of ["context-takeover", "no-context-takeover:15"]) {
    test(`a held "latest" message for a ${key} subscriber is the one published`, async () => {
      const hub = new PubSub({ policy: "latest", maxBuffered: 1000 });
      const plain = target(null);
      const compressed = target(key);
      hub.subscribe(plain, "t");
      hub.subscribe(compressed, "t");
      plain.bufferedAmount = compressed.bufferedAmount = 5000; // both slow
      const original = pattern(4 * KiB, 2);
      const mine = original.slice();
      assert.equal(hub.publish("t", mine), 2);
      mine.fill(0); // the publisher reuses its buffer after publish() returned
      plain.bufferedAmount = compressed.bufferedAmount = 0;
      hub.drained(plain);
      hub.drained(compressed);
      assert.equal(plain.frames.length, 1);
      assert.deepEqual(decodeFrames(plain.frames[0])[0].payload, original);
      if (key === "context-takeover") {
        assert.equal(compressed.messages.length, 1);
        assertBytes(
          compressed.messages[0] as Uint8Array,
          original,
          "the subscriber got the reused buffer",
        );
      } else {
        assert.equal(compressed.frames.length, 1);
        const [frame] = decodeFrames(compressed.frames[0]);
        const { constants, inflateRawSync } = await import("node:zlib");
        const inflated = new Uint8Array(
          inflateRawSync(concat(frame.payload, new Uint8Array([0, 0, 0xff, 0xff])), {
            finishFlush: constants.Z_SYNC_FLUSH,
          }),
        );
        assertBytes(inflated, original, "the subscriber got the reused buffer");
      }
    });
  }
});

// --- Over real sockets ---

async function withServer(
  options: Parameters<typeof serve>[0],
  handlers: Parameters<typeof serve>[1],
  body: (server: Server) => Promise<void>,
): Promise<void> {
  const server = await serve({ port: 0, hostname: HOST, closeTimeout: 2000, ...options }, handlers);
  try {
    await body(server);
  } finally {
    await within(server.shutdown(), 10_000, "server shutdown");
  }
}

async function nextBinary(reader: ReadableStreamDefaultReader<unknown>): Promise<Uint8Array> {
  const { value, done } = await within(reader.read(), 5000, "a message");
  assert.equal(done, false);
  assert.ok(value instanceof Uint8Array, `expected bytes, got ${typeof value}`);
  return value;
}

describe("loopback: buffers the application changes after send()", () => {
  // The first message switches delivery to views ("from the next message").
  for (const size of [9000, 16 * KiB]) {
    test(`an echo handler that reuses its ${size}-byte message after send()`, async () => {
      await withServer({}, {
        message(ws, data) {
          if (typeof data === "string") return;
          ws.send(data);
          data.fill(0);
        },
      }, async (server) => {
        const ws = await connect(server.url);
        const reader = ws.readable.getReader();
        try {
          for (let i = 0; i < 3; i++) {
            const original = pattern(size, i);
            ws.send(original);
            assertBytes(await nextBinary(reader), original, `echo ${i}`);
          }
        } finally {
          reader.releaseLock();
          ws.close();
        }
      });
    });
  }

  test("typed arrays and DataViews with an offset, small and large, SharedArrayBuffer-backed too", async () => {
    const cases: { name: string; make: () => ArrayBufferView | ArrayBufferLike }[] = [];
    for (const size of [100, 12 * KiB, 100 * KiB]) {
      cases.push({
        name: `DataView ${size}`,
        make: () =>
          new DataView(
            concat(new Uint8Array(5), pattern(size, 1), new Uint8Array(3)).buffer,
            5,
            size,
          ),
      });
      cases.push({
        name: `Uint16Array ${size}`,
        make: () => {
          const bytes = concat(new Uint8Array(8), pattern(size, 1));
          return new Uint16Array(bytes.buffer, 8, size >> 1);
        },
      });
      cases.push({
        name: `SharedArrayBuffer view ${size}`,
        make: () => {
          const shared = new Uint8Array(new SharedArrayBuffer(size + 16), 16, size);
          shared.set(pattern(size, 1));
          return shared;
        },
      });
      cases.push({
        name: `SharedArrayBuffer ${size}`,
        make: () => {
          const shared = new SharedArrayBuffer(size);
          new Uint8Array(shared).set(pattern(size, 1));
          return shared;
        },
      });
    }
    const expected = cases.map((c) => {
      const made = c.make();
      const view = ArrayBuffer.isView(made)
        ? new Uint8Array(made.buffer, made.byteOffset, made.byteLength)
        : new Uint8Array(made);
      return view.slice();
    });
    await withServer({}, {
      message(ws, data) {
        if (data === "go") { for (const c of cases) ws.send(c.make()); }
        else if (typeof data !== "string") ws.send(data); // echo what the client sent
      },
    }, async (server) => {
      const client = await connect(server.url);
      const reader = client.readable.getReader();
      try {
        client.send("go");
        for (let i = 0; i < cases.length; i++) {
          assert.deepEqual(await nextBinary(reader), expected[i], cases[i].name);
        }
        // The other way: a client sends the same kinds (masked into a copy).
        for (const c of cases) client.send(c.make() as Uint8Array);
        for (let i = 0; i < cases.length; i++) {
          assert.deepEqual(await nextBinary(reader), expected[i], `echo of ${cases[i].name}`);
        }
      } finally {
        reader.releaseLock();
        client.close();
      }
    });
  });
});

describe("loopback: a slow reader, partial writes, shared frames", () => {
  test("frames of every kind never interleave and arrive intact while the socket is backed up", async () => {
    const big = pattern(512 * KiB, 4);
    const sent: { opcode: number; payload: Uint8Array }[] = [];
    const record = (opcode: number, payload: Uint8Array) => sent.push({ opcode, payload });
    let serverWs: WebSocketConnection | null = null;
    await withServer({ maxBufferedAmount: 256 * 1024 * KiB }, {
      open(ws) {
        serverWs = ws as WebSocketConnection;
        ws.subscribe("t");
      },
    }, async (server) => {
      const client = await RawClient.open(Number(new URL(server.url).port));
      client.socket.pause(); // the kernel's buffers fill: the server's writes go partial
      try {
        await within(
          (async () => {
            while (serverWs === null) await delay(1);
          })(),
          5000,
          "the server's connection",
        );
        const ws = serverWs!;
        const scratch = new Uint8Array(16 * KiB);
        let backedUp = 0;
        for (let round = 0; round < 200 && backedUp < 4; round++) {
          if (ws.bufferedAmount > 256 * KiB) backedUp++;
          // A large payload queued as it is (never changed after: as documented).
          const large = big.subarray(round % 8, 256 * KiB + round);
          ws.send(large);
          record(Op.Binary, large);
          // Small frames into the arena, from a buffer reused at once (it is copied).
          for (let i = 0; i < 20; i++) {
            const n = (i * 797 + round) % scratch.length;
            scratch.set(pattern(n, round * 20 + i).subarray(0, n));
            ws.send(scratch.subarray(0, n));
            record(Op.Binary, pattern(n, round * 20 + i));
            scratch.fill(0xff);
          }
          ws.send(`text ${round}`);
          record(Op.Text, new TextEncoder().encode(`text ${round}`));
          // The same frame for every subscriber (one here), framed once.
          const published = pattern(3 * KiB + round, 100 + round);
          // (Dropped once the subscriber is over its maxBuffered: the default policy.)
          if (server.publish("t", published) === 1) record(Op.Binary, published.slice());
          published.fill(0);
          // Control frames in between, while a data frame is partly written.
          ws.ping(new Uint8Array([round]));
          record(Op.Ping, new Uint8Array([round]));
          ws.ping();
          record(Op.Ping, new Uint8Array(0));
          await delay(5);
        }
        assert.equal(backedUp, 4, "the socket was backed up");
        client.socket.resume();
        for (let i = 0; i < sent.length; i++) {
          const frame = await client.expectFrame(10_000);
          assert.equal(frame.opcode, sent[i].opcode, `frame ${i}: opcode`);
          assert.ok(frame.fin && !frame.masked && !frame.rsv1, `frame ${i}: bits`);
          assertBytes(frame.payload, sent[i].payload, `frame ${i}`);
        }
        await within(
          (async () => {
            while (ws.bufferedAmount > 0) await delay(5);
          })(),
          10_000,
          "the backlog to drain",
        );
      } finally {
        client.destroy();
      }
    });
  });

  test("one publish to plain and compressed subscribers, the buffer reused at once: all get it", async () => {
    const subscribed = Promise.withResolvers<void>();
    let count = 0;
    await withServer({ compression: true }, {
      message(ws, data) {
        if (data !== "sub") return;
        ws.subscribe("t");
        if (++count === 3) subscribed.resolve();
      },
    }, async (server) => {
      const clients = [
        await connect(server.url),
        await connect(server.url, { compression: true }),
        await connect(server.url),
      ];
      const readers = clients.map((c) => c.readable.getReader());
      try {
        for (const c of clients) c.send("sub");
        await within(subscribed.promise, 5000, "subscriptions");
        const originals: Uint8Array[] = [];
        for (let i = 0; i < 5; i++) {
          const mine = pattern(i % 2 === 0 ? 20 * KiB : 300, i);
          originals.push(mine.slice());
          assert.equal(server.publish("t", mine), 3);
          mine.fill(0);
        }
        for (const reader of readers) {
          for (let i = 0; i < originals.length; i++) {
            assertBytes(await nextBinary(reader), originals[i], `message ${i}`);
          }
        }
      } finally {
        for (const r of readers) r.releaseLock();
        for (const c of clients) c.close();
      }
    });
  });

  test("a publish to a subscriber with a Blob send in progress is queued behind it, not lost", async () => {
    const blob = new Blob([pattern(200 * KiB, 8) as Uint8Array<ArrayBuffer>]);
    let server: Server | null = null;
    let published = -1;
    await withServer({}, {
      message(ws, data) {
        if (data !== "go") return;
        ws.subscribe("t");
        ws.send(blob); // read asynchronously: later sends wait behind it
        published = server!.publish("t", "after the blob");
      },
    }, async (s) => {
      server = s;
      const client = await connect(s.url);
      const reader = client.readable.getReader();
      try {
        client.send("go");
        assertBytes(await nextBinary(reader), pattern(200 * KiB, 8), "the blob");
        const { value } = await within(reader.read(), 3000, "the published message");
        assert.equal(value, "after the blob");
        assert.equal(published, 1, "server.publish() counts the subscriber");
      } finally {
        reader.releaseLock();
        client.close();
      }
    });
  });

  test("send() after close() queues nothing: the close frame is the last frame", async () => {
    await withServer({}, {
      message(ws, data) {
        if (data !== "go") return;
        ws.send("before");
        ws.close(1000, "bye");
        ws.send("after");
        ws.send(pattern(40 * KiB));
        ws.ping();
      },
    }, async (server) => {
      const client = await RawClient.open(Number(new URL(server.url).port));
      try {
        client.write(clientFrame({ opcode: Op.Text, payload: new TextEncoder().encode("go") }));
        const { code, before } = await client.expectClose();
        assert.equal(code, 1000);
        assert.deepEqual(before.map((f) => f.opcode), [Op.Text]);
        client.write(clientFrame({ opcode: Op.Close, payload: new Uint8Array([0x03, 0xe8]) }));
        assert.equal(await client.readFrame(3000), null, "nothing after the close frame");
      } finally {
        client.destroy();
      }
    });
  });
});
