/**
 * The server after the handshake, over real loopback sockets: every frame a
 * client can get wrong (RFC 6455 §5, §7.1.7, §8.1) fails only that
 * connection with the right close code and a clean TCP close, control frames
 * are answered as §5.5 requires, the closing handshake keeps its order and
 * its timeout, and `shutdown()` closes everyone with 1001.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  serve,
  type ServeOptions,
  type Server,
  WebSocketError,
  type WebSocketHandlers,
} from "../../mod.ts";
import {
  buildFrame,
  closeFrame,
  concat,
  Op,
  pattern,
  RawClient,
  sleep,
  utf8,
  watchUnhandledRejections,
  within,
} from "./_raw_client.ts";
import { peerPath, runtimeCommand, startPeer } from "./peers/spawn.ts";

const HOST = "127.0.0.1";
const decoder = new TextDecoder();

/** What the application saw on the server. */
interface Seen {
  errors: Error[];
  errorEvents: ErrorEvent[];
  closes: { code: number; reason: string }[];
  messages: (string | Uint8Array)[];
  pongs: Uint8Array[];
}

/** An echo server that records what the application sees, and stops afterwards. */
async function withEchoServer(
  options: Omit<ServeOptions, "port" | "hostname">,
  body: (port: number, seen: Seen, server: Server) => Promise<void>,
  extra: Partial<WebSocketHandlers> = {},
): Promise<void> {
  const seen: Seen = { errors: [], errorEvents: [], closes: [], messages: [], pongs: [] };
  const server = await serve({ ...options, port: 0, hostname: HOST }, {
    open(ws) {
      ws.addEventListener("error", (event) => seen.errorEvents.push(event as ErrorEvent));
      extra.open?.(ws);
    },
    message(ws, data) {
      seen.messages.push(data);
      if (extra.message) return extra.message(ws, data);
      ws.send(data);
    },
    error(_ws, error) {
      seen.errors.push(error);
    },
    close(_ws, code, reason) {
      seen.closes.push({ code, reason });
    },
    pong(_ws, payload) {
      seen.pongs.push(payload);
    },
  });
  try {
    await body(server.addr.port, seen, server);
  } finally {
    await within(server.shutdown(), 10_000, "server shutdown");
  }
}

/** Sends a text message and expects it echoed. */
async function assertEchoes(client: RawClient, text: string): Promise<void> {
  client.write(buildFrame({ opcode: Op.Text, payload: text }));
  const frame = await client.expectFrame();
  assert.equal(frame.opcode, Op.Text, `expected the echo of ${text}, got opcode ${frame.opcode}`);
  assert.equal(decoder.decode(frame.payload), text);
}

/** One way for a client to break the protocol. */
interface Violation {
  name: string;
  /** Bytes sent after the handshake (all at once). */
  bytes: Uint8Array;
  /** The close code the server must answer with. */
  close: number;
  /** The `WebSocketError.code` the application sees. */
  code: string;
  /** What the error message must say. */
  message: RegExp;
}

const bigLengthHeader = buildFrame({ opcode: Op.Binary, announce: 1n << 63n, lengthBits: 64 });

