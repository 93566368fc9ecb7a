/**
 * Plain HTTP/1.1 on the WebSocket port (`serve({ fetch })`) over real
 * loopback sockets: hand-written bytes for framing, keep-alive, pipelining,
 * limits, timeouts and every request-smuggling refusal; then real clients
 * (`fetch` in Deno, Bun and Node, and `curl`).
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type FetchHandler, serve, type ServeOptions, type Server } from "../../mod.ts";
import { buildFrame, Op, RawClient, sleep, upgradeRequest, utf8, within } from "./_raw_client.ts";
import { findExecutable } from "../_executables.ts";
import { makeTestCerts, opensslSkipReason } from "../_certs.ts";
import { commandFor, missing, peerPath, runPeer } from "./peers/spawn.ts";

const HOST = "127.0.0.1";
const decoder = new TextDecoder();

/** What the test app saw: one entry per call of `fetch`. */
type Calls = string[];

/** The test application: a route per behaviour under test. */
function app(calls: Calls): FetchHandler {
  return async (request, info) => {
    const url = new URL(request.url);
    calls.push(`${request.method} ${url.pathname}`);
    switch (url.pathname) {
      case "/hello":
        return new Response(`hello ${url.searchParams.get("name")}`, {
          headers: { "content-type": "text/plain; charset=utf-8" },
        });
      case "/echo":
        return new Response(await request.arrayBuffer(), {
          headers: { "content-type": request.headers.get("content-type") ?? "text/plain" },
        });
      case "/count": {
        let bytes = 0;
        for await (const chunk of request.body ?? []) bytes += chunk.length;
        return Response.json({ bytes });
      }
      case "/stream": {
        const n = Number(url.searchParams.get("n") ?? 3);
        let i = 0;
        return new Response(
          new ReadableStream<Uint8Array>({
            async pull(controller) {
              await sleep(5);
              if (i++ < n) controller.enqueue(utf8(`part ${i}\n`));
              else controller.close();
            },
          }),
          { headers: { "content-type": "text/plain" } },
        );
      }
      case "/throw":
        throw new Error("handler failed on purpose");
      case "/stream-echo":
        return new Response(request.body);
      case "/broken":
        return new Response(
          new ReadableStream({
            pull(controller) {
              controller.error(new Error("body broken on purpose"));
            },
          }),
        );
      case "/not-a-response":
        return "oops" as unknown as Response;
      case "/remote":
        return Response.json(info.remoteAddr);
      case "/slow":
        await sleep(Number(url.searchParams.get("ms") ?? 50));
        return new Response(`slow ${url.searchParams.get("id")}`);
      case "/ignore-body":
        return new Response("not reading your body");
      case "/describe":
        return Response.json({
          method: request.method,
          search: url.search,
          headers: Object.fromEntries(request.headers),
          body: request.body === null ? null : await request.text(),
        });
      case "/cookies": {
        const headers = new Headers();
        headers.append("set-cookie", "a=1; Path=/");
        headers.append("set-cookie", "b=2; Path=/");
        return new Response(null, { status: 204, headers });
      }
    }
    return new Response("no such page", { status: 404 });
  };
}

interface Harness {
  server: Server;
  port: number;
  calls: Calls;
  errors: Error[];
}

/** Runs `body` against a fresh server with the test app, and always shuts it down. */
async function withServer(
  options: Omit<ServeOptions, "port" | "hostname">,
  body: (h: Harness) => Promise<void>,
): Promise<void> {
  const calls: Calls = [];
  const errors: Error[] = [];
  const server = await serve({
    fetch: app(calls),
    onError: (error) => errors.push(error),
    ...options,
    port: 0,
    hostname: HOST,
  }, { message: (ws, data) => ws.send(data) });
  try {
    await body({ server, port: server.addr.port, calls, errors });
  } finally {
    await within(server.shutdown(), 10_000, "server shutdown");
  }
}

/** Reads a CRLF-terminated line. */
async function readLine(client: RawClient): Promise<string> {
  let line = "";
  while (!line.endsWith("\r\n")) line += decoder.decode(await client.readBytes(1));
  return line.slice(0, -2);
}

/** Reads a response, its body decoded when chunked (and not for HEAD). */
async function readResponse(client: RawClient, options: { head?: boolean } = {}) {
  const response = await client.readResponse();
  if (!options.head && response.headers.get("transfer-encoding") === "chunked") {
    let body = "";
    for (;;) {
      const size = parseInt(await readLine(client), 16);
      if (size === 0) break;
      body += decoder.decode(await client.readBytes(size));
      assert.equal(await readLine(client), "");
    }
    assert.equal(await readLine(client), "", "no trailers, then the empty line");
    response.body = body;
  }
  return response;
}

/** Opens a connection and writes `text`. */
async function send(port: number, text: string | Uint8Array): Promise<RawClient> {
  const client = await RawClient.connect(port);
  client.write(text);
  return client;
}

const GET = (path: string, extra = "") => `GET ${path} HTTP/1.1\r\nHost: h\r\n${extra}\r\n`;

