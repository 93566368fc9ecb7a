/**
 * Plain HTTP/1.1 requests as a sans-I/O core (RFC 9112): bytes in, request
 * heads and body bytes out, every ambiguous framing refused with its status,
 * and the bytes of response heads. Inputs are also fed split at every byte
 * offset and byte by byte.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import fc from "fast-check";
import {
  ChunkedDecoder,
  encodeChunk,
  encodeResponseHead,
  type Http1Event,
  type Http1Options,
  Http1Reader,
  interpretRequest,
  planResponse,
} from "../../src/protocol/http1.ts";
import { parseRequestHead } from "../../src/protocol/http.ts";
import { HandshakeError } from "../../src/protocol/errors.ts";
import { concat, splits, utf8 } from "./_helpers.ts";

const decoder = new TextDecoder();

/** What a reader made of some bytes: events with body bytes joined per request. */
interface Outcome {
  requests: { method: string; url: string; body: string; keepAlive: boolean }[];
  error: HandshakeError | null;
}

function read(chunks: Uint8Array[], options: Http1Options = {}): Outcome {
  const reader = new Http1Reader(options);
  const requests: Outcome["requests"] = [];
  let current: Outcome["requests"][number] | null = null;
  let error: HandshakeError | null = null;
  try {
    for (const chunk of chunks) {
      reader.receive(chunk);
      for (let event: Http1Event | null; (event = reader.next()) !== null;) {
        if (event.kind === "request") {
          current = {
            method: event.request.method,
            url: event.request.url.href,
            body: "",
            keepAlive: event.request.keepAlive,
          };
        } else if (event.kind === "data") {
          current!.body += decoder.decode(event.data);
        } else {
          requests.push(current!);
          current = null;
        }
      }
    }
  } catch (thrown) {
    if (!(thrown instanceof HandshakeError)) throw thrown;
    error = thrown;
  }
  return { requests, error };
}

/** Reads `text` whole, split at every offset and byte by byte; all must agree. */
function readEverySplit(text: string, options: Http1Options = {}): Outcome {
  const data = utf8(text);
  const whole = read([data], options);
  for (const { name, chunks } of splits(data)) {
    const outcome = read(chunks, options);
    assert.deepEqual(outcome.requests, whole.requests, name);
    assert.equal(outcome.error?.status, whole.error?.status, name);
  }
  return whole;
}

/** The status a request is refused with (it must be refused). */
function refusal(text: string, options: Http1Options = {}): number {
  const outcome = readEverySplit(text, options);
  assert.ok(outcome.error !== null, `expected a refusal for ${JSON.stringify(text)}`);
  return outcome.error.status;
}

const GET = "GET /a?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n";