const violations: Violation[] = [
  {
    name: "an unmasked client frame",
    bytes: buildFrame({ opcode: Op.Text, payload: "hi", mask: false }),
    close: 1002,
    code: "UNMASKED_FRAME",
    message: /mask/i,
  },
  ...(["rsv1", "rsv2", "rsv3"] as const).map((bit) => ({
    name: `${bit.toUpperCase()} without a negotiated extension`,
    bytes: buildFrame({ opcode: Op.Text, payload: "hi", [bit]: true }),
    close: 1002,
    code: "RESERVED_BITS",
    message: /RSV/,
  })),
  ...[0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf].map((opcode) => ({
    name: `reserved opcode 0x${opcode.toString(16)}`,
    bytes: buildFrame({ opcode, payload: "hi" }),
    close: 1002,
    code: "RESERVED_OPCODE",
    message: /[Oo]pcode.*reserved/,
  })),
  {
    name: "a ping with 126 bytes of payload",
    bytes: buildFrame({ opcode: Op.Ping, payload: pattern(126) }),
    close: 1002,
    code: "CONTROL_FRAME_TOO_LONG",
    message: /125/,
  },
  {
    name: "a close frame with 126 bytes of payload",
    bytes: buildFrame({
      opcode: Op.Close,
      payload: concat(new Uint8Array([3, 232]), pattern(124)),
    }),
    close: 1002,
    code: "CONTROL_FRAME_TOO_LONG",
    message: /125/,
  },
  {
    name: "a fragmented ping",
    bytes: buildFrame({ opcode: Op.Ping, payload: "p", fin: false }),
    close: 1002,
    code: "FRAGMENTED_CONTROL_FRAME",
    message: /fragment/i,
  },
  {
    name: "a continuation frame without a message",
    bytes: buildFrame({ opcode: Op.Continuation, payload: "x" }),
    close: 1002,
    code: "UNEXPECTED_CONTINUATION",
    message: /[Cc]ontinuation/,
  },
  {
    name: "a new data frame inside a fragmented message",
    bytes: concat(
      buildFrame({ opcode: Op.Text, payload: "first half", fin: false }),
      buildFrame({ opcode: Op.Binary, payload: "intruder" }),
    ),
    close: 1002,
    code: "EXPECTED_CONTINUATION",
    message: /continuation/i,
  },
  {
    name: "a 64-bit length with the most significant bit set",
    bytes: bigLengthHeader,
    close: 1002,
    code: "INVALID_LENGTH",
    message: /significant bit|64-bit/,
  },
  {
    name: "invalid UTF-8 in a text message",
    bytes: buildFrame({ opcode: Op.Text, payload: new Uint8Array([0x68, 0x69, 0xff, 0x21]) }),
    close: 1007,
    code: "INVALID_UTF8",
    message: /UTF-8/,
  },
  {
    name: "a UTF-16 surrogate encoded in a text message",
    bytes: buildFrame({ opcode: Op.Text, payload: new Uint8Array([0xed, 0xa0, 0x80]) }),
    close: 1007,
    code: "INVALID_UTF8",
    message: /UTF-8/,
  },
  {
    name: "invalid UTF-8 in a close reason",
    bytes: buildFrame({ opcode: Op.Close, payload: new Uint8Array([0x03, 0xe8, 0xc0, 0x80]) }),
    close: 1007,
    code: "INVALID_UTF8",
    message: /UTF-8/,
  },
  {
    name: "a close frame with a 1-byte payload",
    bytes: buildFrame({ opcode: Op.Close, payload: new Uint8Array([0x03]) }),
    close: 1002,
    code: "INVALID_CLOSE_PAYLOAD",
    message: /1 byte/,
  },
];

/**
 * Opens a bystander and a violator, sends the violation, and checks: close
 * code, a prompt TCP close (not after closeTimeout), the application's error
 * callback and event, that the bystander still echoes, and that no promise
 * rejection went unhandled.
 */
async function assertViolation(violation: Violation): Promise<void> {
  const rejections = watchUnhandledRejections();
  try {
    await withEchoServer({ closeTimeout: 10_000 }, async (port, seen) => {
      const bystander = await RawClient.open(port);
      const violator = await RawClient.open(port);
      try {
        await assertEchoes(bystander, "before");
        const sentAt = performance.now();
        violator.write(violation.bytes);
        const { code, before } = await violator.expectClose(5000);
        assert.equal(code, violation.close, `${violation.name}: close code`);
        assert.equal(before.length, 0, "no data frame precedes the close");
        assert.ok(await violator.waitForEnd(5000), "the server closes TCP");
        const closedAfter = violator.endedAt! - sentAt;
        assert.ok(closedAfter < 2000, `TCP closed only after ${closedAfter} ms`);

        await assertEchoes(bystander, "after");
        assert.equal(seen.errors.length, 1, "the error callback fires once");
        const error = seen.errors[0];
        assert.ok(error instanceof WebSocketError, `not a WebSocketError: ${error}`);
        assert.equal(error.code, violation.code);
        assert.equal(error.closeCode, violation.close);
        assert.match(error.message, violation.message);
        assert.equal(seen.errorEvents.length, 1, "one error event is dispatched");
        assert.equal(seen.errorEvents[0].error, error);
        assert.match(seen.errorEvents[0].message, violation.message);
        assert.equal(seen.messages.length, 2, "only the bystander's messages were delivered");
      } finally {
        bystander.destroy();
        violator.destroy();
      }
    });
    await sleep(20);
    assert.deepEqual(rejections.reasons, [], "no unhandled promise rejection");
  } finally {
    rejections.stop();
  }
}

