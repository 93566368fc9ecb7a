import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import fc from "fast-check";
import {
  acceptKey,
  buildClientRequest,
  buildErrorResponse,
  buildUpgradeResponse,
  generateKey,
  portableBase64,
  toBase64,
  validateServerResponse,
  validateUpgradeRequest,
  WEBSOCKET_GUID,
} from "../../src/protocol/handshake.ts";
import { HeadReader, parseRequestHead, parseResponseHead } from "../../src/protocol/http.ts";
import { HandshakeError } from "../../src/protocol/errors.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const KEY = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/** The §1.2 client request's fields, as a map a test can change one field of. */
const BASE: Record<string, string> = {
  Host: "server.example.com",
  Upgrade: "websocket",
  Connection: "Upgrade",
  "Sec-WebSocket-Key": KEY,
  Origin: "http://example.com",
  "Sec-WebSocket-Protocol": "chat, superchat",
  "Sec-WebSocket-Version": "13",
};

/** Builds and parses a request head; `null` removes a field, an array repeats it. */
function request(
  changes: Record<string, string | string[] | null> = {},
  line = "GET /chat HTTP/1.1",
) {
  const fields: Record<string, string | string[] | null> = { ...BASE, ...changes };
  let head = `${line}\r\n`;
  for (const [name, value] of Object.entries(fields)) {
    if (value === null) continue;
    for (const v of Array.isArray(value) ? value : [value]) head += `${name}: ${v}\r\n`;
  }
  return parseRequestHead(encoder.encode(head + "\r\n"));
}

function assertRejected(
  fn: () => unknown,
  status: number,
  message: RegExp,
  headers: Record<string, string> = {},
): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof HandshakeError, `not a HandshakeError: ${err}`);
    assert.equal(err.status, status, err.message);
    assert.match(err.message, message);
    for (const [name, value] of Object.entries(headers)) {
      assert.equal(err.headers.get(name), value, `header ${name}`);
    }
    return true;
  });
}

async function assertRejectedAsync(
  promise: Promise<unknown>,
  status: number,
  message: RegExp,
): Promise<HandshakeError> {
  let caught: unknown;
  await promise.then(() => assert.fail("resolved"), (err) => caught = err);
  assert.ok(caught instanceof HandshakeError, `not a HandshakeError: ${caught}`);
  assert.equal(caught.status, status);
  assert.match(caught.message, message);
  return caught;
}

describe("acceptKey and generateKey", () => {
  test("the RFC 6455 §1.3 example", async () => {
    assert.equal(await acceptKey(KEY), ACCEPT);
    assert.equal(WEBSOCKET_GUID, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
  });

  test("another known pair (SHA-1 of key + GUID, base64)", async () => {
    // From RFC 6455 §4.2.2's description, computed independently.
    assert.equal(await acceptKey("x3JJHMbDL1EzLkh9GBhXDw=="), "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
  });

  test("toBase64 and its portable fallback agree with node:buffer on any bytes", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const expected = Buffer.from(bytes).toString("base64");
      assert.equal(toBase64(bytes), expected);
      assert.equal(portableBase64(bytes), expected);
    }));
    // A view into a larger buffer: only its own bytes.
    const whole = Uint8Array.from({ length: 40 }, (_, i) => i * 7);
    assert.equal(
      toBase64(whole.subarray(5, 25)),
      Buffer.from(whole.subarray(5, 25)).toString("base64"),
    );
  });

  test("generateKey gives base64 of 16 fresh random bytes", () => {
    const keys = new Set<string>();
    for (let i = 0; i < 100; i++) {
      const key = generateKey();
      assert.match(key, /^[A-Za-z0-9+/]{22}==$/);
      assert.equal(atob(key).length, 16);
      keys.add(key);
      // A server accepts it.
      assert.equal(validateUpgradeRequest(request({ "Sec-WebSocket-Key": key }), false).key, key);
    }
    assert.equal(keys.size, 100);
  });
});

