/**
 * The client's own features, over real loopback sockets: request headers and
 * `Origin` reach the server, the server's response headers reach the user, an
 * AbortSignal cancels a handshake or closes a connection, every frame on the
 * wire is masked with a fresh key, and the `WebSocket` class behaves as the
 * browser's does (ready states, `binaryType`, exceptions, `bufferedAmount`).
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { delay, test, within } from "../_watch.ts";
import { connect, WebSocket } from "../../src/client.ts";
import { serve, type Server, type UpgradeRequestInfo } from "../../src/server.ts";
import { HandshakeError } from "../../src/protocol/errors.ts";
import {
  type ClientFrame,
  type RawServer,
  rawServer,
  serverFrame,
  upgradeResponse,
} from "./client_peers/raw_server.ts";
import { findExecutable } from "./client_peers/peers.ts";

/** Resolves with the error a promise rejects with; fails if it resolves. */
async function rejection(promise: Promise<unknown>, ms = 5_000): Promise<unknown> {
  try {
    await within(promise, ms, "the promise to settle");
  } catch (err) {
    return err;
  }
  assert.fail("expected a rejection");
}

function syntaxError(fn: () => unknown, what: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof DOMException, `${what}: a DOMException`);
    assert.equal(err.name, "SyntaxError", what);
    return true;
  });
}

function nextEvent<E extends Event>(target: EventTarget, type: string, ms = 5_000): Promise<E> {
  return within(
    new Promise<E>((resolve) =>
      target.addEventListener(type, (e) => resolve(e as E), { once: true })
    ),
    ms,
    `${type} event`,
  );
}

