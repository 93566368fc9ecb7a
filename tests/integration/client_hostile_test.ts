/**
 * The client side against hostile or broken servers, URLs and options: the
 * handshake response checks (RFC 6455 §4.1, the WHATWG "establish a
 * WebSocket connection" steps for the `WebSocket` class), URL handling, the
 * WHATWG `WebSocket` surface, and `ReconnectingWebSocket` (backoff, what is
 * retried, `close()`, nothing left behind).
 *
 * Every wait is bounded, every socket closed.
 *
 * Runs under both `deno test -A` and `bun test`.
 */

import { after, before, describe } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { delay, test, within } from "../_watch.ts";
import { REPO_ROOT, RUNTIME } from "../_executables.ts";
import { connect, type ConnectOptions, parseUrl, WebSocket } from "../../src/client.ts";
import { serve, type Server } from "../../src/server.ts";
import { acceptKey, buildClientRequest } from "../../src/protocol/handshake.ts";
import { HandshakeError, WebSocketError } from "../../src/protocol/errors.ts";
import { type ReconnectEvent, ReconnectingWebSocket } from "../../src/reconnect.ts";
import { concat } from "../_bytes.ts";
import {
  type RawServer,
  rawServer,
  serverFrame,
  upgradeResponse,
} from "./client_peers/raw_server.ts";

const encoder = new TextEncoder();
const HEAD_101 =
  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";

async function acceptLine(key: string): Promise<string> {
  return `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n`;
}

/** Settles `promise` within `ms`, returning its rejection (or failing if it fulfils). */
async function rejection(promise: Promise<unknown>, ms = 5_000): Promise<unknown> {
  try {
    const value = await within(promise, ms, "the promise to settle");
    (value as { terminate?: () => void })?.terminate?.();
  } catch (err) {
    return err;
  }
  assert.fail("expected a rejection");
}

/** Resolves with the next `type` event of `target`, or rejects after `ms`. */
function nextEvent<E extends Event = Event>(target: EventTarget, type: string, ms = 5_000) {
  return within(
    new Promise<E>((resolve) =>
      target.addEventListener(type, (e) => resolve(e as E), { once: true })
    ),
    ms,
    `a ${type} event`,
  );
}

/** A port nothing listens on (bound, then released). */
async function deadPort(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", () => resolve()));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** Whether `[::1]` can be listened on here. */
async function ipv6Loopback(): Promise<boolean> {
  const probe = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once("error", reject);
      probe.listen(0, "::1", () => resolve());
    });
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------

