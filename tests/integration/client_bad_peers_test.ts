/**
 * The client against servers that break the rules. What users rely on: a
 * broken handshake rejects `connect()` with a `HandshakeError` that names the
 * problem; a broken frame fails the connection the RFC's way (a masked close
 * frame with 1002, 1007 or 1009 goes to the peer, the socket is dropped, the
 * `error` event and callback fire, `closed` resolves with 1006); every
 * failure happens within the configured timeouts, nothing hangs, and nothing
 * leaks an unhandled rejection. Redirects are off by default, bounded, and
 * never downgrade `wss:` to `ws:`.
 *
 * The misbehaving servers are raw TCP servers (node:net) scripted byte by
 * byte, see `client_peers/raw_server.ts`.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { after, before, describe } from "node:test";
import assert from "node:assert/strict";
import { delay, test, within } from "../_watch.ts";
import { makeTestCerts, opensslSkipReason, type TestCerts } from "../_certs.ts";
import { connect, type ConnectOptions, WebSocket } from "../../src/client.ts";
import { serve, type Server } from "../../src/server.ts";
import { HandshakeError, WebSocketError } from "../../src/protocol/errors.ts";
import type { WebSocketConnection } from "../../src/websocket.ts";
import {
  type ClientFrame,
  type RawPeer,
  type RawServer,
  rawServer,
  serverFrame,
} from "./client_peers/raw_server.ts";

/** Connects to the raw server, returning the pending connect() and the accepted raw peer. */
async function dial(
  server: RawServer,
  options: ConnectOptions<undefined> = {},
  path = "/",
): Promise<{ connecting: Promise<WebSocketConnection<undefined>>; peer: RawPeer }> {
  const connecting = connect(`${server.url}${path}`, options);
  // Observe the rejection at once, so it never counts as unhandled.
  connecting.catch(() => {});
  const peer = await server.accept();
  return { connecting, peer };
}

/** Expects `connecting` to reject with a HandshakeError whose message matches. */
async function rejectsWith(
  connecting: Promise<unknown>,
  message: RegExp,
  status?: number,
): Promise<HandshakeError> {
  let error: unknown = null;
  try {
    await within(connecting, 5_000, "connect() to settle");
  } catch (err) {
    error = err;
  }
  assert.ok(error instanceof HandshakeError, `expected a HandshakeError, got ${error}`);
  assert.match(error.message, message);
  if (status !== undefined) assert.equal(error.status, status);
  return error;
}