describe("validateUpgradeRequest", () => {
  test("the §1.2 request is accepted", () => {
    const upgrade = validateUpgradeRequest(request(), false);
    assert.equal(upgrade.key, KEY);
    assert.equal(upgrade.href, "http://server.example.com/chat");
    assert.deepEqual(upgrade.protocols, ["chat", "superchat"]);
    assert.equal(upgrade.origin, "http://example.com");
    assert.equal(upgrade.extensions, null);
  });

  test("the URL takes its scheme from the transport, and keeps port and query", () => {
    const upgrade = validateUpgradeRequest(
      request({ Host: "example.com:8443" }, "GET /a/b?x=1&y=%20 HTTP/1.1"),
      true,
    );
    assert.equal(upgrade.href, "https://example.com:8443/a/b?x=1&y=%20");
  });

  test("hosts: names, IPv4, IPv6 with port", () => {
    for (
      const host of ["localhost", "127.0.0.1:9000", "[::1]:8080", "[::1]", "xn--bcher-kva.example"]
    ) {
      const upgrade = validateUpgradeRequest(request({ Host: host }), false);
      assert.equal(new URL(upgrade.href).host, host, host);
    }
  });

  test("a target starting with // or /\\ stays a path: the host comes from Host", () => {
    for (const target of ["//evil.example/x", "/\\evil.example/x"]) {
      const upgrade = validateUpgradeRequest(request({}, `GET ${target} HTTP/1.1`), false);
      assert.equal(new URL(upgrade.href).host, "server.example.com", target);
      assert.equal(new URL(upgrade.href).pathname, "//evil.example/x");
    }
  });

  test("each origin-form URL parsed once is answered the same every time after", () => {
    // The same request twice (the second from the parse cache), a Host that
    // matches the pattern but is no URL authority (port out of range), twice,
    // and URLs too long to cache: each gives the same answer each time.
    for (let round = 0; round < 2; round++) {
      const upgrade = validateUpgradeRequest(
        request({ Host: "a.example:81" }, "GET /x?y HTTP/1.1"),
        true,
      );
      assert.equal(upgrade.href, "https://a.example:81/x?y");
      assertRejected(
        () => validateUpgradeRequest(request({ Host: "a.example:99999" }), false),
        400,
        /target or Host/,
      );
      const long = "/" + "x".repeat(600) + "?" + round;
      const longUpgrade = validateUpgradeRequest(request({}, `GET ${long} HTTP/1.1`), false);
      assert.equal(longUpgrade.href, "http://server.example.com" + long);
      assertRejected(
        () =>
          validateUpgradeRequest(
            request({ Host: "a.example:99999" }, `GET ${long} HTTP/1.1`),
            false,
          ),
        400,
        /target or Host/,
      );
    }
    // More distinct URLs than the cache holds: still right after it empties.
    for (let i = 0; i < 600; i++) {
      const upgrade = validateUpgradeRequest(request({}, `GET /room/${i} HTTP/1.1`), false);
      assert.equal(upgrade.href, `http://server.example.com/room/${i}`);
    }
  });

  test("an absolute-form http(s) target is accepted", () => {
    const upgrade = validateUpgradeRequest(
      request({}, "GET http://server.example.com/chat?q HTTP/1.1"),
      false,
    );
    assert.equal(upgrade.href, "http://server.example.com/chat?q");
  });

  test("targets that are not origin-form or http(s) absolute-form are a 400", () => {
    for (
      const target of [
        "*",
        "chat",
        "example.com:443",
        "ftp://example.com/x",
        "javascript:x",
        "http://u:p@example.com/x",
      ]
    ) {
      assertRejected(
        () => validateUpgradeRequest(request({}, `GET ${target} HTTP/1.1`), false),
        400,
        /target/i,
      );
    }
  });

  test("Upgrade: case-insensitive, may be a list", () => {
    for (
      const value of ["websocket", "WebSocket", "WEBSOCKET", "h2c, websocket", "websocket , foo"]
    ) {
      assert.equal(validateUpgradeRequest(request({ Upgrade: value }), false).key, KEY, value);
    }
  });

  test("Upgrade missing or wrong: 400, answered with Upgrade: websocket", () => {
    for (const value of [null, "", "h2c", "web socket", "websockets"]) {
      assertRejected(
        () => validateUpgradeRequest(request({ Upgrade: value }), false),
        400,
        /Upgrade/,
        { upgrade: "websocket" },
      );
    }
  });

  test("Connection: a list holding Upgrade, any case", () => {
    for (
      const value of [
        "Upgrade",
        "upgrade",
        "keep-alive, Upgrade",
        "Upgrade,keep-alive",
        "close,UPGRADE",
      ]
    ) {
      assert.equal(validateUpgradeRequest(request({ Connection: value }), false).key, KEY, value);
    }
    // Two Connection fields are one list.
    assert.equal(
      validateUpgradeRequest(request({ Connection: ["keep-alive", "Upgrade"] }), false).key,
      KEY,
    );
  });

  test("Connection missing or without Upgrade: 400", () => {
    for (const value of [null, "", "keep-alive", "upgrade-insecure", "close"]) {
      assertRejected(
        () => validateUpgradeRequest(request({ Connection: value }), false),
        400,
        /Connection/,
      );
    }
  });

  test("Host missing, empty, malformed or repeated: 400", () => {
    for (
      const value of [
        null,
        "",
        "a b",
        "evil.example/path",
        "user@host",
        "host?q",
        "host#f",
        "[::1",
        ["a", "b"],
      ]
    ) {
      assertRejected(
        () => validateUpgradeRequest(request({ Host: value }), false),
        400,
        /Host/,
      );
    }
  });

  test("Sec-WebSocket-Key missing, not base64, or not 16 bytes: 400", () => {
    const wrong = [
      null,
      "",
      "dGhlIHNhbXBsZSBub25jZQ", // no padding
      "dGhlIHNhbXBsZSBub25jZQ=", // bad padding
      "dGhlIHNhbXBsZSBub25j!Q==", // not base64
      "dGhlIHNhbXBsZSBub25jZR==", // non-zero bits after the last byte
      btoa("fifteen bytes!!"), // 15 bytes
      btoa("seventeen bytes!!"), // 17 bytes
      [KEY, KEY], // two keys
    ];
    for (const value of wrong) {
      assertRejected(
        () => validateUpgradeRequest(request({ "Sec-WebSocket-Key": value }), false),
        400,
        /Sec-WebSocket-Key/,
      );
    }
  });

  test("Sec-WebSocket-Version missing: 400", () => {
    assertRejected(
      () => validateUpgradeRequest(request({ "Sec-WebSocket-Version": null }), false),
      400,
      /Sec-WebSocket-Version/,
    );
  });

  test("Sec-WebSocket-Version other than 13: 426 with Sec-WebSocket-Version: 13 (§4.4)", () => {
    for (const value of ["8", "12", "14", "13, 8", "", "thirteen"]) {
      assertRejected(
        () => validateUpgradeRequest(request({ "Sec-WebSocket-Version": value }), false),
        426,
        /Sec-WebSocket-Version/,
        { "sec-websocket-version": "13" },
      );
    }
  });

  test("a method other than GET: 405 with Allow: GET", () => {
    for (const method of ["POST", "HEAD", "get", "CONNECT"]) {
      assertRejected(
        () => validateUpgradeRequest(request({}, `${method} /chat HTTP/1.1`), false),
        405,
        /GET/,
        { allow: "GET" },
      );
    }
  });

  test("HTTP/1.0: 400 asking for HTTP/1.1", () => {
    assertRejected(
      () => validateUpgradeRequest(request({}, "GET /chat HTTP/1.0"), false),
      400,
      /HTTP\/1\.1/,
    );
  });

  test("a major version other than 1 (0.9, 2.0, 9.9): 505, before any other check", () => {
    // RFC 9110 §15.6.6: 505 is the answer to an HTTP major version the server
    // does not support; the rest of such a head cannot be read as HTTP/1.x.
    for (const version of ["0.9", "2.0", "3.0", "9.9"]) {
      assertRejected(
        () => validateUpgradeRequest(request({}, `GET /chat HTTP/${version}`), false),
        505,
        /HTTP\/1\.1/,
      );
      assertRejected(
        () => validateUpgradeRequest(request({}, `POST /chat HTTP/${version}`), false),
        505,
        /not supported/,
      );
    }
    assert.match(
      decoder.decode(buildErrorResponse(505, "HTTP/2.0 is not supported")),
      /^HTTP\/1\.1 505 HTTP Version Not Supported\r\n/,
    );
  });

  test("subprotocols: a list of tokens, in order; an invalid one is a 400", () => {
    assert.deepEqual(
      validateUpgradeRequest(request({ "Sec-WebSocket-Protocol": ["a", "b.c, d"] }), false)
        .protocols,
      ["a", "b.c", "d"],
    );
    assert.deepEqual(
      validateUpgradeRequest(request({ "Sec-WebSocket-Protocol": null }), false).protocols,
      [],
    );
    assertRejected(
      () => validateUpgradeRequest(request({ "Sec-WebSocket-Protocol": "chat, bad/one" }), false),
      400,
      /subprotocol/,
    );
  });

  test("extensions and origin are passed on as sent", () => {
    const upgrade = validateUpgradeRequest(
      request({
        "Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits",
        Origin: null,
      }),
      false,
    );
    assert.equal(upgrade.extensions, "permessage-deflate; client_max_window_bits");
    assert.equal(upgrade.origin, null);
  });
});

