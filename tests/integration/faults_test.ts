/**
 * Faults a server must survive: user callbacks that throw, peers that stop
 * reading, closes that never complete, buffers that overflow, half-open
 * peers. Each test uses real sockets on loopback; the raw client stops
 * reading with `socket.pause()`, which lets the TCP window fill.
 *
 * @module
 */

import assert from "node:assert/strict";
import { describe } from "node:test";
import {
  connect,
  ReconnectingWebSocket,
  serve,
  type Server,
  WebSocket,
  type WebSocketConnection,
} from "../../mod.ts";
import { buildFrame, closeFrame, concat, Op, RawClient, utf8 } from "./_raw_client.ts";
import { delay, test, within } from "../_watch.ts";

/** Polls `condition` until true or `ms` passed; fails the test with `what` otherwise. */
async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`Timed out after ${ms} ms: ${what}`);
    await delay(5);
  }
}

/** Captures console.error calls while `body` runs. */
async function capturingConsoleErrors(body: () => Promise<void>): Promise<unknown[][]> {
  const calls: unknown[][] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => void calls.push(args);
  try {
    await body();
  } finally {
    console.error = original;
  }
  return calls;
}

/** A text frame from a client (masked). */
function textFrame(text: string): Uint8Array {
  return buildFrame({ opcode: Op.Text, payload: utf8(text) });
}

/** Sends "hello" from a fresh client and waits for the echo: the server still serves others. */
async function echoWorks(server: Server): Promise<void> {
  const ws = await connect(server.url);
  try {
    const reply = new Promise<string>((resolve) => {
      ws.addEventListener("message", (event) => resolve(String((event as MessageEvent).data)));
    });
    ws.send("hello");
    assert.equal(await within(reply, 5000, "echo from a control client"), "hello");
  } finally {
    ws.close();
    await within(ws.closed, 5000, "control client closed");
  }
}

