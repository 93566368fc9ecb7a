import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { ReadyState, WebSocketProtocol } from "../../src/protocol/connection.ts";
import { WebSocketError } from "../../src/protocol/errors.ts";
import { Opcode } from "../../src/protocol/opcodes.ts";
import {
  bytes,
  clientFrame,
  closeCodeOf,
  closePayload,
  concat,
  connection,
  type DecodedFrame,
  decodeFrames,
  hex,
  pattern,
  sent,
  serverFrame,
  utf8,
  validOnWire,
} from "./_helpers.ts";

type Role = "server" | "client";

/** A frame as the peer of `role` sends it: masked to a server, unmasked to a client. */
function peerFrame(role: Role, parts: Parameters<typeof clientFrame>[0]): Uint8Array {
  return role === "server" ? clientFrame(parts) : serverFrame(parts);
}

/** Asserts what a frame sent by `role` looks like: masked from a client, not from a server. */
function assertSentBy(role: Role, frame: DecodedFrame): void {
  if (role === "client") assert.ok(frame.mask !== null, "a client frame must be masked");
  else assert.equal(frame.mask, null, "a server frame must not be masked");
}

function assertFailed(
  ws: WebSocketProtocol,
  role: Role,
  code: string,
  closeCode: number,
  label = "",
): void {
  assert.equal(ws.state, ReadyState.CLOSED, `${label} state`);
  assert.ok(ws.error instanceof WebSocketError, `${label} no error`);
  assert.equal(ws.error.code, code, `${label} error code`);
  assert.equal(ws.error.closeCode, closeCode, `${label} close code`);
  const frames = sent(ws);
  assert.equal(frames.length, 1, `${label} expected exactly one frame out`);
  assert.equal(frames[0].opcode, Opcode.Close, `${label} not a close frame`);
  assertSentBy(role, frames[0]);
  assert.equal(closeCodeOf(frames[0].payload), closeCode, `${label} close frame code`);
  assert.equal(ws.wasClean, false);
  assert.equal(ws.closeCode, 1006);
}

describe("WebSocketProtocol: receiving", () => {
  test("§5.7: a server receives the masked 'Hello', a client the unmasked one", () => {
    const server = connection("server");
    server.ws.receive(bytes(0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58));
    assert.deepEqual(server.events, [{ type: "text", data: "Hello" }]);
    const client = connection("client");
    client.ws.receive(bytes(0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f));
    client.ws.receive(bytes(0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f));
    assert.deepEqual(client.events, [{ type: "text", data: "Hello" }, {
      type: "text",
      data: "Hello",
    }]);
    assert.equal(client.ws.state, ReadyState.OPEN);
    assert.deepEqual(client.ws.takeOutput(), []);
  });

  test("pongs are reported and not answered", () => {
    for (const role of ["server", "client"] as const) {
      const { ws, events } = connection(role);
      ws.receive(peerFrame(role, { opcode: Opcode.Pong, payload: utf8("beat") }));
      assert.deepEqual(events, [{ type: "pong", data: utf8("beat") }]);
      assert.deepEqual(ws.takeOutput(), []);
    }
  });

  test("a handler without ping/pong callbacks is fine", () => {
    const texts: string[] = [];
    const ws = new WebSocketProtocol({ role: "server", maxMessageSize: 100 }, {
      text: (s) => texts.push(s),
      binary: () => {},
    });
    ws.receive(concat(
      clientFrame({ opcode: Opcode.Ping, payload: utf8("p") }),
      clientFrame({ opcode: Opcode.Pong }),
      clientFrame({ opcode: Opcode.Text, payload: utf8("t") }),
    ));
    assert.deepEqual(texts, ["t"]);
    assert.deepEqual(sent(ws).map((f) => f.opcode), [Opcode.Pong]);
  });

  test("exceptions thrown by the handler propagate", () => {
    const ws = new WebSocketProtocol({ role: "server", maxMessageSize: 100 }, {
      text: () => {
        throw new Error("boom");
      },
      binary: () => {},
    });
    assert.throws(() => ws.receive(clientFrame({ opcode: Opcode.Text, payload: utf8("x") })), {
      message: "boom",
    });
  });
});