describe("connect() against hostile handshake responses", () => {
  let server: RawServer;
  before(async () => {
    server = await rawServer();
  });
  after(async () => {
    await server.close();
  });

  /** connect(), the accepted raw peer, and the client's key. */
  async function dial(options: ConnectOptions<undefined> = {}, path = "/") {
    const connecting = connect(`${server.url}${path}`, { handshakeTimeout: 3_000, ...options });
    connecting.catch(() => {});
    const peer = await server.accept();
    const request = await peer.readRequest();
    return { connecting, peer, request, key: request.headers.get("sec-websocket-key") ?? "" };
  }

  /** Answers with `response(key)` and expects a HandshakeError matching `message`. */
  async function refused(
    response: (key: string) => Promise<string>,
    message: RegExp,
    options: ConnectOptions<undefined> = {},
  ): Promise<HandshakeError> {
    const { connecting, peer, key } = await dial(options);
    peer.write(await response(key));
    const err = await rejection(connecting);
    assert.ok(err instanceof HandshakeError, `expected a HandshakeError, got ${err}`);
    assert.match(err.message, message);
    await within(peer.ended, 2_000, "the client to drop the socket");
    return err;
  }

  test("invalid 101 responses all fail the handshake (RFC 6455 §4.1 steps 2-6)", async () => {
    const cases: [string, (key: string) => Promise<string>, RegExp, ConnectOptions<undefined>?][] =
      [
        [
          "Connection: keep-alive only",
          async (k) =>
            `HTTP/1.1 101 X\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n${await acceptLine(
              k,
            )}\r\n`,
          /Connection/,
        ],
        [
          "Upgrade: h2c",
          async (k) =>
            `HTTP/1.1 101 X\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n${await acceptLine(k)}\r\n`,
          /Upgrade/,
        ],
        [
          "the accept of another key (the RFC's sample nonce)",
          async () => `${HEAD_101}${await acceptLine("dGhlIHNhbXBsZSBub25jZQ==")}\r\n`,
          /Sec-WebSocket-Accept/,
        ],
        [
          "the right accept, lower-cased",
          async (k) =>
            `${HEAD_101}Sec-WebSocket-Accept: ${(await acceptKey(k)).toLowerCase()}\r\n\r\n`,
          /Sec-WebSocket-Accept/,
        ],
        [
          "the right accept, twice",
          async (k) => `${HEAD_101}${await acceptLine(k)}${await acceptLine(k)}\r\n`,
          /Sec-WebSocket-Accept/,
        ],
        [
          "two subprotocols selected",
          async (k) => `${HEAD_101}${await acceptLine(k)}Sec-WebSocket-Protocol: a, b\r\n\r\n`,
          /subprotocol/,
          { protocols: ["a", "b"] },
        ],
        [
          "a subprotocol in another case",
          async (k) => `${HEAD_101}${await acceptLine(k)}Sec-WebSocket-Protocol: CHAT\r\n\r\n`,
          /subprotocol/,
          { protocols: ["chat"] },
        ],
        [
          "permessage-deflate not offered",
          async (k) =>
            `${HEAD_101}${await acceptLine(k)}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n`,
          /extensions the client did not offer/,
        ],
        [
          "an unknown extension next to an offered permessage-deflate",
          async (k) => `${HEAD_101}${await acceptLine(k)}Sec-WebSocket-Extensions: x-foo\r\n\r\n`,
          /x-foo/,
          { compression: true },
        ],
        [
          "a permessage-deflate parameter never offered",
          async (k) =>
            `${HEAD_101}${await acceptLine(
              k,
            )}Sec-WebSocket-Extensions: permessage-deflate; x_bits=3\r\n\r\n`,
          /x_bits/,
          { compression: true },
        ],
        [
          "a folded (obs-fold) header line",
          async (k) => `${HEAD_101}${await acceptLine(k)}X-A: 1\r\n  2\r\n\r\n`,
          /Malformed header/,
        ],
        [
          "a 1xx before the 101",
          async (k) => `HTTP/1.1 100 Continue\r\n\r\n${HEAD_101}${await acceptLine(k)}\r\n`,
          /100/,
        ],
      ];
    for (const [name, response, message, options] of cases) {
      await refused(response, message, options).catch((err) => {
        throw new Error(`case "${name}": ${err.message}`, { cause: err });
      });
    }
  });

  test("a 301 is not followed by default: HandshakeError 301, one connection only", async () => {
    const before = server.peers.length;
    const err = await refused(
      () =>
        Promise.resolve(
          `HTTP/1.1 301 Moved Permanently\r\nLocation: ${server.url}/elsewhere\r\n` +
            "Content-Length: 0\r\n\r\n",
        ),
      /301/,
    );
    assert.equal(err.status, 301);
    await delay(100);
    assert.equal(server.peers.length, before + 1, "no second request to the Location");
  });

  test("a head split byte by byte, frames in its last packet: opens, delivers them", async () => {
    const { connecting, peer, key } = await dial();
    // The reader is attached as soon as connect() resolves, as an application would.
    const reading = connecting.then((ws) => ({ ws, reader: ws.readable.getReader() }));
    reading.catch(() => {});
    const head = encoder.encode(
      `${HEAD_101}X-Pad: ${"p".repeat(40)}\r\n${await acceptLine(key)}\r\n`,
    );
    for (const byte of head.subarray(0, -1)) {
      peer.write(new Uint8Array([byte]));
      await delay(0);
    }
    peer.write(concat(
      head.subarray(-1),
      serverFrame(0x1, "first"),
      serverFrame(0x2, new Uint8Array([1, 2, 3])),
    ));
    const { ws, reader } = await within(reading, 5_000, "connect()");
    assert.equal((await within(reader.read(), 2_000, "first message")).value, "first");
    assert.deepEqual(
      new Uint8Array((await within(reader.read(), 2_000, "second message")).value as Uint8Array),
      new Uint8Array([1, 2, 3]),
    );
    reader.releaseLock();
    peer.destroy();
    await within(ws.closed, 5_000, "closed");
  });

  test("a bare-LF response head never completes: it fails at handshakeTimeout", async () => {
    const { connecting, peer, key } = await dial({ handshakeTimeout: 300 });
    peer.write(
      `HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n` +
        `Sec-WebSocket-Accept: ${await acceptKey(key)}\n\n`,
    );
    const err = await rejection(connecting);
    assert.ok(err instanceof HandshakeError);
    assert.match(err.message, /timed out after 300 ms/);
    await within(peer.ended, 2_000, "the client to drop the socket");
  });

  test("lenient where RFC 9110 lets it be: header case, 'keep-alive, Upgrade', no reason phrase", async () => {
    const { connecting, peer, key } = await dial();
    peer.write(
      `HTTP/1.1 101\r\nupgrade: WebSocket\r\nconnection: keep-alive, UPGRADE\r\n` +
        `sec-websocket-accept:   ${await acceptKey(key)}  \r\n\r\n`,
    );
    const ws = await within(connecting, 5_000, "connect()");
    assert.equal(ws.readyState, WebSocket.OPEN);
    ws.terminate();
    peer.destroy();
  });

  test("a close frame with a code not allowed on the wire fails the connection with 1002", async () => {
    for (const code of [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]) {
      const { connecting, peer, key } = await dial();
      peer.write(await upgradeResponse(key));
      const ws = await within(connecting, 5_000, "connect()");
      const errors: unknown[] = [];
      ws.addEventListener("error", (e) => errors.push((e as ErrorEvent).error));
      peer.write(serverFrame(0x8, new Uint8Array([code >> 8, code & 0xff])));
      const frame = await peer.readFrame(2_000);
      assert.ok(frame !== null && frame.opcode === 0x8, `code ${code}: a close frame back`);
      assert.equal((frame.payload[0] << 8) | frame.payload[1], 1002, `code ${code}: 1002`);
      const info = await within(ws.closed, 5_000, "closed");
      assert.equal(info.closeCode, 1006, "a client reports 1006 for a connection it failed");
      assert.ok(errors[0] instanceof WebSocketError, `code ${code}: error event`);
      peer.destroy();
    }
  });
});