describe("server frames: protocol violations fail only that connection", () => {
  for (const violation of violations) {
    test(`${violation.name} → close ${violation.close}`, () => assertViolation(violation));
  }

  test("close codes that may not be sent → close 1002", async () => {
    const rejections = watchUnhandledRejections();
    const invalid = [
      0,
      999,
      1004,
      1005,
      1006,
      1015,
      1016,
      2000,
      2999,
      5000,
      65535,
    ];
    try {
      await withEchoServer({ closeTimeout: 10_000 }, async (port, seen) => {
        const bystander = await RawClient.open(port);
        try {
          for (const code of invalid) {
            const client = await RawClient.open(port);
            try {
              client.write(closeFrame(code, "x"));
              const reply = await client.expectClose();
              assert.equal(reply.code, 1002, `close code ${code} must be refused with 1002`);
              assert.ok(await client.waitForEnd(2000), `TCP not closed after close ${code}`);
            } finally {
              client.destroy();
            }
          }
          await assertEchoes(bystander, "still here");
          assert.equal(seen.errors.length, invalid.length);
          for (const error of seen.errors) {
            assert.ok(error instanceof WebSocketError);
            assert.equal(error.code, "INVALID_CLOSE_CODE");
            assert.match(error.message, /[Cc]lose code \d+/);
          }
        } finally {
          bystander.destroy();
        }
      });
      await sleep(20);
      assert.deepEqual(rejections.reasons, []);
    } finally {
      rejections.stop();
    }
  });

  test("the 1007 for UTF-8 split across fragments comes before the final fragment", async () => {
    // "€" is E2 82 AC; each case is [fragments before the bad one, the bad one].
    const cases: [Uint8Array[], Uint8Array][] = [
      // A bad byte in a middle fragment.
      [[utf8("valid start ")], new Uint8Array([0x61, 0xf8, 0x62])],
      // A sequence started in one fragment and broken in the next.
      [[concat(utf8("price: "), new Uint8Array([0xe2, 0x82]))], new Uint8Array([0x41])],
      // A sequence started in one fragment and continued wrongly across two more.
      [[new Uint8Array([0xf0]), new Uint8Array([0x90])], new Uint8Array([0x28])],
    ];
    await withEchoServer({}, async (port, seen) => {
      for (const [good, bad] of cases) {
        const client = await RawClient.open(port);
        try {
          good.forEach((payload, i) => {
            client.write(
              buildFrame({ opcode: i === 0 ? Op.Text : Op.Continuation, payload, fin: false }),
            );
          });
          // Valid so far: nothing comes back.
          await assert.rejects(client.readFrame(150), /Timed out/);
          client.write(buildFrame({ opcode: Op.Continuation, payload: bad, fin: false }));
          const { code } = await client.expectClose(3000);
          assert.equal(code, 1007);
          // Only now would the final fragment have been sent.
          client.write(buildFrame({ opcode: Op.Continuation, payload: "end", fin: true }));
          assert.ok(await client.waitForEnd(2000));
        } finally {
          client.destroy();
        }
      }
      assert.equal(seen.messages.length, 0);
      assert.equal(seen.errors.length, cases.length);
    });
  });

  test("a bad byte fails the connection before the rest of its frame arrives", async () => {
    await withEchoServer({}, async (port) => {
      const client = await RawClient.open(port);
      try {
        // A text frame announcing 1000 bytes, of which only the first 10 are sent.
        const payload = concat(new Uint8Array([0x61, 0xff]), pattern(998).map((b) => b & 0x7f));
        const frame = buildFrame({ opcode: Op.Text, payload });
        client.write(frame.subarray(0, 4 + 4 + 10));
        const { code } = await client.expectClose(3000);
        assert.equal(code, 1007);
      } finally {
        client.destroy();
      }
    });
  });

  test("a message that ends inside a UTF-8 sequence → close 1007", async () => {
    await withEchoServer({}, async (port, seen) => {
      const client = await RawClient.open(port);
      try {
        client.write(buildFrame({ opcode: Op.Text, payload: utf8("ok"), fin: false }));
        client.write(
          buildFrame({ opcode: Op.Continuation, payload: new Uint8Array([0xe2, 0x82]) }),
        );
        assert.equal((await client.expectClose()).code, 1007);
        assert.equal(seen.messages.length, 0);
      } finally {
        client.destroy();
      }
    });
  });
});