describe("buildUpgradeResponse", () => {
  test("the §1.3 response, byte for byte", () => {
    assert.equal(
      decoder.decode(buildUpgradeResponse(ACCEPT)),
      "HTTP/1.1 101 Switching Protocols\r\n" +
        "Upgrade: websocket\r\n" +
        "Connection: Upgrade\r\n" +
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" +
        "\r\n",
    );
  });

  test("with a subprotocol, extensions and extra headers (Set-Cookie kept apart)", () => {
    const headers = new Headers([["Set-Cookie", "a=1"], ["Set-Cookie", "b=2"], [
      "X-Server",
      "sluice",
    ]]);
    const out = decoder.decode(
      buildUpgradeResponse(ACCEPT, { protocol: "chat", extensions: "permessage-deflate", headers }),
    );
    const lines = out.split("\r\n");
    assert.deepEqual(lines.slice(0, 6), [
      "HTTP/1.1 101 Switching Protocols",
      "Upgrade: websocket",
      "Connection: Upgrade",
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
      "Sec-WebSocket-Protocol: chat",
      "Sec-WebSocket-Extensions: permessage-deflate",
    ]);
    // Runtimes list Headers in different orders (Bun puts set-cookie last).
    assert.deepEqual(lines.slice(6, -2).sort(), [
      "set-cookie: a=1",
      "set-cookie: b=2",
      "x-server: sluice",
    ]);
    assert.ok(out.endsWith("sluice\r\n\r\n") || out.endsWith("=2\r\n\r\n"));
    assert.deepEqual(lines.slice(-2), ["", ""]);
  });
});