describe("plain HTTP: requests and responses", () => {
  test("a GET is answered with its length, a Date, and the connection kept", async () => {
    await withServer({}, async ({ port, calls }) => {
      const client = await send(port, GET("/hello?name=ada"));
      const response = await readResponse(client);
      assert.equal(response.status, 200);
      assert.equal(response.body, "hello ada");
      assert.equal(response.headers.get("content-length"), "9");
      assert.equal(response.headers.get("content-type"), "text/plain; charset=utf-8");
      assert.ok(!Number.isNaN(Date.parse(response.headers.get("date") ?? "")));
      assert.equal(response.headers.get("connection"), null);
      assert.match(response.headers.get("keep-alive") ?? "", /^timeout=\d+$/);
      // The same connection serves the next request.
      client.write(GET("/hello?name=bob"));
      assert.equal((await readResponse(client)).body, "hello bob");
      assert.deepEqual(calls, ["GET /hello", "GET /hello"]);
      client.destroy();
    });
  });

  test("methods, headers, query and bodies reach the handler as a Request", async () => {
    await withServer({}, async ({ port }) => {
      const client = await send(
        port,
        "PATCH /describe?a=1&b=two HTTP/1.1\r\nHost: h\r\nX-Thing: value\r\n" +
          "Content-Length: 4\r\n\r\nbody",
      );
      const seen = JSON.parse((await readResponse(client)).body);
      assert.equal(seen.method, "PATCH");
      assert.equal(seen.search, "?a=1&b=two");
      assert.equal(seen.headers["x-thing"], "value");
      assert.equal(seen.body, "body");
      client.destroy();
    });
  });

  test("a chunked request body is decoded, trailers dropped", async () => {
    await withServer({}, async ({ port }) => {
      const client = await send(
        port,
        "POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" +
          "4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n",
      );
      const response = await readResponse(client);
      assert.equal(response.body, "Wikipedia in \r\n\r\nchunks.");
      client.destroy();
    });
  });

  test("a body of unknown length streams chunked, each part as it comes", async () => {
    await withServer({}, async ({ port }) => {
      const client = await send(port, GET("/stream?n=4"));
      const response = await readResponse(client);
      assert.equal(response.headers.get("transfer-encoding"), "chunked");
      assert.equal(response.headers.get("content-length"), null);
      assert.equal(response.body, "part 1\npart 2\npart 3\npart 4\n");
      client.write(GET("/hello?name=after"));
      assert.equal((await readResponse(client)).body, "hello after");
      client.destroy();
    });
  });

  test("HEAD gets the GET's headers and no body; the connection goes on", async () => {
    await withServer({}, async ({ port }) => {
      const second = await send(
        port,
        "HEAD /hello?name=ada HTTP/1.1\r\nHost: h\r\n\r\n" + GET("/hello?name=x"),
      );
      // Read the HEAD response's head only.
      let text = "";
      while (!text.endsWith("\r\n\r\n")) text += decoder.decode(await second.readBytes(1));
      assert.match(text, /^HTTP\/1\.1 200 OK\r\n/);
      assert.match(text, /content-length: 9\r\n/);
      const next = await readResponse(second);
      assert.equal(next.status, 200);
      assert.equal(next.body, "hello x");
      // A streamed body: HEAD neither waits for it nor sends it.
      second.write("HEAD /stream?n=100 HTTP/1.1\r\nHost: h\r\n\r\n" + GET("/hello?name=y"));
      text = "";
      while (!text.endsWith("\r\n\r\n")) text += decoder.decode(await second.readBytes(1));
      assert.doesNotMatch(text, /transfer-encoding/);
      assert.equal((await readResponse(second)).body, "hello y");
      second.destroy();
    });
  });

  test("204 carries no body; several Set-Cookie fields stay separate", async () => {
    await withServer({}, async ({ port }) => {
      const client = await send(port, GET("/cookies") + GET("/hello?name=z"));
      let text = "";
      while (!text.endsWith("\r\n\r\n")) text += decoder.decode(await client.readBytes(1));
      assert.match(text, /^HTTP\/1\.1 204 No Content\r\n/);
      assert.match(text, /set-cookie: a=1; Path=\/\r\nset-cookie: b=2; Path=\/\r\n/);
      assert.doesNotMatch(text, /content-length|transfer-encoding/);
      assert.equal((await readResponse(client)).body, "hello z");
      client.destroy();
    });
  });

  test("pipelined requests are answered in order, even when the first is slowest", async () => {
    await withServer({}, async ({ port, calls }) => {
      const client = await send(
        port,
        GET("/slow?ms=120&id=1") +
          "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" +
          GET("/slow?ms=1&id=3") +
          GET("/stream?n=2") +
          GET("/hello?name=last", "Connection: close\r\n"),
      );
      const bodies = [];
      for (let i = 0; i < 5; i++) bodies.push((await readResponse(client)).body);
      assert.deepEqual(bodies, ["slow 1", "abc", "slow 3", "part 1\npart 2\n", "hello last"]);
      assert.ok(await client.waitForEnd(2000), "Connection: close ends the connection");
      assert.equal(calls.length, 5);
    });
  });

  test("Connection: close is answered with Connection: close, then the server closes", async () => {
    await withServer({}, async ({ port }) => {
      const client = await send(port, GET("/hello?name=a", "Connection: close\r\n"));
      const response = await readResponse(client);
      assert.equal(response.headers.get("connection"), "close");
      assert.ok(await client.waitForEnd(2000));
    });
  });

  test("HTTP/1.0: closed after each response unless keep-alive; unknown lengths end with the connection", async () => {
    await withServer({}, async ({ port }) => {
      const plain = await send(port, "GET /hello?name=old HTTP/1.0\r\n\r\n");
      const response = await plain.readResponse();
      assert.equal(response.body, "hello old");
      assert.equal(response.headers.get("connection"), "close");
      assert.ok(await plain.waitForEnd(2000));

      const kept = await send(
        port,
        "GET /hello?name=a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" +
          "GET /stream?n=2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      );
      const first = await kept.readResponse();
      assert.equal(first.headers.get("connection"), "keep-alive");
      const streamed = await kept.readResponse();
      assert.equal(streamed.headers.get("transfer-encoding"), null, "no chunks for HTTP/1.0");
      assert.equal(streamed.headers.get("connection"), "close");
      assert.ok(await kept.waitForEnd(2000));
      let rest = "";
      while (kept.buffered > 0) rest += decoder.decode(await kept.readBytes(1));
      assert.equal(rest, "part 1\npart 2\n");
    });
  });

  test("the handler sees the client's address", async () => {
    await withServer({}, async ({ port }) => {
      const client = await send(port, GET("/remote"));
      const addr = JSON.parse((await readResponse(client)).body);
      assert.equal(addr.hostname, HOST);
      assert.equal(addr.port, client.socket.localPort);
      client.destroy();
    });
  });

  test("a body the handler never reads is skipped, and the next request is served", async () => {
    await withServer({}, async ({ port }) => {
      const client = await send(
        port,
        "POST /ignore-body HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789" +
          "POST /ignore-body HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
          GET("/hello?name=next"),
      );
      assert.equal((await readResponse(client)).body, "not reading your body");
      assert.equal((await readResponse(client)).body, "not reading your body");
      assert.equal((await readResponse(client)).body, "hello next");
      client.destroy();
    });
  });

  test("a GET with a body: the body is skipped, not taken for a request", async () => {
    await withServer({}, async ({ port, calls }) => {
      const smuggled = GET("/admin");
      const client = await send(
        port,
        `GET /hello?name=g HTTP/1.1\r\nHost: h\r\nContent-Length: ${smuggled.length}\r\n\r\n${smuggled}` +
          GET("/hello?name=h"),
      );
      assert.equal((await readResponse(client)).body, "hello g");
      assert.equal((await readResponse(client)).body, "hello h");
      assert.deepEqual(calls, ["GET /hello", "GET /hello"]);
      client.destroy();
    });
  });
});

describe("plain HTTP: Expect: 100-continue", () => {
  test("a handler that reads the body gets it after a 100 Continue", async () => {
    await withServer({}, async ({ port }) => {
      const client = await send(
        port,
        "POST /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
      );
      const interim = await client.readResponse();
      assert.equal(interim.status, 100);
      client.write("hello");
      const response = await readResponse(client);
      assert.equal(response.status, 200);
      assert.equal(response.body, "hello");
      client.write(GET("/hello?name=more"));
      assert.equal((await readResponse(client)).body, "hello more");
      client.destroy();
    });
  });

  test("a handler that answers without the body: no 100, and the connection closes", async () => {
    await withServer({}, async ({ port }) => {
      const client = await send(
        port,
        "POST /ignore-body HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
      );
      const response = await readResponse(client);
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("connection"), "close");
      assert.ok(await client.waitForEnd(3000));
    });
  });

  test("a body over the limit is refused with 413 before the client sends it", async () => {
    await withServer({ maxBodySize: 1000 }, async ({ port, calls }) => {
      const client = await send(
        port,
        "PUT /echo HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1001\r\n\r\n",
      );
      const response = await readResponse(client);
      assert.equal(response.status, 413);
      assert.equal(response.headers.get("connection"), "close");
      assert.deepEqual(calls, []);
      client.destroy();
    });
  });

  test("another expectation gets 417", async () => {
    await withServer({}, async ({ port }) => {
      const client = await send(
        port,
        "PUT /echo HTTP/1.1\r\nHost: h\r\nExpect: something\r\nContent-Length: 1\r\n\r\nx",
      );
      assert.equal((await readResponse(client)).status, 417);
      client.destroy();
    });
  });
});