describe("WebSocketProtocol: input split anywhere", () => {
  for (const role of ["server", "client"] as const) {
    test(`${role}: every split and byte by byte give the same events and the same output`, () => {
      const input = concat(
        peerFrame(role, { opcode: Opcode.Text, payload: utf8("Hello") }),
        peerFrame(role, { opcode: Opcode.Binary, fin: false, payload: pattern(200) }),
        peerFrame(role, { opcode: Opcode.Ping, payload: utf8("mid") }),
        peerFrame(role, { opcode: Opcode.Continuation, payload: pattern(70_000 - 200, 1) }),
        peerFrame(role, { opcode: Opcode.Text, fin: false, payload: utf8("€").subarray(0, 1) }),
        peerFrame(role, { opcode: Opcode.Continuation, payload: utf8("€").subarray(1) }),
        peerFrame(role, { opcode: Opcode.Close, payload: closePayload(1000, "end") }),
        peerFrame(role, { opcode: Opcode.Text, payload: utf8("ignored") }),
      );
      const run = (chunks: Uint8Array[]) => {
        const { ws, events } = connection(role);
        for (const chunk of chunks) ws.receive(chunk);
        const out = sent(ws).map((f) => [f.opcode, f.payload]);
        return { events, out, state: ws.state, code: ws.closeCode, error: ws.error };
      };
      const expected = run([input]);
      assert.equal(expected.error, null);
      assert.equal(expected.state, ReadyState.CLOSED);
      assert.equal(expected.code, 1000);
      assert.deepEqual(expected.out, [[Opcode.Pong, utf8("mid")], [
        Opcode.Close,
        closePayload(1000),
      ]]);
      assert.deepEqual(expected.events.map((e) => e.type), ["text", "ping", "binary", "text"]);
      // Every cut in the headers and small frames; a stride through the big payload.
      const big = input.length - 200;
      for (let at = 0; at <= input.length; at += at < 300 || at > big ? 1 : 997) {
        const got = run([input.subarray(0, at), input.subarray(at)]);
        assert.deepEqual(got, expected, `split at ${at}`);
      }
      assert.deepEqual(run(Array.from(input, (b) => bytes(b))), expected, "byte by byte");
    });
  }
});

describe("WebSocketProtocol: pings (§5.5.2)", () => {
  for (const role of ["server", "client"] as const) {
    test(`${role}: a ping is answered with a pong of the same payload`, () => {
      for (const payload of [bytes(), utf8("Hello"), pattern(125)]) {
        const { ws, events } = connection(role);
        ws.receive(peerFrame(role, { opcode: Opcode.Ping, payload }));
        assert.deepEqual(events, [{ type: "ping", data: payload }]);
        const frames = sent(ws);
        assert.equal(frames.length, 1);
        assert.equal(frames[0].opcode, Opcode.Pong);
        assert.equal(frames[0].fin, true);
        assertSentBy(role, frames[0]);
        assert.deepEqual(frames[0].payload, payload);
      }
    });

    test(`${role}: pings between fragments are answered at once, in order`, () => {
      const { ws, events } = connection(role);
      ws.receive(peerFrame(role, { opcode: Opcode.Text, fin: false, payload: utf8("He") }));
      ws.receive(peerFrame(role, { opcode: Opcode.Ping, payload: utf8("1") }));
      assert.deepEqual(sent(ws).map((f) => [f.opcode, f.payload]), [[Opcode.Pong, utf8("1")]]);
      ws.receive(concat(
        peerFrame(role, { opcode: Opcode.Continuation, fin: false, payload: utf8("ll") }),
        peerFrame(role, { opcode: Opcode.Ping, payload: utf8("2") }),
        peerFrame(role, { opcode: Opcode.Ping, payload: utf8("3") }),
        peerFrame(role, { opcode: Opcode.Continuation, payload: utf8("o") }),
      ));
      assert.deepEqual(sent(ws).map((f) => [f.opcode, f.payload]), [
        [Opcode.Pong, utf8("2")],
        [Opcode.Pong, utf8("3")],
      ]);
      assert.deepEqual(events, [
        { type: "ping", data: utf8("1") },
        { type: "ping", data: utf8("2") },
        { type: "ping", data: utf8("3") },
        { type: "text", data: "Hello" },
      ]);
    });
  }
});