describe("header values cannot break the head", () => {
  test("buildUpgradeResponse refuses a non-token subprotocol or a CR LF in extensions", () => {
    for (const protocol of ["a\r\nX-Evil: 1", "a b", "a,b"]) {
      assert.throws(() => buildUpgradeResponse(ACCEPT, { protocol }), TypeError, protocol);
    }
    for (const extensions of ["permessage-deflate\r\nX-Evil: 1", "x\ny", "x\u0000"]) {
      assert.throws(() => buildUpgradeResponse(ACCEPT, { extensions }), TypeError);
    }
  });

  test("buildClientRequest refuses non-token subprotocols and CR LF in origin or extensions", () => {
    const url = new URL("ws://h/");
    for (const protocols of [["ok", "a b"], ["a\r\nX: y"], ["a,b"], [""]]) {
      assert.throws(() => buildClientRequest(url, { key: KEY, protocols }), TypeError);
    }
    assert.throws(
      () => buildClientRequest(url, { key: KEY, origin: "http://a\r\nCookie: stolen" }),
      TypeError,
    );
    assert.throws(
      () => buildClientRequest(url, { key: KEY, extensions: "permessage-deflate\r\n" }),
      TypeError,
    );
  });
});

describe("buildErrorResponse", () => {
  test("status line, headers, length and a plain-text body, byte for byte", () => {
    assert.equal(
      decoder.decode(
        buildErrorResponse(426, "Use version 13", new Headers({ "Sec-WebSocket-Version": "13" })),
      ),
      "HTTP/1.1 426 Upgrade Required\r\n" +
        "content-type: text/plain; charset=utf-8\r\n" +
        "sec-websocket-version: 13\r\n" +
        "Content-Length: 15\r\n" +
        "Connection: close\r\n" +
        "\r\n" +
        "Use version 13\n",
    );
  });

  test("Content-Length counts UTF-8 bytes; caller's content-type is kept; length and connection are ours", () => {
    const out = decoder.decode(
      buildErrorResponse(
        403,
        "Non autorisé",
        new Headers({
          "Content-Type": "text/x",
          "Content-Length": "999",
          Connection: "keep-alive",
        }),
      ),
    );
    assert.equal(
      out,
      "HTTP/1.1 403 Forbidden\r\ncontent-type: text/x\r\nContent-Length: 14\r\nConnection: close\r\n\r\n" +
        "Non autorisé\n",
    );
  });

  test("every status has a reason phrase; unknown ones say Error", () => {
    const phrases: [number, string][] = [
      [400, "Bad Request"],
      [405, "Method Not Allowed"],
      [431, "Request Header Fields Too Large"],
      [503, "Service Unavailable"],
      [418, "Error"],
    ];
    for (const [status, phrase] of phrases) {
      const response = parseResponseHead(
        buildErrorResponse(status, "x").subarray(0, -2), // drop the body "x\n"
      );
      assert.equal(response.status, status);
      assert.equal(response.statusText, phrase);
    }
  });
});

