/**
 * The connection state machine against hostile or broken peers, over real
 * loopback sockets: closing handshakes that go wrong (a peer that never
 * answers, one that sends FIN or RST right after its close frame, one that
 * half-closes after the handshake), control frames (125-byte pings, a ping
 * flood from a peer that never reads), keepalive (a peer that answers, one
 * that does not, one whose bytes the application is too slow to read, one
 * that stops reading our output), fragmentation and length rules, and user
 * callbacks that fail. For each: the close code on the wire, what the
 * application sees (`closed`, `close`, `error`), that the socket is closed
 * within a bound, and that another connection on the same server still works.
 *
 * RFC 6455 §5.2, §5.4, §5.5, §7.1.5, §7.4, §8.1.
 *
 * Runs under both `deno test -A` and `bun test`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { describe } from "node:test";
import {
  type CloseInfo,
  connect,
  serve,
  type ServeOptions,
  type Server,
  type WebSocketConnection,
  type WebSocketError,
  type WebSocketHandlers,
} from "../../mod.ts";
import { buildFrame, closeFrame, concat, Op, pattern, RawClient, utf8 } from "./_raw_client.ts";
import { delay, test, within } from "../_watch.ts";
import { type RawServer, rawServer, serverFrame } from "./client_peers/raw_server.ts";

const HOST = "127.0.0.1";
const decoder = new TextDecoder();

/** Polls `condition` until true or `ms` passed; fails with `what` otherwise. */
async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`Timed out after ${ms} ms: ${what}`);
    await delay(5);
  }
}

/** What the application saw on one server connection. */
interface Seen {
  ws: WebSocketConnection;
  path: string;
  errors: Error[];
  closes: { code: number; reason: string }[];
  closeEvents: { code: number; reason: string; wasClean: boolean }[];
  messages: (string | Uint8Array)[];
  closed: Promise<CloseInfo>;
}

interface Harness {
  server: Server;
  port: number;
  /** Every connection the server opened, in order. */
  seen: Seen[];
  /** Errors that reached the server's `onError`. */
  serverErrors: Error[];
  /** The connection opened on `path` (waits for it). */
  conn(path: string): Promise<Seen>;
}

/**
 * An echo server that records what the application sees per connection.
 * `extra` callbacks run after the recording ones (and may replace the echo).
 */
async function withServer(
  options: Omit<ServeOptions, "port" | "hostname">,
  body: (h: Harness) => Promise<void>,
  extra: Partial<WebSocketHandlers> = {},
): Promise<void> {
  const seen: Seen[] = [];
  const serverErrors: Error[] = [];
  const byWs = new Map<WebSocketConnection, Seen>();
  const server = await serve({
    ...options,
    port: 0,
    hostname: HOST,
    onError: (error) => void serverErrors.push(error),
  }, {
    ...extra,
    open(ws) {
      const s: Seen = {
        ws,
        path: new URL(ws.url).pathname,
        errors: [],
        closes: [],
        closeEvents: [],
        messages: [],
        closed: ws.closed,
      };
      seen.push(s);
      byWs.set(ws, s);
      ws.addEventListener("close", (e) => {
        const event = e as CloseEvent;
        s.closeEvents.push({ code: event.code, reason: event.reason, wasClean: event.wasClean });
      });
      return extra.open?.(ws);
    },
    message(ws, data) {
      byWs.get(ws)?.messages.push(data);
      if (extra.message) return extra.message(ws, data);
      ws.send(data);
    },
    error(ws, error) {
      byWs.get(ws)?.errors.push(error);
      return extra.error?.(ws, error);
    },
    close(ws, code, reason) {
      byWs.get(ws)?.closes.push({ code, reason });
      return extra.close?.(ws, code, reason);
    },
  });
  const h: Harness = {
    server,
    port: server.addr.port,
    seen,
    serverErrors,
    async conn(path: string): Promise<Seen> {
      await until(() => seen.some((s) => s.path === path), 5000, `connection on ${path}`);
      return seen.find((s) => s.path === path)!;
    },
  };
  try {
    await body(h);
  } finally {
    server.shutdown();
    // Connections still open are dropped after closeTimeout (+100 ms).
    await within(server.finished, 15_000, "server shutdown");
  }
}