describe("faults: user code that throws", () => {
  const cases: {
    name: string;
    setup: (ws: WebSocketConnection) => void;
    trigger: (client: RawClient) => void;
  }[] = [
    {
      name: "a message listener",
      setup: (ws) =>
        ws.addEventListener("message", () => {
          throw new Error("boom in listener");
        }),
      trigger: (client) => client.write(textFrame("x")),
    },
    {
      name: "an onmessage handler",
      setup: (ws) => {
        ws.onmessage = () => {
          throw new Error("boom in onmessage");
        };
      },
      trigger: (client) => client.write(textFrame("x")),
    },
    {
      name: "an async message listener that rejects",
      setup: (ws) =>
        ws.addEventListener("message", async () => {
          await delay(1);
          throw new Error("boom in async listener");
        }),
      trigger: (client) => client.write(textFrame("x")),
    },
    {
      name: "a listener object's handleEvent",
      setup: (ws) =>
        ws.addEventListener("message", {
          handleEvent() {
            throw new Error("boom in handleEvent");
          },
        }),
      trigger: (client) => client.write(textFrame("x")),
    },
  ];
  for (const { name, setup, trigger } of cases) {
    test(`${name}: the connection closes with 1011, the error is reported, others go on`, async () => {
      const errors: Error[] = [];
      const server = await serve({ port: 0, hostname: "127.0.0.1" }, {
        open(ws) {
          if (ws.url.endsWith("/victim")) setup(ws);
          else ws.addEventListener("message", (e) => ws.send((e as MessageEvent).data));
        },
        error(_ws, error) {
          errors.push(error);
        },
      });
      try {
        const client = await RawClient.open(server.addr.port, { path: "/victim" });
        trigger(client);
        const { code } = await client.expectClose();
        assert.equal(code, 1011);
        client.write(closeFrame(1011));
        await until(() => server.connections.size === 0, 5000, "victim removed");
        assert.ok(errors.some((e) => e.message.startsWith("boom")), "error reported");
        await echoWorks(server);
        client.destroy();
      } finally {
        await server.shutdown();
      }
    });
  }

  const callbacks = ["open", "message", "ping", "pong", "close"] as const;
  for (const which of callbacks) {
    test(`a throwing ${which} callback is contained and reported`, async () => {
      const errors: Error[] = [];
      const reported: Error[] = [];
      let closes = 0;
      const victim = (ws: WebSocketConnection) => ws.url.endsWith("/victim");
      const server = await serve({
        port: 0,
        hostname: "127.0.0.1",
        onError: (error) => reported.push(error),
      }, {
        [which]: (ws: WebSocketConnection, data: unknown) => {
          if (which === "close") closes++;
          if (victim(ws)) throw new Error(`boom in ${which}`);
          if (which === "message") ws.send(data as string);
        },
        ...(which === "close" ? {} : {
          close() {
            closes++;
          },
        }),
        ...(which === "message" ? {} : {
          message(ws: WebSocketConnection, data: string | Uint8Array) {
            ws.send(data);
          },
        }),
        error(_ws: WebSocketConnection, error: Error) {
          errors.push(error);
        },
      });
      try {
        const client = await RawClient.open(server.addr.port, { path: "/victim" });
        if (which === "message") client.write(textFrame("x"));
        if (which === "ping") client.write(buildFrame({ opcode: Op.Ping, payload: utf8("p") }));
        if (which === "pong") client.write(buildFrame({ opcode: Op.Pong, payload: utf8("p") }));
        if (which === "close") client.write(closeFrame(1000));
        const { code } = await client.expectClose();
        assert.equal(code, which === "close" ? 1000 : 1011);
        client.write(closeFrame(code));
        await until(() => server.connections.size === 0, 5000, "connection finished");
        assert.equal(closes, 1, "close callback ran once");
        // A throwing close callback runs once the connection is gone: it
        // goes to the server's onError.
        const where = which === "close" ? reported : errors;
        assert.ok(where.some((e) => e.message === `boom in ${which}`), "error reported");
        await echoWorks(server);
        client.destroy();
      } finally {
        await server.shutdown();
      }
    });
  }

  test("a throwing drain callback does not kill the process; drain fires only after a wait", async () => {
    let drains = 0;
    const errors: Error[] = [];
    const server = await serve({ port: 0, hostname: "127.0.0.1" }, {
      message(ws, data) {
        ws.send(data);
      },
      drain() {
        drains++;
        throw new Error("boom in drain");
      },
      error(_ws, error) {
        errors.push(error);
      },
    });
    try {
      // Small sends that never wait behind a write: no drain at all.
      const ws = await connect(server.url);
      let got = 0;
      ws.addEventListener("message", () => got++);
      for (let i = 0; i < 20; i++) {
        ws.send("small");
        await delay(5);
      }
      await until(() => got === 20, 5000, "20 echoes");
      assert.equal(drains, 0, "drain fired without backpressure");
      ws.close();
      await ws.closed;
      // A big burst to a reader that pauses: sends wait, then drain fires (and throws).
      const client = await RawClient.open(server.addr.port);
      client.socket.pause();
      const big = new Uint8Array(256 * 1024);
      for (let i = 0; i < 64; i++) client.write(buildFrame({ opcode: Op.Binary, payload: big }));
      await delay(200);
      client.socket.resume();
      await until(() => drains > 0, 10_000, "drain after the reader resumed");
      await until(() => errors.some((e) => e.message === "boom in drain"), 5000, "reported");
      await echoWorks(server);
      client.destroy();
    } finally {
      await server.shutdown();
    }
  });

  test("with no error handler, a user error is logged (server onError, else console)", async () => {
    const reported: Error[] = [];
    const withOnError = await serve({
      port: 0,
      hostname: "127.0.0.1",
      onError: (error) => reported.push(error),
    }, {
      message() {
        throw new Error("boom for onError");
      },
    });
    try {
      const client = await RawClient.open(withOnError.addr.port);
      client.write(textFrame("x"));
      assert.equal((await client.expectClose()).code, 1011);
      assert.ok(reported.some((e) => e.message === "boom for onError"));
      client.destroy();
    } finally {
      await withOnError.shutdown();
    }
    const logged = await capturingConsoleErrors(async () => {
      const server = await serve({ port: 0, hostname: "127.0.0.1" }, (ws) => {
        ws.onmessage = () => {
          throw new Error("boom for console");
        };
      });
      try {
        const client = await RawClient.open(server.addr.port);
        client.write(textFrame("x"));
        assert.equal((await client.expectClose()).code, 1011);
        client.destroy();
      } finally {
        await server.shutdown();
      }
    });
    assert.ok(
      logged.some((args) =>
        args.some((a) => a instanceof Error && a.message === "boom for console")
      ),
      "logged to the console",
    );
  });

  test("an error listener that throws does not loop or crash", async () => {
    const server = await serve({ port: 0, hostname: "127.0.0.1", onError: () => {} }, (ws) => {
      ws.addEventListener("error", () => {
        throw new Error("boom in error listener");
      });
      ws.addEventListener("message", () => {
        throw new Error("first");
      });
    });
    try {
      const client = await RawClient.open(server.addr.port);
      client.write(textFrame("x"));
      assert.equal((await client.expectClose()).code, 1011);
      client.destroy();
      await until(() => server.connections.size === 0, 5000, "finished");
    } finally {
      await server.shutdown();
    }
  });

  test("removeEventListener removes a guarded listener", async () => {
    let calls = 0;
    const server = await serve({ port: 0, hostname: "127.0.0.1" }, (ws) => {
      const listener = () => calls++;
      ws.addEventListener("message", listener);
      ws.removeEventListener("message", listener);
      ws.addEventListener("message", (e) => ws.send((e as MessageEvent).data));
    });
    try {
      await echoWorks(server);
      assert.equal(calls, 0);
    } finally {
      await server.shutdown();
    }
  });
});

