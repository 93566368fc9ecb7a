/**
 * The server's opening handshake as a sans-I/O core (RFC 6455 §4.2): request
 * bytes in, a verdict out, then the response bytes. Every input is also fed
 * split at every byte offset.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  computeAccept,
  type HandshakeVerdict,
  selectSubprotocol,
  ServerHandshake,
  type ServerHandshakeOptions,
} from "../../src/protocol/server_handshake.ts";
import { HandshakeError } from "../../src/protocol/errors.ts";
import { fastAccept } from "../../src/protocol/accept_key.ts";
import { createHash } from "node:crypto";
import fc from "fast-check";
import { concat, splits, utf8 } from "./_helpers.ts";

const decoder = new TextDecoder();

/** The client request of RFC 6455 §1.2. */
const REQUEST = "GET /chat HTTP/1.1\r\n" +
  "Host: server.example.com\r\n" +
  "Upgrade: websocket\r\n" +
  "Connection: Upgrade\r\n" +
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
  "Origin: http://example.com\r\n" +
  "Sec-WebSocket-Protocol: chat, superchat\r\n" +
  "Sec-WebSocket-Version: 13\r\n" +
  "\r\n";

/** The server response of RFC 6455 §1.2 (with the subprotocol it selects). */
const RESPONSE = "HTTP/1.1 101 Switching Protocols\r\n" +
  "Upgrade: websocket\r\n" +
  "Connection: Upgrade\r\n" +
  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" +
  "Sec-WebSocket-Protocol: chat\r\n" +
  "\r\n";

/** Feeds chunks to a fresh core; the verdict must come with the last non-empty one. */
function feed(chunks: Uint8Array[], options: ServerHandshakeOptions = {}) {
  const core = new ServerHandshake(options);
  let verdict: HandshakeVerdict | null = null;
  chunks.forEach((chunk, i) => {
    if (verdict !== null && chunk.length === 0) return;
    assert.equal(verdict, null, `a verdict came before chunk ${i}`);
    verdict = core.receive(chunk);
  });
  assert.ok(verdict !== null, "no verdict once the head was complete");
  return { core, verdict: verdict as HandshakeVerdict };
}

/** Asserts a reject verdict: the status, the response's status line, a body naming the problem. */
function assertReject(verdict: HandshakeVerdict, status: number, names: RegExp): string {
  assert.equal(verdict.kind, "reject", `expected ${status}, got an upgrade`);
  if (verdict.kind !== "reject") throw new Error("unreachable");
  assert.ok(verdict.error instanceof HandshakeError);
  assert.equal(verdict.error.status, status, verdict.error.message);
  const text = decoder.decode(verdict.response);
  assert.match(text, new RegExp(`^HTTP/1\\.1 ${status} [A-Za-z ]+\\r\\n`));
  assert.match(text, /\r\nConnection: close\r\n/);
  assert.match(text.slice(text.indexOf("\r\n\r\n")), names);
  return text;
}