/** A bystander on the same server still gets its echo. */
async function assertServes(port: number): Promise<void> {
  const client = await RawClient.open(port, { path: "/bystander" });
  try {
    client.write(buildFrame({ opcode: Op.Text, payload: "still there?" }));
    const frame = await client.expectFrame();
    assert.equal(frame.opcode, Op.Text);
    assert.equal(decoder.decode(frame.payload), "still there?");
    client.write(closeFrame(1000));
    assert.equal((await client.expectClose()).code, 1000);
    assert.ok(await client.waitForEnd(2000), "bystander: the server closes TCP");
  } finally {
    client.destroy();
  }
}

/** A 2-byte close code followed by `reason` bytes. */
function closePayload(code: number, reason: Uint8Array = new Uint8Array(0)): Uint8Array {
  return concat(new Uint8Array([code >> 8, code & 0xff]), reason);
}

// ---------------------------------------------------------------------------

describe("hostile close: the closing handshake (§5.5.1, §7.1.5, §7.4)", () => {
  test("valid codes are echoed and seen with wasClean; invalid codes and payloads get 1002/1007", async () => {
    const cases: { name: string; bytes: Uint8Array; wire: number; app: number; clean: boolean }[] =
      [
        ...[1000, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999].map((code) => ({
          name: `code ${code}`,
          bytes: closeFrame(code, "bye"),
          wire: code,
          app: code,
          clean: true,
        })),
        ...[0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535].map((code) => ({
          name: `invalid code ${code}`,
          bytes: closeFrame(code),
          wire: 1002,
          app: 1002,
          clean: false,
        })),
        {
          name: "a 1-byte payload",
          bytes: buildFrame({ opcode: Op.Close, payload: new Uint8Array([3]) }),
          wire: 1002,
          app: 1002,
          clean: false,
        },
        {
          name: "an invalid UTF-8 reason",
          bytes: buildFrame({
            opcode: Op.Close,
            payload: closePayload(1000, new Uint8Array([0xce, 0xba, 0xe1, 0xbd])),
          }),
          wire: 1007,
          app: 1007,
          clean: false,
        },
        {
          name: "a 123-byte reason (the most that fits)",
          bytes: closeFrame(1000, "r".repeat(123)),
          wire: 1000,
          app: 1000,
          clean: true,
        },
        {
          name: "a 126-byte close frame (16-bit length)",
          bytes: buildFrame({ opcode: Op.Close, payload: closePayload(1000, pattern(124)) }),
          wire: 1002,
          app: 1002,
          clean: false,
        },
        {
          name: "an empty close frame",
          bytes: closeFrame(),
          wire: 1005,
          app: 1005,
          clean: true,
        },
      ];
    await withServer({ closeTimeout: 10_000 }, async (h) => {
      for (const [i, c] of cases.entries()) {
        const client = await RawClient.open(h.port, { path: `/c${i}` });
        try {
          const sentAt = performance.now();
          client.write(c.bytes);
          const { code, before } = await client.expectClose();
          assert.equal(code, c.wire, `${c.name}: code on the wire`);
          assert.equal(before.length, 0, `${c.name}: nothing before the close`);
          assert.ok(await client.waitForEnd(3000), `${c.name}: TCP closed`);
          assert.ok(client.endedAt! - sentAt < 2000, `${c.name}: closed promptly`);
          const s = await h.conn(`/c${i}`);
          const info = await within(s.closed, 3000, `${c.name}: closed`);
          assert.equal(info.closeCode, c.app, `${c.name}: closed code`);
          assert.equal(info.wasClean, c.clean, `${c.name}: wasClean`);
          assert.deepEqual(s.closes.map((x) => x.code), [c.app], `${c.name}: close callback`);
          assert.equal(s.closeEvents[0].wasClean, c.clean, `${c.name}: close event wasClean`);
          if (c.name.startsWith("a 123")) assert.equal(info.reason, "r".repeat(123));
          assert.equal(s.errors.length, c.clean ? 0 : 1, `${c.name}: error callback`);
        } finally {
          client.destroy();
        }
      }
      await assertServes(h.port);
    });
  });

  test("data frames and a second close after the peer's close are ignored", async () => {
    await withServer({}, async (h) => {
      const client = await RawClient.open(h.port, { path: "/after" });
      try {
        client.write(concat(
          closeFrame(1000, "done"),
          buildFrame({ opcode: Op.Text, payload: "late" }),
          buildFrame({ opcode: Op.Ping, payload: "late ping" }),
          closeFrame(3000, "again"),
          buildFrame({ opcode: 0x3 }), // would be a 1002 if it were parsed
        ));
        const { code, before } = await client.expectClose();
        assert.equal(code, 1000);
        assert.equal(before.length, 0);
        assert.equal(await client.readFrame(3000), null, "no second close, no pong");
        const s = await h.conn("/after");
        const info = await within(s.closed, 3000, "closed");
        assert.deepEqual(info, { closeCode: 1000, reason: "done", wasClean: true });
        assert.equal(s.messages.length, 0, "no message after the close");
        assert.equal(s.errors.length, 0);
      } finally {
        client.destroy();
      }
      await assertServes(h.port);
    });
  });

  test("a peer that never answers our close: socket closed after closeTimeout, 1006", async () => {
    await withServer({ closeTimeout: 300 }, async (h) => {
      const client = await RawClient.open(h.port, { path: "/mute" });
      try {
        const s = await h.conn("/mute");
        const closedAt = performance.now();
        s.ws.close(4000, "go away");
        s.ws.close(4001, "twice"); // a no-op
        const { code, reason } = await client.expectClose();
        assert.deepEqual({ code, reason }, { code: 4000, reason: "go away" });
        assert.equal(s.ws.readyState, 2, "CLOSING while waiting");
        // Never answered: the server drops TCP after closeTimeout.
        assert.ok(await client.waitForEnd(3000), "TCP closed");
        const after = client.endedAt! - closedAt;
        assert.ok(after >= 250 && after < 2000, `closed after ${after} ms`);
        const info = await within(s.closed, 1000, "closed");
        assert.deepEqual(info, { closeCode: 1006, reason: "", wasClean: false });
        assert.deepEqual(s.closes.map((c) => c.code), [1006]);
        assert.equal(await client.readFrame(100), null, "only one close frame");
      } finally {
        client.destroy();
      }
      await assertServes(h.port);
    });
  });

  test("close() with a code or reason that cannot be sent throws and leaves the connection open", async () => {
    await withServer({}, async (h) => {
      const client = await RawClient.open(h.port, { path: "/app" });
      try {
        const s = await h.conn("/app");
        for (const code of [0, 999, 1004, 1005, 1006, 1015, 2999, 5000, 1000.5, NaN]) {
          assert.throws(
            () => s.ws.close(code),
            (e: unknown) => e instanceof DOMException && e.name === "InvalidAccessError",
            `code ${code}`,
          );
        }
        assert.throws(
          () => s.ws.close(1000, "é".repeat(62)),
          (e: unknown) => e instanceof DOMException && e.name === "SyntaxError",
        );
        assert.equal(s.ws.readyState, 1, "still open");
        client.write(buildFrame({ opcode: Op.Text, payload: "echo" }));
        assert.equal(decoder.decode((await client.expectFrame()).payload), "echo");
        s.ws.close(undefined, "a reason alone means 1000");
        const { code, reason } = await client.expectClose();
        assert.deepEqual({ code, reason }, { code: 1000, reason: "a reason alone means 1000" });
        client.write(closeFrame(1000));
        assert.ok(await client.waitForEnd(2000));
        assert.equal((await within(s.closed, 2000, "closed")).wasClean, true);
      } finally {
        client.destroy();
      }
    });
  });

  test("a peer that drops TCP without a close frame: 1006, wasClean false", async () => {
    await withServer({}, async (h) => {
      const client = await RawClient.open(h.port, { path: "/drop" });
      const s = await h.conn("/drop");
      client.end(); // FIN right after the handshake
      assert.ok(await client.waitForEnd(2000), "the server closes its side at once");
      const info = await within(s.closed, 2000, "closed");
      assert.equal(info.closeCode, 1006);
      assert.equal(info.wasClean, false);
      assert.deepEqual(s.closeEvents, [{ code: 1006, reason: "", wasClean: false }]);
      client.destroy();
      await assertServes(h.port);
    });
  });

  test("a close frame followed at once by FIN still gets the echo, and is clean", async () => {
    await withServer({}, async (h) => {
      for (let i = 0; i < 20; i++) {
        const client = await RawClient.open(h.port, { path: `/fin${i}` });
        try {
          // The close frame and the FIN leave together.
          client.socket.end(closeFrame(1000, "bye"));
          const { code } = await client.expectClose(3000);
          assert.equal(code, 1000, `round ${i}: the echo`);
          assert.ok(await client.waitForEnd(2000));
          const s = await h.conn(`/fin${i}`);
          const info = await within(s.closed, 2000, "closed");
          assert.deepEqual(info, { closeCode: 1000, reason: "bye", wasClean: true }, `round ${i}`);
          assert.deepEqual(s.errors, [], `round ${i}: no error`);
        } finally {
          client.destroy();
        }
      }
      await assertServes(h.port);
    });
  });

  test("a close frame followed at once by RST: the close is seen, the server goes on", async () => {
    await withServer({}, async (h) => {
      for (let i = 0; i < 20; i++) {
        const client = await RawClient.open(h.port, { path: `/rst${i}` });
        await client.writeAndFlush(closeFrame(1000, "bye"));
        client.socket.resetAndDestroy();
        const s = await h.conn(`/rst${i}`);
        const info = await within(s.closed, 3000, `round ${i}: closed`);
        // Either the close frame was read (1000) or the reset came first (1006).
        assert.ok([1000, 1006].includes(info.closeCode), `round ${i}: code ${info.closeCode}`);
        if (info.closeCode === 1000) {
          assert.equal(info.wasClean, true);
          assert.deepEqual(s.errors, [], `round ${i}: a reset after a clean close is no error`);
        }
      }
      await until(() => h.server.connections.size === 0, 3000, "all gone");
      await assertServes(h.port);
    });
  });
});