describe("WebSocketProtocol: memory of a quiet connection", () => {
  for (const role of ["server", "client"] as const) {
    test(`${role}: control frames on a quiet connection start no output arena`, () => {
      const sizes: number[] = [];
      const allocate = (size: number) => {
        sizes.push(size);
        return new Uint8Array(size);
      };
      const { ws } = connection(role, { allocate });
      // Keepalive pings and answers on a connection that never sent data.
      ws.ping(utf8("keepalive"));
      ws.receive(peerFrame(role, { opcode: Opcode.Ping, payload: utf8("p") }));
      const frames = sent(ws);
      assert.deepEqual(frames.map((f) => [f.opcode, f.payload]), [
        [Opcode.Ping, utf8("keepalive")],
        [Opcode.Pong, utf8("p")],
      ]);
      for (const frame of frames) assertSentBy(role, frame);
      assert.ok(sizes.every((size) => size < 64), `allocated ${sizes.join(", ")} bytes`);

      // Data frames use the arena; a ping then shares it (no new buffer).
      ws.sendBinary(pattern(100));
      const arenas = sizes.length;
      assert.ok(sizes[arenas - 1] >= 16 * 1024, "the first data frame starts an arena");
      ws.ping(utf8("in the arena"));
      assert.equal(sizes.length, arenas, "a ping next to data frames takes no buffer of its own");
      assert.deepEqual(sent(ws).map((f) => f.opcode), [Opcode.Binary, Opcode.Ping]);

      // Quiet again: the arena goes; the next ping does not bring it back,
      // and a later data frame gets a new one.
      ws.releaseIdleMemory();
      ws.ping(utf8("quiet"));
      // Its own small buffer: the arena is gone.
      assert.equal(sizes.length, arenas + 1, "the quiet ping did not get a buffer of its own");
      assert.ok(sizes[arenas] < 64, `allocated ${sizes[arenas]} bytes`);
      ws.sendBinary(pattern(10));
      assert.ok(sizes[sizes.length - 1] >= 16 * 1024, "a new arena for the next data frame");
      const after = sent(ws);
      assert.deepEqual(after.map((f) => [f.opcode, f.payload]), [
        [Opcode.Ping, utf8("quiet")],
        [Opcode.Binary, pattern(10)],
      ]);
    });

    test(`${role}: an empty keepalive ping, its pong and an empty close take no buffer`, () => {
      const sizes: number[] = [];
      const allocate = (size: number) => {
        sizes.push(size);
        return new Uint8Array(size);
      };
      const a = connection(role, { allocate });
      const b = connection(role, { allocate });
      for (let round = 0; round < 3; round++) {
        a.ws.ping();
        b.ws.pong();
        a.ws.receive(peerFrame(role, { opcode: Opcode.Ping, payload: new Uint8Array(0) }));
        const fromA = a.ws.takeOutput();
        const fromB = b.ws.takeOutput();
        assert.deepEqual(decodeFrames(fromA).map((f) => [f.opcode, f.payload.length]), [
          [Opcode.Ping, 0],
          [Opcode.Pong, 0],
        ]);
        assert.deepEqual(decodeFrames(fromB).map((f) => [f.opcode, f.payload.length]), [[
          Opcode.Pong,
          0,
        ]]);
        for (const frame of decodeFrames([...fromA, ...fromB])) assertSentBy(role, frame);
        // Data in between: the arena, then quiet again.
        a.ws.sendText("x".repeat(round * 50));
        assert.deepEqual(sent(a.ws).map((f) => f.payload.length), [round * 50]);
        a.ws.releaseIdleMemory();
      }
      a.ws.close(1000, "");
      b.ws.close();
      assert.deepEqual(sent(b.ws).map((f) => [f.opcode, f.payload.length]), [[Opcode.Close, 0]]);
      assert.deepEqual(sent(a.ws).map((f) => f.opcode), [Opcode.Close]);
      // Servers queue the same two bytes for each empty one (only a's close,
      // with its code, takes a buffer); clients mask each (a key, a buffer).
      const small = sizes.filter((size) => size < 64);
      assert.deepEqual(small, role === "server" ? [4] : [...Array(9).fill(6), 8, 6]);
    });

    test(`${role}: releasing idle memory keeps frames queued but not yet taken`, () => {
      const { ws } = connection(role);
      ws.sendBinary(pattern(300));
      ws.releaseIdleMemory(); // the frame is still in the arena, not taken
      ws.sendBinary(pattern(5));
      assert.deepEqual(sent(ws).map((f) => f.payload), [pattern(300), pattern(5)]);
    });
  }
});

describe("WebSocketProtocol: many connections at once", () => {
  test("each keeps its own mask key while frames arrive in pieces, interleaved", () => {
    // More parsers than one slab of keys holds (1024), each mid-frame while
    // the others receive theirs: every payload unmasks with its own key.
    const count = 1500;
    const conns = Array.from({ length: count }, () => connection("server"));
    const frames = conns.map((_, i) =>
      clientFrame({
        opcode: Opcode.Binary,
        payload: pattern(40 + (i % 90)),
        mask: Uint8Array.of(i & 0xff, (i >> 8) & 0xff, (i * 7) & 0xff, 0x5a),
      })
    );
    // Header and mask key first (and a byte of payload), then the rest.
    conns.forEach(({ ws }, i) => ws.receive(frames[i].subarray(0, 7)));
    conns.forEach(({ ws }, i) => ws.receive(frames[i].subarray(7)));
    conns.forEach(({ events }, i) => {
      assert.equal(events.length, 1, `connection ${i}`);
      assert.deepEqual(events[0], { type: "binary", data: pattern(40 + (i % 90)) });
    });
  });
});

