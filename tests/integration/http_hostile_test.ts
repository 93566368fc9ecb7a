/**
 * Plain HTTP/1.1 on the WebSocket port under hostile or unusual input:
 * framing edge cases (RFC 9112 §6.3, §7.1), limits on later requests,
 * `Expect: 100-continue` with handlers that stream the request body back,
 * the bytes of response heads, handler results that must not be framed
 * with a body, an upgrade pipelined behind plain requests, and
 * `serveStatic` against a missing root, protocol-relative redirects and
 * symlinks.
 *
 * Everything goes over raw `node:net` sockets (bytes as the server wrote
 * them); every wait is bounded; temp dirs are removed.
 *
 * Runs under both `deno test -A` and `bun test`.
 */

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { Buffer } from "node:buffer";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type FetchHandler, serve, type Server, serveStatic } from "../../mod.ts";
import { sleep, watchUnhandledRejections, within } from "./_raw_client.ts";

const HOST = "127.0.0.1";

/** What came back on one connection: every byte (latin1), and whether the server closed it. */
interface Exchange {
  text: string;
  closed: boolean;
}

/**
 * Opens a connection, writes `parts` (with `gap` ms between them), and
 * collects everything until the server closes or `ms` pass.
 */
function exchange(
  port: number,
  parts: (string | Uint8Array)[],
  options: { ms?: number; gap?: number } = {},
): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = net.connect(port, HOST);
    const chunks: Buffer[] = [];
    let closed = false;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString("latin1"), closed });
    };
    const timer = setTimeout(finish, options.ms ?? 3000);
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", () => {});
    socket.on("close", () => {
      closed = true;
      finish();
    });
    socket.on("connect", async () => {
      for (const part of parts) {
        if (socket.destroyed) return;
        socket.write(typeof part === "string" ? Buffer.from(part, "latin1") : part);
        if (options.gap !== undefined) await sleep(options.gap);
      }
    });
  });
}

interface Parsed {
  status: number;
  headers: Map<string, string[]>;
  head: string;
  body: string;
}

/**
 * Splits `text` into responses, framed strictly by the rules a client
 * applies (RFC 9112 §6.3): no body for HEAD answers, 1xx, 204 and 304, else
 * Content-Length, chunked, or the rest of the connection.
 */
function parseResponses(text: string, heads: boolean[] = []): Parsed[] {
  const out: Parsed[] = [];
  let at = 0;
  while (at < text.length) {
    const end = text.indexOf("\r\n\r\n", at);
    if (end === -1) throw new Error(`Incomplete response head: ${JSON.stringify(text.slice(at))}`);
    const head = text.slice(at, end + 4);
    const lines = head.split("\r\n").slice(0, -2);
    const match = /^HTTP\/1\.1 (\d{3}) /.exec(lines[0]);
    if (match === null) throw new Error(`Bad status line ${JSON.stringify(lines[0])}`);
    const status = Number(match[1]);
    const headers = new Map<string, string[]>();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      const name = line.slice(0, colon).toLowerCase();
      headers.set(name, [...(headers.get(name) ?? []), line.slice(colon + 1).trim()]);
    }
    at = end + 4;
    let body = "";
    const isHead = status >= 200 ? heads[out.filter((r) => r.status >= 200).length] : false;
    if (status < 200 || status === 204 || status === 304 || isHead) {
      // No body.
    } else if (headers.get("transfer-encoding")?.[0] === "chunked") {
      for (;;) {
        const eol = text.indexOf("\r\n", at);
        if (eol === -1) throw new Error("Chunked body cut short");
        const sizeLine = text.slice(at, eol);
        if (!/^[0-9a-f]+$/i.test(sizeLine)) {
          throw new Error(`Bad chunk size line ${JSON.stringify(sizeLine)}`);
        }
        const size = parseInt(sizeLine, 16);
        at = eol + 2;
        if (size === 0) {
          if (text.slice(at, at + 2) !== "\r\n") {
            throw new Error("Trailers or junk after last chunk");
          }
          at += 2;
          break;
        }
        body += text.slice(at, at + size);
        if (text.slice(at + size, at + size + 2) !== "\r\n") {
          throw new Error("Chunk data not followed by CRLF");
        }
        at += size + 2;
      }
    } else if (headers.has("content-length")) {
      const length = Number(headers.get("content-length")![0]);
      body = text.slice(at, at + length);
      at += length;
    } else {
      body = text.slice(at);
      at = text.length;
    }
    out.push({ status, headers, head, body });
  }
  return out;
}

