/**
 * Large binary messages delivered as views (`deliverViews`), in place in owned
 * input or with room for a header in front, and sent on by a server as one
 * buffer with no copy (`frame_room.ts`).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { type ProtocolHandler, WebSocketProtocol } from "../../src/protocol/connection.ts";
import { Opcode } from "../../src/protocol/opcodes.ts";
import { roomBefore } from "../../src/protocol/frame_room.ts";
import { clientFrame, decodeFrames, serverFrame } from "./_helpers.ts";
import { concat, pattern, utf8 } from "../_bytes.ts";

class Keep implements ProtocolHandler {
  binaries: Uint8Array[] = [];
  texts: string[] = [];
  text(data: string): void {
    this.texts.push(data);
  }
  binary(data: Uint8Array): void {
    this.binaries.push(data);
  }
}

function server(views: boolean, role: "server" | "client" = "server") {
  const keep = new Keep();
  const ws = new WebSocketProtocol({ role, maxMessageSize: 4 << 20 }, keep);
  ws.deliverViews = views;
  return { ws, keep };
}

function isExact(data: Uint8Array): boolean {
  return data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
}

/** The one frame a server queued for `data`, checked to be a single chunk. */
function echoOnce(ws: WebSocketProtocol, data: Uint8Array): Uint8Array {
  assert.equal(ws.sendBinary(data), true);
  const out = ws.takeOutput();
  assert.equal(out.length, 1, "header and payload leave as one chunk");
  const frames = decodeFrames(out);
  assert.equal(frames.length, 1);
  assert.equal(frames[0].opcode, Opcode.Binary);
  assert.equal(frames[0].fin, true);
  assert.equal(frames[0].mask, null);
  assert.deepEqual(frames[0].payload, data);
  return out[0];
}

const SIZES = [8 * 1024, 8 * 1024 + 1, 65535, 65536, 100_000, 1 << 20];