describe("ServerHandshake: a valid request", () => {
  test("RFC 6455 §1.2: the request in, the response out, at every split", () => {
    const frame = new Uint8Array([0x81, 0x85, 1, 2, 3, 4, 0x69, 0x67, 0x6f, 0x68, 0x6e]);
    const input = concat(utf8(REQUEST), frame);
    for (const { name, chunks } of splits(input)) {
      // Feed until the verdict; the bytes after the head come back as `rest`.
      const core = new ServerHandshake();
      let verdict: HandshakeVerdict | null = null;
      let fed = 0;
      for (const chunk of chunks) {
        if (verdict !== null) break;
        verdict = core.receive(chunk);
        fed += chunk.length;
      }
      assert.ok(verdict?.kind === "upgrade", name);
      const { request } = verdict;
      assert.deepEqual(request.protocols, ["chat", "superchat"], name);
      assert.equal(request.href, "http://server.example.com/chat", name);
      assert.equal(request.origin, "http://example.com", name);
      assert.equal(request.headText, REQUEST, name);
      const rest = concat(request.rest, input.subarray(fed));
      assert.deepEqual(Array.from(rest), Array.from(frame), name);
      const accepted = core.accept({ protocol: "chat" });
      assert.equal(decoder.decode(accepted.response), RESPONSE, name);
      assert.equal(accepted.protocol, "chat");
      assert.equal(accepted.extensions, "");
      assert.equal(accepted.deflate, null);
    }
  });

  test("secure: the request URL gets https:", () => {
    const { verdict } = feed([utf8(REQUEST)], { secure: true });
    assert.ok(verdict.kind === "upgrade");
    assert.equal(verdict.request.href, "https://server.example.com/chat");
  });

  test("accept() adds the application's headers, and no protocol when none is chosen", () => {
    const { core } = feed([utf8(REQUEST)]);
    const accepted = core.accept({ headers: new Headers({ "Set-Cookie": "a=b" }) });
    const text = decoder.decode(accepted.response);
    assert.match(text, /\r\nset-cookie: a=b\r\n\r\n$/);
    assert.doesNotMatch(text, /Sec-WebSocket-Protocol/i);
    assert.equal(accepted.protocol, "");
  });

  test("computeAccept: the RFC's example (§1.3)", () => {
    assert.equal(computeAccept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert.equal(fastAccept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  });

  test("computeAccept: equal to node:crypto's SHA-1 for any key (fast-check)", () => {
    const reference = (key: string) =>
      createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
    // Every valid key (base64 of 16 bytes), and any 24 ASCII characters.
    const validKey = fc.uint8Array({ minLength: 16, maxLength: 16 })
      .map((bytes) => btoa(String.fromCharCode(...bytes)));
    const ascii24 = fc.string({
      unit: fc.integer({ min: 0, max: 0x7f }).map(String.fromCharCode),
      minLength: 24,
      maxLength: 24,
    });
    fc.assert(
      fc.property(fc.oneof(validKey, ascii24), (key) => {
        assert.equal(fastAccept(key), reference(key));
        assert.equal(computeAccept(key), reference(key));
      }),
      { numRuns: 2000 },
    );
    // Anything else is left to node:crypto, with the same answer.
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (key) => {
        const fast = fastAccept(key);
        const ascii = [...key].every((c) => c.charCodeAt(0) <= 0x7f);
        if (key.length !== 24 || !ascii) assert.equal(fast, null);
        else assert.equal(fast, reference(key));
        assert.equal(computeAccept(key), reference(key));
      }),
      { numRuns: 2000 },
    );
  });
});

describe("ServerHandshake: rejected requests", () => {
  test("an HTTP major version other than 1 gets 505, at every split", () => {
    for (const version of ["2.0", "9.9", "0.9"]) {
      const input = utf8(REQUEST.replace("HTTP/1.1", `HTTP/${version}`));
      for (const { name, chunks } of splits(input)) {
        const { verdict } = feed(chunks);
        assertReject(verdict, 505, /HTTP\/1\.1/);
        assert.ok(name);
      }
      const text = assertReject(feed([input]).verdict, 505, /not supported/);
      assert.match(text, /^HTTP\/1\.1 505 HTTP Version Not Supported\r\n/);
    }
  });

  test("HTTP/1.0 gets 400, another method 405, another version 426", () => {
    assertReject(feed([utf8(REQUEST.replace("HTTP/1.1", "HTTP/1.0"))]).verdict, 400, /HTTP/);
    const post = assertReject(feed([utf8(REQUEST.replace("GET", "POST"))]).verdict, 405, /GET/);
    assert.match(post, /\r\nallow: GET\r\n/i);
    const v8 = REQUEST.replace("Version: 13", "Version: 8");
    const text = assertReject(feed([utf8(v8)]).verdict, 426, /13/);
    assert.match(text, /\r\nsec-websocket-version: 13\r\n/i);
  });

  test("a malformed head gets 400", () => {
    for (
      const head of ["GET /chat\r\n\r\n", "GET /chat HTTP/1.1\r\nno colon\r\n\r\n", "\r\n\r\n"]
    ) {
      assertReject(feed([utf8(head)]).verdict, 400, /./);
    }
  });

  test("a head of maxHandshakeSize bytes is read, one byte more gets 431 at once", () => {
    const size = REQUEST.length;
    assert.equal(feed([utf8(REQUEST)], { maxHandshakeSize: size }).verdict.kind, "upgrade");
    const core = new ServerHandshake({ maxHandshakeSize: size - 1 });
    // The verdict comes as the limit is passed, not after the whole head.
    const verdict = core.receive(utf8(REQUEST.slice(0, size - 1) + "x"));
    assert.ok(verdict !== null);
    assertReject(verdict, 431, /limit/);
  });

  test("an Origin outside allowedOrigins gets 403; a listed or absent one is accepted", () => {
    const allowedOrigins = ["https://app.example"];
    assertReject(feed([utf8(REQUEST)], { allowedOrigins }).verdict, 403, /example\.com/);
    const listed = utf8(REQUEST.replace("http://example.com", "https://app.example"));
    assert.equal(feed([listed], { allowedOrigins }).verdict.kind, "upgrade");
    const none = utf8(REQUEST.replace("Origin: http://example.com\r\n", ""));
    assert.equal(feed([none], { allowedOrigins }).verdict.kind, "upgrade");
  });

  test("reject() builds the application's answer (e.g. 401) with its headers", () => {
    const { core } = feed([utf8(REQUEST)]);
    const text = decoder.decode(
      core.reject(401, "Invalid token", new Headers({ "WWW-Authenticate": "Bearer" })),
    );
    assert.match(text, /^HTTP\/1\.1 401 Unauthorized\r\n/);
    assert.match(text, /\r\nwww-authenticate: Bearer\r\n/);
    assert.match(text, /\r\n\r\nInvalid token\n$/);
    assert.throws(() => core.accept(), TypeError, "no accept after a rejection");
  });

  test("random heads get a verdict or wait for more, never another exception", () => {
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    const alphabet = "GET /HTP1.\r\n:abc \t\x00\xff,;=";
    for (let i = 0; i < 2000; i++) {
      let text = "";
      const length = Math.floor(random() * 80);
      for (let j = 0; j < length; j++) text += alphabet[Math.floor(random() * alphabet.length)];
      const core = new ServerHandshake({ maxHandshakeSize: 64 });
      const input = Uint8Array.from(text + "\r\n\r\n", (c) => c.charCodeAt(0));
      const verdict = core.receive(input);
      assert.ok(verdict !== null, JSON.stringify(text));
      if (verdict.kind === "reject") assert.ok(verdict.error.status >= 400);
    }
  });
});