describe("buildClientRequest", () => {
  test("the §1.2 request, byte for byte", () => {
    const bytes = buildClientRequest(new URL("ws://server.example.com/chat"), {
      key: KEY,
      protocols: ["chat", "superchat"],
      origin: "http://example.com",
    });
    assert.equal(
      decoder.decode(bytes),
      "GET /chat HTTP/1.1\r\n" +
        "Host: server.example.com\r\n" +
        "Upgrade: websocket\r\n" +
        "Connection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
        "Sec-WebSocket-Version: 13\r\n" +
        "Sec-WebSocket-Protocol: chat, superchat\r\n" +
        "Origin: http://example.com\r\n" +
        "\r\n",
    );
  });

  test("path, query, ports, extensions and extra headers", () => {
    const head = decoder.decode(buildClientRequest(new URL("wss://example.com:8443?room=1#frag"), {
      key: KEY,
      extensions: "permessage-deflate",
      headers: new Headers({ Authorization: "Bearer t" }),
    }));
    assert.equal(
      head,
      "GET /?room=1 HTTP/1.1\r\n" +
        "Host: example.com:8443\r\n" +
        "Upgrade: websocket\r\n" +
        "Connection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
        "Sec-WebSocket-Version: 13\r\n" +
        "Sec-WebSocket-Extensions: permessage-deflate\r\n" +
        "authorization: Bearer t\r\n" +
        "\r\n",
    );
    // Default ports are left out of Host.
    assert.match(
      decoder.decode(buildClientRequest(new URL("ws://h:80/"), { key: KEY })),
      /\r\nHost: h\r\n/,
    );
    assert.match(
      decoder.decode(buildClientRequest(new URL("wss://h:443/"), { key: KEY })),
      /\r\nHost: h\r\n/,
    );
  });

  test("extra headers may not override handshake headers", () => {
    for (
      const name of [
        "Host",
        "upgrade",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
        "Sec-WebSocket-Accept",
      ]
    ) {
      assert.throws(
        () =>
          buildClientRequest(new URL("ws://h/"), {
            key: KEY,
            headers: new Headers({ [name]: "x" }),
          }),
        TypeError,
        name,
      );
    }
  });
});