describe("Protocol: large binary messages as views", () => {
  test("owned input: unmasked in place, delivered as a view of the chunk, echoed with no copy", () => {
    for (const size of SIZES) {
      const { ws, keep } = server(true);
      const payload = pattern(size, 7);
      const chunk = clientFrame({ opcode: Opcode.Binary, payload });
      ws.receive(chunk, true);
      assert.equal(keep.binaries.length, 1);
      const got = keep.binaries[0];
      assert.deepEqual(got, payload, `size ${size}`);
      assert.equal(got.buffer, chunk.buffer, "a view of the chunk");
      assert.ok(roomBefore(got) >= (size < 65536 ? 4 : 10));
      const frame = echoOnce(ws, got);
      if (size > 16 * 1024) {
        assert.equal(frame.buffer, chunk.buffer, "the header went into the room");
      } else {
        // send() copies binary payloads up to 16 KiB: the application may
        // reuse the message's buffer as soon as it returns.
        assert.notEqual(frame.buffer, chunk.buffer, `size ${size}: copied at send`);
      }
      assert.deepEqual(frame, serverFrame({ opcode: Opcode.Binary, payload }));
    }
  });

  test("lent input: the chunk is left as it was, the message is a copy with room", () => {
    for (const size of SIZES) {
      const { ws, keep } = server(true);
      const payload = pattern(size, 3);
      const chunk = clientFrame({ opcode: Opcode.Binary, payload });
      const before = chunk.slice();
      ws.receive(chunk);
      assert.deepEqual(chunk, before, "a lent chunk is not changed");
      const got = keep.binaries[0];
      assert.notEqual(got.buffer, chunk.buffer);
      chunk.fill(0xee); // the runtime reuses its read buffer
      assert.deepEqual(got, payload, `size ${size}`);
      assert.deepEqual(echoOnce(ws, got), serverFrame({ opcode: Opcode.Binary, payload }));
    }
  });

  test("a payload that arrives in pieces is assembled with room for the header", () => {
    const payload = pattern(200_000, 5);
    const wire = clientFrame({ opcode: Opcode.Binary, payload });
    for (const owned of [false, true]) {
      const { ws, keep } = server(true);
      for (let at = 0; at < wire.length; at += 4096) {
        ws.receive(wire.slice(at, at + 4096), owned);
      }
      const got = keep.binaries[0];
      assert.deepEqual(got, payload);
      assert.equal(roomBefore(got), 10);
      assert.deepEqual(echoOnce(ws, got), serverFrame({ opcode: Opcode.Binary, payload }));
    }
  });

  test("without deliverViews every message is an exactly sized buffer", () => {
    for (const size of SIZES) {
      for (const owned of [false, true]) {
        const { ws, keep } = server(false);
        const payload = pattern(size, 1);
        const wire = clientFrame({ opcode: Opcode.Binary, payload });
        ws.receive(wire, owned);
        ws.receive(wire.slice(0, 1000), owned);
        ws.receive(wire.slice(1000), owned);
        assert.equal(keep.binaries.length, 2);
        for (const got of keep.binaries) {
          assert.ok(isExact(got), `size ${size}, owned ${owned}`);
          assert.deepEqual(got, payload);
          assert.equal(roomBefore(got), 0);
        }
      }
    }
  });

  test("a message that is a small part of an owned chunk is copied, not pinned in it", () => {
    const { ws, keep } = server(true);
    const big = pattern(10_000, 2);
    const many = [];
    for (let i = 0; i < 4; i++) many.push(clientFrame({ opcode: Opcode.Binary, payload: big }));
    const chunk = concat(...many);
    ws.receive(chunk, true);
    assert.equal(keep.binaries.length, 4);
    for (const got of keep.binaries) {
      assert.deepEqual(got, big);
      assert.notEqual(got.buffer, chunk.buffer);
      assert.deepEqual(echoOnce(ws, got), serverFrame({ opcode: Opcode.Binary, payload: big }));
    }
  });

  test("the same view sent twice, and on another connection, gives the same frames", () => {
    const { ws, keep } = server(true);
    const payload = pattern(70_000, 9);
    ws.receive(clientFrame({ opcode: Opcode.Binary, payload }), true);
    const got = keep.binaries[0];
    const other = server(true).ws;
    assert.equal(ws.sendBinary(got), true);
    assert.equal(other.sendBinary(got), true);
    assert.equal(ws.sendBinary(got), true);
    const expected = serverFrame({ opcode: Opcode.Binary, payload });
    assert.deepEqual(concat(...ws.takeOutput()), concat(expected, expected));
    assert.deepEqual(concat(...other.takeOutput()), expected);
  });

  test("views with no room fall back: a client's messages, sub-views; text is never a view", () => {
    const payload = pattern(50_000, 4);
    // A client leaves no room (it masks what it sends, so it copies anyway).
    const client = server(true, "client");
    client.ws.receive(serverFrame({ opcode: Opcode.Binary, payload }), true);
    const fromClient = client.keep.binaries[0];
    assert.deepEqual(fromClient, payload);
    assert.equal(roomBefore(fromClient), 0);
    const { ws, keep } = server(true);
    const out = ws.takeOutput();
    assert.equal(out.length, 0);
    for (const data of [fromClient, fromClient.subarray(100), fromClient.subarray(0, 20_000)]) {
      assert.equal(ws.sendBinary(data), true);
      const frames = decodeFrames(ws.takeOutput());
      assert.equal(frames.length, 1);
      assert.deepEqual(frames[0].payload, data);
    }
    // Text is never a view.
    const text = "x".repeat(40_000);
    ws.receive(clientFrame({ opcode: Opcode.Text, payload: utf8(text) }), true);
    assert.deepEqual(keep.texts, [text]);
  });

  test("property: any cut of any mix of frames delivers the same messages, echoed intact", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 40_000 }), { minLength: 1, maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 60_000 }), { maxLength: 8 }),
        fc.boolean(),
        fc.boolean(),
        (sizes, cuts, owned, views) => {
          const { ws, keep } = server(views);
          const payloads = sizes.map((n, i) => pattern(n, i));
          const wire = concat(
            ...payloads.map((payload) => clientFrame({ opcode: Opcode.Binary, payload })),
          );
          let at = 0;
          for (const cut of [...cuts, wire.length]) {
            const end = Math.min(wire.length, at + cut);
            const piece = wire.slice(at, end);
            ws.receive(piece, owned);
            if (!owned) piece.fill(0xaa); // a lent buffer is reused by the runtime
            at = end;
            if (at === wire.length) break;
          }
          assert.equal(keep.binaries.length, payloads.length);
          for (let i = 0; i < payloads.length; i++) {
            assert.deepEqual(keep.binaries[i], payloads[i]);
            assert.equal(ws.sendBinary(keep.binaries[i]), true);
          }
          const frames = decodeFrames(ws.takeOutput());
          assert.deepEqual(frames.map((f) => f.payload), payloads);
        },
      ),
      { numRuns: 200 },
    );
  });
});