describe("WebSocketProtocol: closing handshake (§5.5.1, §7)", () => {
  for (const role of ["server", "client"] as const) {
    test(`${role}: a received close is echoed with its code and the connection is CLOSED`, () => {
      const { ws, events } = connection(role);
      ws.receive(peerFrame(role, { opcode: Opcode.Close, payload: closePayload(4000, "bye") }));
      assert.deepEqual(events, []);
      assert.equal(ws.state, ReadyState.CLOSED);
      assert.equal(ws.closeCode, 4000);
      assert.equal(ws.closeReason, "bye");
      assert.equal(ws.error, null);
      assert.equal(ws.closeSent, true);
      assert.equal(ws.wasClean, true);
      const frames = sent(ws);
      assert.equal(frames.length, 1);
      assert.equal(frames[0].opcode, Opcode.Close);
      assertSentBy(role, frames[0]);
      assert.equal(closeCodeOf(frames[0].payload), 4000);
    });

    test(`${role}: an empty close is answered with an empty close; the code is 1005`, () => {
      const { ws } = connection(role);
      ws.receive(peerFrame(role, { opcode: Opcode.Close }));
      const frames = sent(ws);
      assert.equal(frames.length, 1);
      assert.equal(frames[0].opcode, Opcode.Close);
      assert.deepEqual(frames[0].payload, bytes());
      assert.equal(ws.closeCode, 1005);
      assert.equal(ws.closeReason, "");
      assert.equal(ws.wasClean, true);
    });

    test(`${role}: bytes after the close frame are ignored, in the same chunk and later`, () => {
      const { ws, events } = connection(role);
      const text = peerFrame(role, { opcode: Opcode.Text, payload: utf8("late") });
      const ping = peerFrame(role, { opcode: Opcode.Ping, payload: utf8("late") });
      ws.receive(concat(
        peerFrame(role, { opcode: Opcode.Close, payload: closePayload(1000) }),
        text,
        ping,
      ));
      ws.receive(concat(text, ping, bytes(0xff, 0xff)));
      assert.deepEqual(events, []);
      assert.deepEqual(sent(ws).map((f) => f.opcode), [Opcode.Close]);
      assert.equal(ws.error, null);
      assert.equal(ws.closeCode, 1000);
    });

    test(`${role}: close() queues a close frame after data queued before it`, () => {
      const { ws } = connection(role);
      assert.equal(ws.sendText("first"), true);
      assert.equal(ws.sendBinary(bytes(1, 2)), true);
      assert.equal(ws.ping(utf8("p")), true);
      ws.close(1000, "done");
      assert.equal(ws.state, ReadyState.CLOSING);
      assert.equal(ws.closeSent, true);
      // Nothing more is sent once the close frame is queued.
      assert.equal(ws.sendText("after"), false);
      assert.equal(ws.sendBinary(bytes(3)), false);
      assert.equal(ws.ping(), false);
      assert.equal(ws.pong(), false);
      ws.close(1001); // no-op
      const frames = sent(ws);
      for (const frame of frames) assertSentBy(role, frame);
      assert.deepEqual(frames.map((f) => [f.opcode, f.payload]), [
        [Opcode.Text, utf8("first")],
        [Opcode.Binary, bytes(1, 2)],
        [Opcode.Ping, utf8("p")],
        [Opcode.Close, closePayload(1000, "done")],
      ]);
    });

    test(`${role}: after close(), the peer's close completes the handshake without a second close`, () => {
      const { ws, events } = connection(role);
      ws.close();
      assert.deepEqual(sent(ws).map((f) => [f.opcode, f.payload]), [[Opcode.Close, bytes()]]);
      // Data the peer sent before it saw our close still arrives (§7.1.2).
      ws.receive(peerFrame(role, { opcode: Opcode.Text, payload: utf8("in flight") }));
      assert.deepEqual(events, [{ type: "text", data: "in flight" }]);
      assert.equal(ws.state, ReadyState.CLOSING);
      ws.receive(peerFrame(role, { opcode: Opcode.Close, payload: closePayload(1000) }));
      assert.equal(ws.state, ReadyState.CLOSED);
      assert.deepEqual(ws.takeOutput(), []);
      assert.equal(ws.wasClean, true);
      assert.equal(ws.closeCode, 1000);
    });
  }

  test("close() with a code that cannot be sent throws RangeError and changes nothing", () => {
    const { ws } = connection("server");
    assert.throws(() => ws.close(1006), RangeError);
    assert.throws(() => ws.close(1000, "x".repeat(124)), RangeError);
    assert.throws(() => ws.close(undefined, "reason without code"), RangeError);
    assert.equal(ws.state, ReadyState.OPEN);
    assert.deepEqual(ws.takeOutput(), []);
  });

  test("the transport ending without a close frame is abnormal (1006)", () => {
    const { ws } = connection("client");
    ws.receiveEnd();
    assert.equal(ws.state, ReadyState.CLOSED);
    assert.equal(ws.closeCode, 1006);
    assert.equal(ws.wasClean, false);
    assert.equal(ws.sendText("x"), false);
    assert.deepEqual(ws.takeOutput(), []);
  });

  test("the transport ending after the handshake keeps the clean close", () => {
    const { ws } = connection("server");
    ws.receive(clientFrame({ opcode: Opcode.Close, payload: closePayload(1001) }));
    ws.receiveEnd();
    assert.equal(ws.wasClean, true);
    assert.equal(ws.closeCode, 1001);
  });

  test("ping() and pong() refuse payloads over 125 bytes", () => {
    const { ws } = connection("client");
    assert.throws(() => ws.ping(pattern(126)), RangeError);
    assert.throws(() => ws.pong(pattern(126)), RangeError);
    assert.equal(ws.pong(pattern(125)), true);
    assert.deepEqual(sent(ws).map((f) => [f.opcode, f.payload]), [[Opcode.Pong, pattern(125)]]);
  });
});