describe("client handshake against the Sluice server", () => {
  let server: Server;
  let lastRequest: UpgradeRequestInfo | null = null;
  const serverCloses = new Map<string, { code: number; reason: string }>();
  before(async () => {
    server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      allowedOrigins: ["https://app.example"],
      onUpgrade(request) {
        lastRequest = request;
        return {
          headers: { "Set-Cookie": "session=abc; HttpOnly", "X-Served-By": "sluice-test" },
        };
      },
    }, {
      message: (ws, data) => ws.send(data),
      close: (ws, code, reason) => serverCloses.set(new URL(ws.url).pathname, { code, reason }),
    });
  });
  after(async () => {
    await server.shutdown();
  });

  test("custom request headers (Authorization, Cookie) arrive at onUpgrade", async () => {
    const ws = await connect(`${server.url}path?q=1`, {
      headers: { Authorization: "Bearer s3cret", Cookie: "a=1; b=2", "X-Trace": "t-42" },
    });
    assert.ok(lastRequest !== null);
    assert.equal(lastRequest.headers.get("authorization"), "Bearer s3cret");
    assert.equal(lastRequest.headers.get("cookie"), "a=1; b=2");
    assert.equal(lastRequest.headers.get("x-trace"), "t-42");
    assert.equal(lastRequest.url.pathname, "/path");
    assert.equal(lastRequest.url.search, "?q=1");
    assert.equal(lastRequest.origin, null, "no Origin unless asked");
    ws.close();
    await within(ws.closed, 5_000, "closed");
  });

  test("headers given as a Headers object or pairs work too", async () => {
    for (
      const headers of [new Headers({ Authorization: "Basic x" }), [["Authorization", "Basic x"]]]
    ) {
      const ws = await connect(server.url, { headers: headers as HeadersInit });
      assert.equal(lastRequest?.headers.get("authorization"), "Basic x");
      ws.close();
      await within(ws.closed, 5_000, "closed");
    }
  });

  test("a request header that would override the handshake is refused with TypeError", async () => {
    for (const name of ["Sec-WebSocket-Key", "Upgrade", "Host", "Sec-WebSocket-Protocol"]) {
      const err = await rejection(connect(server.url, { headers: { [name]: "x" } }));
      assert.ok(err instanceof TypeError, `${name}: got ${err}`);
      assert.match((err as Error).message, new RegExp(name, "i"));
    }
  });

  test("the origin option sends Origin, which the server's allowlist checks", async () => {
    const ws = await connect(server.url, { origin: "https://app.example" });
    assert.equal(lastRequest?.origin, "https://app.example");
    ws.close();
    await within(ws.closed, 5_000, "closed");
    const err = await rejection(connect(server.url, { origin: "https://evil.example" }));
    assert.ok(err instanceof HandshakeError);
    assert.equal(err.status, 403);
  });

  test("the server's response headers are exposed as handshakeHeaders", async () => {
    const ws = await connect(server.url);
    assert.equal(ws.handshakeHeaders.get("x-served-by"), "sluice-test");
    assert.equal(ws.handshakeHeaders.get("set-cookie"), "session=abc; HttpOnly");
    assert.equal(ws.handshakeHeaders.get("upgrade")?.toLowerCase(), "websocket");
    assert.match(ws.handshakeHeaders.get("sec-websocket-accept") ?? "", /^[A-Za-z0-9+/]{27}=$/);
    ws.close();
    await within(ws.closed, 5_000, "closed");
  });

  test(
    "a long-lived signal keeps no listeners for connections that closed",
    async () => {
      // Apps pass one shutdown signal to every connection they make; each closed
      // connection must let go of it, or the signal keeps them all alive.
      const controller = new AbortController();
      const signal = controller.signal;
      const listening = new Set<unknown>();
      const add = signal.addEventListener.bind(signal);
      const remove = signal.removeEventListener.bind(signal);
      signal.addEventListener = ((type: string, listener: EventListener, options?: boolean) => {
        listening.add(listener);
        add(type, listener, options);
      }) as typeof signal.addEventListener;
      signal.removeEventListener = ((type: string, listener: EventListener, options?: boolean) => {
        listening.delete(listener);
        remove(type, listener, options);
      }) as typeof signal.removeEventListener;
      for (let i = 0; i < 5; i++) {
        const ws = await connect(server.url, { signal });
        ws.close();
        await within(ws.closed, 5_000, "closed");
      }
      await delay(10);
      assert.equal(listening.size, 0, "listeners left on the signal");
    },
  );

  test("aborting the signal closes an open connection with 1000", async () => {
    const controller = new AbortController();
    const ws = await connect(`${server.url}aborted`, { signal: controller.signal });
    assert.equal(ws.readyState, WebSocket.OPEN);
    controller.abort();
    const info = await within(ws.closed, 5_000, "closed");
    assert.equal(info.wasClean, true);
    assert.equal(info.closeCode, 1000);
    assert.deepEqual(serverCloses.get("/aborted"), { code: 1000, reason: "" });
  });
});

describe("client abort and close while connecting", () => {
  let server: RawServer;
  before(async () => {
    server = await rawServer();
  });
  after(async () => {
    await server.close();
  });

  test("aborting the signal mid-handshake rejects with AbortError and drops the socket", async () => {
    const controller = new AbortController();
    const connecting = connect(server.url, { signal: controller.signal });
    connecting.catch(() => {});
    const peer = await server.accept();
    await peer.readRequest();
    const start = performance.now();
    controller.abort();
    const err = await rejection(connecting, 2_000);
    assert.ok(err instanceof DOMException, `got ${err}`);
    assert.equal(err.name, "AbortError");
    assert.ok(performance.now() - start < 2_000, "promptly, not after the 10 s handshakeTimeout");
    await within(peer.ended, 2_000, "socket closed");
  });

  test("an already aborted signal rejects without connecting", async () => {
    const before = server.peers.length;
    const err = await rejection(connect(server.url, { signal: AbortSignal.abort() }));
    assert.ok(err instanceof DOMException);
    assert.equal(err.name, "AbortError");
    await delay(50);
    assert.equal(server.peers.length, before, "no TCP connection was made");
  });

  test("close() during CONNECTING fires error, then close with 1006", async () => {
    const ws = new WebSocket(server.url);
    const events: string[] = [];
    ws.addEventListener("open", () => events.push("open"));
    ws.addEventListener("error", () => events.push("error"));
    const closed = nextEvent<CloseEvent>(ws, "close");
    closed.then(() => events.push("close"));
    const peer = await server.accept();
    await peer.readRequest();
    assert.equal(ws.readyState, WebSocket.CONNECTING);
    ws.close();
    const event = await closed;
    assert.deepEqual(events, ["error", "close"]);
    assert.equal(event.code, 1006);
    assert.equal(event.wasClean, false);
    assert.equal(ws.readyState, WebSocket.CLOSED);
    await within(peer.ended, 2_000, "socket closed");
    const info = await within(ws.closed, 1_000, "closed");
    assert.equal(info.closeCode, 1006);
  });

  test("close() before the TCP connection exists also ends in close 1006", async () => {
    const ws = new WebSocket(server.url);
    const closed = nextEvent<CloseEvent>(ws, "close");
    ws.close(); // Synchronously, before any I/O.
    const event = await closed;
    assert.equal(event.code, 1006);
    assert.equal(ws.readyState, WebSocket.CLOSED);
    // If a TCP connection was made anyway, it must be closed promptly.
    await delay(100);
    for (const peer of server.peers.slice(-1)) {
      await within(peer.ended, 2_000, "late socket closed");
    }
  });
});