/**
 * Feeds `wire` as a reader with `readInto` would: through `receive()` while
 * the protocol offers no target, straight into the target (in reads of at
 * most `step` bytes) while it does.
 */
function feedDirect(ws: WebSocketProtocol, wire: Uint8Array, step: number, min = 1): number {
  let at = 0;
  let direct = 0;
  while (at < wire.length && ws.state !== 3) {
    const target = ws.receiveTarget(min);
    let n = Math.min(step, wire.length - at);
    if (target !== null) {
      n = Math.min(n, target.length);
      target.set(wire.subarray(at, at + n));
      ws.receivedInPlace(n);
      direct += n;
    } else {
      const piece = wire.slice(at, at + n);
      ws.receive(piece);
      piece.fill(0xaa); // a lent buffer is reused by the runtime
    }
    at += n;
  }
  return direct;
}

describe("Protocol: reading the rest of a large payload in place", () => {
  test("binary and text, single and fragmented: the same messages, most bytes read in place", () => {
    for (const views of [false, true]) {
      const { ws, keep } = server(views);
      const payload = pattern(300_000, 8);
      const text = "é€𝄞x".repeat(30_000);
      const wire = concat(
        clientFrame({ opcode: Opcode.Binary, payload }),
        clientFrame({ opcode: Opcode.Text, payload: utf8(text) }),
        clientFrame({ opcode: Opcode.Binary, fin: false, payload: payload.subarray(0, 100_000) }),
        clientFrame({ opcode: Opcode.Continuation, payload: payload.subarray(100_000) }),
      );
      const direct = feedDirect(ws, wire, 20_000, 16 * 1024);
      assert.ok(direct > 500_000, `only ${direct} bytes read in place`);
      assert.equal(keep.binaries.length, 2);
      assert.deepEqual(keep.binaries[0], payload);
      assert.deepEqual(keep.binaries[1], payload);
      assert.deepEqual(keep.texts, [text]);
      assert.equal(ws.state, 1);
    }
  });

  test("no target between frames, for small rests, or after the close", () => {
    const { ws } = server(true);
    const wire = clientFrame({ opcode: Opcode.Binary, payload: pattern(40_000, 1) });
    ws.receive(wire.subarray(0, 30_000));
    assert.equal(ws.receiveTarget(16 * 1024), null, "10 000 bytes to come is below min");
    const target = ws.receiveTarget(1000);
    assert.ok(target !== null);
    assert.equal(target.length, wire.length - 30_000);
    target.set(wire.subarray(30_000));
    ws.receivedInPlace(target.length);
    assert.equal(ws.receiveTarget(1), null, "between frames");
    const ping = clientFrame({ opcode: 0x9, payload: pattern(125, 2) });
    ws.receive(ping.subarray(0, 20));
    assert.equal(ws.receiveTarget(16 * 1024), null, "a control frame is never that large");
    ws.receive(ping.subarray(20));
    ws.receive(wire.subarray(0, 30_000));
    assert.ok(ws.receiveTarget(1000) !== null);
    ws.close(1000);
    assert.ok(ws.receiveTarget(1000) !== null, "CLOSING: the peer's data still comes in");
    ws.receive(wire.subarray(30_000));
    ws.receive(clientFrame({ opcode: 0x8, payload: new Uint8Array([0x03, 0xe8]) }));
    assert.equal(ws.receiveTarget(1), null);
  });

  test("invalid UTF-8 read in place fails the connection with 1007", () => {
    const { ws } = server(true);
    const bad = utf8("a".repeat(50_000));
    bad[40_000] = 0xff;
    feedDirect(ws, clientFrame({ opcode: Opcode.Text, payload: bad }), 8192);
    assert.equal(ws.state, 3);
    assert.equal(ws.error?.closeCode, 1007);
  });

  test("property: any mix of receive() and in-place reads gives the same messages", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 70_000 }), { minLength: 1, maxLength: 5 }),
        fc.integer({ min: 1, max: 50_000 }),
        fc.integer({ min: 1, max: 40_000 }),
        (sizes, step, min) => {
          const { ws, keep } = server(false);
          const payloads = sizes.map((n, i) => pattern(n, i + 1));
          const wire = concat(
            ...payloads.map((payload) => clientFrame({ opcode: Opcode.Binary, payload })),
          );
          feedDirect(ws, wire, step, min);
          assert.deepEqual(keep.binaries, payloads);
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe("Protocol: small binary messages cut from a per-connection buffer", () => {
  function slabbed(views = true) {
    const keep = new Keep();
    const ws = new WebSocketProtocol(
      { role: "server", maxMessageSize: 1 << 20, slabSmallMessages: true },
      keep,
    );
    ws.deliverViews = views;
    return { ws, keep };
  }

  test("consecutive small messages share one buffer and keep their bytes", () => {
    const { ws, keep } = slabbed();
    const payloads = [1, 64, 125, 256, 3, 200].map((n, i) => pattern(n, i));
    ws.receive(
      concat(...payloads.map((payload) => clientFrame({ opcode: Opcode.Binary, payload }))),
    );
    assert.equal(keep.binaries.length, payloads.length);
    for (let i = 0; i < payloads.length; i++) {
      assert.deepEqual(keep.binaries[i], payloads[i]);
      assert.equal(keep.binaries[i].buffer, keep.binaries[0].buffer, "one shared buffer");
    }
    // Echoing them still sends each one right.
    for (const got of keep.binaries) assert.equal(ws.sendBinary(got), true);
    assert.deepEqual(decodeFrames(ws.takeOutput()).map((f) => f.payload), payloads);
  });

  test("a full buffer is replaced, never reused; releaseIdleMemory() starts a new one", () => {
    const { ws, keep } = slabbed();
    const payloads: Uint8Array[] = [];
    for (let i = 0; i < 100; i++) payloads.push(pattern(200, i)); // 20 000 bytes: several buffers
    for (const payload of payloads) ws.receive(clientFrame({ opcode: Opcode.Binary, payload }));
    assert.deepEqual(keep.binaries, payloads, "earlier messages are never overwritten");
    const buffers = new Set(keep.binaries.map((b) => b.buffer));
    assert.ok(buffers.size >= 5 && buffers.size <= 6, `${buffers.size} buffers`);
    const last = keep.binaries.at(-1)!;
    ws.releaseIdleMemory();
    ws.receive(clientFrame({ opcode: Opcode.Binary, payload: pattern(10, 1) }));
    assert.notEqual(keep.binaries.at(-1)!.buffer, last.buffer);
  });

  test("not for large, fragmented, empty or text messages, nor without deliverViews", () => {
    const { ws, keep } = slabbed();
    ws.receive(clientFrame({ opcode: Opcode.Binary, payload: pattern(257, 1) }));
    ws.receive(clientFrame({ opcode: Opcode.Binary, fin: false, payload: pattern(10, 2) }));
    ws.receive(clientFrame({ opcode: Opcode.Continuation, payload: pattern(10, 3) }));
    ws.receive(clientFrame({ opcode: Opcode.Binary, payload: new Uint8Array(0) }));
    ws.receive(clientFrame({ opcode: Opcode.Text, payload: utf8("hi") }));
    assert.deepEqual(keep.texts, ["hi"]);
    for (const got of keep.binaries) assert.ok(isExact(got), `length ${got.length}`);
    const exact = slabbed(false);
    for (let i = 0; i < 3; i++) {
      exact.ws.receive(clientFrame({ opcode: Opcode.Binary, payload: pattern(50, i) }));
    }
    for (const got of exact.keep.binaries) assert.ok(isExact(got));
  });

  test("property: any cut of small and large frames, lent buffers reused: same messages", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 600 }), { minLength: 1, maxLength: 40 }),
        fc.integer({ min: 1, max: 3000 }),
        (sizes, step) => {
          const { ws, keep } = slabbed();
          const payloads = sizes.map((n, i) => pattern(n, i + 5));
          const wire = concat(
            ...payloads.map((payload) => clientFrame({ opcode: Opcode.Binary, payload })),
          );
          for (let at = 0; at < wire.length; at += step) {
            const piece = wire.slice(at, at + step);
            ws.receive(piece);
            piece.fill(0x55);
          }
          assert.deepEqual(keep.binaries, payloads);
        },
      ),
      { numRuns: 200 },
    );
  });
});