describe("faults: output that backs up", () => {
  test("bufferedAmount counts each byte once", async () => {
    const seen = Promise.withResolvers<number>();
    const server = await serve({ port: 0, hostname: "127.0.0.1" }, (ws) => {
      ws.send(new Uint8Array(20 * 1024 * 1024));
      // Let the first write start: bytes move from the queue to the transport.
      setTimeout(() => seen.resolve(ws.bufferedAmount), 50);
    });
    try {
      const client = await RawClient.open(server.addr.port);
      client.socket.pause();
      const amount = await within(seen.promise, 5000, "bufferedAmount");
      assert.ok(amount <= 20 * 1024 * 1024 + 14, `bufferedAmount ${amount} exceeds what was sent`);
      assert.ok(amount > 10 * 1024 * 1024, `bufferedAmount ${amount} lost bytes`);
      client.destroy();
    } finally {
      await server.shutdown();
    }
  });

  test("maxBufferedAmount overflow: close frame with 1008 queued, closed reports 1008", async () => {
    const errors: Error[] = [];
    const closed = Promise.withResolvers<{ code: number; info: number }>();
    const server = await serve({
      port: 0,
      hostname: "127.0.0.1",
      maxBufferedAmount: 1024 * 1024,
      closeTimeout: 300,
    }, {
      open(ws) {
        for (let i = 0; i < 8; i++) ws.send(new Uint8Array(512 * 1024));
        ws.closed.then((info) => closed.resolve({ code: 0, info: info.closeCode }));
      },
      close(_ws, code) {
        void code;
      },
      error(_ws, error) {
        errors.push(error);
      },
    });
    try {
      const client = await RawClient.open(server.addr.port);
      client.socket.pause();
      const result = await within(closed.promise, 5000, "overflowing connection closed");
      assert.equal(result.info, 1008);
      assert.ok(errors.some((e) => (e as { code?: string }).code === "BUFFER_OVERFLOW"));
      await until(() => server.connections.size === 0, 5000, "removed");
      client.destroy();
    } finally {
      await server.shutdown();
    }
  });

  test("Blobs count against maxBufferedAmount while they are being read", async () => {
    const closed = Promise.withResolvers<number>();
    const server = await serve({
      port: 0,
      hostname: "127.0.0.1",
      maxBufferedAmount: 1024 * 1024,
      closeTimeout: 300,
      onError: () => {},
    }, (ws) => {
      // One message of any size is accepted; the next send finds the Blob's
      // 2 MiB still waiting to be read, over the 1 MiB limit.
      ws.send(new Blob([new Uint8Array(2 * 1024 * 1024)]));
      ws.send("one more");
      ws.closed.then((info) => closed.resolve(info.closeCode));
    });
    try {
      const client = await RawClient.open(server.addr.port);
      client.socket.pause();
      assert.equal(await within(closed.promise, 5000, "blob overflow"), 1008);
      client.destroy();
    } finally {
      await server.shutdown();
    }
  });

  test("an echo server stops reading a peer that does not read its replies", async () => {
    let peak = 0;
    let conn: WebSocketConnection | null = null;
    const server = await serve({ port: 0, hostname: "127.0.0.1" }, {
      open(ws) {
        conn = ws;
      },
      message(ws, data) {
        ws.send(data);
        if (ws.bufferedAmount > peak) peak = ws.bufferedAmount;
      },
    });
    try {
      const client = await RawClient.open(server.addr.port);
      client.socket.pause();
      const frame = buildFrame({ opcode: Op.Binary, payload: new Uint8Array(64 * 1024) });
      // 32 MiB offered; the server must stop taking them long before.
      for (let i = 0; i < 512; i++) client.write(frame);
      await delay(1500);
      assert.ok(conn !== null);
      assert.ok(peak <= 2 * 1024 * 1024, `server buffered ${peak} bytes for a non-reader`);
      assert.ok(client.socket.writableLength > 8 * 1024 * 1024, "TCP pushed back on the sender");
      client.destroy();
    } finally {
      await server.shutdown();
    }
  });

  test("writable resolves a write over 1 MiB that the socket takes at once", async () => {
    const server = await serve({ port: 0, hostname: "127.0.0.1" }, async (ws) => {
      const writer = ws.writable.getWriter();
      for await (const message of ws.readable) await writer.write(message);
    });
    try {
      const ws = await connect(server.url);
      const got: number[] = [];
      ws.binaryType = "arraybuffer";
      ws.addEventListener(
        "message",
        (e) => got.push(((e as MessageEvent).data as ArrayBuffer).byteLength),
      );
      for (let i = 0; i < 4; i++) ws.send(new Uint8Array(3 * 1024 * 1024 + i));
      await until(() => got.length === 4, 20_000, "four 3 MiB echoes through the streams");
      assert.deepEqual(got, [0, 1, 2, 3].map((i) => 3 * 1024 * 1024 + i));
      ws.close();
      await ws.closed;
    } finally {
      await server.shutdown();
    }
  });
});