test(
  "close() while CONNECTING fires error and close later, as browsers do",
  async () => {
    // WHATWG "close()" step: if CONNECTING, fail the connection and set
    // readyState to CLOSING; the error and close events come from a queued
    // task, so listeners attached right after close() still see them.
    const server = await rawServer();
    try {
      const ws = new WebSocket(server.url);
      ws.close();
      assert.equal(ws.readyState, WebSocket.CLOSING);
      const events: string[] = [];
      ws.onerror = () => events.push("error");
      const closed = nextEvent<CloseEvent>(ws, "close", 2_000);
      closed.then(() => events.push("close"));
      assert.equal((await closed).code, 1006);
      assert.deepEqual(events, ["error", "close"]);
    } finally {
      await server.close();
    }
  },
);

test(
  "connect(): a message that arrives with the 101 is not lost",
  async () => {
    // Servers commonly greet at once; the greeting then shares a packet with
    // the 101. connect() users can only attach a listener or read `readable`
    // after the promise resolves, so the message must wait for them.
    const server = await rawServer();
    try {
      const connecting = connect(server.url);
      const peer = await server.accept();
      const request = await peer.readRequest();
      const head = new TextEncoder().encode(
        await upgradeResponse(request.headers.get("sec-websocket-key") ?? ""),
      );
      const greeting = serverFrame(0x1, "welcome");
      const packet = new Uint8Array(head.length + greeting.length);
      packet.set(head);
      packet.set(greeting, head.length);
      peer.write(packet);
      const ws = await within(connecting, 5_000, "connect");
      const reader = ws.readable.getReader();
      const { value } = await within(reader.read(), 2_000, "the greeting");
      assert.equal(value, "welcome");
      peer.destroy();
      await within(ws.closed, 5_000, "closed");
    } finally {
      await server.close();
    }
  },
);

const python = findExecutable("python3");
if (python === null) {
  if (process.env.CI) throw new Error("The stalled-connect tests need python3 under CI.");
  console.warn("\n!!! python3 not found: SKIPPING the stalled TCP connect tests. !!!\n");
}

/** Starts `client_peers/stalled_listener.py`: connections to its port stall in SYN-SENT. */
async function stalledListener(): Promise<{ url: string; stop(): void }> {
  const script = fileURLToPath(new URL("./client_peers/stalled_listener.py", import.meta.url));
  const child = spawn(python!, [script], { stdio: ["pipe", "pipe", "inherit"] });
  const port = await within(
    new Promise<number>((resolve, reject) => {
      child.stdout!.setEncoding("utf8");
      child.stdout!.once("data", (line: string) => resolve(JSON.parse(line).port));
      child.once("error", reject);
    }),
    10_000,
    "the stalled listener to start",
  );
  return {
    url: `ws://127.0.0.1:${port}/`,
    stop: () => {
      child.stdin!.end();
      child.kill();
    },
  };
}

