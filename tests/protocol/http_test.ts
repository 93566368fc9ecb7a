import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  findHeadEnd,
  hasToken,
  HeadReader,
  type HeadResult,
  isToken,
  parseRequestHead,
  parseResponseHead,
  splitList,
} from "../../src/protocol/http.ts";
import { HandshakeError } from "../../src/protocol/errors.ts";
import fc from "fast-check";
import { bytes, concat, pattern, splits, utf8 } from "./_helpers.ts";

/** A head given as a string of byte values (every char below U+0100). */
function raw(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => {
    const code = c.charCodeAt(0);
    if (code > 0xff) throw new Error("raw() takes byte values only");
    return code;
  });
}

const REQUEST = "GET /chat HTTP/1.1\r\n" +
  "Host: server.example.com\r\n" +
  "Upgrade: websocket\r\n" +
  "Connection: Upgrade\r\n" +
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
  "Origin: http://example.com\r\n" +
  "Sec-WebSocket-Protocol: chat, superchat\r\n" +
  "Sec-WebSocket-Version: 13\r\n" +
  "\r\n";

function assertHandshakeError(fn: () => unknown, status: number, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof HandshakeError, `not a HandshakeError: ${err}`);
    assert.equal(err.status, status);
    assert.equal(err.code, "HANDSHAKE_ERROR");
    if (message) assert.match(err.message, message);
    return true;
  });
}

describe("findHeadEnd", () => {
  test("returns the index just past the first CRLF CRLF, or -1", () => {
    assert.equal(findHeadEnd(raw("a\r\n\r\nb")), 5);
    assert.equal(findHeadEnd(raw("\r\n\r\n")), 4);
    assert.equal(findHeadEnd(raw("a\r\n\r")), -1);
    assert.equal(findHeadEnd(raw("a\n\n\r\r\n\n")), -1);
    assert.equal(findHeadEnd(raw("\r\r\n\r\n")), 5);
    assert.equal(findHeadEnd(raw("a\r\nb\r\n\r\nc\r\n\r\n")), 8);
    assert.equal(findHeadEnd(bytes()), -1);
  });

  test("starts the search at `from`", () => {
    assert.equal(findHeadEnd(raw("\r\n\r\nx\r\n\r\n"), 1), 9);
  });
});