describe("Http1Reader: requests", () => {
  test("a GET without a body: request, then end", () => {
    const { requests, error } = readEverySplit(GET);
    assert.equal(error, null);
    assert.deepEqual(requests, [
      { method: "GET", url: "http://example.com/a?x=1", body: "", keepAlive: true },
    ]);
  });

  test("a Content-Length body is delivered exactly, the next request after it", () => {
    const text = "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world" + GET;
    const { requests, error } = readEverySplit(text);
    assert.equal(error, null);
    assert.equal(requests.length, 2);
    assert.equal(requests[0].body, "hello world");
    assert.equal(requests[1].url, "http://example.com/a?x=1");
  });

  test("a chunked body with extensions and trailers is decoded; the next request follows", () => {
    const text = "PUT /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "5\r\nhello\r\n" +
      '1;name=value;quoted="a \\"b\\"" ; flag\r\n \r\n' +
      "A\r\n0123456789\r\n" +
      "0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n" +
      GET;
    const { requests, error } = readEverySplit(text);
    assert.equal(error, null);
    assert.deepEqual(requests.map((r) => r.body), ["hello 0123456789", ""]);
  });

  test("pipelined requests come out one after another, in order", () => {
    const text = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n" +
      "POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" +
      "GET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    const { requests, error } = readEverySplit(text);
    assert.equal(error, null);
    assert.deepEqual(requests.map((r) => [r.url, r.body, r.keepAlive]), [
      ["http://h/1", "", true],
      ["http://h/2", "abc", true],
      ["http://h/3", "", false],
    ]);
  });

  test("empty lines before a request line are skipped (RFC 9112 §2.2)", () => {
    const text = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx\r\n" + GET;
    const { requests, error } = readEverySplit(text);
    assert.equal(error, null);
    assert.equal(requests.length, 2);
  });

  test("HTTP/1.0: keep-alive only when asked, a missing Host is the default one", () => {
    const { requests } = readEverySplit(
      "GET /x HTTP/1.0\r\n\r\nGET /y HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      { defaultHost: "127.0.0.1:8080" },
    );
    assert.deepEqual(requests.map((r) => [r.url, r.keepAlive]), [
      ["http://127.0.0.1:8080/x", false],
      ["http://127.0.0.1:8080/y", true],
    ]);
  });

  test("absolute-form targets take their authority; TLS gives https URLs", () => {
    const absolute = readEverySplit("GET http://other.example/z HTTP/1.1\r\nHost: h\r\n\r\n");
    assert.equal(absolute.requests[0].url, "http://other.example/z");
    const secure = read([utf8(GET)], { secure: true });
    assert.equal(secure.requests[0].url, "https://example.com/a?x=1");
    // Origin-form is never resolved as a network-path reference.
    const tricky = read([utf8("GET //evil.example/x HTTP/1.1\r\nHost: h\r\n\r\n")]);
    assert.equal(new URL(tricky.requests[0].url).host, "h");
  });

  test("body bytes handed out are not changed by later input", () => {
    const reader = new Http1Reader();
    reader.receive(utf8("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab"));
    assert.equal(reader.next()?.kind, "request");
    const first = reader.next();
    assert.ok(first?.kind === "data");
    assert.equal(reader.next(), null);
    reader.receive(utf8("cd"));
    reader.receive(utf8("GET /next HTTP/1.1\r\nHost: h\r\n\r\n"));
    assert.equal(decoder.decode(first.data), "ab");
    const second = reader.next();
    assert.ok(second?.kind === "data");
    assert.equal(decoder.decode(second.data), "cd");
    assert.equal(decoder.decode(first.data), "ab");
  });
});