describe("client while the TCP connect stalls", { skip: python === null && "no python3" }, () => {
  test(
    "handshakeTimeout also bounds the TCP connect",
    async () => {
      const stalled = await stalledListener();
      try {
        const start = performance.now();
        const err = await rejection(connect(stalled.url, { handshakeTimeout: 300 }), 5_000);
        const elapsed = performance.now() - start;
        assert.ok(err instanceof HandshakeError, `got ${err}`);
        assert.match(err.message, /timed out after 300 ms/);
        assert.ok(elapsed < 1_500, `rejected after ${elapsed.toFixed(0)} ms`);
      } finally {
        stalled.stop();
      }
    },
  );

  test(
    "aborting the signal during the TCP connect rejects at once",
    async () => {
      const stalled = await stalledListener();
      try {
        const controller = new AbortController();
        const connecting = connect(stalled.url, { signal: controller.signal });
        connecting.catch(() => {});
        await delay(100);
        const start = performance.now();
        controller.abort();
        const err = await rejection(connecting, 5_000);
        assert.ok(err instanceof DOMException && err.name === "AbortError", `got ${err}`);
        assert.ok(performance.now() - start < 1_000);
      } finally {
        stalled.stop();
      }
    },
  );
});

describe("client frames on the wire", () => {
  let server: RawServer;
  before(async () => {
    server = await rawServer();
  });
  after(async () => {
    await server.close();
  });

  test("the request is a valid RFC 6455 §4.1 upgrade", async () => {
    const connecting = connect(`${server.url}/chat?room=1`, { protocols: ["a", "b"] });
    connecting.catch(() => {});
    const peer = await server.accept();
    const request = await peer.readRequest();
    assert.match(request.text, /^GET \/chat\?room=1 HTTP\/1\.1\r\n/);
    assert.equal(request.headers.get("host"), `127.0.0.1:${server.port}`);
    assert.equal(request.headers.get("upgrade")?.toLowerCase(), "websocket");
    assert.match(request.headers.get("connection") ?? "", /upgrade/i);
    assert.equal(request.headers.get("sec-websocket-version"), "13");
    const key = request.headers.get("sec-websocket-key") ?? "";
    assert.equal(atob(key).length, 16, "the key is base64 of 16 bytes");
    assert.equal(request.headers.get("sec-websocket-protocol"), "a, b");
    peer.destroy();
    await rejection(connecting);
  });

  test("every frame the client sends is masked, with a fresh key each time", async () => {
    const connecting = connect(server.url);
    const peer = await server.accept();
    await peer.accept(await peer.readRequest());
    const ws = await within(connecting, 5_000, "connect");
    const encoder = new TextEncoder();
    const medium = crypto.getRandomValues(new Uint8Array(300));
    const large = new Uint8Array(70_000).map((_, i) => i * 7);
    const largeCopy = large.slice();
    const expected: [number, Uint8Array][] = [];
    for (let i = 0; i < 8; i++) {
      ws.send(`message ${i}`);
      expected.push([0x1, encoder.encode(`message ${i}`)]);
    }
    ws.send(new Uint8Array(0));
    expected.push([0x2, new Uint8Array(0)]);
    ws.send(medium);
    expected.push([0x2, medium]);
    ws.send(large);
    expected.push([0x2, large]);
    ws.ping("are you there");
    expected.push([0x9, encoder.encode("are you there")]);
    ws.pong();
    expected.push([0xa, new Uint8Array(0)]);
    ws.close(4000, "done");
    expected.push([0x8, new Uint8Array([0x0f, 0xa0, ...encoder.encode("done")])]);

    const frames: ClientFrame[] = [];
    for (let i = 0; i < expected.length; i++) {
      const frame = await peer.readFrame(5_000);
      assert.ok(frame !== null, `frame ${i} arrived`);
      frames.push(frame);
    }
    for (const [i, frame] of frames.entries()) {
      assert.equal(frame.raw[1] & 0x80, 0x80, `frame ${i} has the mask bit`);
      assert.equal(frame.rsv, 0);
      assert.equal(frame.fin, true);
      assert.equal(frame.opcode, expected[i][0], `frame ${i} opcode`);
      assert.deepEqual(frame.payload, expected[i][1], `frame ${i} payload after unmasking`);
      if (frame.payload.length >= 4) {
        assert.notDeepEqual(
          frame.raw.subarray(frame.raw.length - frame.payload.length),
          frame.payload,
          `frame ${i} is not sent in the clear`,
        );
      }
    }
    const keys = new Set(frames.map((f) => Array.from(f.mask).join(",")));
    assert.equal(keys.size, frames.length, "no masking key is reused");
    assert.deepEqual(large, largeCopy, "send() did not mask the caller's buffer in place");
    peer.destroy();
    await within(ws.closed, 5_000, "closed");
  });
});