describe("WebSocketProtocol: violations fail the connection with the right close code", () => {
  const cases: { name: string; role: Role; input: Uint8Array; code: string; closeCode: number }[] =
    [
      {
        name: "unmasked frame to a server",
        role: "server",
        input: serverFrame({ opcode: Opcode.Text, payload: utf8("Hello") }),
        code: "UNMASKED_FRAME",
        closeCode: 1002,
      },
      {
        name: "masked frame to a client",
        role: "client",
        input: clientFrame({ opcode: Opcode.Text, payload: utf8("Hello") }),
        code: "MASKED_FRAME",
        closeCode: 1002,
      },
      ...(["rsv1", "rsv2", "rsv3"] as const).map((rsv) => ({
        name: `${rsv} without an extension`,
        role: "server" as const,
        input: clientFrame({ opcode: Opcode.Binary, [rsv]: true }),
        code: "RESERVED_BITS",
        closeCode: 1002,
      })),
      ...[3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf].map((opcode) => ({
        name: `reserved opcode 0x${opcode.toString(16)}`,
        role: "client" as const,
        input: serverFrame({ opcode }),
        code: "RESERVED_OPCODE",
        closeCode: 1002,
      })),
      {
        name: "control frame over 125 bytes",
        role: "server",
        input: clientFrame({ opcode: Opcode.Ping, payload: pattern(126) }),
        code: "CONTROL_FRAME_TOO_LONG",
        closeCode: 1002,
      },
      {
        name: "fragmented control frame",
        role: "server",
        input: clientFrame({ opcode: Opcode.Pong, fin: false }),
        code: "FRAGMENTED_CONTROL_FRAME",
        closeCode: 1002,
      },
      {
        name: "continuation without a message",
        role: "server",
        input: clientFrame({ opcode: Opcode.Continuation, payload: utf8("x") }),
        code: "UNEXPECTED_CONTINUATION",
        closeCode: 1002,
      },
      {
        name: "new data frame inside a fragmented message",
        role: "client",
        input: concat(
          serverFrame({ opcode: Opcode.Binary, fin: false, payload: bytes(1) }),
          serverFrame({ opcode: Opcode.Text, payload: utf8("x") }),
        ),
        code: "EXPECTED_CONTINUATION",
        closeCode: 1002,
      },
      {
        name: "64-bit length with the top bit set",
        role: "client",
        input: serverFrame({ opcode: Opcode.Binary, length: 0x8000000000010000n }),
        code: "INVALID_LENGTH",
        closeCode: 1002,
      },
      {
        name: "16-bit length for a 125-byte payload",
        role: "server",
        input: clientFrame({ opcode: Opcode.Binary, payload: pattern(125), lengthBits: 16 }),
        code: "INVALID_LENGTH",
        closeCode: 1002,
      },
      {
        name: "64-bit length for a 65535-byte payload",
        role: "client",
        input: serverFrame({ opcode: Opcode.Binary, length: 65535, lengthBits: 64 }),
        code: "INVALID_LENGTH",
        closeCode: 1002,
      },
      {
        name: "invalid UTF-8 in a text message",
        role: "server",
        input: clientFrame({ opcode: Opcode.Text, payload: bytes(0x48, 0xc3, 0x28) }),
        code: "INVALID_UTF8",
        closeCode: 1007,
      },
      {
        name: "a text message ending inside a UTF-8 sequence",
        role: "client",
        input: concat(
          serverFrame({ opcode: Opcode.Text, fin: false, payload: utf8("ok") }),
          serverFrame({ opcode: Opcode.Continuation, payload: bytes(0xf0, 0x9f, 0x98) }),
        ),
        code: "INVALID_UTF8",
        closeCode: 1007,
      },
      {
        name: "invalid UTF-8 in a close reason",
        role: "server",
        input: clientFrame({
          opcode: Opcode.Close,
          payload: concat(closePayload(1000), bytes(0xff)),
        }),
        code: "INVALID_UTF8",
        closeCode: 1007,
      },
      {
        name: "a close payload of 1 byte",
        role: "client",
        input: serverFrame({ opcode: Opcode.Close, payload: bytes(0x03) }),
        code: "INVALID_CLOSE_PAYLOAD",
        closeCode: 1002,
      },
      {
        name: "a frame over maxMessageSize",
        role: "server",
        input: clientFrame({ opcode: Opcode.Binary, payload: pattern(1025) }),
        code: "FRAME_TOO_BIG",
        closeCode: 1009,
      },
    ];

  for (const { name, role, input, code, closeCode } of cases) {
    test(`${name}: ${closeCode}`, () => {
      for (const byteByByte of [false, true]) {
        const { ws, events } = connection(role, { maxMessageSize: 1024 });
        if (byteByByte) { for (const b of input) ws.receive(bytes(b)); }
        else ws.receive(input);
        assertFailed(ws, role, code, closeCode, byteByByte ? "byte by byte:" : "whole:");
        assert.deepEqual(events, []);
        // Once failed, nothing more comes in or goes out.
        ws.receive(peerFrame(role, { opcode: Opcode.Ping, payload: utf8("p") }));
        assert.deepEqual(events, []);
        assert.deepEqual(ws.takeOutput(), []);
        assert.equal(ws.sendText("x"), false);
        assert.equal(ws.sendBinary(bytes(1)), false);
        ws.close(1000);
        assert.deepEqual(ws.takeOutput(), []);
      }
    });
  }

  test("every close code 0..5000 received: valid codes are echoed, others fail with 1002", () => {
    for (let code = 0; code <= 5000; code++) {
      const { ws } = connection("server");
      ws.receive(clientFrame({ opcode: Opcode.Close, payload: closePayload(code) }));
      if (validOnWire(code)) {
        assert.equal(ws.error, null, `code ${code}`);
        assert.equal(ws.closeCode, code);
        const frames = sent(ws);
        assert.equal(frames.length, 1);
        assert.equal(closeCodeOf(frames[0].payload), code, `echo of ${code}`);
      } else {
        assertFailed(ws, "server", "INVALID_CLOSE_CODE", 1002, `code ${code}:`);
      }
    }
  });

  test("invalid UTF-8 fails the connection as soon as the bad fragment is pushed", () => {
    for (const role of ["server", "client"] as const) {
      const { ws, events } = connection(role);
      ws.receive(peerFrame(role, { opcode: Opcode.Text, fin: false, payload: utf8("fine ") }));
      assert.equal(ws.state, ReadyState.OPEN);
      ws.receive(
        peerFrame(role, {
          opcode: Opcode.Continuation,
          fin: false,
          payload: bytes(0x61, 0xed, 0xa0),
        }),
      );
      assertFailed(ws, role, "INVALID_UTF8", 1007);
      ws.receive(peerFrame(role, { opcode: Opcode.Continuation, payload: utf8("end") }));
      assert.deepEqual(events, []);
    }
  });

  test("invalid UTF-8 inside one big frame fails before the frame ends", () => {
    const payload = concat(
      pattern(100).map((b) => b & 0x7f),
      bytes(0xc0, 0x80),
      utf8("x".repeat(100)),
    );
    const wire = clientFrame({ opcode: Opcode.Text, payload });
    const { ws } = connection("server");
    ws.receive(wire.subarray(0, 8 + 102));
    assertFailed(ws, "server", "INVALID_UTF8", 1007);
  });

  test("maxMessageSize: a frame header alone is enough to fail with 1009", () => {
    const { ws } = connection("server", { maxMessageSize: 1000, maxFrameSize: 1 << 20 });
    const wire = clientFrame({ opcode: Opcode.Binary, payload: pattern(1001) });
    ws.receive(wire.subarray(0, 8)); // 2 + 2 length + 4 mask: no payload yet
    assertFailed(ws, "server", "MESSAGE_TOO_BIG", 1009);
  });

  test("maxMessageSize: fragments adding up to more fail with 1009 at the crossing header", () => {
    const { ws, events } = connection("client", { maxMessageSize: 10 });
    ws.receive(serverFrame({ opcode: Opcode.Text, fin: false, payload: utf8("123456") }));
    ws.receive(serverFrame({ opcode: Opcode.Ping }));
    assert.equal(ws.state, ReadyState.OPEN);
    assert.deepEqual(sent(ws).map((f) => f.opcode), [Opcode.Pong]);
    ws.receive(serverFrame({ opcode: Opcode.Continuation, payload: utf8("78901") }).subarray(0, 2));
    assertFailed(ws, "client", "MESSAGE_TOO_BIG", 1009);
    assert.deepEqual(events, [{ type: "ping", data: bytes() }]);
  });

  test("maxFrameSize: 1009 for a frame over it, even within maxMessageSize", () => {
    const { ws, events } = connection("server", { maxMessageSize: 100, maxFrameSize: 10 });
    ws.receive(clientFrame({ opcode: Opcode.Binary, fin: false, payload: pattern(10) }));
    ws.receive(clientFrame({ opcode: Opcode.Continuation, payload: pattern(10) }));
    assert.equal(events.length, 1);
    ws.receive(clientFrame({ opcode: Opcode.Binary, payload: pattern(11) }).subarray(0, 6));
    assertFailed(ws, "server", "FRAME_TOO_BIG", 1009);
  });

  test("the close frame sent on failure carries the error message as its reason", () => {
    const { ws } = connection("server");
    ws.receive(clientFrame({ opcode: 5 }));
    const [frame] = decodeFrames(ws.takeOutput());
    const reason = new TextDecoder().decode(frame.payload.subarray(2));
    assert.equal(reason, ws.error!.message);
    assert.ok(frame.payload.length <= 125);
  });

  test("fail() with a long message truncates the reason to fit a control frame", () => {
    const { ws } = connection("client");
    ws.fail(new WebSocketError("INVALID_UTF8", 1007, "é".repeat(200)));
    const [frame] = decodeFrames(ws.takeOutput());
    assert.equal(closeCodeOf(frame.payload), 1007);
    assert.ok(frame.payload.length <= 125, `close payload of ${frame.payload.length} bytes`);
    assert.equal(new TextDecoder().decode(frame.payload.subarray(2)), "é".repeat(61));
  });

  test("fail() after close() sends no second close frame", () => {
    const { ws } = connection("server");
    ws.close(1000);
    ws.takeOutput();
    ws.receive(clientFrame({ opcode: 4 }));
    assert.equal(ws.state, ReadyState.CLOSED);
    assert.equal(ws.error?.code, "RESERVED_OPCODE");
    assert.deepEqual(ws.takeOutput(), []);
  });
});