describe("faults: closing deadlines", () => {
  test("echoing a close to a peer that stops reading is bounded by closeTimeout", async () => {
    const server = await serve({ port: 0, hostname: "127.0.0.1", closeTimeout: 300 }, (ws) => {
      ws.send(new Uint8Array(8 * 1024 * 1024));
    });
    try {
      const client = await RawClient.open(server.addr.port);
      client.socket.pause();
      await delay(100);
      client.write(closeFrame(1000));
      await until(
        () => server.connections.size === 0,
        3000,
        "connection dropped after closeTimeout",
      );
      client.destroy();
    } finally {
      await server.shutdown();
    }
  });

  test("failing a peer for a protocol error is bounded by closeTimeout", async () => {
    const server = await serve({ port: 0, hostname: "127.0.0.1", closeTimeout: 300 }, (ws) => {
      ws.send(new Uint8Array(8 * 1024 * 1024));
    });
    try {
      const client = await RawClient.open(server.addr.port);
      client.socket.pause();
      await delay(100);
      client.write(buildFrame({ opcode: 0x3, payload: new Uint8Array(0) })); // reserved opcode
      await until(
        () => server.connections.size === 0,
        3000,
        "connection dropped after closeTimeout",
      );
      client.destroy();
    } finally {
      await server.shutdown();
    }
  });
});