describe("Http1Reader: framing that could be read two ways is refused (RFC 9112 §6.3, §11.2)", () => {
  const head = (lines: string) => `POST / HTTP/1.1\r\nHost: h\r\n${lines}\r\n`;
  const cases: [string, string, number][] = [
    [
      "Content-Length and Transfer-Encoding",
      head("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n") + "abc",
      400,
    ],
    [
      "Transfer-Encoding and Content-Length",
      head("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n") + "abc",
      400,
    ],
    [
      "two equal Content-Length fields",
      head("Content-Length: 1\r\nContent-Length: 1\r\n") + "a",
      400,
    ],
    [
      "two different Content-Length fields",
      head("Content-Length: 1\r\nContent-Length: 2\r\n") + "ab",
      400,
    ],
    ["a Content-Length list", head("Content-Length: 1, 1\r\n") + "a", 400],
    ["a signed Content-Length", head("Content-Length: +1\r\n") + "a", 400],
    ["a negative Content-Length", head("Content-Length: -1\r\n"), 400],
    ["a hex Content-Length", head("Content-Length: 0x1\r\n") + "a", 400],
    ["a space inside Content-Length", head("Content-Length: 1 2\r\n"), 400],
    ["an empty Content-Length", head("Content-Length: \r\n"), 400],
    ["a fractional Content-Length", head("Content-Length: 1.0\r\n") + "a", 400],
    ["Transfer-Encoding: gzip", head("Transfer-Encoding: gzip\r\n"), 400],
    ["Transfer-Encoding: chunked, gzip", head("Transfer-Encoding: chunked, gzip\r\n"), 400],
    [
      "Transfer-Encoding: gzip, chunked",
      head("Transfer-Encoding: gzip, chunked\r\n") + "0\r\n\r\n",
      400,
    ],
    [
      "Transfer-Encoding: chunked, chunked",
      head("Transfer-Encoding: chunked, chunked\r\n") + "0\r\n\r\n",
      400,
    ],
    [
      "two Transfer-Encoding fields",
      head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n") + "0\r\n\r\n",
      400,
    ],
    ["Transfer-Encoding: xchunked", head("Transfer-Encoding: xchunked\r\n"), 400],
    ["an empty Transfer-Encoding", head("Transfer-Encoding: \r\n"), 400],
    [
      "Transfer-Encoding in HTTP/1.0",
      "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      400,
    ],
    ["an obs-folded header line", head("X-A: 1\r\n  continued\r\n"), 400],
    ["an obs-folded Transfer-Encoding", head("Transfer-Encoding:\r\n chunked\r\n"), 400],
    ["a tab-folded header line", head("X-A: 1\r\n\tcontinued\r\n"), 400],
    ["whitespace before the colon", head("Content-Length : 1\r\n") + "a", 400],
    ["a tab before the colon", head("Transfer-Encoding\t: chunked\r\n"), 400],
    ["a space in a header name", head("Content Length: 1\r\n"), 400],
    ["a header name with a slash", head("X/Y: 1\r\n"), 400],
    ["a header line without a colon", head("NoColon\r\n"), 400],
    ["a NUL in a header value", head("X-A: a\u0000b\r\n"), 400],
    ["a bare CR in a header value", head("X-A: a\rb\r\n"), 400],
    [
      "a bare LF ending a header line",
      "POST / HTTP/1.1\r\nHost: h\nContent-Length: 1\r\n\r\na",
      400,
    ],
    ["bare LFs only", "GET / HTTP/1.1\nHost: h\n\n", 400],
    ["a bare LF ending the head", "GET / HTTP/1.1\r\nHost: h\r\n\n", 400],
    ["a bare LF before the request line", "\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["two spaces in the request line", "GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["a control character in the target", "GET /a\u0001b HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["no Host in HTTP/1.1", "GET / HTTP/1.1\r\n\r\n", 400],
    ["two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400],
    ["an invalid Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400],
    ["an asterisk target", "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["a non-http absolute target", "GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["userinfo in the target", "GET http://u:p@h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400],
    ["HTTP/0.9", "GET /\r\n\r\n", 400],
    ["HTTP/2.0", "GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505],
    ["HTTP/3.0", "GET / HTTP/3.0\r\nHost: h\r\n\r\n", 505],
    ["CONNECT", "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501],
    ["TRACE", "TRACE / HTTP/1.1\r\nHost: h\r\n\r\n", 501],
    [
      "an expectation other than 100-continue",
      head("Expect: 200-ok\r\nContent-Length: 1\r\n"),
      417,
    ],
  ];
  for (const [name, text, status] of cases) {
    test(`${name}: ${status}`, () => {
      assert.equal(refusal(text), status);
    });
  }

  test("a refusal sticks: the reader never resynchronises on later bytes", () => {
    const reader = new Http1Reader();
    reader.receive(utf8(head("Content-Length: 1, 1\r\n") + "a" + GET));
    assert.throws(() => reader.next(), HandshakeError);
    assert.throws(() => reader.next(), HandshakeError);
  });

  test("a smuggled second request is never seen (CL.TE)", () => {
    // A front end that used Content-Length would forward "0\r\n\r\nGET /admin..." as body.
    const text = head("Content-Length: 35\r\nTransfer-Encoding: chunked\r\n") +
      "0\r\n\r\nGET /admin HTTP/1.1\r\nHost: h\r\n\r\n";
    const { requests, error } = readEverySplit(text);
    assert.equal(error?.status, 400);
    assert.deepEqual(requests, []);
  });
});

describe("Http1Reader: bad chunked framing is refused", () => {
  const chunked = (body: string) =>
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + body;
  const cases: [string, string, number][] = [
    ["a non-hex size", "g\r\nx\r\n0\r\n\r\n", 400],
    ["a 0x prefix", "0x1\r\nx\r\n0\r\n\r\n", 400],
    ["a signed size", "+1\r\nx\r\n0\r\n\r\n", 400],
    ["an empty size", "\r\nx\r\n0\r\n\r\n", 400],
    ["a space before the size", " 1\r\nx\r\n0\r\n\r\n", 400],
    ["a space after the size", "1 \r\nx\r\n0\r\n\r\n", 400],
    ["a bare LF after the size", "1\nx\r\n0\r\n\r\n", 400],
    ["a bare CR in the size line", "1\rx\r\nx\r\n0\r\n\r\n", 400],
    ["data longer than its size", "1\r\nxy\r\n0\r\n\r\n", 400],
    ["data not followed by CRLF", "1\r\nx0\r\n\r\n", 400],
    ["data followed by a bare LF", "1\r\nx\n0\r\n\r\n", 400],
    ["an extension without a name", "1;\r\nx\r\n0\r\n\r\n", 400],
    ["an extension with a bad value", "1;a=b c\r\nx\r\n0\r\n\r\n", 400],
    ["an unterminated quoted extension", '1;a="b\r\nx\r\n0\r\n\r\n', 400],
    ["a size line over 4 KiB", "1;a=" + "b".repeat(5000) + "\r\nx\r\n0\r\n\r\n", 400],
    ["a trailer without a colon", "0\r\nbad trailer\r\n\r\n", 400],
    ["an obs-folded trailer", "0\r\nX-A: 1\r\n folded\r\n\r\n", 400],
    ["a trailer with a space before the colon", "0\r\nX-A : 1\r\n\r\n", 400],
    ["a last chunk ending in a bare LF", "0\r\n\n", 400],
    ["an oversized size", "fffffffffffffffff\r\n", 413],
  ];
  for (const [name, body, status] of cases) {
    test(`${name}: ${status}`, () => {
      assert.equal(refusal(chunked(body)), status);
    });
  }
});

describe("Http1Reader: limits", () => {
  test("a head over maxHeadSize is a 431, even when it never ends", () => {
    const big = "GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + "a".repeat(2000) + "\r\n\r\n";
    assert.equal(read([utf8(big)], { maxHeadSize: 1024 }).error?.status, 431);
    const endless = "GET / HTTP/1.1\r\nX: " + "a".repeat(2000);
    assert.equal(read([utf8(endless)], { maxHeadSize: 1024 }).error?.status, 431);
    assert.equal(read([utf8(big)], { maxHeadSize: 4096 }).error, null);
  });

  test("a Content-Length over maxBodySize is a 413 before any body byte", () => {
    const reader = new Http1Reader({ maxBodySize: 10 });
    reader.receive(utf8("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n"));
    assert.throws(() => reader.next(), (e: HandshakeError) => e.status === 413);
    const huge = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n";
    assert.equal(read([utf8(huge)]).error?.status, 413);
    const exact = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789";
    assert.equal(read([utf8(exact)], { maxBodySize: 10 }).requests[0].body, "0123456789");
  });

  test("a chunked body that grows past maxBodySize is a 413", () => {
    const text = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n";
    assert.equal(readEverySplit(text, { maxBodySize: 10 }).error?.status, 413);
    assert.equal(readEverySplit(text, { maxBodySize: 11 }).requests[0].body, "abcdefghijk");
  });

  test("the chunked decoder's limits are options", () => {
    const decoder = new ChunkedDecoder({ maxLineSize: 8, maxTrailerSize: 16 });
    assert.throws(
      () => decoder.decode(utf8("1;a=bcdefgh\r\n")),
      (e: HandshakeError) => e.status === 400,
    );
    const trailers = new ChunkedDecoder({ maxTrailerSize: 16 });
    assert.throws(
      () => trailers.decode(utf8("0\r\nX-Long: " + "a".repeat(20) + "\r\n\r\n")),
      (e: HandshakeError) => e.status === 431,
    );
  });
});

describe("interpretRequest", () => {
  const parse = (text: string, options?: Http1Options) =>
    interpretRequest(parseRequestHead(utf8(text)), options);

  test("framing: none, length, chunked", () => {
    assert.deepEqual(parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n").body, { kind: "none" });
    assert.deepEqual(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").body, {
      kind: "none",
    });
    assert.deepEqual(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n").body, {
      kind: "length",
      length: 7,
    });
    assert.deepEqual(
      parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n").body,
      { kind: "chunked" },
    );
  });

  test("Expect: 100-continue is noted on HTTP/1.1 requests with a body only", () => {
    const expect = (version: string, length: string) =>
      parse(
        `PUT / ${version}\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: ${length}\r\n\r\n`,
      )
        .expectContinue;
    assert.equal(expect("HTTP/1.1", "5"), true);
    assert.equal(expect("HTTP/1.1", "0"), false);
    assert.equal(expect("HTTP/1.0", "5"), false);
  });

  test("Connection: close and keep-alive tokens, in any case, in a list", () => {
    assert.equal(
      parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: foo, CLOSE\r\n\r\n").keepAlive,
      false,
    );
    assert.equal(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keepAlive, true);
  });

  test("HTTP/1.2 is served as HTTP/1.x", () => {
    assert.equal(parse("GET / HTTP/1.2\r\nHost: h\r\n\r\n").version[1], 2);
  });
});

describe("responses", () => {
  const text = (bytes: Uint8Array) => decoder.decode(bytes);
  const base = { method: "GET", version: [1, 1] as [number, number], status: 200 };

  test("planResponse: length when declared or known, else chunked (1.1) or close (1.0)", () => {
    const plan = (input: Partial<Parameters<typeof planResponse>[0]>) =>
      planResponse({ ...base, declaredLength: null, knownLength: null, hasBody: true, ...input });
    assert.deepEqual(plan({ declaredLength: 5 }), { kind: "length", length: 5 });
    assert.deepEqual(plan({ knownLength: 3 }), { kind: "length", length: 3 });
    assert.deepEqual(plan({ hasBody: false }), { kind: "length", length: 0 });
    assert.deepEqual(plan({}), { kind: "chunked" });
    assert.deepEqual(plan({ version: [1, 0] }), { kind: "close" });
    assert.deepEqual(plan({ method: "HEAD", knownLength: 9 }), { kind: "none", contentLength: 9 });
    assert.deepEqual(plan({ method: "HEAD" }), { kind: "none", contentLength: null });
    assert.deepEqual(plan({ status: 204, knownLength: 0 }), { kind: "none", contentLength: null });
    assert.deepEqual(plan({ status: 304, declaredLength: 12 }), {
      kind: "none",
      contentLength: 12,
    });
  });

  test("encodeResponseHead: hop-by-hop fields are the server's, cookies one per line", () => {
    const headers = new Headers([
      ["Content-Type", "text/plain"],
      ["Content-Length", "999"],
      ["Transfer-Encoding", "gzip"],
      ["Connection", "upgrade"],
      ["Set-Cookie", "a=1"],
      ["Set-Cookie", "b=2"],
    ]);
    const head = text(encodeResponseHead(200, headers, {
      framing: { kind: "length", length: 5 },
      keepAlive: true,
      version: [1, 1],
      date: "Thu, 01 Jan 2026 00:00:00 GMT",
      idleSeconds: 5,
    }));
    assert.equal(
      head,
      "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n" +
        "date: Thu, 01 Jan 2026 00:00:00 GMT\r\ncontent-length: 5\r\nkeep-alive: timeout=5\r\n\r\n",
    );
  });

  test("encodeResponseHead: chunked, close, HTTP/1.0 keep-alive, reason phrases", () => {
    const chunked = text(encodeResponseHead(404, new Headers(), {
      framing: { kind: "chunked" },
      keepAlive: false,
      version: [1, 1],
    }));
    assert.equal(
      chunked,
      "HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    );
    const old = text(encodeResponseHead(200, new Headers(), {
      statusText: "Fine",
      framing: { kind: "length", length: 0 },
      keepAlive: true,
      version: [1, 0],
    }));
    assert.equal(old, "HTTP/1.1 200 Fine\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n");
    const closeDelimited = text(encodeResponseHead(200, new Headers(), {
      framing: { kind: "close" },
      keepAlive: true,
      version: [1, 0],
    }));
    assert.equal(closeDelimited, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
  });

  test("encodeChunk: hex size, data, CRLF; empty data makes no chunk", () => {
    assert.equal(text(encodeChunk(utf8("0123456789abcdef!"))), "11\r\n0123456789abcdef!\r\n");
    assert.equal(encodeChunk(new Uint8Array(0)).length, 0);
    // Round trip through the decoder.
    const body = concat(encodeChunk(utf8("abc")), encodeChunk(utf8("de")), utf8("0\r\n\r\n"));
    const decoder2 = new ChunkedDecoder();
    let out = "";
    for (let at = 0; !decoder2.done;) {
      const { consumed, data } = decoder2.decode(body.subarray(at));
      at += consumed;
      if (data !== null) out += decoder.decode(data);
    }
    assert.equal(out, "abcde");
  });
});

describe("Http1Reader: properties (fast-check)", () => {
  const SEED = Number(process.env.SLUICE_FC_SEED ?? 20_240_607);
  const settings = (numRuns: number) => ({ seed: SEED, numRuns, endOnFailure: false });

  /** Cuts `data` at the given points (modulo its length), in order. */
  function cut(data: Uint8Array, points: number[]): Uint8Array[] {
    const at = [...new Set(points.map((p) => p % (data.length + 1)))].sort((a, b) => a - b);
    const chunks: Uint8Array[] = [];
    let from = 0;
    for (const p of at) {
      chunks.push(data.slice(from, p));
      from = p;
    }
    chunks.push(data.slice(from));
    return chunks;
  }

  const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);
  const value = fc.stringMatching(/^[\x21-\x7e]([\x20-\x7e]{0,20}[\x21-\x7e])?$/);
  const body = fc.uint8Array({ maxLength: 300 });
  const request = fc.record({
    method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "X-CUSTOM"),
    path: fc.stringMatching(/^\/[A-Za-z0-9._~%!$&'()*+,;=:@/?-]{0,30}$/),
    headers: fc.array(fc.tuple(token, value), { maxLength: 5 }),
    body,
    chunked: fc.boolean(),
    chunkSizes: fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 8 }),
  }).filter(({ headers }) =>
    headers.every(([name]) =>
      !["host", "content-length", "transfer-encoding", "expect", "connection"].includes(
        name.toLowerCase(),
      )
    )
  );

  /** A request's bytes: chunked with the given chunk sizes, or with a Content-Length. */
  function encode(r: {
    method: string;
    path: string;
    headers: [string, string][];
    body: Uint8Array;
    chunked: boolean;
    chunkSizes: number[];
  }): Uint8Array {
    let head = `${r.method} ${r.path} HTTP/1.1\r\nHost: h\r\n`;
    for (const [name, v] of r.headers) head += `${name}: ${v}\r\n`;
    if (!r.chunked) {
      return concat(utf8(head + `Content-Length: ${r.body.length}\r\n\r\n`), r.body);
    }
    const parts: Uint8Array[] = [utf8(head + "Transfer-Encoding: chunked\r\n\r\n")];
    let at = 0;
    for (let i = 0; at < r.body.length; i++) {
      const size = Math.min(
        r.chunkSizes[i % Math.max(1, r.chunkSizes.length)] ?? 16,
        r.body.length - at,
      );
      parts.push(utf8(size.toString(16) + "\r\n"), r.body.subarray(at, at + size), utf8("\r\n"));
      at += size;
    }
    parts.push(utf8("0\r\n\r\n"));
    return concat(...parts);
  }

  test("pipelined valid requests, cut anywhere, come out whole and in order", () => {
    fc.assert(
      fc.property(
        fc.array(request, { minLength: 1, maxLength: 4 }),
        fc.array(fc.nat(), { maxLength: 12 }),
        (requests, points) => {
          const data = concat(...requests.map(encode));
          const reader = new Http1Reader();
          const seen: { method: string; path: string; body: number[] }[] = [];
          for (const chunk of cut(data, points)) {
            reader.receive(chunk);
            for (let event; (event = reader.next()) !== null;) {
              if (event.kind === "request") {
                seen.push({ method: event.request.method, path: event.request.target, body: [] });
              } else if (event.kind === "data") seen.at(-1)!.body.push(...event.data);
            }
          }
          assert.deepEqual(
            seen,
            requests.map((r) => ({ method: r.method, path: r.path, body: [...r.body] })),
          );
          assert.equal(reader.buffered, 0);
        },
      ),
      settings(300),
    );
  });

  test("arbitrary bytes raise nothing but a HandshakeError, and the buffer stays bounded", () => {
    const prefix = fc.constantFrom(
      "",
      "GET / HTTP/1.1\r\nHost: h\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n",
    );
    const noise = fc.array(
      fc.oneof(
        fc.uint8Array({ maxLength: 40 }),
        fc.constantFrom("\r\n", "\n", "\r", ":", " ", ";", "0", "a", "\r\n\r\n", "chunked"),
      ),
      { maxLength: 30 },
    );
    fc.assert(
      fc.property(prefix, noise, fc.array(fc.nat(), { maxLength: 8 }), (start, parts, points) => {
        const data = concat(
          utf8(start),
          ...parts.map((p) => (typeof p === "string" ? utf8(p) : p)),
        );
        const reader = new Http1Reader({ maxHeadSize: 256, maxBodySize: 1024 });
        try {
          for (const chunk of cut(data, points)) {
            reader.receive(chunk);
            while (reader.next() !== null) {
              // Events are fine; the point is what else could come out.
            }
            assert.ok(reader.buffered <= data.length);
          }
        } catch (error) {
          assert.ok(error instanceof HandshakeError, `unexpected ${error}`);
          assert.ok([400, 413, 417, 431, 501, 505].includes(error.status), String(error.status));
        }
      }),
      settings(500),
    );
  });
});