// ---------------------------------------------------------------------------

describe("the WebSocket class against hostile servers", () => {
  let server: RawServer;
  before(async () => {
    server = await rawServer();
  });
  after(async () => {
    await server.close();
  });

  test("offered subprotocols but none selected must fail (WHATWG establish step 11.2)", async () => {
    const ws = new WebSocket(server.url, ["chat.v1"]);
    const events: string[] = [];
    for (const type of ["open", "error", "close"]) {
      ws.addEventListener(type, () => events.push(type));
    }
    const peer = await server.accept();
    await peer.accept(await peer.readRequest()); // A valid 101 with no Sec-WebSocket-Protocol.
    const info = await within(
      Promise.race([ws.closed, nextEvent(ws, "open").then(() => null)]),
      5_000,
      "open or close",
    );
    if (info === null) ws.close();
    peer.destroy();
    await within(ws.closed, 5_000, "closed");
    assert.deepEqual(
      events,
      ["error", "close"],
      "browsers fail the connection when the server does not acknowledge an offered subprotocol",
    );
  });

  test("a masked frame from the server: error, then close 1006 not clean, and 1002 on the wire", async () => {
    const ws = new WebSocket(server.url);
    const events: string[] = [];
    ws.onopen = () => events.push("open");
    ws.onmessage = (e) => events.push(`message:${e.data}`);
    ws.onerror = () => events.push("error");
    const closed = nextEvent<CloseEvent>(ws, "close");
    const peer = await server.accept();
    const request = await peer.readRequest();
    peer.write(
      concat(
        encoder.encode(await upgradeResponse(request.headers.get("sec-websocket-key")!)),
        serverFrame(0x1, "fine"),
        serverFrame(0x1, "masked", { mask: new Uint8Array([1, 2, 3, 4]) }),
      ),
    );
    const event = await closed;
    events.push(`close:${event.code}:${event.wasClean}`);
    assert.deepEqual(events, ["open", "message:fine", "error", "close:1006:false"]);
    const frame = await peer.readFrame(2_000);
    assert.ok(frame !== null && frame.opcode === 0x8 && frame.masked);
    assert.equal((frame.payload[0] << 8) | frame.payload[1], 1002);
    peer.destroy();
  });

  test("readyState is not OPEN before the open event fires", async () => {
    const ws = new WebSocket(server.url);
    let opened = false;
    let openState = -1;
    ws.onopen = () => {
      opened = true;
      openState = ws.readyState;
    };
    const peer = await server.accept();
    await peer.accept(await peer.readRequest());
    let early = false;
    const deadline = Date.now() + 3_000;
    while (!opened && Date.now() < deadline) {
      if (ws.readyState === WebSocket.OPEN) early = true;
      await Promise.resolve();
      await delay(0);
    }
    assert.ok(opened, "open fired");
    assert.equal(openState, WebSocket.OPEN);
    ws.close();
    peer.destroy();
    await within(ws.closed, 5_000, "closed");
    assert.equal(
      early,
      false,
      "WHATWG: readyState becomes OPEN in the task that fires open, not a task earlier",
    );
  });

  test("close(3000.5) must not throw RangeError (WebIDL [Clamp] makes it 3000)", async () => {
    const ws = new WebSocket(server.url);
    const peer = await server.accept();
    await peer.accept(await peer.readRequest());
    await nextEvent(ws, "open");
    let thrown: unknown = null;
    try {
      ws.close(3000.5);
    } catch (err) {
      thrown = err;
    }
    try {
      if (thrown === null) {
        const frame = await peer.readFrame(2_000);
        assert.ok(frame !== null && frame.opcode === 0x8);
        assert.equal((frame.payload[0] << 8) | frame.payload[1], 3000, "clamped to 3000");
      } else {
        assert.ok(
          thrown instanceof DOMException && thrown.name === "InvalidAccessError",
          `close(3000.5) threw ${thrown}`,
        );
      }
    } finally {
      peer.destroy();
      await within(ws.closed, 5_000, "closed");
    }
  });
});