describe("faults: failing a peer that is still sending", () => {
  test("the echo and the close frame arrive whole (half-close, no reset)", async () => {
    const server = await serve({ port: 0, hostname: "127.0.0.1", closeTimeout: 2000 }, {
      message(ws, data) {
        ws.send(data);
      },
    });
    try {
      for (const size of [1000, 65535, 200_000]) {
        const client = await RawClient.open(server.addr.port);
        // A whole message, then a reserved opcode, then more bytes that keep coming.
        client.write(concat(
          buildFrame({ opcode: Op.Binary, payload: new Uint8Array(size).fill(7) }),
          buildFrame({ opcode: 0x6, payload: new Uint8Array(4) }),
        ));
        const noise = setInterval(() => client.write(new Uint8Array(512).fill(1)), 2);
        try {
          const echo = await client.expectFrame();
          assert.equal(echo.payload.length, size, "the echo arrived whole");
          const { code } = await client.expectClose();
          assert.equal(code, 1002);
          assert.ok(await client.waitForEnd(3000), "the server sent FIN");
        } finally {
          clearInterval(noise);
          client.destroy();
        }
      }
      await until(() => server.connections.size === 0, 5000, "connections dropped");
    } finally {
      await server.shutdown();
    }
  });
});

describe("faults: close codes", () => {
  // IANA WebSocket Close Code Number Registry: what an endpoint may send.
  const sendable = [
    1000,
    1001,
    1002,
    1003,
    1007,
    1008,
    1009,
    1010,
    1011,
    1012,
    1013,
    1014,
    3000,
    4999,
  ];
  const notSendable = [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 1000.5];

  test("a server connection closes with any registered code", async () => {
    for (const code of sendable) {
      const server = await serve({ port: 0, hostname: "127.0.0.1" }, (ws) => ws.close(code, "bye"));
      try {
        const client = await RawClient.open(server.addr.port);
        const received = await client.expectClose();
        assert.equal(received.code, code);
        assert.equal(received.reason, "bye");
        client.destroy();
      } finally {
        await server.shutdown();
      }
    }
  });

  test("codes that may not be sent throw InvalidAccessError before anything is sent", async () => {
    const thrown: string[] = [];
    const server = await serve({ port: 0, hostname: "127.0.0.1" }, (ws) => {
      for (const code of notSendable) {
        try {
          ws.close(code);
          thrown.push(`no throw for ${code}`);
        } catch (err) {
          thrown.push((err as DOMException).name);
        }
      }
      ws.send("still open");
    });
    try {
      const client = await RawClient.open(server.addr.port);
      const frame = await client.expectFrame();
      assert.equal(new TextDecoder().decode(frame.payload), "still open");
      assert.deepEqual(thrown, notSendable.map(() => "InvalidAccessError"));
      client.destroy();
    } finally {
      await server.shutdown();
    }
  });

  test("the browser-compatible WebSocket class keeps the browser rule (1000, 3000-4999)", async () => {
    const server = await serve({ port: 0, hostname: "127.0.0.1" }, () => {});
    try {
      const ws = new WebSocket(server.url);
      await new Promise((resolve) => ws.addEventListener("open", resolve, { once: true }));
      assert.throws(() => ws.close(1001), { name: "InvalidAccessError" });
      ws.close(3001);
      const info = await within(ws.closed, 5000, "closed");
      assert.equal(info.closeCode, 3001);
    } finally {
      await server.shutdown();
    }
  });

  test("received 1012, 1013 and 1014 close cleanly with the same code", async () => {
    for (const code of [1012, 1013, 1014]) {
      const got = Promise.withResolvers<number>();
      const server = await serve({ port: 0, hostname: "127.0.0.1" }, {
        close(_ws, received) {
          got.resolve(received);
        },
      });
      try {
        const client = await RawClient.open(server.addr.port);
        client.write(closeFrame(code, "restart"));
        assert.equal((await client.expectClose()).code, code);
        assert.equal(await within(got.promise, 5000, "close callback"), code);
        client.destroy();
      } finally {
        await server.shutdown();
      }
    }
  });
});