describe("client against a broken handshake", () => {
  let server: RawServer;
  before(async () => {
    server = await rawServer();
  });
  after(async () => {
    await server.close();
  });

  /** Answers the client's request with `response` (a function of its key) and checks the outcome. */
  async function answer(
    response: (key: string) => string | Promise<string>,
    message: RegExp,
    options: ConnectOptions<undefined> = {},
  ): Promise<HandshakeError> {
    const { connecting, peer } = await dial(server, options);
    const request = await peer.readRequest();
    peer.write(await response(request.headers.get("sec-websocket-key") ?? ""));
    const error = await rejectsWith(connecting, message);
    // The client drops the socket; it does not leave it open.
    await within(peer.ended, 2_000, "the client to close the socket");
    return error;
  }

  const head101 =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
  const accept = async (key: string) => {
    const { acceptKey } = await import("../../src/protocol/handshake.ts");
    return `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n`;
  };

  test("a wrong Sec-WebSocket-Accept is rejected", async () => {
    const error = await answer(
      () => `${head101}Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n`,
      /Sec-WebSocket-Accept/,
    );
    assert.equal(error.status, 101);
  });

  test("a missing Sec-WebSocket-Accept is rejected", async () => {
    await answer(() => `${head101}\r\n`, /Sec-WebSocket-Accept/);
  });

  test("200 instead of 101: the error names the status and quotes the body", async () => {
    const body = "Hello from a plain HTTP server, not a WebSocket one";
    const error = await answer(
      () =>
        `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      /200/,
    );
    assert.equal(error.status, 200);
    assert.match(error.message, /Hello from a plain HTTP server/);
    assert.equal(error.headers.get("content-type"), "text/plain", "response headers kept");
  });

  test("a missing Upgrade header is rejected", async () => {
    await answer(
      async (key) =>
        `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n${await accept(key)}\r\n`,
      /Upgrade/,
    );
  });

  test("a missing Connection header is rejected", async () => {
    await answer(
      async (key) =>
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n${await accept(key)}\r\n`,
      /Connection/,
    );
  });

  test("a subprotocol the client did not offer is rejected", async () => {
    await answer(
      async (key) => `${head101}${await accept(key)}Sec-WebSocket-Protocol: evil\r\n\r\n`,
      /subprotocol "evil"/,
      { protocols: ["chat"] },
    );
  });

  test("a subprotocol when the client offered none is rejected", async () => {
    await answer(
      async (key) => `${head101}${await accept(key)}Sec-WebSocket-Protocol: chat\r\n\r\n`,
      /subprotocol "chat"/,
    );
  });

  test("an extension the client did not offer is rejected", async () => {
    const error = await answer(
      async (key) =>
        `${head101}${await accept(key)}Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n`,
      /extensions?.*permessage-deflate/,
    );
    assert.equal(error.status, 101);
  });

  test("a server that stalls mid-handshake fails after handshakeTimeout", async () => {
    const start = performance.now();
    const { connecting, peer } = await dial(server, { handshakeTimeout: 300 });
    await peer.readRequest();
    peer.write("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"); // ...and nothing more.
    await rejectsWith(connecting, /timed out after 300 ms/i);
    const elapsed = performance.now() - start;
    assert.ok(elapsed >= 280 && elapsed < 1_500, `failed after ${elapsed.toFixed(0)} ms`);
    await within(peer.ended, 2_000, "the client to close the socket");
  });

  test("a server that never answers fails after handshakeTimeout", async () => {
    const start = performance.now();
    const { connecting, peer } = await dial(server, { handshakeTimeout: 200 });
    await peer.readRequest();
    await rejectsWith(connecting, /timed out/i);
    assert.ok(performance.now() - start < 1_500);
    await within(peer.ended, 2_000, "the client to close the socket");
  });

  test("a server that closes mid-handshake fails at once", async () => {
    const { connecting, peer } = await dial(server, { handshakeTimeout: 10_000 });
    await peer.readRequest();
    peer.write("HTTP/1.1 101 Switch");
    peer.socket.end();
    const start = performance.now();
    await rejectsWith(connecting, /closed the connection/);
    assert.ok(performance.now() - start < 2_000, "does not wait for the 10 s timeout");
  });

  test("a response head over maxHandshakeSize is refused at the limit", async () => {
    const { connecting, peer } = await dial(server, { maxHandshakeSize: 4096 });
    await peer.readRequest();
    peer.write("HTTP/1.1 101 Switching Protocols\r\nX-Padding: " + "a".repeat(8192)); // Never ends.
    const error = await rejectsWith(connecting, /4096/);
    await within(peer.ended, 2_000, "the client to close the socket");
    assert.match(error.message, /response/i, "names the response, not a request");
    assert.equal(error.status, 0, "no status was received: 431 is a server's answer");
  });

  test("WebSocket class: a 200 fires error, then close with 1006, not clean", async () => {
    const ws = new WebSocket(server.url);
    const events: string[] = [];
    let closeEvent: CloseEvent | null = null;
    let errorEvent: ErrorEvent | null = null;
    ws.addEventListener("error", (e) => {
      events.push("error");
      errorEvent = e as ErrorEvent;
    });
    const closed = new Promise<void>((resolve) => {
      ws.addEventListener("close", (e) => {
        events.push("close");
        closeEvent = e as CloseEvent;
        resolve();
      });
    });
    const peer = await server.accept();
    await peer.readRequest();
    peer.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
    await within(closed, 5_000, "close event");
    assert.deepEqual(events, ["error", "close"]);
    assert.equal(closeEvent!.code, 1006);
    assert.equal(closeEvent!.wasClean, false);
    assert.ok(errorEvent!.error instanceof HandshakeError);
    assert.equal(ws.readyState, WebSocket.CLOSED);
  });
});