describe("WebSocketProtocol: sending", () => {
  const sizes = [0, 1, 125, 126, 65535, 65536, 16 * 1024, 16 * 1024 + 1, 100_000];

  for (const role of ["server", "client"] as const) {
    test(`${role}: binary messages of every length class decode back, ${role === "client" ? "masked" : "unmasked"}`, () => {
      for (const size of sizes) {
        const { ws } = connection(role);
        const data = pattern(size, 3);
        assert.equal(ws.sendBinary(data), true);
        const out = ws.takeOutput();
        const total = out.reduce((n, c) => n + c.length, 0);
        const frames = decodeFrames(out);
        assert.equal(frames.length, 1, `size ${size}`);
        assertSentBy(role, frames[0]);
        assert.equal(frames[0].fin, true);
        assert.equal(frames[0].rsv1, false);
        assert.equal(frames[0].opcode, Opcode.Binary);
        assert.deepEqual(frames[0].payload, data, `size ${size}`);
        assert.equal(
          total,
          (size < 126 ? 2 : size < 65536 ? 4 : 10) + (role === "client" ? 4 : 0) + size,
        );
      }
    });

    test(`${role}: text messages decode back to the same string`, () => {
      const strings = [
        "",
        "Hello",
        "\ufeffBOM stays",
        "é€𝄞",
        "€".repeat(16 * 1024), // 16 Ki UTF-16 units, 48 KiB of UTF-8
        "𝄞".repeat(8 * 1024 + 1),
        "a".repeat(70_000),
      ];
      for (const s of strings) {
        const { ws } = connection(role);
        assert.equal(ws.sendText(s), true);
        const frames = sent(ws);
        assert.equal(frames.length, 1);
        assertSentBy(role, frames[0]);
        assert.equal(frames[0].opcode, Opcode.Text);
        assert.equal(new TextDecoder("utf-8", { ignoreBOM: true }).decode(frames[0].payload), s);
      }
    });

    test(`${role}: outputBytes counts what takeOutput returns`, () => {
      const { ws } = connection(role);
      ws.sendText("abc");
      ws.sendBinary(pattern(70_000));
      ws.ping();
      const expected = ws.outputBytes;
      const out = ws.takeOutput();
      assert.equal(out.reduce((n, c) => n + c.length, 0), expected);
      assert.equal(ws.outputBytes, 0);
      assert.deepEqual(ws.takeOutput(), []);
    });
  }

  test("client: sendBinary never changes the caller's buffer, and masks with fresh keys", () => {
    const { ws } = connection("client");
    const keys = new Set<string>();
    for (const size of sizes) {
      const data = pattern(size, 4);
      const backing = concat(bytes(9), data, bytes(9)); // unaligned view too
      const view = backing.subarray(1, 1 + size);
      ws.sendBinary(data);
      ws.sendBinary(view);
      assert.deepEqual(data, pattern(size, 4), `size ${size} changed`);
      assert.deepEqual(backing, concat(bytes(9), pattern(size, 4), bytes(9)));
      for (const frame of sent(ws)) {
        keys.add(hex(frame.mask!));
        assert.deepEqual(frame.payload, data);
      }
    }
    assert.ok(keys.size >= sizes.length * 2 - 1, "masking keys repeat");
  });

  test("client: the masked bytes on the wire differ from the payload", () => {
    const { ws } = connection("client");
    ws.sendText("Hello, world: long enough to cover a few 32-bit words");
    const out = ws.takeOutput();
    const wire = concat(...out);
    assert.equal(wire[1] & 0x80, 0x80, "mask bit");
    assert.notDeepEqual(
      wire.subarray(6),
      utf8("Hello, world: long enough to cover a few 32-bit words"),
    );
  });

  test("server: frames are unmasked, byte for byte", () => {
    const { ws } = connection("server");
    ws.sendText("Hello");
    ws.ping(utf8("Hello"));
    ws.sendBinary(pattern(256));
    ws.close(1000);
    assert.deepEqual(
      concat(...ws.takeOutput()),
      concat(
        bytes(0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f),
        bytes(0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f),
        bytes(0x82, 0x7e, 0x01, 0x00),
        pattern(256),
        bytes(0x88, 0x02, 0x03, 0xe8),
      ),
    );
  });

  test("server: sendBinary never changes the caller's buffer", () => {
    const { ws } = connection("server");
    for (const size of sizes) {
      const data = pattern(size, 6);
      ws.sendBinary(data);
      assert.deepEqual(decodeFrames(ws.takeOutput())[0].payload, pattern(size, 6));
      assert.deepEqual(data, pattern(size, 6));
    }
  });

  test("a server and a client talk to each other through their output", () => {
    const server = connection("server");
    const client = connection("client");
    const pipe = (from: WebSocketProtocol, to: WebSocketProtocol) => {
      for (const chunk of from.takeOutput()) to.receive(chunk);
    };
    client.ws.sendText("hi €");
    client.ws.sendBinary(pattern(70_000));
    client.ws.ping(utf8("are you there"));
    pipe(client.ws, server.ws);
    server.ws.sendText("hello");
    pipe(server.ws, client.ws);
    client.ws.close(1000, "bye");
    pipe(client.ws, server.ws);
    pipe(server.ws, client.ws);
    assert.deepEqual(server.events, [
      { type: "text", data: "hi €" },
      { type: "binary", data: pattern(70_000) },
      { type: "ping", data: utf8("are you there") },
    ]);
    assert.deepEqual(client.events, [
      { type: "pong", data: utf8("are you there") },
      { type: "text", data: "hello" },
    ]);
    for (const side of [server.ws, client.ws]) {
      assert.equal(side.state, ReadyState.CLOSED);
      assert.equal(side.wasClean, true);
    }
    assert.equal(server.ws.closeCode, 1000);
    assert.equal(server.ws.closeReason, "bye");
    assert.equal(client.ws.closeCode, 1000);
  });
});