describe("server frames: maxMessageSize", () => {
  const limit = 1024;

  test("a frame header announcing more than maxMessageSize → 1009 before any payload", async () => {
    await withEchoServer({ maxMessageSize: limit }, async (port, seen) => {
      const fits = await RawClient.open(port);
      const big = await RawClient.open(port);
      try {
        const exact = pattern(limit, 3);
        fits.write(buildFrame({ opcode: Op.Binary, payload: exact }));
        const echoed = await fits.expectFrame();
        assert.deepEqual(echoed.payload, exact, "a message of exactly maxMessageSize passes");

        // Only the header: the server must not wait for 1025 bytes to refuse them.
        big.write(buildFrame({ opcode: Op.Binary, announce: limit + 1 }));
        const { code } = await big.expectClose(3000);
        assert.equal(code, 1009);
        assert.ok(await big.waitForEnd(2000));
        assert.equal(seen.errors.length, 1);
        assert.equal((seen.errors[0] as WebSocketError).closeCode, 1009);
        assert.match(seen.errors[0].message, /1024|limit/);
      } finally {
        fits.destroy();
        big.destroy();
      }
    });
  });

  test("fragments adding up to more than maxMessageSize → 1009 at the header that crosses it", async () => {
    await withEchoServer({ maxMessageSize: limit }, async (port) => {
      const client = await RawClient.open(port);
      try {
        client.write(buildFrame({ opcode: Op.Text, payload: "a".repeat(600), fin: false }));
        await assert.rejects(client.readFrame(100), /Timed out/);
        client.write(buildFrame({ opcode: Op.Continuation, announce: 600 }));
        assert.equal((await client.expectClose(3000)).code, 1009);
      } finally {
        client.destroy();
      }
    });
  });
});

describe("server frames: large binary messages", () => {
  const sizes = [8 * 1024, 16 * 1024 + 1, 65_535, 65_536, 300_000, 2 << 20];

  test("echoed intact at every size, sent whole or in small writes", async () => {
    await withEchoServer({ maxMessageSize: 4 << 20 }, async (port) => {
      const client = await RawClient.open(port);
      for (const size of sizes) {
        for (const pieces of [1, 7]) {
          const payload = pattern(size, size + pieces);
          const wire = buildFrame({ opcode: Op.Binary, payload });
          const step = Math.ceil(wire.length / pieces);
          for (let at = 0; at < wire.length; at += step) {
            client.write(wire.subarray(at, at + step));
            if (pieces > 1) await sleep(1);
          }
          const frame = await client.expectFrame(10_000);
          assert.equal(frame.opcode, Op.Binary);
          assert.equal(frame.payload.length, size);
          assert.ok(Buffer.from(frame.payload).equals(Buffer.from(payload)), `size ${size}`);
        }
      }
      client.destroy();
    });
  });

  test("one received message relayed to two connections and back reaches all intact", async () => {
    const peers = new Set<Parameters<NonNullable<WebSocketHandlers["open"]>>[0]>();
    await withEchoServer({ maxMessageSize: 4 << 20 }, async (port) => {
      const a = await RawClient.open(port);
      const b = await RawClient.open(port);
      await within(
        (async () => {
          while (peers.size < 2) await sleep(5);
        })(),
        5000,
        "both connections open",
      );
      for (const size of [70_000, 1 << 20]) {
        const payload = pattern(size, 11);
        a.write(buildFrame({ opcode: Op.Binary, payload }));
        for (const client of [a, a, b]) {
          const frame = await client.expectFrame(10_000);
          assert.ok(Buffer.from(frame.payload).equals(Buffer.from(payload)), `size ${size}`);
        }
      }
      a.destroy();
      b.destroy();
    }, {
      open(ws) {
        peers.add(ws);
      },
      message(ws, data) {
        // To every peer, the sender twice: the same view sent three times.
        ws.send(data);
        for (const peer of peers) peer.send(data);
      },
    });
  });

  test("a message listener with binaryType arraybuffer gets exactly sized ArrayBuffers", async () => {
    const buffers: ArrayBuffer[] = [];
    await withEchoServer({ maxMessageSize: 4 << 20 }, async (port) => {
      const client = await RawClient.open(port);
      for (const size of [100_000, 100_000, 1 << 20]) {
        const payload = pattern(size, size);
        client.write(buildFrame({ opcode: Op.Binary, payload }));
        const frame = await client.expectFrame(10_000);
        assert.ok(Buffer.from(frame.payload).equals(Buffer.from(payload)));
        assert.ok(buffers.at(-1) instanceof ArrayBuffer);
        assert.equal(buffers.at(-1)!.byteLength, size);
        assert.ok(Buffer.from(buffers.at(-1)!).equals(Buffer.from(payload)));
      }
      client.destroy();
    }, {
      open(ws) {
        ws.binaryType = "arraybuffer";
        ws.addEventListener("message", (event) => buffers.push(event.data as ArrayBuffer));
      },
    });
    assert.equal(buffers.length, 3);
  });
});