interface FailureExpectation {
  /** Close code the client must send. */
  closeCode: 1002 | 1007 | 1009;
  /** The stable error code. */
  code: string;
}

describe("client against broken frames", () => {
  let server: RawServer;
  before(async () => {
    server = await rawServer();
  });
  after(async () => {
    await server.close();
  });

  /**
   * Opens a connection, sends `bytes` from the server once listeners are
   * attached, and checks the RFC's failure sequence from both ends.
   */
  async function failsWith(
    bytes: Uint8Array | Uint8Array[],
    expected: FailureExpectation,
    options: ConnectOptions<undefined> = {},
  ): Promise<void> {
    const callbackErrors: Error[] = [];
    const { connecting, peer } = await dial(server, {
      // Long, so that "promptly" below proves the client does not wait for it.
      closeTimeout: 5_000,
      ...options,
      handlers: { error: (_ws, error) => callbackErrors.push(error) },
    });
    await peer.accept(await peer.readRequest());
    const ws = await within(connecting, 5_000, "connect");
    const eventErrors: unknown[] = [];
    ws.addEventListener("error", (e) => eventErrors.push((e as ErrorEvent).error));
    const start = performance.now();
    for (const chunk of Array.isArray(bytes) ? bytes : [bytes]) peer.write(chunk);

    // The peer receives exactly one frame, a masked close with the right code...
    const close = await peer.readFrame(3_000);
    assert.ok(close !== null, "the client sent a close frame before closing the socket");
    checkClose(close, expected.closeCode);
    // ...then the client drops the TCP connection without waiting for an answer.
    assert.equal(await peer.readFrame(3_000), null, "nothing after the close frame");
    await within(peer.ended, 3_000, "the client to close the socket");

    const info = await within(ws.closed, 3_000, "closed");
    assert.deepEqual(info, { closeCode: 1006, reason: "", wasClean: false });
    const elapsed = performance.now() - start;
    assert.ok(elapsed < 2_000, `failed in ${elapsed.toFixed(0)} ms, without awaiting closeTimeout`);
    assert.equal(ws.readyState, WebSocket.CLOSED);
    for (const [where, errors] of [["callback", callbackErrors], ["event", eventErrors]] as const) {
      assert.equal(errors.length, 1, `one error ${where}`);
      const error = errors[0];
      assert.ok(error instanceof WebSocketError, `${where}: a WebSocketError, got ${error}`);
      assert.equal(error.closeCode, expected.closeCode);
      assert.equal(error.code, expected.code);
    }
  }

  function checkClose(frame: ClientFrame, code: number): void {
    assert.equal(frame.raw[0], 0x88, "FIN + close opcode, no RSV bits");
    assert.equal(frame.raw[1] & 0x80, 0x80, "the mask bit is set");
    assert.ok(frame.masked);
    assert.ok(frame.payload.length >= 2 && frame.payload.length <= 125, "a code fits");
    assert.equal((frame.payload[0] << 8) | frame.payload[1], code, "close code on the wire");
    // The wire bytes are the unmasked payload XOR the key.
    const wire = frame.raw.subarray(frame.raw.length - frame.payload.length);
    for (let i = 0; i < wire.length; i++) {
      assert.equal(wire[i], frame.payload[i] ^ frame.mask[i & 3]);
    }
    new TextDecoder("utf-8", { fatal: true }).decode(frame.payload.subarray(2)); // Valid UTF-8 reason.
  }

  test("a masked frame from the server: 1002", async () => {
    await failsWith(
      serverFrame(0x1, "hi", { mask: new Uint8Array([1, 2, 3, 4]) }),
      { closeCode: 1002, code: "MASKED_FRAME" },
    );
  });

  for (const rsv of [4, 2, 1]) {
    test(`RSV bits ${rsv.toString(2).padStart(3, "0")} without an extension: 1002`, async () => {
      await failsWith(serverFrame(0x2, "x", { rsv }), { closeCode: 1002, code: "RESERVED_BITS" });
    });
  }

  for (const opcode of [0x3, 0x7, 0xb, 0xf]) {
    test(`reserved opcode 0x${opcode.toString(16)}: 1002`, async () => {
      await failsWith(serverFrame(opcode), { closeCode: 1002, code: "RESERVED_OPCODE" });
    });
  }

  test("invalid UTF-8 in a text message: 1007", async () => {
    await failsWith(serverFrame(0x1, new Uint8Array([0x68, 0xc3, 0x28])), {
      closeCode: 1007,
      code: "INVALID_UTF8",
    });
  });

  test("invalid UTF-8 split across fragments: 1007", async () => {
    await failsWith([
      serverFrame(0x1, new Uint8Array([0x61, 0xf0, 0x9f]), { fin: false }),
      serverFrame(0x0, new Uint8Array([0x98, 0x41])),
    ], { closeCode: 1007, code: "INVALID_UTF8" });
  });

  test("invalid UTF-8 in a close reason: 1007", async () => {
    await failsWith(serverFrame(0x8, new Uint8Array([0x03, 0xe8, 0xff])), {
      closeCode: 1007,
      code: "INVALID_UTF8",
    });
  });

  test("a control frame over 125 bytes: 1002", async () => {
    await failsWith(serverFrame(0x9, new Uint8Array(126)), {
      closeCode: 1002,
      code: "CONTROL_FRAME_TOO_LONG",
    });
  });

  test("a fragmented control frame: 1002", async () => {
    await failsWith(serverFrame(0x9, "p", { fin: false }), {
      closeCode: 1002,
      code: "FRAGMENTED_CONTROL_FRAME",
    });
  });

  for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]) {
    test(`a close frame with invalid code ${code}: 1002`, async () => {
      await failsWith(serverFrame(0x8, new Uint8Array([code >> 8, code & 0xff])), {
        closeCode: 1002,
        code: "INVALID_CLOSE_CODE",
      });
    });
  }

  test("a close frame with a 1-byte payload: 1002", async () => {
    await failsWith(serverFrame(0x8, new Uint8Array([0x03])), {
      closeCode: 1002,
      code: "INVALID_CLOSE_PAYLOAD",
    });
  });

  test("a message over maxMessageSize in one frame: 1009", async () => {
    await failsWith(serverFrame(0x2, new Uint8Array(1025)), {
      closeCode: 1009,
      code: "FRAME_TOO_BIG",
    }, { maxMessageSize: 1024 });
  });

  test("a message over maxMessageSize across fragments: 1009", async () => {
    await failsWith(
      [
        serverFrame(0x2, new Uint8Array(600), { fin: false }),
        serverFrame(0x0, new Uint8Array(600)),
      ],
      { closeCode: 1009, code: "MESSAGE_TOO_BIG" },
      { maxMessageSize: 1024 },
    );
  });

  test("a declared 1 TiB frame fails on its header, before any payload arrives", async () => {
    await failsWith(serverFrame(0x2, new Uint8Array(0), { declaredLength: 2 ** 40 }), {
      closeCode: 1009,
      code: "FRAME_TOO_BIG",
    });
  });

  test("a continuation without a message: 1002", async () => {
    await failsWith(serverFrame(0x0, "x"), { closeCode: 1002, code: "UNEXPECTED_CONTINUATION" });
  });

  test("a new message inside a fragmented one: 1002", async () => {
    await failsWith([
      serverFrame(0x1, "a", { fin: false }),
      serverFrame(0x1, "b"),
    ], { closeCode: 1002, code: "EXPECTED_CONTINUATION" });
  });

  test("a bad frame in the same packet as the 101 still fails the connection", async () => {
    const callbackErrors: Error[] = [];
    const { connecting, peer } = await dial(server, {
      handlers: { error: (_ws, error) => callbackErrors.push(error) },
    });
    const request = await peer.readRequest();
    const { upgradeResponse } = await import("./client_peers/raw_server.ts");
    const head = new TextEncoder().encode(
      await upgradeResponse(request.headers.get("sec-websocket-key") ?? ""),
    );
    const bad = serverFrame(0x3);
    const packet = new Uint8Array(head.length + bad.length);
    packet.set(head);
    packet.set(bad, head.length);
    peer.write(packet);
    const ws = await within(connecting, 5_000, "connect");
    const close = await peer.readFrame(3_000);
    assert.ok(close !== null);
    checkClose(close, 1002);
    const info = await within(ws.closed, 3_000, "closed");
    assert.equal(info.closeCode, 1006);
    assert.equal(callbackErrors.length, 1);
    assert.equal((callbackErrors[0] as WebSocketError).code, "RESERVED_OPCODE");
  });

  test("a server that never answers our close frame is dropped after closeTimeout", async () => {
    const { connecting, peer } = await dial(server, { closeTimeout: 300 });
    await peer.accept(await peer.readRequest());
    const ws = await within(connecting, 5_000, "connect");
    const start = performance.now();
    ws.close(1000, "bye");
    const frame = await peer.readFrame(2_000);
    assert.ok(frame !== null && frame.opcode === 0x8);
    const info = await within(ws.closed, 3_000, "closed");
    const elapsed = performance.now() - start;
    assert.ok(elapsed >= 280 && elapsed < 1_500, `dropped after ${elapsed.toFixed(0)} ms`);
    assert.deepEqual(info, { closeCode: 1006, reason: "", wasClean: false });
    await within(peer.ended, 2_000, "socket closed");
  });
});