describe("HeadReader", () => {
  const head = raw(REQUEST);
  const frames = bytes(0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58);
  const input = concat(head, frames);

  /** Feeds chunks until the head is complete; chunks after it are appended to `rest`. */
  function read(chunks: Uint8Array[], maxSize = 8192): HeadResult | null {
    const reader = new HeadReader(maxSize);
    for (let i = 0; i < chunks.length; i++) {
      const result = reader.push(chunks[i]);
      if (result !== null) {
        return { head: result.head, rest: concat(result.rest, ...chunks.slice(i + 1)) };
      }
    }
    return null;
  }

  test("a head split at every offset, and byte by byte, gives the same head and rest", () => {
    for (const { name, chunks } of splits(input)) {
      const reader = new HeadReader(8192);
      let result: HeadResult | null = null;
      let pushed = 0;
      let index = 0;
      for (; index < chunks.length; index++) {
        result = reader.push(chunks[index]);
        pushed += chunks[index].length;
        if (result !== null) break;
      }
      assert.ok(result !== null, `${name}: no head`);
      // The head completes with the chunk holding its last byte, not later.
      assert.ok(pushed >= head.length && pushed - chunks[index].length < head.length, name);
      const after = concat(...chunks.slice(index + 1));
      assert.deepEqual(result.head, head, name);
      assert.deepEqual(concat(result.rest, after), frames, name);
    }
  });

  test("the terminator split across three chunks", () => {
    const at = head.length - 4;
    for (let a = at; a <= head.length; a++) {
      for (let b = a; b <= head.length; b++) {
        const result = read([input.subarray(0, a), input.subarray(a, b), input.subarray(b)]);
        assert.ok(result !== null, `cuts ${a}, ${b}`);
        assert.deepEqual(result.head, head);
        assert.deepEqual(result.rest, frames);
      }
    }
  });

  test("a head and its rest in one chunk; the rest may be longer than maxSize", () => {
    const rest = pattern(100_000);
    const result = read([concat(head, rest)], head.length);
    assert.ok(result !== null);
    assert.deepEqual(result.head, head);
    assert.deepEqual(result.rest, rest);
  });

  test("head and rest are copies: changing the chunks later changes neither", () => {
    const chunk = input.slice();
    const result = read([chunk.subarray(0, 10), chunk.subarray(10)]);
    chunk.fill(0);
    assert.deepEqual(result!.head, head);
    assert.deepEqual(result!.rest, frames);
  });

  test("no rest when the head ends the input", () => {
    const result = read([head]);
    assert.deepEqual(result!.rest, bytes());
  });

  test("returns null until the head is complete", () => {
    const reader = new HeadReader(8192);
    assert.equal(reader.push(head.subarray(0, head.length - 1)), null);
    assert.equal(reader.push(bytes()), null);
    assert.notEqual(reader.push(head.subarray(head.length - 1)), null);
  });

  test("a head of exactly maxSize bytes is accepted", () => {
    for (const { name, chunks } of splits(head)) {
      const result = read(chunks, head.length);
      assert.ok(result !== null, name);
      assert.deepEqual(result.head, head);
    }
  });

  test("a head over maxSize is refused with 431", () => {
    const max = head.length - 1;
    for (const { name, chunks } of [{ name: "whole", chunks: [input] }, ...splits(head)]) {
      assertHandshakeError(() => {
        const reader = new HeadReader(max);
        for (const chunk of chunks) reader.push(chunk);
      }, 431);
      void name;
    }
  });

  test("endless header lines are refused with 431 once maxSize bytes are held", () => {
    const reader = new HeadReader(1000);
    const line = raw("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    assert.equal(reader.push(raw("GET / HTTP/1.1\r\n")), null);
    let pushed = 16;
    assertHandshakeError(() => {
      for (;;) {
        reader.push(line);
        pushed += line.length;
        if (pushed > 100_000) assert.fail("never refused");
      }
    }, 431);
    // Refused by the push that crossed the limit, not later.
    assert.ok(pushed < 1000 && pushed + line.length >= 1000, `refused after ${pushed} bytes`);
  });

  test("a single chunk with no terminator beyond maxSize is refused at once", () => {
    assertHandshakeError(() => new HeadReader(64).push(raw("G".repeat(65))), 431);
    // Exactly maxSize bytes with no terminator can never become a head.
    assertHandshakeError(() => new HeadReader(64).push(raw("G".repeat(64))), 431);
    assert.equal(new HeadReader(64).push(raw("G".repeat(63))), null);
  });
});

describe("parseRequestHead", () => {
  test("the RFC 6455 §1.2 request", () => {
    const request = parseRequestHead(raw(REQUEST));
    assert.equal(request.method, "GET");
    assert.equal(request.target, "/chat");
    assert.deepEqual(request.version, [1, 1]);
    assert.equal(request.headers.get("host"), "server.example.com");
    assert.equal(request.headers.get("Sec-WebSocket-Key"), "dGhlIHNhbXBsZSBub25jZQ==");
    assert.equal(request.headers.get("sec-websocket-protocol"), "chat, superchat");
    assert.equal([...request.headers.keys()].length, 7);
  });

  test("values are trimmed; repeated fields joined with ', '; empty values kept", () => {
    const request = parseRequestHead(raw(
      "GET /a?b=c HTTP/1.0\r\nX-A:  one \t\r\nx-a:two\r\nX-Empty:\r\nX-Spaces: a  b\r\n\r\n",
    ));
    assert.equal(request.target, "/a?b=c");
    assert.deepEqual(request.version, [1, 0]);
    assert.equal(request.headers.get("x-a"), "one, two");
    assert.equal(request.headers.get("x-empty"), "");
    assert.equal(request.headers.get("x-spaces"), "a  b");
  });

  test("a value may hold obs-text: UTF-8 bytes come through one character per byte", () => {
    // "€" is E2 82 AC in UTF-8: 0x82 is in the 0x80-0x9F range windows-1252 remaps.
    const value = concat(
      utf8("caf"),
      bytes(0xc3, 0xa9),
      utf8(" "),
      bytes(0xe2, 0x82, 0xac, 0x80, 0x9f),
    );
    const head = concat(raw("GET / HTTP/1.1\r\nX-Name: "), value, raw("\r\n\r\n"));
    const request = parseRequestHead(head);
    assert.equal(request.headers.get("x-name"), String.fromCharCode(...value));
  });

  test("any token is a method; the target is taken as sent", () => {
    const request = parseRequestHead(raw("M-SEARCH * HTTP/1.1\r\n\r\n"));
    assert.equal(request.method, "M-SEARCH");
    assert.equal(request.target, "*");
    assert.equal([...request.headers.keys()].length, 0);
  });

  test("malformed request lines are a 400", () => {
    const lines = [
      "",
      "GET",
      "GET /",
      "GET / HTTP/1.1 extra",
      "GET  / HTTP/1.1",
      "GET / HTTP/1.1 ",
      " GET / HTTP/1.1",
      "GET / HTTQ/1.1",
      "GET / http/1.1",
      "GET / HTTP/11",
      "GET / HTTP/1.12",
      "GET / HTTP/a.b",
      "G(T / HTTP/1.1",
      "GET\t/ HTTP/1.1",
      "GET / HTTP/1.1\n",
    ];
    for (const line of lines) {
      assertHandshakeError(() => parseRequestHead(raw(`${line}\r\nHost: x\r\n\r\n`)), 400);
    }
  });

  test("request lines: read as the grammar's regular expression reads them (fast-check)", () => {
    // The parser reads the line by index; this is the rule it implements.
    const LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP\/(\d)\.(\d)$/;
    const pieces = fc.constantFrom(
      "GET",
      "get",
      "M-SEARCH",
      "G(T",
      " ",
      "  ",
      "\t",
      "\v",
      "\f",
      "\xa0",
      "\x85",
      "/",
      "/a?b=c",
      "*",
      "HTTP/",
      "HTTP/1.1",
      " HTTP/1.1",
      " HTTP/1.0",
      " HTTP/2.0",
      " HTTP/1.",
      "1",
      ".",
      "x",
      "\xff",
      "é",
      "\u0100",
    );
    const some = (...options: string[]) => fc.constantFrom(...options);
    const line = fc.oneof(
      fc.array(pieces, { maxLength: 8 }).map((parts) => parts.join("")),
      // Near-valid lines: one piece at a time off.
      fc.tuple(
        some("GET", "POST", "M-SEARCH", "G(T", "", "GET\xa0"),
        some(" ", "  ", "\t", ""),
        fc.array(some("/", "a", "?", "*", "\xa0", "\t", "\v", "\f", "\x85", "\xff", " "), {
          maxLength: 4,
        }).map((parts) => parts.join("")),
        some(
          " HTTP/1.1",
          " HTTP/1.0",
          " HTTP/9.9",
          " HTTP/1.",
          " HTTP/11",
          " http/1.1",
          "\tHTTP/1.1",
          " HTTP/1.1 ",
        ),
      ).map((parts) => parts.join("")),
      fc.tuple(
        fc.string({ maxLength: 6 }),
        fc.string({ maxLength: 12 }),
        fc.string({ maxLength: 10 }),
      )
        .map(([m, t, v]) => `${m} ${t} ${v}`),
    ).filter((text) =>
      !text.includes("\r") && !text.includes("\n") && !/[\u0100-\uffff]/.test(text)
    );
    fc.assert(
      fc.property(line, (text) => {
        const expected = LINE.exec(text);
        let head;
        try {
          head = parseRequestHead(`${text}\r\nHost: x\r\n\r\n`);
        } catch (error) {
          assert.equal(expected, null, `refused ${JSON.stringify(text)}: ${error}`);
          assert.equal((error as HandshakeError).status, 400);
          return;
        }
        assert.notEqual(expected, null, `accepted ${JSON.stringify(text)}`);
        assert.equal(head.method, expected![1]);
        assert.equal(head.target, expected![2]);
        assert.deepEqual(head.version, [Number(expected![3]), Number(expected![4])]);
      }),
      { numRuns: 3000 },
    );
  });

  test("a header line without a colon, or with an empty name, is a 400", () => {
    for (const line of ["Host", "Host example.com", ": value", " Host: x", "\tHost: x"]) {
      assertHandshakeError(
        () => parseRequestHead(raw(`GET / HTTP/1.1\r\n${line}\r\n\r\n`)),
        400,
      );
    }
  });

  test("header names that are not tokens are a 400", () => {
    for (const name of ["Ho st", "Host ", "Hö", "X(y)", "X/y", "X@y", "X\x00", "X\x7f", '"X"']) {
      assertHandshakeError(
        () => parseRequestHead(raw(`GET / HTTP/1.1\r\n${name}: x\r\n\r\n`)),
        400,
        /header/i,
      );
    }
  });

  test("control characters in a value are a 400", () => {
    for (const value of ["a\x00b", "a\x01", "\x1fb", "a\x7fb", "a\rb", "a\nb", "a\x0bb"]) {
      assertHandshakeError(
        () => parseRequestHead(raw(`GET / HTTP/1.1\r\nX-V: ${value}\r\n\r\n`)),
        400,
        /X-V/,
      );
    }
  });
});

describe("parseResponseHead", () => {
  test("status, reason phrase and headers", () => {
    const response = parseResponseHead(raw(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    ));
    assert.equal(response.status, 101);
    assert.equal(response.statusText, "Switching Protocols");
    assert.equal(response.headers.get("sec-websocket-accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  });

  test("the reason phrase may be empty or missing", () => {
    assert.equal(parseResponseHead(raw("HTTP/1.1 404\r\n\r\n")).statusText, "");
    assert.equal(parseResponseHead(raw("HTTP/1.1 404 \r\n\r\n")).statusText, "");
    assert.equal(
      parseResponseHead(raw("HTTP/1.0 200 Fine thanks\r\n\r\n")).statusText,
      "Fine thanks",
    );
  });

  test("anything but an HTTP status line is an error with status 0", () => {
    for (
      const line of [
        "",
        "HTTP/1.1",
        "HTTP/1.1 1011 x",
        "HTTP/1.1 10 x",
        "HTTP/1.1 abc",
        "ICY 200 OK",
        "SSH-2.0-OpenSSH",
      ]
    ) {
      assertHandshakeError(() => parseResponseHead(raw(`${line}\r\n\r\n`)), 0);
    }
  });

  test("a malformed header is an error with status 0", () => {
    assertHandshakeError(() => parseResponseHead(raw("HTTP/1.1 101 OK\r\nno colon\r\n\r\n")), 0);
    assertHandshakeError(() => parseResponseHead(raw("HTTP/1.1 101 OK\r\nX: a\x00\r\n\r\n")), 0);
  });
});

describe("splitList and isToken", () => {
  test("splitList trims items and drops empty ones", () => {
    assert.deepEqual(splitList(null), []);
    assert.deepEqual(splitList(""), []);
    assert.deepEqual(splitList(" a ,b,, ,\tc "), ["a", "b", "c"]);
    assert.deepEqual(splitList("keep-alive, Upgrade"), ["keep-alive", "Upgrade"]);
  });

  test("hasToken says what splitList with a case-insensitive compare says (fast-check)", () => {
    assert.ok(hasToken("keep-alive, Upgrade", "upgrade"));
    assert.ok(hasToken(" WebSocket\t", "websocket"));
    assert.ok(!hasToken("websockets, web socket", "websocket"));
    assert.ok(!hasToken(null, "upgrade"));
    // Values from the characters a header value may hold, weighted towards the
    // separators, spaces and letters of the tokens looked for.
    const char = fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom(..."upgradeUPGRADEwebsocketWEBSOCKET") },
      { weight: 3, arbitrary: fc.constantFrom(",", " ", "\t", "\u00a0") },
      {
        weight: 1,
        arbitrary: fc.integer({ min: 0x20, max: 0xff }).map((c) =>
          String.fromCharCode(c === 0x7f ? 0x20 : c)
        ),
      },
    );
    fc.assert(
      fc.property(
        fc.string({ unit: char, maxLength: 40 }),
        fc.constantFrom("upgrade", "websocket"),
        (value, token) => {
          const expected = splitList(value).some((item) => item.toLowerCase() === token);
          assert.equal(hasToken(value, token), expected, JSON.stringify(value));
        },
      ),
      { numRuns: 5000 },
    );
  });

  test("isToken accepts tchar only", () => {
    for (const ok of ["chat", "v2.bookings.example.net", "a!#$%&'*+-.^_`|~9"]) {
      assert.ok(isToken(ok), ok);
    }
    for (const bad of ["", "a b", "a,b", "a/b", "a;b", "a=b", '"a"', "é", "a\tb", "{a}"]) {
      assert.ok(!isToken(bad), bad);
    }
  });
});