describe("server frames: small binary messages", () => {
  test("arrive intact; on Deno cut from one buffer per connection, let go after a quiet period", async () => {
    const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";
    // pingTimeout 400 ms: the keepalive clock ticks every 100 ms (and no ping is sent).
    await withEchoServer({ pingInterval: 10_000, pingTimeout: 400 }, async (port, seen) => {
      const client = await RawClient.open(port);
      // Together under 128 bytes, the read buffer an idle Deno connection waits with: one read.
      const payloads = [pattern(64, 1), pattern(30, 2), pattern(7, 3)];
      for (const payload of payloads) client.write(buildFrame({ opcode: Op.Binary, payload }));
      for (const payload of payloads) {
        const frame = await client.expectFrame();
        assert.ok(Buffer.from(frame.payload).equals(Buffer.from(payload)));
      }
      await sleep(600); // several ticks without a message
      const late = pattern(64, 4);
      client.write(buildFrame({ opcode: Op.Binary, payload: late }));
      assert.ok(Buffer.from((await client.expectFrame()).payload).equals(Buffer.from(late)));
      const got = seen.messages as Uint8Array[];
      assert.equal(got.length, 4);
      for (const [i, payload] of [...payloads, late].entries()) {
        assert.ok(Buffer.from(got[i]).equals(Buffer.from(payload)), `message ${i} kept its bytes`);
      }
      if (isDeno) {
        // The first one may predate the views decision; the next two share.
        assert.equal(got[1].buffer, got[2].buffer, "one buffer for messages close together");
        assert.notEqual(got[3].buffer, got[2].buffer, "a new buffer after the quiet period");
      }
      client.destroy();
    });
  });
});

describe("server frames: control frames", () => {
  test("a ping is answered by a pong with the same payload", async () => {
    await withEchoServer({}, async (port) => {
      const client = await RawClient.open(port);
      try {
        for (const payload of [new Uint8Array(0), utf8("hello"), pattern(125, 9)]) {
          client.write(buildFrame({ opcode: Op.Ping, payload }));
          const pong = await client.expectFrame();
          assert.equal(pong.opcode, Op.Pong);
          assert.equal(pong.fin, true);
          assert.deepEqual(pong.payload, payload);
        }
      } finally {
        client.destroy();
      }
    });
  });

  test("a ping between the fragments of a message is answered at once", async () => {
    await withEchoServer({}, async (port, seen) => {
      const client = await RawClient.open(port);
      try {
        client.write(buildFrame({ opcode: Op.Text, payload: "frag", fin: false }));
        client.write(buildFrame({ opcode: Op.Ping, payload: "mid" }));
        const pong = await client.expectFrame();
        assert.equal(pong.opcode, Op.Pong);
        assert.equal(decoder.decode(pong.payload), "mid");
        client.write(buildFrame({ opcode: Op.Continuation, payload: "ment", fin: false }));
        client.write(buildFrame({ opcode: Op.Ping, payload: "again" }));
        client.write(buildFrame({ opcode: Op.Continuation, payload: "ed" }));
        const second = await client.expectFrame();
        assert.equal(second.opcode, Op.Pong);
        assert.equal(decoder.decode(second.payload), "again");
        const echo = await client.expectFrame();
        assert.equal(echo.opcode, Op.Text);
        assert.equal(decoder.decode(echo.payload), "fragmented");
        assert.deepEqual(seen.messages, ["fragmented"]);
      } finally {
        client.destroy();
      }
    });
  });

  test("an unsolicited pong is ignored (reported to the pong callback only)", async () => {
    await withEchoServer({}, async (port, seen) => {
      const client = await RawClient.open(port);
      try {
        client.write(buildFrame({ opcode: Op.Pong, payload: "heartbeat" }));
        await assertEchoes(client, "still open");
        assert.equal(seen.pongs.length, 1);
        assert.equal(decoder.decode(seen.pongs[0]), "heartbeat");
        assert.equal(seen.errors.length, 0);
      } finally {
        client.destroy();
      }
    });
  });
});