describe("WebSocketProtocol: edge cases of failing and closing", () => {
  test("fail() with a close code that cannot go on the wire closes without a close frame", () => {
    for (
      const [code, closeCode] of [["CONNECTION_RESET", 1006], ["CLOSE_TIMEOUT", 1006]] as const
    ) {
      const { ws } = connection("server");
      ws.fail(new WebSocketError(code, closeCode, "Connection reset by peer"));
      assert.equal(ws.state, ReadyState.CLOSED);
      assert.equal(ws.error?.code, code);
      assert.deepEqual(ws.takeOutput(), []);
      assert.equal(ws.sendText("x"), false);
    }
  });

  test("a ping received after our close, before the peer's, is still answered (§5.5.2)", () => {
    const { ws } = connection("server");
    ws.close(1000);
    ws.takeOutput();
    ws.receive(clientFrame({ opcode: Opcode.Ping, payload: utf8("still there?") }));
    assert.deepEqual(sent(ws).map((f) => [f.opcode, f.payload]), [[
      Opcode.Pong,
      utf8("still there?"),
    ]]);
  });

  test("an abrupt end is not a clean close and does not claim a close frame was sent", () => {
    const { ws } = connection("server");
    ws.receiveEnd();
    assert.equal(ws.state, ReadyState.CLOSED);
    assert.equal(ws.closeSent, false);
    assert.equal(ws.wasClean, false);
    assert.equal(ws.closeCode, 1006);
  });
});