describe("ServerHandshake: subprotocols", () => {
  test("selectSubprotocol: the first in the client's order that the server supports", () => {
    assert.equal(selectSubprotocol(["chat", "superchat"], ["superchat", "chat"]), "chat");
    assert.equal(selectSubprotocol(["other", "chat.v2"], ["chat.v2", "chat.v1"]), "chat.v2");
    assert.equal(selectSubprotocol(["chat.v3"], ["chat.v2"]), "");
    assert.equal(selectSubprotocol([], ["chat"]), "");
  });

  test("accepting a subprotocol the client did not offer throws TypeError naming both", () => {
    const { core } = feed([utf8(REQUEST)]);
    assert.throws(
      () => core.accept({ protocol: "never-offered" }),
      (error: unknown) =>
        error instanceof TypeError && /never-offered/.test(error.message) &&
        /"chat", "superchat"/.test(error.message),
    );
    // The handshake can still be accepted properly (or rejected) afterwards.
    assert.equal(decoder.decode(core.accept({ protocol: "chat" }).response), RESPONSE);
  });
});

describe("ServerHandshake: permessage-deflate", () => {
  const offer = (value: string) =>
    utf8(REQUEST.replace("\r\n\r\n", `\r\nSec-WebSocket-Extensions: ${value}\r\n\r\n`));

  test("with compression on, the first acceptable offer is selected and answered", () => {
    const input = offer("permessage-deflate; client_max_window_bits");
    const { core } = feed([input], { compression: { serverNoContextTakeover: true } });
    const accepted = core.accept();
    assert.equal(accepted.extensions, "permessage-deflate; server_no_context_takeover");
    assert.match(
      decoder.decode(accepted.response),
      /\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n/,
    );
    assert.equal(accepted.deflate?.serverNoContextTakeover, true);
  });

  test("with compression off, or a malformed offer, no extension is agreed", () => {
    const good = offer("permessage-deflate");
    assert.equal(feed([good]).core.accept().extensions, "");
    const bad = offer("permessage-deflate; server_max_window_bits=99");
    const accepted = feed([bad], { compression: {} }).core.accept();
    assert.equal(accepted.extensions, "");
    assert.equal(accepted.deflate, null);
    assert.doesNotMatch(decoder.decode(accepted.response), /Extensions/);
  });
});

describe("ServerHandshake: misuse", () => {
  test("receive() after the verdict and accept() before it throw TypeError", () => {
    const core = new ServerHandshake();
    assert.throws(() => core.accept(), TypeError);
    assert.ok(core.receive(utf8(REQUEST)) !== null);
    assert.throws(() => core.receive(utf8("more")), TypeError);
  });
});