/** Runs `body` against a fresh server with `fetch`, and always shuts it down. */
async function withServer(
  fetch: FetchHandler,
  body: (port: number, errors: Error[], server: Server) => Promise<void>,
  options: { maxBodySize?: number; handshakeTimeout?: number } = {},
): Promise<void> {
  const errors: Error[] = [];
  const server = await serve({
    port: 0,
    hostname: HOST,
    fetch,
    onError: (error) => errors.push(error),
    ...options,
  }, { open: (ws) => ws.send("ws-open"), message: (ws, data) => ws.send(data) });
  try {
    await body(server.addr.port, errors, server);
  } finally {
    await within(server.shutdown(), 10_000, "server shutdown");
  }
}

const GET = (path: string, extra = "") => `GET ${path} HTTP/1.1\r\nHost: h\r\n${extra}\r\n`;
const CLOSE = "Connection: close\r\n";

/** Echo app: the request body as text with the method and path before it. */
const echoApp: FetchHandler = async (request) => {
  const url = new URL(request.url);
  if (url.pathname === "/ignore") return new Response("ignored");
  const body = request.body === null ? "" : await request.text();
  return new Response(`${request.method} ${url.pathname} [${body}]`);
};

describe("hostile HTTP: framing edge cases (RFC 9112 §6.3, §7.1)", () => {
  test("accepted variants: leading zeros, Chunked with spaces, extensions, trailers dropped", async () => {
    await withServer(echoApp, async (port) => {
      const cases: [string, string, string][] = [
        ["Content-Length: 0005", "Content-Length: 0005\r\n", "hello"],
        [
          "Transfer-Encoding:  Chunked ",
          "Transfer-Encoding:  Chunked \r\n",
          "5\r\nhello\r\n0\r\n\r\n",
        ],
        [
          "chunk extensions and a long zero-padded size",
          "Transfer-Encoding: chunked\r\n",
          '00000000000000000000005;a=b ; c="q\\"x"\r\nhello\r\n0;z\r\n\r\n',
        ],
        [
          "trailers (forbidden fields included) are dropped, not applied",
          "Transfer-Encoding: chunked\r\n",
          "5\r\nhello\r\n0\r\nContent-Length: 99\r\nTransfer-Encoding: gzip\r\nX-T: 1\r\n\r\n",
        ],
      ];
      for (const [name, headers, body] of cases) {
        const result = await exchange(port, [
          `POST /e HTTP/1.1\r\nHost: h\r\n${headers}\r\n${body}` + GET("/after", CLOSE),
        ]);
        const responses = parseResponses(result.text);
        assert.deepEqual(
          responses.map((r) => [r.status, r.body]),
          [[200, "POST /e [hello]"], [200, "GET /after []"]],
          name,
        );
        assert.ok(result.closed, name);
      }
    });
  });

  test("refused variants: 400 or 413, Connection: close, nothing after them served", async () => {
    const calls: string[] = [];
    const app: FetchHandler = (request) => {
      calls.push(new URL(request.url).pathname);
      return echoApp(request, undefined as never);
    };
    await withServer(app, async (port) => {
      const smuggled = GET("/smuggled");
      const cases: [string, string, number][] = [
        ["Content-Length over 2^53", "Content-Length: 18014398509481985\r\n\r\n", 413],
        ["Content-Length of 30 digits", `Content-Length: ${"9".repeat(30)}\r\n\r\n`, 413],
        ["Content-Length: 5, 5", "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400],
        ["Content-Length: -1", "Content-Length: -1\r\n\r\n", 400],
        [
          "Transfer-Encoding: chunked, gzip",
          "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
          400,
        ],
        ["Transfer-Encoding: chunked;q=1", "Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n", 400],
        ["an empty Transfer-Encoding", "Transfer-Encoding: \r\n\r\n", 400],
        [
          "a negative chunk size",
          "Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
          400,
        ],
        [
          "a chunk size over 2^53",
          "Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nx\r\n",
          413,
        ],
        [
          "a chunk line with a bare LF",
          "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
          400,
        ],
        ["a last chunk with a bare LF", "Transfer-Encoding: chunked\r\n\r\n0\n\r\n", 400],
        [
          "no CRLF after chunk data",
          "Transfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n",
          400,
        ],
        [
          "a trailer line without a colon",
          "Transfer-Encoding: chunked\r\n\r\n0\r\nX-T 1\r\n\r\n",
          400,
        ],
      ];
      await Promise.all(cases.map(async ([name, rest, status]) => {
        const result = await exchange(port, [`POST /e HTTP/1.1\r\nHost: h\r\n${rest}${smuggled}`]);
        const first = parseResponses(result.text.slice(0, result.text.indexOf("\r\n\r\n") + 4))[0];
        assert.equal(first.status, status, `${name}: ${result.text.slice(0, 80)}`);
        assert.deepEqual(first.headers.get("connection"), ["close"], name);
        assert.ok(result.closed, `${name}: the connection is closed`);
        assert.equal(result.text.match(/HTTP\/1\.1 /g)!.length, 1, `${name}: one answer only`);
      }));
      assert.ok(!calls.includes("/smuggled"), `never served a request behind one: ${calls}`);
    });
  });

  test("a body longer than its Content-Length: the rest is read as the next request", async () => {
    await withServer(echoApp, async (port) => {
      const result = await exchange(port, [
        "POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi" + GET("/next", CLOSE),
      ]);
      assert.deepEqual(
        parseResponses(result.text).map((r) => [r.status, r.body]),
        [[200, "POST /e [hi]"], [200, "GET /next []"]],
      );
      // And junk after the body is a malformed next request, never part of the body.
      const junk = await exchange(port, [
        "POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhiXYZ\r\n\r\n",
      ]);
      assert.deepEqual(parseResponses(junk.text).map((r) => r.status), [200, 400]);
      assert.ok(junk.closed);
    });
  });

  test("a head over the limit on a later request of a kept connection gets 431 and the close", async () => {
    await withServer(echoApp, async (port) => {
      const result = await exchange(port, [
        GET("/a") + `GET /b HTTP/1.1\r\nHost: h\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`,
      ]);
      const responses = parseResponses(result.text);
      assert.deepEqual(responses.map((r) => r.status), [200, 431]);
      assert.deepEqual(responses[1].headers.get("connection"), ["close"]);
      assert.ok(result.closed);
    });
  });
});

describe("hostile HTTP: Expect: 100-continue with a body streamed back", () => {
  // The response head goes out before the handler's response body pulls the
  // request body: the interim 100 must not be written after it, where the
  // client reads it as body bytes (RFC 9110 §15.2: 1xx come before the final
  // response, never inside it).
  test("declared Content-Length: the response body is the request body, no 100 inside it", async () => {
    const app: FetchHandler = (request) =>
      new Response(request.body, {
        headers: { "content-length": request.headers.get("content-length")! },
      });
    await withServer(app, async (port) => {
      const result = await exchange(port, [
        "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        "hello",
      ], { gap: 200, ms: 3000 });
      const finals = parseResponses(result.text).filter((r) => r.status >= 200);
      assert.equal(finals.length, 1, result.text);
      assert.equal(finals[0].body, "hello", `the wire: ${JSON.stringify(result.text)}`);
      assert.ok(!/\r\n\r\n[^]*HTTP\/1\.1 100/.test(result.text), "no 100 after the final head");
    });
  });

  test("chunked: no 100 Continue between the chunks of the response", async () => {
    const app: FetchHandler = (request) => {
      const reader = request.body!.getReader();
      let started = false;
      return new Response(
        new ReadableStream<Uint8Array>({
          async pull(controller) {
            if (!started) {
              started = true;
              controller.enqueue(new TextEncoder().encode("start:"));
              return;
            }
            await sleep(50); // The head and the first chunk go out first.
            const { done, value } = await reader.read();
            if (done) controller.close();
            else controller.enqueue(value);
          },
        }),
      );
    };
    await withServer(app, async (port) => {
      const result = await exchange(port, [
        "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        "hello",
      ], { gap: 300, ms: 3000 });
      let finals: Parsed[] = [];
      assert.doesNotThrow(() => {
        finals = parseResponses(result.text).filter((r) => r.status >= 200);
      }, `the wire: ${JSON.stringify(result.text)}`);
      assert.equal(finals.length, 1);
      assert.equal(finals[0].body, "start:hello");
    });
  });

  test("a handler that reads the body first: 100, then the answer (pinned)", async () => {
    await withServer(echoApp, async (port) => {
      const result = await exchange(port, [
        "POST /e HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        "hello",
      ], { gap: 200, ms: 1500 });
      const responses = parseResponses(result.text);
      assert.deepEqual(responses.map((r) => [r.status, r.body]), [
        [100, ""],
        [200, "POST /e [hello]"],
      ]);
    });
  });
});

describe("hostile HTTP: response heads and bodies", () => {
  // Header values are byte strings (Fetch; RFC 9110 §5.5 obs-text): each
  // character is one octet. Encoding the head as UTF-8 sends octets the
  // application never set, and an echoed request header comes back mangled.
  test("header values go out byte for byte, not re-encoded as UTF-8", async () => {
    const app: FetchHandler = (request) =>
      new Response("x", {
        headers: { "x-set": "caf\u00e9", "x-echo": request.headers.get("x-name") ?? "" },
      });
    await withServer(app, async (port) => {
      // "café" in UTF-8 (c3 a9) sent as raw octets in a request header.
      const request = Buffer.concat([
        Buffer.from("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-Name: caf", "latin1"),
        Buffer.from([0xc3, 0xa9]),
        Buffer.from("\r\n\r\n", "latin1"),
      ]);
      const result = await exchange(port, [request]);
      const [response] = parseResponses(result.text);
      assert.equal(response.status, 200);
      assert.deepEqual(response.headers.get("x-set"), ["caf\u00e9"], "one octet 0xE9");
      assert.deepEqual(response.headers.get("x-echo"), ["caf\u00c3\u00a9"], "the octets sent");
    });
  });

  test("a client that never reads its response is cut after handshakeTimeout, not kept forever", async () => {
    // 64 MiB streamed: far more than the socket buffers hold. The client
    // sends its request and then reads nothing.
    let aborted: number | null = null;
    let started = 0;
    const app: FetchHandler = (request) => {
      started = performance.now();
      request.signal.addEventListener("abort", () => (aborted = performance.now()));
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent >= 64 * 1024 * 1024) return controller.close();
          sent += 64 * 1024;
          controller.enqueue(new Uint8Array(64 * 1024));
        },
      });
      return new Response(body);
    };
    await withServer(app, async (port) => {
      const socket = net.connect(port, HOST);
      socket.on("error", () => {});
      try {
        await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
        socket.pause(); // Never reads.
        socket.write(GET("/big"));
        const deadline = performance.now() + 8_000;
        while (aborted === null && performance.now() < deadline) await sleep(50);
        assert.ok(aborted !== null, "the stalled response was never cut");
        assert.ok(aborted - started < 5_000, `cut after ${Math.round(aborted - started)} ms`);
      } finally {
        socket.destroy();
      }
    }, { handshakeTimeout: 500 });
  });

  test("HEAD: the GET's Content-Length, no body bytes; 204 never carries a length or body", async () => {
    const app: FetchHandler = (request) => {
      const path = new URL(request.url).pathname;
      if (path === "/204") {
        return new Response(null, { status: 204, headers: { "content-length": "5" } });
      }
      if (path === "/304") {
        return new Response(null, {
          status: 304,
          headers: { etag: '"x"', "content-length": "11" },
        });
      }
      return new Response("hello world");
    };
    await withServer(app, async (port) => {
      const result = await exchange(port, [
        "HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n" + GET("/204") + GET("/304") + GET("/x", CLOSE),
      ]);
      const responses = parseResponses(result.text, [true, false, false, false]);
      assert.deepEqual(responses.map((r) => [r.status, r.body]), [
        [200, ""],
        [204, ""],
        [304, ""],
        [200, "hello world"],
      ]);
      assert.deepEqual(responses[0].headers.get("content-length"), ["11"]);
      assert.equal(responses[1].headers.get("content-length"), undefined);
      assert.equal(responses[1].headers.get("transfer-encoding"), undefined);
    });
  });

  test("a body that errors midway under a declared length: cut, and the connection closed", async () => {
    const app: FetchHandler = () => {
      let sent = false;
      return new Response(
        new ReadableStream<Uint8Array>({
          async pull(controller) {
            await sleep(10);
            if (sent) return controller.error(new Error("broken on purpose"));
            sent = true;
            controller.enqueue(new TextEncoder().encode("abc"));
          },
        }),
        { headers: { "content-length": "10" } },
      );
    };
    await withServer(app, async (port, errors) => {
      const result = await exchange(port, [GET("/") + GET("/second")], { ms: 3000 });
      assert.ok(result.closed, "closed, not left hanging");
      assert.ok(result.text.endsWith("\r\n\r\nabc"), JSON.stringify(result.text));
      assert.equal(result.text.match(/HTTP\/1\.1 /g)!.length, 1, "the second is not answered");
      assert.ok(errors.some((e) => /broken on purpose/.test(e.message)));
    });
  });

  test("an upgrade pipelined behind a POST whose body nobody read opens a WebSocket", async () => {
    await withServer(echoApp, async (port) => {
      const upgrade =
        "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
      const result = await exchange(port, [
        "POST /ignore HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" + upgrade,
      ], { ms: 800 });
      const second = result.text.indexOf("HTTP/1.1 101");
      assert.ok(second > 0, result.text);
      assert.deepEqual(parseResponses(result.text.slice(0, second)).map((r) => r.body), [
        "ignored",
      ]);
      const tail = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x07ws-open";
      assert.ok(result.text.endsWith(tail), JSON.stringify(result.text));
    });
  });
});