describe("server frames: the closing handshake", () => {
  const validCodes = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999];

  test("valid close codes are echoed, and the server then closes TCP", async () => {
    await withEchoServer({ closeTimeout: 10_000 }, async (port, seen) => {
      for (const code of validCodes) {
        const client = await RawClient.open(port);
        try {
          const sentAt = performance.now();
          client.write(closeFrame(code, "reason é"));
          const reply = await client.expectClose();
          assert.equal(reply.code, code, `close ${code} echoed`);
          // The server closes first (§7.1.1), without waiting for closeTimeout.
          assert.ok(await client.waitForEnd(2000), `TCP not closed after close ${code}`);
          assert.ok(client.endedAt! - sentAt < 2000);
        } finally {
          client.destroy();
        }
      }
      await sleep(20);
      assert.deepEqual(
        seen.closes,
        validCodes.map((code) => ({ code, reason: "reason é" })),
        "the application sees each code and reason",
      );
      assert.equal(seen.errors.length, 0);
    });
  });

  test("an empty close frame is answered with an empty one (1005 to the application)", async () => {
    await withEchoServer({}, async (port, seen) => {
      const client = await RawClient.open(port);
      try {
        client.write(closeFrame());
        const frame = await client.expectFrame();
        assert.equal(frame.opcode, Op.Close);
        assert.equal(frame.payload.length, 0);
        assert.ok(await client.waitForEnd(2000));
        await sleep(20);
        assert.deepEqual(seen.closes, [{ code: 1005, reason: "" }]);
      } finally {
        client.destroy();
      }
    });
  });

  test("messages sent before ws.close() arrive before the close frame, then nothing", async () => {
    const big = pattern(1024 * 1024, 5);
    await withEchoServer({ closeTimeout: 10_000 }, async (port) => {
      const client = await RawClient.open(port);
      try {
        client.write(buildFrame({ opcode: Op.Text, payload: "close please" }));
        const { code, reason, before } = await client.expectClose(10_000);
        assert.equal(code, 4001);
        assert.equal(reason, "srv");
        assert.deepEqual(before.map((f) => f.opcode), [Op.Text, Op.Binary, Op.Text]);
        assert.equal(decoder.decode(before[0].payload), "one");
        assert.deepEqual(before[1].payload, big);
        assert.equal(decoder.decode(before[2].payload), "last");
        // The peer answers; the server then closes TCP promptly.
        client.write(closeFrame(4001));
        assert.ok(await client.waitForEnd(2000), "TCP closed after the closing handshake");
        assert.equal(client.buffered, 0, "nothing follows the close frame");
      } finally {
        client.destroy();
      }
    }, {
      message(ws) {
        ws.send("one");
        ws.send(big);
        ws.send("last");
        ws.close(4001, "srv");
      },
    });
  });

  test("a Blob sent before ws.close() arrives before the close frame", async () => {
    // The server runs in a child process: if close() never goes out, the
    // child may be stuck, and it must not take this test runner with it.
    const peer = await startPeer(runtimeCommand(peerPath("blob_close_server.ts")), 10_000);
    try {
      const client = await RawClient.open(peer.result.port as number);
      try {
        client.write(buildFrame({ opcode: Op.Text, payload: "go" }));
        const { code, reason, before } = await client.expectClose(5000);
        assert.deepEqual(
          before.map((f) => [f.opcode, Array.from(f.payload)]),
          [[Op.Text, [0x61]], [Op.Binary, [1, 2, 3]], [Op.Text, [0x7a]]],
        );
        assert.deepEqual([code, reason], [4003, "after blob"]);
        client.write(closeFrame(4003));
        assert.ok(await client.waitForEnd(2000));
      } finally {
        client.destroy();
      }
    } finally {
      peer.kill();
    }
  });

  test("after sending close the server sends no data frame, and drops a silent peer after closeTimeout", async () => {
    const closeTimeout = 400;
    await withEchoServer({ closeTimeout }, async (port, seen) => {
      const client = await RawClient.open(port);
      try {
        client.write(buildFrame({ opcode: Op.Text, payload: "close please" }));
        const { code } = await client.expectClose();
        const closeSeenAt = performance.now();
        assert.equal(code, 4002);
        // Still talking after the server's close: the text gets no echo (no data
        // frame may follow a close, §5.5.1), the ping its pong (§5.5.2 requires
        // one until a close was *received*).
        client.write(buildFrame({ opcode: Op.Text, payload: "late" }));
        client.write(buildFrame({ opcode: Op.Ping, payload: "late ping" }));
        assert.ok(await client.waitForEnd(closeTimeout + 3000), "the silent peer was not dropped");
        const after = client.endedAt! - closeSeenAt;
        assert.ok(after >= closeTimeout - 100, `dropped before closeTimeout: ${after} ms`);
        assert.ok(after < closeTimeout + 2000, `dropped only after ${after} ms`);
        const following: [number, string][] = [];
        for (
          let frame = await client.readFrame();
          frame !== null;
          frame = await client.readFrame()
        ) {
          following.push([frame.opcode, decoder.decode(frame.payload)]);
        }
        assert.deepEqual(following, [[Op.Pong, "late ping"]], "only the pong follows the close");
        await sleep(20);
        assert.equal(seen.closes.length, 1);
        assert.equal(seen.closes[0].code, 1006, "no close frame came back: abnormal closure");
      } finally {
        client.destroy();
      }
    }, {
      message(ws, data) {
        if (data === "close please") ws.close(4002, "bye");
        else ws.send(data);
      },
    });
  });
});