describe("WebSocket class", () => {
  let server: Server;
  before(async () => {
    server = await serve({ hostname: "127.0.0.1", port: 0 }, {
      message: (ws, data) => ws.send(data),
    });
  });
  after(async () => {
    await server.shutdown();
  });

  test("readyState goes CONNECTING, OPEN, CLOSING, CLOSED", async () => {
    assert.deepEqual(
      [WebSocket.CONNECTING, WebSocket.OPEN, WebSocket.CLOSING, WebSocket.CLOSED],
      [0, 1, 2, 3],
    );
    const ws = new WebSocket(server.url);
    // On instances too, as in browsers.
    assert.deepEqual([ws.CONNECTING, ws.OPEN, ws.CLOSING, ws.CLOSED], [0, 1, 2, 3]);
    const seen: [string, number][] = [["constructed", ws.readyState]];
    ws.onopen = () => seen.push(["open", ws.readyState]);
    const closed = nextEvent(ws, "close");
    ws.addEventListener("close", () => seen.push(["close", ws.readyState]));
    await nextEvent(ws, "open");
    ws.close(1000);
    seen.push(["close() called", ws.readyState]);
    await closed;
    assert.deepEqual(seen, [
      ["constructed", 0],
      ["open", 1],
      ["close() called", 2],
      ["close", 3],
    ]);
    assert.equal(ws.url, server.url);
  });

  test("binaryType: blob by default, arraybuffer when set, switchable while open", async () => {
    const ws = new WebSocket(server.url);
    assert.equal(ws.binaryType, "blob");
    await nextEvent(ws, "open");
    const bytes = new Uint8Array([0, 1, 2, 253, 254, 255]);
    let message = nextEvent<MessageEvent>(ws, "message");
    ws.send(bytes);
    const asBlob = (await message).data;
    assert.ok(asBlob instanceof Blob);
    assert.deepEqual(new Uint8Array(await asBlob.arrayBuffer()), bytes);
    ws.binaryType = "arraybuffer";
    message = nextEvent<MessageEvent>(ws, "message");
    ws.send(bytes);
    const asBuffer = (await message).data;
    assert.ok(asBuffer instanceof ArrayBuffer);
    assert.deepEqual(new Uint8Array(asBuffer), bytes);
    message = nextEvent<MessageEvent>(ws, "message");
    ws.send("text stays a string");
    assert.equal((await message).data, "text stays a string");
    ws.close();
    await within(ws.closed, 5_000, "closed");
  });

  test("send() before open throws InvalidStateError", async () => {
    const ws = new WebSocket(server.url);
    for (const data of ["early", new Uint8Array(1)]) {
      assert.throws(() => ws.send(data), (err: unknown) => {
        assert.ok(err instanceof DOMException);
        assert.equal(err.name, "InvalidStateError");
        return true;
      });
    }
    await nextEvent(ws, "open");
    ws.close();
    await within(ws.closed, 5_000, "closed");
  });

  test("send() after close is silently discarded, as in browsers", async () => {
    const ws = new WebSocket(server.url);
    await nextEvent(ws, "open");
    ws.close();
    ws.send("too late"); // Must not throw.
    await within(ws.closed, 5_000, "closed");
    ws.send("much too late");
  });

  test("invalid URLs, fragments and bad subprotocols throw SyntaxError", () => {
    syntaxError(() => new WebSocket("not a url"), "unparsable URL");
    syntaxError(() => new WebSocket("ftp://127.0.0.1/"), "wrong scheme");
    syntaxError(() => new WebSocket(`${server.url}#fragment`), "fragment");
    syntaxError(() => new WebSocket(server.url, ["chat", "chat"]), "duplicate subprotocol");
    syntaxError(() => new WebSocket(server.url, "a b"), "subprotocol with a space");
    syntaxError(() => new WebSocket(server.url, ""), "empty subprotocol");
    syntaxError(() => new WebSocket(server.url, ["ok", "bad,comma"]), "subprotocol with a comma");
    return Promise.resolve();
  });

  test("connect() rejects the same inputs with SyntaxError before any I/O", async () => {
    for (const [url, protocols] of [["not a url", []], ["ws://x/#f", []], [server.url, ["a b"]]]) {
      const err = await rejection(connect(url as string, { protocols: protocols as string[] }));
      assert.ok(err instanceof DOMException);
      assert.equal(err.name, "SyntaxError");
    }
  });

  test("http: and https: URLs are accepted and become ws: and wss:", async () => {
    const ws = new WebSocket(server.url.replace(/^ws:/, "http:"));
    assert.equal(ws.url, server.url);
    await nextEvent(ws, "open");
    ws.close();
    await within(ws.closed, 5_000, "closed");
  });

  test("close() validates its code and reason like browsers", async () => {
    const ws = new WebSocket(server.url);
    await nextEvent(ws, "open");
    for (const code of [999, 1001, 1005, 1006, 2999, 5000]) {
      assert.throws(() => ws.close(code), (err: unknown) => {
        assert.ok(err instanceof DOMException);
        assert.equal(err.name, "InvalidAccessError", `code ${code}`);
        return true;
      });
    }
    syntaxError(() => ws.close(1000, "x".repeat(124)), "reason over 123 bytes");
    assert.equal(ws.readyState, WebSocket.OPEN, "failed close() calls changed nothing");
    ws.close(3000, "x".repeat(123));
    const info = await within(ws.closed, 5_000, "closed");
    assert.equal(info.closeCode, 3000);
  });
});