describe("hostile close: control frames (§5.5)", () => {
  test("a ping of 125 bytes is answered with the same payload, between fragments too", async () => {
    await withServer({}, async (h) => {
      const client = await RawClient.open(h.port);
      try {
        const payload = pattern(125, 3);
        client.write(concat(
          buildFrame({ opcode: Op.Text, payload: "frag", fin: false }),
          buildFrame({ opcode: Op.Ping, payload }),
          buildFrame({ opcode: Op.Pong, payload: "unsolicited" }),
          buildFrame({ opcode: Op.Continuation, payload: "ment" }),
        ));
        const pong = await client.expectFrame();
        assert.equal(pong.opcode, Op.Pong);
        assert.deepEqual(pong.payload, payload);
        const echo = await client.expectFrame();
        assert.equal(echo.opcode, Op.Text);
        assert.equal(decoder.decode(echo.payload), "fragment");
      } finally {
        client.destroy();
      }
    });
  });

  test("a ping flood from a peer that never reads: the server stops reading, output stays bounded", async () => {
    await withServer({ closeTimeout: 300, pingInterval: 0 }, async (h) => {
      const client = await RawClient.open(h.port, { path: "/flood" });
      try {
        client.socket.pause();
        const s = await h.conn("/flood");
        const ping = buildFrame({ opcode: Op.Ping, payload: pattern(125) });
        const burst = concat(...Array.from({ length: 512 }, () => ping)); // 64 KiB of pings
        let peak = 0;
        const deadline = performance.now() + 1500;
        let written = 0;
        while (performance.now() < deadline && written < 64 * 1024 * 1024) {
          if (client.socket.writableLength < 1024 * 1024) {
            client.write(burst);
            written += burst.length;
          }
          peak = Math.max(peak, s.ws.bufferedAmount);
          await delay(1);
        }
        peak = Math.max(peak, s.ws.bufferedAmount);
        // 1 MiB high-water mark, plus what one read's worth of pings answers.
        assert.ok(peak <= 2 * 1024 * 1024, `server output grew to ${peak} bytes`);
        assert.equal(s.ws.readyState, 1, "not failed for it: reading just paused");
      } finally {
        client.destroy();
      }
      await assertServes(h.port);
    });
  });
});