describe("plain HTTP: handler failures", () => {
  for (const path of ["/throw", "/not-a-response"]) {
    test(`${path}: 500, reported to onError, and the connection goes on`, async () => {
      await withServer({}, async ({ port, errors }) => {
        const client = await send(port, GET(path) + GET("/hello?name=fine"));
        const failed = await readResponse(client);
        assert.equal(failed.status, 500);
        assert.doesNotMatch(failed.body, /on purpose/, "the error is not shown to the client");
        assert.equal((await readResponse(client)).body, "hello fine");
        assert.equal(errors.length, 1);
        assert.match(errors[0].message, /on purpose|must return a Response/);
        client.destroy();
      });
    });
  }

  test("a response body that fails before its first byte: 500, and the connection goes on", async () => {
    await withServer({}, async ({ port, errors }) => {
      const client = await send(port, GET("/broken") + GET("/hello?name=after"));
      assert.equal((await readResponse(client)).status, 500);
      assert.equal((await readResponse(client)).body, "hello after");
      assert.match(errors[0]?.message ?? "", /on purpose/);
      client.destroy();
    });
  });

  test("a streamed echo of a malformed chunked body: 400, reported as the client's", async () => {
    await withServer({}, async ({ port, errors }) => {
      const client = await send(
        port,
        "POST /stream-echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" +
          "3\r\nabc\r\nzz\r\n",
      );
      const response = await readResponse(client);
      assert.equal(response.status, 400);
      assert.ok(await client.waitForEnd(3000));
      assert.ok(errors.length > 0);
      for (const error of errors) assert.match(error.message, /chunk size/i);
    });
  });

  test("a response body that errors midway cuts the chunked body and closes", async () => {
    const errors: Error[] = [];
    const server = await serve({
      port: 0,
      hostname: HOST,
      onError: (error) => errors.push(error),
      fetch: () =>
        new Response(
          new ReadableStream({
            async pull(controller) {
              controller.enqueue(utf8("first"));
              await sleep(20);
              controller.error(new Error("source broke"));
            },
          }),
        ),
    }, {});
    try {
      const client = await send(server.addr.port, GET("/"));
      const response = await client.readResponse();
      assert.equal(response.headers.get("transfer-encoding"), "chunked");
      assert.ok(await client.waitForEnd(3000), "the connection closes");
      let rest = "";
      while (client.buffered > 0) rest += decoder.decode(await client.readBytes(1));
      assert.equal(rest, "5\r\nfirst\r\n", "no last chunk: the client sees the body was cut");
      assert.match(errors[0]?.message ?? "", /source broke/);
    } finally {
      await server.shutdown();
    }
  });

  test("a body that breaks its declared Content-Length closes the connection", async () => {
    const server = await serve({
      port: 0,
      hostname: HOST,
      onError: () => {},
      fetch: () => new Response("short", { headers: { "content-length": "10" } }),
    }, {});
    try {
      const client = await send(server.addr.port, GET("/"));
      const head = await client.readResponse().catch(() => null);
      assert.equal(head, null, "only 5 of 10 bytes arrive before the close");
      assert.ok(client.ended);
    } finally {
      await server.shutdown();
    }
  });
});