// ---------------------------------------------------------------------------

describe("client URL handling", () => {
  test("an empty fragment ('ws://host/#') is a SyntaxError, as any fragment", () => {
    const attempt = (url: string) => {
      try {
        const ws = new WebSocket(url, undefined, { handshakeTimeout: 100 });
        ws.close();
        return "accepted";
      } catch (err) {
        return err instanceof DOMException ? err.name : String(err);
      }
    };
    assert.equal(attempt("ws://127.0.0.1:9/#frag"), "SyntaxError");
    assert.equal(attempt("ws://127.0.0.1:9/#"), "SyntaxError", "the fragment is non-null");
    return Promise.resolve();
  });

  test("invalid ports and hosts are SyntaxErrors before any I/O", () => {
    for (const url of ["ws://127.0.0.1:65536/", "ws://127.0.0.1:-1/", "ws://h:x/", "ws://a b/"]) {
      assert.throws(() => new WebSocket(url), (err: unknown) => {
        assert.ok(err instanceof DOMException && err.name === "SyntaxError", url);
        return true;
      });
    }
    return Promise.resolve();
  });

  test("Host omits the default port, keeps others, brackets IPv6; userinfo never leaks", () => {
    const head = (url: string) =>
      new TextDecoder().decode(buildClientRequest(parseUrl(url), { key: "k" })).split("\r\n");
    assert.deepEqual(head("ws://example.com:80/a").slice(0, 2), [
      "GET /a HTTP/1.1",
      "Host: example.com",
    ]);
    assert.deepEqual(head("https://example.com:443/").slice(0, 2), [
      "GET / HTTP/1.1",
      "Host: example.com",
    ]);
    assert.equal(head("wss://example.com:80/")[1], "Host: example.com:80");
    assert.equal(head("ws://[::1]:8080/")[1], "Host: [::1]:8080");
    const withUser = head("ws://ada:s3cret@example.com/x").join("\n");
    assert.doesNotMatch(withUser, /ada|s3cret/);
    return Promise.resolve();
  });

  test("the request-target keeps path and query percent-encoding (raw server)", async () => {
    const server = await rawServer();
    try {
      const connecting = connect(`${server.url}/a%20b/%2F?q=%26x&y=ü z`, {
        handshakeTimeout: 2_000,
      });
      connecting.catch(() => {});
      const peer = await server.accept();
      const request = await peer.readRequest();
      assert.equal(request.target, "/a%20b/%2F?q=%26x&y=%C3%BC%20z");
      assert.equal(request.headers.get("host"), `127.0.0.1:${server.port}`);
      peer.destroy();
      await rejection(connecting);
    } finally {
      await server.close();
    }
  });

  test("ws://[::1]:port/ connects and sends Host: [::1]:port", async () => {
    if (!(await ipv6Loopback())) return; // No IPv6 loopback here.
    let got = "";
    const listener = net.createServer((socket) => {
      socket.on("data", async (chunk) => {
        got += chunk.toString("latin1");
        const key = /sec-websocket-key: *(\S+)/i.exec(got)?.[1];
        if (got.includes("\r\n\r\n") && key) socket.write(await upgradeResponse(key));
      });
    });
    await new Promise<void>((resolve) => listener.listen(0, "::1", () => resolve()));
    const port = (listener.address() as net.AddressInfo).port;
    try {
      const ws = await within(connect(`ws://[::1]:${port}/six`), 5_000, "connect()");
      assert.match(got, new RegExp(`^GET /six HTTP/1.1\r\nHost: \\[::1\\]:${port}\r\n`));
      ws.terminate();
    } finally {
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    }
  });
});