describe("client and server handshake, end to end", () => {
  /** Runs the whole exchange over bytes, as the server and client front ends do. */
  async function exchange(
    options: { protocols?: string[]; choose?: string; extensions?: string } = {},
  ) {
    const key = generateKey();
    const requestBytes = buildClientRequest(new URL("ws://localhost:8080/chat?x=1"), {
      key,
      protocols: options.protocols,
      extensions: options.extensions,
    });
    const frames = new Uint8Array([0x81, 0x85, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const serverReader = new HeadReader(8192);
    const wire = new Uint8Array([...requestBytes, ...frames]);
    let got = null;
    for (let i = 0; i < wire.length && got === null; i += 7) {
      got = serverReader.push(wire.subarray(i, i + 7));
    }
    assert.ok(got !== null);
    const upgrade = validateUpgradeRequest(parseRequestHead(got.head), false);
    assert.equal(upgrade.href, "http://localhost:8080/chat?x=1");
    assert.deepEqual(upgrade.protocols, options.protocols ?? []);
    const responseBytes = buildUpgradeResponse(await acceptKey(upgrade.key), {
      protocol: options.choose,
      extensions: options.extensions,
    });
    const clientReader = new HeadReader(8192);
    const result = clientReader.push(responseBytes);
    assert.ok(result !== null);
    assert.equal(result.rest.length, 0);
    return validateServerResponse(parseResponseHead(result.head), {
      key,
      protocols: options.protocols ?? [],
    });
  }

  test("without subprotocols or extensions", async () => {
    assert.deepEqual(await exchange(), { protocol: "", extensions: "" });
  });

  test("with a chosen subprotocol and extensions", async () => {
    assert.deepEqual(
      await exchange({
        protocols: ["chat", "superchat"],
        choose: "superchat",
        extensions: "permessage-deflate",
      }),
      { protocol: "superchat", extensions: "permessage-deflate" },
    );
  });
});

describe("validateServerResponse", () => {
  function response(status: string, fields: Record<string, string | null>) {
    const all: Record<string, string | null> = {
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Accept": ACCEPT,
      ...fields,
    };
    let head = `HTTP/1.1 ${status}\r\n`;
    for (const [name, value] of Object.entries(all)) {
      if (value !== null) head += `${name}: ${value}\r\n`;
    }
    return parseResponseHead(encoder.encode(head + "\r\n"));
  }
  const offer = { key: KEY, protocols: ["chat", "superchat"] };

  test("the §1.3 response is accepted", async () => {
    assert.deepEqual(await validateServerResponse(response("101 Switching Protocols", {}), offer), {
      protocol: "",
      extensions: "",
    });
  });

  test("Upgrade and Connection are case-insensitive; Connection may be a list", async () => {
    const ok = await validateServerResponse(
      response("101 Switching Protocols", {
        Upgrade: "WebSocket",
        Connection: "keep-alive, upgrade",
      }),
      offer,
    );
    assert.equal(ok.protocol, "");
  });

  test("a status other than 101 fails with that status, its text and the start of the body", async () => {
    const body = "Go away: " + "x".repeat(500);
    const err = await assertRejectedAsync(
      validateServerResponse(response("403 Forbidden", { "X-Why": "no" }), { ...offer, body }),
      403,
      /403 Forbidden.*101.*Go away: x+/,
    );
    assert.ok(err.message.length < 400, "the body snippet is bounded");
    assert.ok(!err.message.includes("x".repeat(201)));
    assert.equal(err.headers.get("x-why"), "no");
    await assertRejectedAsync(validateServerResponse(response("200 OK", {}), offer), 200, /200 OK/);
  });

  test("a missing or wrong Upgrade fails", async () => {
    for (const value of [null, "h2c", "websocket2"]) {
      await assertRejectedAsync(
        validateServerResponse(response("101 Switching Protocols", { Upgrade: value }), offer),
        101,
        /Upgrade/,
      );
    }
  });

  test("a missing or wrong Connection fails", async () => {
    for (const value of [null, "keep-alive", "close"]) {
      await assertRejectedAsync(
        validateServerResponse(response("101 Switching Protocols", { Connection: value }), offer),
        101,
        /Connection/,
      );
    }
  });

  test("a missing or wrong Sec-WebSocket-Accept fails", async () => {
    await assertRejectedAsync(
      validateServerResponse(
        response("101 Switching Protocols", { "Sec-WebSocket-Accept": null }),
        offer,
      ),
      101,
      /Sec-WebSocket-Accept/,
    );
    for (
      const value of [
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo",
        "S3PPLMBITXAQ9KYGZZHZRBK+XOO=",
        await acceptKey(KEY + "x"),
      ]
    ) {
      await assertRejectedAsync(
        validateServerResponse(
          response("101 Switching Protocols", { "Sec-WebSocket-Accept": value }),
          offer,
        ),
        101,
        /Sec-WebSocket-Accept/,
      );
    }
  });

  test("a subprotocol the client did not offer fails", async () => {
    for (const value of ["other", "chat, superchat", "Chat"]) {
      await assertRejectedAsync(
        validateServerResponse(
          response("101 Switching Protocols", { "Sec-WebSocket-Protocol": value }),
          offer,
        ),
        101,
        /subprotocol/,
      );
    }
    await assertRejectedAsync(
      validateServerResponse(
        response("101 Switching Protocols", { "Sec-WebSocket-Protocol": "chat" }),
        { key: KEY, protocols: [] },
      ),
      101,
      /subprotocol/,
    );
  });

  test("an offered subprotocol is returned, with the extensions", async () => {
    assert.deepEqual(
      await validateServerResponse(
        response("101 Switching Protocols", {
          "Sec-WebSocket-Protocol": "superchat",
          "Sec-WebSocket-Extensions": "permessage-deflate",
        }),
        offer,
      ),
      { protocol: "superchat", extensions: "permessage-deflate" },
    );
  });
});