describe("faults: liveness", () => {
  test("a peer that never answers pings is failed with 1011", async () => {
    const closed = Promise.withResolvers<number>();
    const server = await serve({
      port: 0,
      hostname: "127.0.0.1",
      pingInterval: 100,
      pingTimeout: 150,
      closeTimeout: 200,
    }, (ws) => {
      ws.closed.then((info) => closed.resolve(info.closeCode));
    });
    try {
      const client = await RawClient.open(server.addr.port); // reads, never pongs
      const ping = await client.expectFrame(3000);
      assert.equal(ping.opcode, Op.Ping);
      assert.equal(await within(closed.promise, 5000, "ping timeout"), 1011);
      const { code } = await client.expectClose();
      assert.equal(code, 1011);
      client.destroy();
    } finally {
      await server.shutdown();
    }
  });

  test("a peer that answers pings stays open; a silent one hits idleTimeout (1001)", async () => {
    const server = await serve({
      port: 0,
      hostname: "127.0.0.1",
      pingInterval: 50,
      pingTimeout: 100,
    }, (ws) => ws.addEventListener("message", (e) => ws.send((e as MessageEvent).data)));
    try {
      const ws = await connect(server.url); // Sluice's client answers pings
      await delay(600);
      assert.equal(ws.readyState, 1, "kept open by pongs");
      ws.close();
      await ws.closed;
    } finally {
      await server.shutdown();
    }
    const idle = await serve({ port: 0, hostname: "127.0.0.1", idleTimeout: 200 }, () => {});
    try {
      const talker = await connect(idle.url);
      const silent = await connect(idle.url);
      const timer = setInterval(() => talker.send("tick"), 40);
      const info = await within(silent.closed, 3000, "idle timeout");
      assert.equal(info.closeCode, 1001);
      assert.equal(talker.readyState, 1, "a talking client stays");
      clearInterval(timer);
      talker.close();
      await talker.closed;
    } finally {
      await idle.shutdown();
    }
  });

  test("a client finds a server that stopped answering (1011)", async () => {
    // A server that completes the handshake and then ignores everything.
    const server = await serve({
      port: 0,
      hostname: "127.0.0.1",
      pingInterval: 0,
      closeTimeout: 200,
    }, {
      message() {
        return new Promise(() => {}); // never settles: the server stops reading
      },
    });
    try {
      const errors: Error[] = [];
      const ws = await connect(server.url, {
        pingInterval: 100,
        pingTimeout: 150,
        closeTimeout: 200,
        handlers: { error: (_ws, error) => void errors.push(error) },
      });
      ws.send("stall the server's reading");
      const info = await within(ws.closed, 5000, "client ping timeout");
      // A client reports a connection it failed as 1006, as browsers do; the
      // error says why, and the server was sent 1011.
      assert.equal(info.closeCode, 1006);
      assert.deepEqual(errors.map((e) => (e as { code?: string }).code), ["PING_TIMEOUT"]);
    } finally {
      await server.shutdown();
    }
  });

  test("ReconnectingWebSocket reconnects when a silently dead link times out", async () => {
    let connections = 0;
    const server = await serve({
      port: 0,
      hostname: "127.0.0.1",
      pingInterval: 0,
      closeTimeout: 200,
    }, {
      open() {
        connections++;
      },
      message(ws, data) {
        // The first connection goes silent: it stops reading (a promise that
        // never settles), so the client's pings are never answered.
        if (data === "freeze") return new Promise(() => {});
        ws.send(data);
      },
    });
    try {
      const rws = new ReconnectingWebSocket(server.url, {
        pingInterval: 100,
        pingTimeout: 150,
        closeTimeout: 200,
        minDelay: 10,
        maxDelay: 50,
      });
      let opens = 0;
      rws.addEventListener("open", () => opens++);
      await until(() => opens === 1, 5000, "first open");
      rws.send("freeze");
      await until(() => opens === 2, 5000, "reconnected after the keepalive timeout");
      const echo = new Promise<string>((resolve) =>
        rws.addEventListener("message", (e) => resolve(String((e as MessageEvent).data)), {
          once: true,
        })
      );
      rws.send("alive");
      assert.equal(await within(echo, 5000, "echo on the new link"), "alive");
      assert.equal(connections, 2);
      rws.close();
    } finally {
      await server.shutdown();
    }
  });
});