describe("client redirects", () => {
  let server: Server;
  const requests: string[] = [];
  before(async () => {
    server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      onUpgrade(request) {
        const path = request.url.pathname;
        requests.push(path);
        if (path === "/start") {
          return new Response(null, { status: 302, headers: { Location: "/target?x=1" } });
        }
        const loop = /^\/loop(\d+)$/.exec(path);
        if (loop !== null) {
          return new Response(null, {
            status: 307,
            headers: { Location: `/loop${Number(loop[1]) + 1}` },
          });
        }
      },
    }, {
      // Answers any message with the path the server saw (sent on request, not
      // on open: see client_test.ts on messages sent before connect() resolves).
      message: (ws) => ws.send(new URL(ws.url).pathname + new URL(ws.url).search),
    });
  });
  after(async () => {
    await server.shutdown();
  });

  test("are not followed by default: a 302 rejects connect() with HandshakeError", async () => {
    requests.length = 0;
    const connecting = connect(new URL("/start", server.url));
    await rejectsWith(connecting, /302/, 302);
    assert.deepEqual(requests, ["/start"]);
  });

  test("maxRedirects follows a 302 to another path", async () => {
    requests.length = 0;
    const ws = await within(
      connect(new URL("/start", server.url), { maxRedirects: 1 }),
      5_000,
      "connect",
    );
    const reader = ws.readable.getReader();
    ws.send("where am I?");
    const { value } = await within(reader.read(), 5_000, "answer");
    assert.equal(value, "/target?x=1", "the server saw the redirected request");
    assert.deepEqual(requests, ["/start", "/target"]);
    ws.close();
    await within(ws.closed, 5_000, "closed");
  });

  test(
    "to another origin do not carry Authorization or Cookie",
    async () => {
      // What fetch does (Fetch §4.4 HTTP-redirect fetch, step 13): credentials
      // set for one origin must not leak to whatever origin a server names.
      const seen: (string | null)[] = [];
      const other = await serve({
        hostname: "127.0.0.1",
        port: 0,
        onUpgrade(request) {
          seen.push(request.headers.get("authorization"), request.headers.get("cookie"));
        },
      }, () => {});
      const redirector = await serve({
        hostname: "127.0.0.1",
        port: 0,
        onUpgrade: () =>
          new Response(null, {
            status: 302,
            headers: { Location: `ws://127.0.0.1:${other.addr.port}/` },
          }),
      }, () => {});
      try {
        const ws = await within(
          connect(redirector.url, {
            maxRedirects: 1,
            headers: { Authorization: "Bearer secret", Cookie: "sid=1", "X-Trace": "kept" },
          }),
          5_000,
          "connect",
        );
        assert.deepEqual(seen, [null, null], "no credentials sent to the other origin");
        ws.close();
        await within(ws.closed, 5_000, "closed");
      } finally {
        await redirector.shutdown();
        await other.shutdown();
      }
    },
  );

  test("are bounded: maxRedirects 3 makes exactly 4 requests, then rejects", async () => {
    requests.length = 0;
    const error = await rejectsWith(
      connect(new URL("/loop0", server.url), { maxRedirects: 3 }),
      /307/,
      307,
    );
    assert.equal(error.headers.get("location"), "/loop4");
    assert.deepEqual(requests, ["/loop0", "/loop1", "/loop2", "/loop3"]);
  });
});