describe("plain HTTP: limits and timeouts", () => {
  test("a head over maxHandshakeSize gets 431", async () => {
    await withServer({ maxHandshakeSize: 1024 }, async ({ port }) => {
      // The first request's head (checked with the upgrade rules' reader)...
      const first = await send(port, GET("/", `X-Big: ${"a".repeat(2000)}\r\n`));
      assert.equal((await first.readResponse()).status, 431);
      first.destroy();
      // ...and a later one on a kept connection.
      const later = await send(
        port,
        GET("/hello?name=a") + GET("/", `X-Big: ${"a".repeat(2000)}\r\n`),
      );
      assert.equal((await readResponse(later)).status, 200);
      const refused = await readResponse(later);
      assert.equal(refused.status, 431);
      assert.equal(refused.headers.get("connection"), "close");
      assert.ok(await later.waitForEnd(3000));
    });
  });

  test("a Content-Length over maxBodySize gets 413 without calling the handler", async () => {
    await withServer({ maxBodySize: 100 }, async ({ port, calls }) => {
      const client = await send(
        port,
        "POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n" + "x".repeat(101),
      );
      const response = await readResponse(client);
      assert.equal(response.status, 413);
      assert.match(response.body, /100/);
      assert.deepEqual(calls, []);
      assert.ok(await client.waitForEnd(3000));
    });
  });

  test("a chunked body that grows past maxBodySize gets 413 and the connection closes", async () => {
    await withServer({ maxBodySize: 100 }, async ({ port, errors }) => {
      const client = await send(
        port,
        "POST /count HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" +
          "40\r\n" + "x".repeat(64) + "\r\n40\r\n" + "y".repeat(64) + "\r\n0\r\n\r\n",
      );
      const response = await readResponse(client);
      assert.equal(response.status, 413);
      assert.ok(await client.waitForEnd(3000));
      assert.ok(errors.some((e) => /limit of 100/.test(e.message)));
    });
  });

  test("a head that does not complete in handshakeTimeout gets 408", async () => {
    await withServer({ handshakeTimeout: 300 }, async ({ port }) => {
      // The first request, and a later one on a kept connection.
      const first = await send(port, "GET / HTTP/1.1\r\nHost: h\r\n");
      assert.equal((await first.readResponse(3000)).status, 408);
      first.destroy();
      const later = await send(port, GET("/hello?name=a") + "GET / HTTP/1.1\r\n");
      assert.equal((await readResponse(later)).status, 200);
      const started = performance.now();
      const timedOut = await later.readResponse(3000);
      assert.equal(timedOut.status, 408);
      assert.ok(performance.now() - started >= 250, "the head timer runs from its first byte");
      assert.ok(await later.waitForEnd(3000));
    });
  });

  test("an idle keep-alive connection is closed after httpIdleTimeout", async () => {
    await withServer({ httpIdleTimeout: 200 }, async ({ port }) => {
      const client = await send(port, GET("/hello?name=a"));
      const response = await readResponse(client);
      assert.equal(response.headers.get("keep-alive"), "timeout=1");
      const started = performance.now();
      assert.ok(await client.waitForEnd(3000));
      const idle = performance.now() - started;
      assert.ok(idle >= 150 && idle < 2000, `closed after ${idle} ms`);
      assert.equal(client.buffered, 0, "closed silently");
    });
  });

  test("a request body that stalls is cut after handshakeTimeout", async () => {
    await withServer({ handshakeTimeout: 300 }, async ({ port }) => {
      const client = await send(
        port,
        "POST /count HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc",
      );
      assert.ok(await client.waitForEnd(3000), "the connection is closed");
    });
  });

  test("HTTP/2.0 and other major versions get 505", async () => {
    await withServer({}, async ({ port }) => {
      const client = await send(port, "GET / HTTP/2.0\r\nHost: h\r\n\r\n");
      assert.equal((await readResponse(client)).status, 505);
      client.destroy();
    });
  });

  test("malformed requests get 400", async () => {
    await withServer({}, async ({ port, calls }) => {
      for (const text of ["GARBAGE\r\n\r\n", "GET /\r\n\r\n", "GET / HTTP/1.1\r\n\r\n"]) {
        const client = await send(port, text);
        assert.equal((await readResponse(client)).status, 400, JSON.stringify(text));
        client.destroy();
      }
      assert.deepEqual(calls, []);
    });
  });
});