describe("hostile HTTP: serveStatic", () => {
  // Removed here too: a test failed by an unhandled rejection may end
  // before its own finally runs.
  const temps: string[] = [];
  const tempDir = () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-hostile-"));
    temps.push(dir);
    return dir;
  };
  after(() => {
    for (const dir of temps) rmSync(dir, { recursive: true, force: true });
  });

  test("a root that does not exist (yet): 404, no unhandled rejection (a crash)", async () => {
    const base = tempDir();
    const watch = watchUnhandledRejections();
    try {
      const handler = serveStatic(join(base, "dist"));
      const response = await handler(new Request("http://h/app.js"));
      assert.equal(response.status, 404);
      await response.body?.cancel();
      await sleep(100);
      assert.deepEqual(watch.reasons.map(String), [], "Deno and Bun exit on these");
    } finally {
      watch.stop();
      rmSync(base, { recursive: true, force: true });
    }
  });

  test("a root created after the first request is served once it exists", async () => {
    const base = tempDir();
    const watch = watchUnhandledRejections();
    try {
      const root = join(base, "dist");
      const handler = serveStatic(root);
      const before = await handler(new Request("http://h/app.js"));
      assert.equal(before.status, 404);
      await before.body?.cancel();
      mkdirSync(root);
      writeFileSync(join(root, "app.js"), "built");
      const after = await handler(new Request("http://h/app.js"));
      assert.equal(after.status, 200, "not a failure remembered forever");
      assert.equal(await after.text(), "built");
    } finally {
      await sleep(50);
      watch.stop();
      rmSync(base, { recursive: true, force: true });
    }
  });

  test("a directory redirect is never protocol-relative (//host): no open redirect", async () => {
    const base = tempDir();
    try {
      mkdirSync(join(base, "evil.example"));
      writeFileSync(join(base, "evil.example", "index.html"), "<p>in the folder</p>");
      await withServer(serveStatic(base), async (port) => {
        for (const target of ["//evil.example", "/\\evil.example", "///evil.example"]) {
          const result = await exchange(port, [
            `GET ${target} HTTP/1.1\r\nHost: h\r\n${CLOSE}\r\n`,
          ]);
          const [response] = parseResponses(result.text);
          if (response.status !== 301) continue; // Refusing is fine too.
          const location = response.headers.get("location")![0];
          // Resolved against the request URL, the redirect must stay on this host.
          const resolved = new URL(location, "http://h/x");
          assert.equal(resolved.host, "h", `${target} redirects to ${location}`);
        }
      });
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });

  test("traversal variants, symlinks out, long paths: 404, never a file outside", async () => {
    const base = tempDir();
    try {
      const root = join(base, "site");
      mkdirSync(join(root, "sub"), { recursive: true });
      writeFileSync(join(root, "index.html"), "<h1>home</h1>");
      writeFileSync(join(base, "secret.txt"), "SECRET");
      symlinkSync(join(base, "secret.txt"), join(root, "out.txt"));
      symlinkSync(base, join(root, "sub", "up"));
      await withServer(serveStatic(root), async (port) => {
        const attempts = [
          "/%252e%252e/secret.txt",
          "/sub/..%5c..%5csecret.txt",
          "/sub/%2e%2e%2f%2e%2e%2fsecret.txt",
          "/out.txt",
          "/sub/up/secret.txt",
          "/secret.txt%00.html",
          "/" + "a/".repeat(3000) + "x",
          "/" + "b".repeat(8000),
        ];
        for (const target of attempts) {
          const result = await exchange(port, [
            `GET ${target} HTTP/1.1\r\nHost: h\r\n${CLOSE}\r\n`,
          ]);
          const [response] = parseResponses(result.text);
          assert.ok(
            [400, 404].includes(response.status),
            `${target.slice(0, 40)}: ${response.status}`,
          );
          assert.doesNotMatch(response.body, /SECRET/);
        }
        // Sanity: the index is served, HEAD has its length and no body.
        const ok = await exchange(port, [
          "HEAD / HTTP/1.1\r\nHost: h\r\n\r\n" + GET("/", CLOSE),
        ]);
        const [head, get] = parseResponses(ok.text, [true, false]);
        assert.equal(head.status, 200);
        assert.deepEqual(head.headers.get("content-length"), ["13"]);
        assert.equal(get.body, "<h1>home</h1>");
        assert.deepEqual(get.headers.get("content-type"), ["text/html; charset=utf-8"]);
      });
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
});