describe("WebSocket class bufferedAmount", () => {
  let server: RawServer;
  before(async () => {
    server = await rawServer();
  });
  after(async () => {
    await server.close();
  });

  test("grows by each send at once, and drains to 0 once the peer reads", async () => {
    const ws = new WebSocket(server.url, undefined, { binaryType: "arraybuffer" });
    const peer = await server.accept();
    await peer.accept(await peer.readRequest());
    await nextEvent(ws, "open");
    peer.socket.pause(); // Stop reading: the kernel buffers fill up.
    assert.equal(ws.bufferedAmount, 0);
    const chunk = new Uint8Array(1024 * 1024);
    let last = 0;
    for (let i = 0; i < 16; i++) {
      ws.send(chunk);
      assert.ok(ws.bufferedAmount >= last + chunk.length, `send ${i} counted synchronously`);
      last = ws.bufferedAmount;
    }
    ws.send("and some text");
    assert.ok(ws.bufferedAmount > last);
    await delay(100);
    const stuck = ws.bufferedAmount;
    assert.ok(stuck > 0, "a peer that does not read leaves bytes buffered");
    peer.socket.resume();
    let received = 0;
    for (let i = 0; i < 17; i++) {
      const frame = await peer.readFrame(10_000);
      assert.ok(frame !== null);
      received += frame.payload.length;
    }
    assert.equal(received, 16 * chunk.length + "and some text".length);
    const deadline = Date.now() + 5_000;
    while (ws.bufferedAmount > 0 && Date.now() < deadline) await delay(10);
    assert.equal(ws.bufferedAmount, 0);
    peer.destroy();
    await within(ws.closed, 5_000, "closed");
  });
});