describe("hostile close: keepalive", () => {
  test("a peer that reads but never answers pings: 1011 on the wire and to the app", async () => {
    await withServer({ pingInterval: 100, pingTimeout: 150, closeTimeout: 300 }, async (h) => {
      const client = await RawClient.open(h.port, { path: "/deaf" });
      try {
        const ping = await client.expectFrame(3000);
        assert.equal(ping.opcode, Op.Ping);
        const { code } = await client.expectClose(3000);
        assert.equal(code, 1011);
        assert.ok(await client.waitForEnd(2000), "TCP closed within closeTimeout");
        const s = await h.conn("/deaf");
        const info = await within(s.closed, 2000, "closed");
        assert.equal(info.closeCode, 1011);
        assert.equal(info.wasClean, false);
        assert.equal((s.errors[0] as WebSocketError).code, "PING_TIMEOUT");
      } finally {
        client.destroy();
      }
      await assertServes(h.port);
    });
  });

  test("a peer whose bytes the application is too slow to read is not blamed", async () => {
    let slow = true;
    await withServer({ pingInterval: 100, pingTimeout: 150, closeTimeout: 300 }, async (h) => {
      const ws = await connect(`ws://${HOST}:${h.port}/slow`, { pingInterval: 0 });
      try {
        const replies: string[] = [];
        ws.addEventListener("message", (e) => replies.push(String((e as MessageEvent).data)));
        ws.send("hold the server's reading");
        await delay(1200); // the server's app holds it for 1 s; our pongs wait unread
        assert.equal(ws.readyState, 1, "still open after the application caught up");
        ws.send("after");
        await until(() => replies.includes("after"), 3000, "echo after the stall");
        const s = await h.conn("/slow");
        assert.deepEqual(s.errors, []);
      } finally {
        ws.close();
        await within(ws.closed, 3000, "client closed");
      }
    }, {
      async message(ws, data) {
        if (slow) {
          slow = false;
          await delay(1000);
        }
        ws.send(data);
      },
    });
  });

  test("a peer that stops reading our output and goes silent is found by pingTimeout", async () => {
    // The server has more than its 1 MiB high-water mark queued for a peer
    // that has stopped reading. The peer sends one last frame, then nothing.
    // Reading is then paused for the peer's backlog, not for the application:
    // the peer is not keeping up, and must not be kept alive forever.
    await withServer({ pingInterval: 100, pingTimeout: 150, closeTimeout: 300 }, async (h) => {
      const client = await RawClient.open(h.port, { path: "/stuck" });
      try {
        client.socket.pause();
        const s = await h.conn("/stuck");
        s.ws.send(new Uint8Array(8 * 1024 * 1024));
        await until(() => s.ws.bufferedAmount > 1024 * 1024, 3000, "output backed up");
        await delay(50);
        client.write(buildFrame({ opcode: Op.Pong, payload: "last words" }));
        const info = await within(s.closed, 4000, "the silent, non-reading peer is dropped");
        assert.equal(info.closeCode, 1011);
      } finally {
        client.destroy();
      }
      await assertServes(h.port);
    });
  });

  test("idleTimeout closes a peer that sends only pings with 1001", async () => {
    await withServer({ idleTimeout: 300, pingInterval: 0, closeTimeout: 300 }, async (h) => {
      const client = await RawClient.open(h.port, { path: "/idle" });
      const timer = setInterval(() => client.write(buildFrame({ opcode: Op.Ping })), 30);
      try {
        const { code, reason } = await client.expectClose(3000);
        assert.deepEqual({ code, reason }, { code: 1001, reason: "Idle timeout" });
        clearInterval(timer);
        client.write(closeFrame(1001));
        assert.ok(await client.waitForEnd(2000));
        const s = await h.conn("/idle");
        const info = await within(s.closed, 2000, "closed");
        assert.deepEqual(info, { closeCode: 1001, reason: "", wasClean: true });
      } finally {
        clearInterval(timer);
        client.destroy();
      }
    });
  });
});