const skipTls = opensslSkipReason("the wss: to ws: redirect test");

describe("client redirects over TLS", { skip: skipTls || false }, () => {
  let certs: TestCerts | undefined;
  let ca = "";
  let tlsServer: Server;
  let plainServer: Server;
  const plainRequests: string[] = [];

  before(async () => {
    certs = makeTestCerts("Sluice client test CA");
    ca = certs.ca;
    plainServer = await serve({
      hostname: "127.0.0.1",
      port: 0,
      onUpgrade(request) {
        plainRequests.push(request.url.pathname);
      },
    }, () => {});
    tlsServer = await serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: certs.cert, key: certs.key },
      onUpgrade(request) {
        if (request.url.pathname === "/down") {
          return new Response(null, {
            status: 301,
            headers: { Location: `ws://127.0.0.1:${plainServer.addr.port}/plain` },
          });
        }
        if (request.url.pathname === "/up") {
          return new Response(null, { status: 302, headers: { Location: "/secure" } });
        }
      },
    }, { message: (ws) => ws.send(new URL(ws.url).pathname) });
  });

  after(async () => {
    await tlsServer?.shutdown();
    await plainServer?.shutdown();
    certs?.cleanup();
  });

  test("a wss: URL follows a redirect that stays on wss:", async () => {
    const ws = await within(
      connect(`wss://localhost:${tlsServer.addr.port}/up`, { caCerts: [ca], maxRedirects: 2 }),
      10_000,
      "connect",
    );
    assert.equal(ws.url.startsWith("wss:"), true);
    const reader = ws.readable.getReader();
    ws.send("where am I?");
    assert.equal((await within(reader.read(), 5_000, "answer")).value, "/secure");
    ws.close();
    await within(ws.closed, 5_000, "closed");
  });

  test("never from wss: to ws:, whatever maxRedirects says", async () => {
    plainRequests.length = 0;
    await rejectsWith(
      connect(`wss://localhost:${tlsServer.addr.port}/down`, { caCerts: [ca], maxRedirects: 5 }),
      /wss: to ws:/,
      301,
    );
    await delay(50);
    assert.deepEqual(plainRequests, [], "nothing was sent in the clear");
  });
});