// ---------------------------------------------------------------------------

describe("client timeouts", () => {
  let echo: Server;
  before(async () => {
    echo = await serve({ hostname: "127.0.0.1", port: 0 }, { message: (ws, d) => ws.send(d) });
  });
  after(async () => {
    await echo.shutdown();
  });

  test("handshakeTimeout 0, negative or NaN is a RangeError", async () => {
    for (const handshakeTimeout of [0, -1, Number.NaN]) {
      await assert.rejects(async () => await connect(echo.url, { handshakeTimeout }), RangeError);
    }
  });

  test("handshakeTimeout: Infinity (no limit) does not fail every connect at once", async () => {
    let ws;
    try {
      ws = await within(connect(echo.url, { handshakeTimeout: Infinity }), 5_000, "connect()");
    } catch (err) {
      assert.fail(`connect() with handshakeTimeout: Infinity failed: ${(err as Error).message}`);
    }
    ws.close();
    await within(ws.closed, 5_000, "closed");
  });
});

// ---------------------------------------------------------------------------

describe("ReconnectingWebSocket against hostile servers", () => {
  const clients: ReconnectingWebSocket[] = [];
  function client(url: string, options: ConstructorParameters<typeof ReconnectingWebSocket>[1]) {
    const rws = new ReconnectingWebSocket(url, options);
    rws.addEventListener("error", () => {});
    clients.push(rws);
    return rws;
  }
  async function closeAll() {
    for (const rws of clients.splice(0)) {
      try {
        rws.close();
      } catch {
        // A wedged client is what a test found; closing its socket below.
      }
      rws.socket?.terminate();
      await within(rws.closed, 5_000, "client closed").catch(() => {});
    }
  }

  test("accept-then-drop, again and again: delays grow by factor up to maxDelay", async () => {
    const server = await serve({ hostname: "127.0.0.1", port: 0 }, {
      open: (ws) => ws.terminate(),
    });
    try {
      const rws = client(server.url, { minDelay: 20, maxDelay: 80, jitter: "none" });
      const delays: number[] = [];
      let opens = 0;
      rws.addEventListener("open", () => opens++);
      const five = new Promise<void>((resolve) =>
        rws.addEventListener("reconnecting", (e) => {
          delays.push((e as ReconnectEvent).delay);
          if (delays.length === 5) resolve();
        })
      );
      await within(five, 5_000, "five reconnects");
      assert.deepEqual(delays, [20, 40, 80, 80, 80]);
      assert.ok(opens >= 4, "each attempt opened before it was dropped");
    } finally {
      await closeAll();
      await server.shutdown();
    }
  });

  test("a 404 is not retried; a server down then up is reached", async () => {
    const raw = await rawServer();
    try {
      const rws = client(raw.url, { minDelay: 20 });
      const peer = await raw.accept();
      await peer.readRequest();
      peer.write("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
      const info = await within(rws.closed, 5_000, "closed for good");
      assert.equal(info.closeCode, 1006);
      await delay(100);
      assert.equal(raw.peers.length, 1, "no retry after a 404");
    } finally {
      await raw.close();
    }
    const port = await deadPort();
    const rws = client(`ws://127.0.0.1:${port}/`, { minDelay: 30, maxDelay: 60 });
    await nextEvent(rws, "reconnecting");
    const server = await serve({ hostname: "127.0.0.1", port }, {});
    try {
      await nextEvent(rws, "open", 5_000);
    } finally {
      await closeAll();
      await server.shutdown();
    }
  });

  test("close() with a code it then refuses (3000.5) must not wedge the client", async () => {
    const server = await serve({ hostname: "127.0.0.1", port: 0 }, {});
    try {
      const rws = client(server.url, { minDelay: 20 });
      await nextEvent(rws, "open");
      try {
        rws.close(3000.5);
      } catch {
        // Refusing the code is fine; leaving the client half-closed is not.
      }
      try {
        rws.close(1000);
      } catch {
        // Idem.
      }
      const outcome = await Promise.race([
        rws.closed.then(() => "closed"),
        delay(2_000).then(() => "stuck"),
      ]);
      assert.equal(
        outcome,
        "closed",
        `readyState ${rws.readyState}, connection readyState ${rws.socket?.readyState}`,
      );
    } finally {
      await closeAll();
      await server.shutdown();
    }
  });

  test("a backoff past 2^31-1 ms (maxDelay: Infinity) must not retry after 1 ms", async () => {
    const port = await deadPort();
    // Attempt 1 waits 30 ms; attempt 2 would wait 30e9 ms, far past what setTimeout holds.
    const rws = client(`ws://127.0.0.1:${port}/`, {
      minDelay: 30,
      factor: 1e9,
      maxDelay: Infinity,
      jitter: "none",
      maxAttempts: 6,
    });
    const attempts: number[] = [];
    rws.addEventListener("reconnecting", (e) => attempts.push((e as ReconnectEvent).attempt));
    try {
      await delay(600);
      assert.deepEqual(attempts, [1, 2], "attempt 3 waits for attempt 2's (huge) delay");
    } finally {
      await closeAll();
    }
  });

  test("close() while waiting to reconnect: nothing left behind, the process exits", async () => {
    const server = await serve({ hostname: "127.0.0.1", port: 0 }, {
      open: (ws) => ws.close(1001, "bye"),
    });
    const dir = mkdtempSync(join(tmpdir(), "sluice-exit-"));
    const script = join(dir, "exit.ts");
    const reconnect = pathToFileURL(join(REPO_ROOT, "src", "reconnect.ts")).href;
    writeFileSync(
      script,
      `import { ReconnectingWebSocket } from ${JSON.stringify(reconnect)};
const rws = new ReconnectingWebSocket(${
        JSON.stringify(server.url)
      }, { minDelay: 20, maxDelay: 40 });
rws.addEventListener("error", () => {});
let n = 0;
rws.addEventListener("reconnecting", () => { if (++n === 3) rws.close(); });
const open = new ReconnectingWebSocket(${
        JSON.stringify(server.url)
      }, { reconnectOnNormalClose: true });
open.addEventListener("open", () => open.close());
await rws.closed;
await open.closed;
console.log("closed");
`,
    );
    const args = RUNTIME === "deno" ? ["run", "-A", script] : [script];
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout!.on("data", (chunk) => (out += chunk));
    try {
      const code = await within(
        new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c))),
        15_000,
        "the child process to exit on its own after close()",
      );
      assert.equal(code, 0);
      assert.match(out, /closed/);
    } finally {
      if (child.exitCode === null) child.kill();
      rmSync(dir, { recursive: true, force: true });
      await server.shutdown();
    }
  });
});