describe("server shutdown", () => {
  async function openMany(port: number, n: number): Promise<RawClient[]> {
    const clients: RawClient[] = [];
    for (let i = 0; i < n; i++) clients.push(await RawClient.open(port));
    return clients;
  }

  test("shutdown() closes every connection with 1001 and resolves finished", async () => {
    const server = await serve({ port: 0, hostname: HOST, closeTimeout: 5000 }, (ws) => {
      ws.addEventListener("message", (event) => ws.send((event as MessageEvent).data));
    });
    const port = server.addr.port;
    const clients = await openMany(port, 3);
    try {
      await sleep(20);
      assert.equal(server.connections.size, 3);
      const started = performance.now();
      const done = server.shutdown();
      for (const client of clients) {
        const { code } = await client.expectClose();
        assert.equal(code, 1001);
        client.write(closeFrame(1001));
      }
      await within(done, 3000, "shutdown() to resolve");
      await within(server.finished, 1000, "finished to resolve");
      assert.ok(performance.now() - started < 3000);
      assert.equal(server.connections.size, 0);
      for (const client of clients) assert.ok(await client.waitForEnd(2000));
      // No longer accepting.
      await assert.rejects(
        RawClient.open(port),
        "a new connection is refused after shutdown",
      );
    } finally {
      for (const client of clients) client.destroy();
      await within(server.shutdown(), 10_000, "shutdown");
    }
  });

  test("shutdown() drops peers that never answer, after closeTimeout", async () => {
    const closeTimeout = 300;
    const server = await serve({ port: 0, hostname: HOST, closeTimeout }, () => {});
    const [client] = await openMany(server.addr.port, 1);
    try {
      const started = performance.now();
      const done = server.shutdown();
      assert.equal((await client.expectClose()).code, 1001);
      await within(done, closeTimeout + 3000, "shutdown() with a silent peer");
      assert.ok(performance.now() - started >= closeTimeout - 50);
      assert.ok(await client.waitForEnd(2000));
    } finally {
      client.destroy();
    }
  });

  test("aborting the signal does the same as shutdown()", async () => {
    const controller = new AbortController();
    const closed: number[] = [];
    const server = await serve({ port: 0, hostname: HOST, signal: controller.signal }, {
      close(_ws, code) {
        closed.push(code);
      },
    });
    const clients = await openMany(server.addr.port, 2);
    try {
      controller.abort();
      for (const client of clients) {
        assert.equal((await client.expectClose()).code, 1001);
        client.write(closeFrame(1001));
      }
      await within(server.finished, 3000, "finished after abort");
      assert.deepEqual(closed, [1001, 1001], "the application sees the peers' close replies");
      assert.equal(server.connections.size, 0);
    } finally {
      for (const client of clients) client.destroy();
      await within(server.shutdown(), 10_000, "shutdown");
    }
  });

  test("an already aborted signal shuts the server down at once", async () => {
    const server = await serve({ port: 0, hostname: HOST, signal: AbortSignal.abort() }, () => {});
    await within(server.finished, 3000, "finished with an aborted signal");
    await assert.rejects(RawClient.open(server.addr.port));
  });
});