describe("hostile close: frame and fragmentation limits (§5.2, §5.4)", () => {
  const cases: { name: string; bytes: Uint8Array; code: number; error: string }[] = [
    {
      name: "a 16-bit length encoding 125 (not minimal)",
      bytes: buildFrame({ opcode: Op.Binary, payload: pattern(125), lengthBits: 16 }),
      code: 1002,
      error: "INVALID_LENGTH",
    },
    {
      name: "a 64-bit length encoding 200 (not minimal)",
      bytes: buildFrame({ opcode: Op.Binary, payload: pattern(200), lengthBits: 64 }),
      code: 1002,
      error: "INVALID_LENGTH",
    },
    {
      name: "a 64-bit length with the top bit set",
      bytes: buildFrame({ opcode: Op.Binary, announce: 0x8000000000000010n, lengthBits: 64 }),
      code: 1002,
      error: "INVALID_LENGTH",
    },
    {
      name: "a 64-bit length of 2^62",
      bytes: buildFrame({ opcode: Op.Binary, announce: 1n << 62n, lengthBits: 64 }),
      code: 1009,
      error: "FRAME_TOO_BIG",
    },
    {
      name: "a frame over maxFrameSize",
      bytes: buildFrame({ opcode: Op.Binary, announce: 4097 }),
      code: 1009,
      error: "FRAME_TOO_BIG",
    },
    {
      name: "a message over maxMessageSize in 3000-byte fragments",
      bytes: concat(
        buildFrame({ opcode: Op.Binary, payload: pattern(3000), fin: false }),
        buildFrame({ opcode: Op.Continuation, payload: pattern(3000), fin: false }),
        buildFrame({ opcode: Op.Continuation, payload: pattern(3000), fin: false }),
      ),
      code: 1009,
      error: "MESSAGE_TOO_BIG",
    },
    {
      name: "a message in more than maxFragments empty fragments",
      bytes: concat(
        buildFrame({ opcode: Op.Text, fin: false }),
        ...Array.from({ length: 20 }, () => buildFrame({ opcode: Op.Continuation, fin: false })),
      ),
      code: 1009,
      error: "TOO_MANY_FRAGMENTS",
    },
    {
      name: "a fragmented pong",
      bytes: buildFrame({ opcode: Op.Pong, fin: false }),
      code: 1002,
      error: "FRAGMENTED_CONTROL_FRAME",
    },
    {
      name: "RSV1 on a ping",
      bytes: buildFrame({ opcode: Op.Ping, rsv1: true }),
      code: 1002,
      error: "RESERVED_BITS",
    },
    {
      name: "an unmasked close frame",
      bytes: buildFrame({ opcode: Op.Close, payload: closePayload(1000), mask: false }),
      code: 1002,
      error: "UNMASKED_FRAME",
    },
  ];
  for (const c of cases) {
    test(`${c.name} → ${c.code}`, async () => {
      await withServer({
        maxFrameSize: 4096,
        maxMessageSize: 8000,
        maxFragments: 10,
        closeTimeout: 10_000,
      }, async (h) => {
        const client = await RawClient.open(h.port, { path: "/bad" });
        try {
          const sentAt = performance.now();
          client.write(c.bytes);
          const { code } = await client.expectClose();
          assert.equal(code, c.code);
          assert.ok(await client.waitForEnd(3000), "TCP closed");
          assert.ok(client.endedAt! - sentAt < 2000, "closed promptly, not at closeTimeout");
          const s = await h.conn("/bad");
          const info = await within(s.closed, 2000, "closed");
          assert.equal(info.closeCode, c.code);
          assert.equal(info.wasClean, false);
          assert.equal(s.errors.length, 1);
          assert.equal((s.errors[0] as WebSocketError).code, c.error);
          assert.equal(s.messages.length, 0);
        } finally {
          client.destroy();
        }
        await assertServes(h.port);
      });
    });
  }
});