describe("plain HTTP: no request smuggling (RFC 9112 §6.3, §11.2)", () => {
  const post = (lines: string, body = "") =>
    `POST /echo HTTP/1.1\r\nHost: h\r\n${lines}\r\n${body}`;
  const smuggle = GET("/admin");
  const cases: [string, string][] = [
    [
      "both Content-Length and Transfer-Encoding (CL.TE)",
      post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" + smuggle),
    ],
    [
      "both Transfer-Encoding and Content-Length (TE.CL)",
      post(
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        "8\r\n" + smuggle + "\r\n0\r\n\r\n",
      ),
    ],
    [
      "two Content-Length fields",
      post("Content-Length: 0\r\nContent-Length: " + smuggle.length + "\r\n", smuggle),
    ],
    ["Content-Length: 1, 1", post("Content-Length: 1, 1\r\n", "x")],
    ["Content-Length: +1", post("Content-Length: +1\r\n", "x")],
    ["Content-Length: 0x1", post("Content-Length: 0x1\r\n", "x")],
    ["Content-Length: 1 0", post("Content-Length: 1 0\r\n", "x")],
    ["Transfer-Encoding: gzip, chunked", post("Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n")],
    [
      "Transfer-Encoding: chunked, identity",
      post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
    ],
    ["Transfer-Encoding: identity", post("Transfer-Encoding: identity\r\n", smuggle)],
    [
      "two Transfer-Encoding fields",
      post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
    ],
    [
      "Transfer-Encoding in HTTP/1.0",
      "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    [
      "an obs-folded Transfer-Encoding",
      post("X-A: 1\r\nTransfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
    ],
    ["an obs-folded header line", post("X-A: 1\r\n folded\r\n")],
    ["whitespace before the colon", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n")],
    [
      "an invalid character in a header name",
      post("Transfer\u0001Encoding: chunked\r\n", "0\r\n\r\n"),
    ],
    ["bare LF line endings", "POST /echo HTTP/1.1\nHost: h\nContent-Length: 1\n\nx"],
    [
      "a bare LF among CRLFs",
      "POST /echo HTTP/1.1\r\nHost: h\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    [
      "a bad chunk size",
      post("Transfer-Encoding: chunked\r\n", "z\r\n" + smuggle + "\r\n0\r\n\r\n"),
    ],
    [
      "a chunk size with a 0x prefix",
      post("Transfer-Encoding: chunked\r\n", "0x5\r\nhello\r\n0\r\n\r\n"),
    ],
    [
      "a chunk size with a space",
      post("Transfer-Encoding: chunked\r\n", "5 \r\nhello\r\n0\r\n\r\n"),
    ],
    [
      "a bad chunk extension",
      post("Transfer-Encoding: chunked\r\n", "5;a b\r\nhello\r\n0\r\n\r\n"),
    ],
    [
      "chunk data longer than its size",
      post("Transfer-Encoding: chunked\r\n", "1\r\nhello\r\n0\r\n\r\n"),
    ],
    ["a bare LF after chunk data", post("Transfer-Encoding: chunked\r\n", "5\r\nhello\n0\r\n\r\n")],
    ["a bad trailer", post("Transfer-Encoding: chunked\r\n", "0\r\nbad trailer\r\n\r\n")],
  ];
  // One refused connection lingers up to a second (the server reads what the
  // client still sends before closing, so that the 400 is not lost to a
  // reset), so the cases run side by side; each failure names its case.
  test("each ambiguous framing: 400, the connection closed, nothing after it served", async () => {
    await withServer({}, async ({ port, calls }) => {
      const failures: string[] = [];
      await Promise.all(cases.flatMap(([name, text]) =>
        // Each case first on a fresh connection, then after a served request.
        ["", GET("/hello?name=first")].map(async (prefix) => {
          const label = `${name}${prefix === "" ? "" : " (second request)"}`;
          const client = await send(port, prefix + text + GET("/after"));
          try {
            if (prefix !== "") assert.equal((await readResponse(client)).status, 200);
            const response = await readResponse(client);
            assert.equal(response.status, 400, response.head);
            assert.equal(response.headers.get("connection"), "close");
            assert.ok(await client.waitForEnd(3000), "the connection is closed");
            assert.equal(client.buffered, 0, "nothing else was answered");
          } catch (error) {
            failures.push(`${label}: ${(error as Error).message}`);
          } finally {
            client.destroy();
          }
        })
      ));
      assert.deepEqual(failures, []);
      // The handler saw the served requests and those refused inside their
      // body (bad chunks), never a request hidden behind a refused one.
      assert.deepEqual(new Set(calls), new Set(["GET /hello", "POST /echo"]));
    });
  });
});

describe("plain HTTP: the WebSocket side", () => {
  test("without a fetch option a plain request gets 426 Upgrade: websocket", async () => {
    const server = await serve({ port: 0, hostname: HOST }, {});
    try {
      const client = await send(server.addr.port, GET("/"));
      const response = await client.readResponse();
      assert.equal(response.status, 426);
      assert.equal(response.headers.get("upgrade"), "websocket");
      client.destroy();
      const res = await fetch(`http://${HOST}:${server.addr.port}/`);
      assert.equal(res.status, 426);
      await res.body?.cancel();
    } finally {
      await server.shutdown();
    }
  });

  test("upgrades still open WebSockets next to plain requests", async () => {
    await withServer({}, async ({ server, port }) => {
      const res = await fetch(`http://${HOST}:${port}/hello?name=web`);
      assert.equal(await res.text(), "hello web");
      const ws = await connect(server.url);
      const reader = ws.readable.getReader();
      ws.send("ping");
      assert.equal((await reader.read()).value, "ping");
      ws.close();
      await ws.closed;
      // A broken upgrade is still refused by the upgrade rules, not handed to fetch.
      const client = await send(
        port,
        upgradeRequest(`${HOST}:${port}`, { headers: { "Sec-WebSocket-Key": null } }),
      );
      assert.equal((await client.readResponse()).status, 400);
      client.destroy();
    });
  });
});

describe("plain HTTP: an upgrade on a kept connection", () => {
  test("a WebSocket upgrade after plain requests opens a WebSocket on that connection", async () => {
    await withServer({}, async ({ port, calls }) => {
      for (const pipelined of [true, false]) {
        const upgrade = upgradeRequest(`${HOST}:${port}`, { path: "/ws" });
        const client = await send(port, GET("/hello?name=first") + (pipelined ? upgrade : ""));
        assert.equal((await readResponse(client)).body, "hello first");
        if (!pipelined) {
          await sleep(20); // The server waits for the next request with a read pending.
          client.write(upgrade);
        }
        const upgraded = await client.readResponse();
        assert.equal(upgraded.status, 101);
        client.write(buildFrame({ opcode: Op.Text, payload: "over the same socket" }));
        const frame = await client.expectFrame();
        assert.equal(decoder.decode(frame.payload), "over the same socket");
        client.destroy();
      }
      assert.deepEqual(calls, ["GET /hello", "GET /hello"], "the upgrades never reached fetch");
    });
  });

  test("a broken upgrade on a kept connection is refused by the upgrade rules", async () => {
    await withServer({}, async ({ port, calls }) => {
      const client = await send(
        port,
        GET("/hello?name=a") +
          upgradeRequest(`${HOST}:${port}`, { headers: { "Sec-WebSocket-Version": "8" } }),
      );
      assert.equal((await readResponse(client)).status, 200);
      const refused = await client.readResponse();
      assert.equal(refused.status, 426);
      assert.equal(refused.headers.get("sec-websocket-version"), "13");
      assert.deepEqual(calls, ["GET /hello"]);
      client.destroy();
    });
  });
});

describe("plain HTTP: memory and shutdown", () => {
  test("a handler that never settles: the client leaving frees the connection, shutdown ends", async () => {
    let signals = 0;
    const server = await serve({
      port: 0,
      hostname: HOST,
      closeTimeout: 300,
      onError: () => {},
      fetch: (request) => {
        request.signal.addEventListener("abort", () => signals++);
        return new Promise<Response>(() => {});
      },
    }, {});
    try {
      // The client leaves while its handler hangs: the connection is freed.
      const leaving = await send(server.addr.port, GET("/"));
      await sleep(100);
      leaving.destroy();
      for (let i = 0; i < 100 && signals < 1; i++) await sleep(20);
      assert.equal(signals, 1, "request.signal aborted when the client left");
      // Another hangs through shutdown: dropped after closeTimeout.
      const staying = await send(server.addr.port, GET("/"));
      await sleep(100);
      await within(server.shutdown(), 5000, "shutdown with a handler that never settles");
      assert.equal(signals, 2);
      staying.destroy();
    } finally {
      await within(server.shutdown(), 5000, "shutdown");
    }
  });

  test("a client that never reads holds the producer back (write backpressure)", async () => {
    let produced = 0;
    let cancelled = false;
    const chunk = new Uint8Array(64 * 1024);
    const server = await serve({
      port: 0,
      hostname: HOST,
      onError: () => {},
      fetch: () =>
        new Response(
          new ReadableStream<Uint8Array>({
            pull(controller) {
              produced += chunk.length;
              controller.enqueue(chunk);
            },
            cancel() {
              cancelled = true;
            },
          }),
        ),
    }, {});
    try {
      const client = await send(server.addr.port, GET("/"));
      client.socket.pause(); // Never read.
      await sleep(1000);
      const first = produced;
      await sleep(500);
      // Loopback socket buffers hold a few MiB at most; without backpressure
      // the producer would have made gigabytes by now.
      assert.ok(
        first < 64 * 1024 * 1024,
        `produced ${first} bytes for a client that reads nothing`,
      );
      assert.equal(produced, first, "production stopped");
      client.destroy();
      for (let i = 0; i < 100 && !cancelled; i++) await sleep(20);
      assert.ok(cancelled, "the body is cancelled once the client is gone");
    } finally {
      await server.shutdown();
    }
  });

  test("request.signal aborts when the client leaves mid-response", async () => {
    let aborted: Promise<void> | null = null;
    const server = await serve({
      port: 0,
      hostname: HOST,
      fetch: (request) => {
        aborted = new Promise((resolve) =>
          request.signal.addEventListener("abort", () => resolve())
        );
        return new Response(
          new ReadableStream({
            async pull(controller) {
              await sleep(10);
              controller.enqueue(utf8("tick\n"));
            },
          }),
        );
      },
    }, {});
    try {
      const client = await send(server.addr.port, GET("/"));
      await client.readResponse();
      client.destroy();
      await within(aborted!, 3000, "request.signal abort");
    } finally {
      await server.shutdown();
    }
  });

  test("request.signal aborts when the client leaves while the handler waits (long poll)", async () => {
    let aborted: Promise<void> | null = null;
    let answered = false;
    const server = await serve({
      port: 0,
      hostname: HOST,
      fetch: async (request) => {
        aborted = new Promise((resolve) =>
          request.signal.addEventListener("abort", () => resolve())
        );
        await aborted; // Waits for an event that never comes, but for the abort.
        answered = true;
        return new Response("too late");
      },
    }, {});
    try {
      for (
        const text of [GET("/poll"), "POST /poll HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"]
      ) {
        aborted = null;
        const client = await send(server.addr.port, text);
        for (let i = 0; i < 100 && aborted === null; i++) await sleep(10);
        client.destroy();
        await within(aborted!, 3000, "request.signal abort");
      }
      await sleep(20);
      assert.ok(answered);
    } finally {
      await server.shutdown();
    }
  });

  test("shutdown closes idle connections at once and lets a response finish", async () => {
    const server = await serve({
      port: 0,
      hostname: HOST,
      fetch: async () => {
        await sleep(200);
        return new Response("finished");
      },
    }, {});
    const idle = await send(server.addr.port, "");
    await sleep(50);
    const busy = await send(server.addr.port, GET("/"));
    await sleep(50);
    const stopped = server.shutdown();
    const response = await readResponse(busy);
    assert.equal(response.body, "finished");
    assert.equal(response.headers.get("connection"), "close");
    await within(stopped, 5000, "shutdown");
    assert.ok(await idle.waitForEnd(1000));
    assert.ok(await busy.waitForEnd(1000));
  });
});

// ---------------------------------------------------------------------------
// Real clients

const CURL = findExecutable("curl");
const curlSkip = CURL === null && missing("The curl executable");

/** Runs curl; resolves with its exit code, stdout and stderr. */
function curl(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return within(
    new Promise((resolve, reject) => {
      const child = spawn(CURL!, ["--silent", "--show-error", ...args], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = "";
      let err = "";
      child.stdout.on("data", (chunk: Uint8Array) => (out += decoder.decode(chunk)));
      child.stderr.on("data", (chunk: Uint8Array) => (err += decoder.decode(chunk)));
      child.on("error", reject);
      // "close", not "exit": only then is all of stdout read.
      child.on("close", (code) => resolve({ code, out, err }));
    }),
    30_000,
    `curl ${args.join(" ")}`,
  );
}

describe("plain HTTP: real clients", () => {
  for (const runtime of ["deno", "bun", "node"] as const) {
    const command = commandFor(runtime, peerPath("http_fetch_client.mjs"));
    const skip = command === null && missing(`The ${runtime} executable`);
    test(`fetch in ${runtime}`, { skip, timeout: 60_000 }, async () => {
      await withServer({}, async ({ port }) => {
        const { result, stderr } = await runPeer(
          [...command!, `http://${HOST}:${port}`],
          50_000,
        );
        assert.equal(result.failed, undefined, `${result.failed}\n${stderr}`);
        const steps = result.steps as Record<string, Record<string, unknown>>;
        assert.deepEqual(steps.hello, {
          status: 200,
          type: "text/plain; charset=utf-8",
          length: "9",
          text: "hello ada",
        });
        assert.deepEqual(steps.json, { status: 200, body: { a: [1, 2, 3], s: "é" } });
        assert.deepEqual(steps.upload, { status: 200, text: "streamed upload" });
        assert.deepEqual(steps.big, { bytes: 3 * 1024 * 1024 });
        assert.deepEqual(steps.stream, {
          status: 200,
          encoding: "chunked",
          text: "part 1\npart 2\npart 3\npart 4\npart 5\n",
        });
        assert.deepEqual(steps.head, { status: 200, length: "9", text: "" });
        assert.deepEqual(steps.throw, { status: 500 });
        const ports = steps.ports as unknown as number[];
        // Pools may hold several idle connections; a reused one is proof enough.
        assert.ok(new Set(ports).size < ports.length, `keep-alive reuses connections: ${ports}`);
        assert.deepEqual(steps.missing, { status: 404, text: "no such page" });
      });
    });
  }

  test(
    "curl: GET, HEAD, POST, chunked upload, keep-alive, HTTP/1.0",
    { skip: curlSkip },
    async () => {
      await withServer({}, async ({ port }) => {
        const base = `http://${HOST}:${port}`;
        const get = await curl(["-i", `${base}/hello?name=curl`]);
        assert.equal(get.code, 0, get.err);
        assert.match(get.out, /^HTTP\/1\.1 200 OK\r\n/);
        assert.match(get.out, /\r\n\r\nhello curl$/);

        const head = await curl(["-I", `${base}/hello?name=curl`]);
        assert.match(head.out, /^HTTP\/1\.1 200 OK\r\n/);
        assert.match(head.out, /content-length: 10\r\n/);

        const post = await curl(["--data-binary", "posted", `${base}/echo`]);
        assert.equal(post.out, "posted");

        const chunked = await curl([
          "-H",
          "Transfer-Encoding: chunked",
          "--data-binary",
          "chunked upload",
          `${base}/echo`,
        ]);
        assert.equal(chunked.out, "chunked upload");

        const stream = await curl(["-i", `${base}/stream?n=3`]);
        assert.match(stream.out, /transfer-encoding: chunked\r\n/);
        assert.match(stream.out, /\r\n\r\npart 1\npart 2\npart 3\n$/);

        // Several URLs in one run: curl reuses the kept-alive connection.
        const reuse = await curl(["-v", `${base}/hello?name=1`, `${base}/hello?name=2`]);
        assert.equal(reuse.out, "hello 1hello 2");
        assert.match(reuse.err, /Re-using existing connection|Reusing existing/i);

        const old = await curl(["--http1.0", "-i", `${base}/stream?n=2`]);
        assert.match(old.out, /connection: close\r\n/);
        assert.match(old.out, /\r\n\r\npart 1\npart 2\n$/);

        const failing = await curl(["-o", "/dev/null", "-w", "%{http_code}", `${base}/throw`]);
        assert.equal(failing.out, "500");
      });
    },
  );

  test("curl over TLS: https:// on the wss:// port, keep-alive included", {
    skip: curlSkip || opensslSkipReason("the https:// test") || false,
  }, async () => {
    const certs = makeTestCerts();
    try {
      await withServer({ tls: { cert: certs.cert, key: certs.key } }, async ({ port }) => {
        const base = `https://localhost:${port}`;
        const result = await curl([
          "-v",
          "--cacert",
          certs.caFile,
          `${base}/describe?x=1`,
          `${base}/hello?name=tls`,
        ]);
        assert.equal(result.code, 0, result.err);
        const [described] = result.out.split("hello tls");
        assert.equal(JSON.parse(described).search, "?x=1");
        assert.match(result.out, /hello tls$/);
        assert.match(result.err, /Re-using existing connection|Reusing existing/i);
      });
    } finally {
      certs.cleanup();
    }
  });

  test("curl: large uploads use Expect: 100-continue; over the limit they get 413 unsent", {
    skip: curlSkip,
  }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "sluice-http-"));
    try {
      const file = join(dir, "big.bin");
      writeFileSync(file, new Uint8Array(2 * 1024 * 1024).fill(7));
      await withServer({ maxBodySize: 3 * 1024 * 1024 }, async ({ port }) => {
        const ok = await curl(["-v", "--data-binary", `@${file}`, `http://${HOST}:${port}/count`]);
        assert.equal(ok.code, 0, ok.err);
        assert.deepEqual(JSON.parse(ok.out), { bytes: 2 * 1024 * 1024 });
        assert.match(ok.err, /Expect: 100-continue/i);
        assert.match(ok.err, /HTTP\/1\.1 100 Continue/);
      });
      await withServer({ maxBodySize: 1024 * 1024 }, async ({ port, calls }) => {
        const refused = await curl([
          "-o",
          "/dev/null",
          "-w",
          "%{http_code} %{size_upload}",
          "--data-binary",
          `@${file}`,
          `http://${HOST}:${port}/count`,
        ]);
        const [status, uploaded] = refused.out.split(" ");
        assert.equal(status, "413");
        assert.ok(Number(uploaded) < 2 * 1024 * 1024, `curl sent ${uploaded} bytes`);
        assert.deepEqual(calls, []);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