describe("hostile close: user callbacks that fail", () => {
  test("an async error callback that rejects is contained (no unhandled rejection)", async () => {
    await withServer({}, async (h) => {
      const client = await RawClient.open(h.port, { path: "/victim" });
      try {
        client.write(buildFrame({ opcode: 0x3 })); // a protocol error → the error callback
        assert.equal((await client.expectClose()).code, 1002);
        const s = await h.conn("/victim");
        await within(s.closed, 2000, "closed");
        await delay(50);
      } finally {
        client.destroy();
      }
      await assertServes(h.port);
    }, {
      async error() {
        await delay(1);
        throw new Error("boom in async error callback");
      },
    });
  });

  test("an async open callback that rejects closes with 1011; others go on", async () => {
    await withServer({}, async (h) => {
      const client = await RawClient.open(h.port, { path: "/victim" });
      try {
        const { code } = await client.expectClose();
        assert.equal(code, 1011);
        client.write(closeFrame(1011));
        assert.ok(await client.waitForEnd(2000));
        const s = await h.conn("/victim");
        const info = await within(s.closed, 2000, "closed");
        assert.equal(info.closeCode, 1011);
        assert.ok(s.errors.some((e) => e.message === "boom in open"));
      } finally {
        client.destroy();
      }
      await assertServes(h.port);
    }, {
      async open(ws) {
        if (!ws.url.endsWith("/victim")) return;
        await delay(1);
        throw new Error("boom in open");
      },
    });
  });

  test("an async close callback that rejects reaches onError, not the event loop", async () => {
    await withServer({}, async (h) => {
      const client = await RawClient.open(h.port, { path: "/victim" });
      try {
        client.write(closeFrame(1000));
        assert.equal((await client.expectClose()).code, 1000);
        await until(
          () => h.serverErrors.some((e) => e.message === "boom in close"),
          2000,
          "reported to onError",
        );
      } finally {
        client.destroy();
      }
      await assertServes(h.port);
    }, {
      async close(ws) {
        if (!ws.url.endsWith("/victim")) return;
        await delay(1);
        throw new Error("boom in close");
      },
    });
  });

  test("a message callback whose promise rejects closes with 1011 (a clean handshake)", async () => {
    await withServer({}, async (h) => {
      const client = await RawClient.open(h.port, { path: "/victim" });
      try {
        client.write(buildFrame({ opcode: Op.Text, payload: "boom" }));
        const { code, reason } = await client.expectClose();
        assert.deepEqual({ code, reason }, { code: 1011, reason: "Internal error" });
        client.write(closeFrame(1011));
        assert.ok(await client.waitForEnd(2000));
        const s = await h.conn("/victim");
        const info = await within(s.closed, 2000, "closed");
        assert.equal(info.closeCode, 1011);
        assert.equal(info.wasClean, true, "the closing handshake completed");
      } finally {
        client.destroy();
      }
      await assertServes(h.port);
    }, {
      message(ws, data) {
        if (data === "boom") return Promise.reject(new Error("boom in message"));
        ws.send(data);
      },
    });
  });
});

describe("hostile close: error reporters that fail", () => {
  test("an async server onError that rejects does not reach the event loop", async () => {
    // A message callback throws on a connection with no error callback: the
    // error goes to the server's onError, which here is async and rejects.
    const reported: Error[] = [];
    const server = await serve({
      port: 0,
      hostname: HOST,
      onError: async (error) => {
        reported.push(error);
        await delay(1);
        throw new Error("boom in async onError");
      },
    }, {
      message(ws, data) {
        if (data === "boom") throw new Error("boom in message");
        ws.send(data);
      },
    });
    try {
      const client = await RawClient.open(server.addr.port);
      try {
        client.write(buildFrame({ opcode: Op.Text, payload: "boom" }));
        assert.equal((await client.expectClose()).code, 1011);
        await until(() => reported.length > 0, 2000, "onError called");
        await delay(50);
      } finally {
        client.destroy();
      }
      await assertServes(server.addr.port);
    } finally {
      server.shutdown();
      await within(server.finished, 15_000, "server shutdown");
    }
  });
});

describe("hostile close: the client side", () => {
  /** A client connected to a raw server, with what it reports. */
  async function open(server: RawServer, closeTimeout = 300) {
    const errors: Error[] = [];
    const connecting = connect(server.url, {
      closeTimeout,
      pingInterval: 0,
      handlers: { error: (_ws, error) => void errors.push(error) },
    });
    connecting.catch(() => {});
    const peer = await server.accept();
    await peer.accept(await peer.readRequest());
    const ws = await within(connecting, 5000, "connect");
    return { ws, peer, errors };
  }

  test("a server that sends close and keeps TCP open: dropped after closeTimeout, clean", async () => {
    const server = await rawServer();
    try {
      const { ws, peer, errors } = await open(server);
      const start = performance.now();
      peer.write(serverFrame(0x8, closePayload(1001, utf8("restart"))));
      const echo = await peer.readFrame(2000);
      assert.ok(echo !== null && echo.opcode === 0x8, "the client echoes the close");
      const info = await within(ws.closed, 3000, "closed");
      const elapsed = performance.now() - start;
      assert.ok(elapsed >= 250 && elapsed < 2000, `dropped after ${elapsed} ms`);
      assert.deepEqual(info, { closeCode: 1001, reason: "restart", wasClean: true });
      assert.deepEqual(errors, []);
      await within(peer.ended, 2000, "the client closed its socket");
    } finally {
      await server.close();
    }
  });

  test("a server that half-closes right after the handshake: 1006, not clean, at once", async () => {
    const server = await rawServer();
    try {
      const { ws, peer } = await open(server, 10_000);
      const start = performance.now();
      peer.socket.end();
      const info = await within(ws.closed, 3000, "closed");
      assert.ok(performance.now() - start < 2000, "not held until closeTimeout");
      assert.equal(info.closeCode, 1006);
      assert.equal(info.wasClean, false);
      await within(peer.ended, 2000, "the client closed its socket");
    } finally {
      await server.close();
    }
  });

  test("a server that sends close then resets: a clean close reports no error", async () => {
    const server = await rawServer();
    try {
      for (let i = 0; i < 10; i++) {
        const { ws, peer, errors } = await open(server);
        await new Promise<void>((resolve) =>
          peer.socket.write(serverFrame(0x8, closePayload(1000)), () => resolve())
        );
        peer.socket.resetAndDestroy();
        const info = await within(ws.closed, 3000, `round ${i}: closed`);
        if (info.wasClean) assert.deepEqual(errors, [], `round ${i}: clean, yet an error`);
        else assert.equal(info.closeCode, 1006, `round ${i}`);
      }
    } finally {
      await server.close();
    }
  });
});
