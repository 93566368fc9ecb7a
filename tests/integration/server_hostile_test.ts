/**
 * The server's lifecycle and limits against hostile clients and hostile (or
 * merely buggy) application hooks: handshake deadlines counted from TCP
 * accept (slowloris, silent sockets, many at once), resets at accept, a
 * client that never reads, every way `onUpgrade` can misbehave, shutdown
 * (1001, close replies, terminate, idempotence, handshakes and hooks in
 * flight, from inside a handler), errors in user code under load, TLS
 * material and plaintext on a TLS port, and listen errors.
 *
 * Raw `node:net` clients (tests/integration/_raw_client.ts), so the bytes the
 * server writes are seen exactly. Runs under `deno test -A` and `bun test`.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { HandshakeError, serve } from "../../mod.ts";
import type { Server } from "../../mod.ts";
import {
  buildFrame,
  closeFrame,
  expectedAccept,
  newKey,
  Op,
  RawClient,
  sleep,
  upgradeRequest,
  utf8,
  watchUnhandledRejections,
  within,
} from "./_raw_client.ts";
import { makeTestCerts, opensslSkipReason } from "../_certs.ts";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { SYSTEM_PYTHON } from "../_executables.ts";

import { echo, withServer } from "./_server.ts";

const HOST = "127.0.0.1";

/** Sends a valid upgrade request (with `headers` added) and reads the answer. */
async function request(port: number, headers: Record<string, string | null> = {}, key = newKey()) {
  const client = await RawClient.connect(port);
  try {
    client.write(upgradeRequest(`${HOST}:${port}`, { key, headers }));
    return await client.readResponse(3000);
  } finally {
    client.destroy();
  }
}

/** Echoes one text message on an open raw client, asserting it comes back. */
async function assertEchoes(client: RawClient, text: string, ms = 3000): Promise<void> {
  client.write(buildFrame({ opcode: Op.Text, payload: text }));
  const frame = await client.expectFrame(ms);
  assert.equal(frame.opcode, Op.Text);
  assert.equal(new TextDecoder().decode(frame.payload), text);
}

/** A normal client still gets through: connects, upgrades, echoes, closes. */
async function assertServes(port: number, ms = 3000): Promise<number> {
  const started = performance.now();
  const client = await RawClient.open(port);
  try {
    await assertEchoes(client, "still here", ms);
  } finally {
    client.destroy();
  }
  return performance.now() - started;
}

/** Polls `ready` every 20 ms for at most `ms`. */
async function waitUntil(ready: () => boolean, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (!ready() && performance.now() < deadline) await sleep(20);
}

/** Reads a response head only (up to its blank line), whatever it announces. */
async function readHead(client: RawClient, ms = 3000): Promise<string> {
  const deadline = performance.now() + ms;
  let head = "";
  while (!head.endsWith("\r\n\r\n")) {
    const byte = await client.readBytes(1, Math.max(1, deadline - performance.now()));
    head += String.fromCharCode(byte[0]);
  }
  return head;
}

/** Parses every header line of a raw head, names lowercased, duplicates kept. */
function headerLines(head: string): [string, string][] {
  return head.split("\r\n").slice(1).filter((line) => line !== "").map((line) => {
    const colon = line.indexOf(":");
    return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
  });
}

// ---------------------------------------------------------------------------

describe("handshake deadline: slowloris and silent clients", () => {
  test("one byte per 100 ms: 408 at handshakeTimeout counted from TCP accept", async () => {
    await withServer({ handshakeTimeout: 800 }, echo, async (_server, port) => {
      const client = await RawClient.connect(port);
      const connectedAt = performance.now();
      const bytes = utf8(upgradeRequest(`${HOST}:${port}`));
      let at = 0;
      const timer = setInterval(() => {
        if (at < bytes.length - 1) client.write(bytes.subarray(at, ++at));
      }, 100);
      try {
        const response = await client.readResponse(3000);
        const after = performance.now() - connectedAt;
        assert.equal(response.status, 408, response.head);
        assert.equal(response.headers.get("connection"), "close");
        assert.ok(after >= 700 && after < 2000, `408 after ${after.toFixed(0)} ms`);
        assert.ok(await client.waitForEnd(2000), "the socket is closed after the 408");
      } finally {
        clearInterval(timer);
        client.destroy();
      }
    });
  });

  test("the deadline runs from TCP accept, not from the first byte", async () => {
    await withServer({ handshakeTimeout: 600 }, echo, async (_server, port) => {
      const client = await RawClient.connect(port);
      const connectedAt = performance.now();
      try {
        await sleep(450);
        // The start of a request, then nothing: still cut at ~600 ms from accept.
        client.write("GET / HTTP/1.1\r\n");
        const response = await client.readResponse(3000);
        const after = performance.now() - connectedAt;
        assert.equal(response.status, 408);
        assert.ok(after < 1000, `408 only after ${after.toFixed(0)} ms (deadline 600 ms)`);
      } finally {
        client.destroy();
      }
    });
  });

  test("a head in 1-byte writes that completes in time is accepted and works", async () => {
    await withServer({ handshakeTimeout: 5000 }, echo, async (_server, port) => {
      const client = await RawClient.connect(port);
      try {
        const key = newKey();
        const bytes = utf8(upgradeRequest(`${HOST}:${port}`, { key }));
        for (let i = 0; i < bytes.length; i++) {
          await client.writeAndFlush(bytes.subarray(i, i + 1));
          if (i % 16 === 0) await sleep(1);
        }
        const response = await client.readResponse(3000);
        assert.equal(response.status, 101);
        assert.equal(response.headers.get("sec-websocket-accept"), expectedAccept(key));
        await assertEchoes(client, "dribbled");
      } finally {
        client.destroy();
      }
    });
  });

  test("500 silent connections: a normal client is served meanwhile; all are cut at the deadline", async () => {
    await withServer({ handshakeTimeout: 1500 }, echo, async (server, port) => {
      const silent: net.Socket[] = [];
      const closedAt: number[] = [];
      const started = performance.now();
      try {
        await Promise.all(
          Array.from({ length: 500 }, () =>
            new Promise<void>((resolve, reject) => {
              const socket = net.connect({ port, host: HOST });
              socket.on("error", () => {});
              socket.once("connect", () => resolve());
              socket.once("close", () => closedAt.push(performance.now() - started));
              setTimeout(() => reject(new Error("connect timed out")), 5000);
              socket.resume();
              silent.push(socket);
            })),
        );
        const took = await assertServes(port);
        assert.ok(took < 1000, `a normal client took ${took.toFixed(0)} ms`);
        await waitUntil(() => server.stats().connections === 0, 2000);
        assert.equal(server.stats().connections, 0, "silent sockets are not connections");
        const deadline = performance.now() + 4000;
        while (closedAt.length < 500 && performance.now() < deadline) await sleep(50);
        assert.equal(closedAt.length, 500, "every silent socket was closed");
        const last = Math.max(...closedAt);
        assert.ok(last < 3500, `the last silent socket closed after ${last.toFixed(0)} ms`);
        await assertServes(port);
      } finally {
        for (const socket of silent) socket.destroy();
      }
    });
  });
});

// ---------------------------------------------------------------------------

describe("accept level", () => {
  // On Deno this also fails (after the tests above) from the accept-queue
  // reset bug shown deterministically by the next test.
  test("a storm of connections reset at once (some mid-request) leaves no trace", async () => {
    const errors: Error[] = [];
    await withServer({ onError: (e) => errors.push(e) }, echo, async (server, port) => {
      const request = utf8(upgradeRequest(`${HOST}:${port}`));
      for (let round = 0; round < 6; round++) {
        await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            new Promise<void>((resolve) => {
              const socket = net.connect({ port, host: HOST });
              socket.on("error", () => {});
              socket.once("close", () => resolve());
              socket.once("connect", () => {
                if (i % 3 === 1) socket.write(request.subarray(0, 20));
                if (i % 3 === 2) socket.write(request);
                const reset = (socket as { resetAndDestroy?: () => void }).resetAndDestroy;
                if (typeof reset === "function") reset.call(socket);
                else socket.destroy();
              });
            })),
        );
      }
      await assertServes(port);
      const deadline = performance.now() + 3000;
      while (server.stats().connections > 0 && performance.now() < deadline) await sleep(20);
      assert.equal(server.stats().connections, 0);
      assert.deepEqual(errors.map((e) => e.message), [], "client resets are not server errors");
    });
  });

  // Regression (Deno): a connection reset while it waits in the accept queue makes
  // Deno's `listener.accept()` fail with NotConnected (ENOTCONN from
  // getpeername). DenoListener skips only ConnectionAborted/ConnectionReset,
  // so acceptLoop takes it for an accept failure (EMFILE) and backs off, 10
  // ms doubling to 1 s, per reset connection: a burst of N resets stalls the
  // server for about N seconds. Here python (run synchronously, so the
  // server cannot accept meanwhile) queues 100 connections and resets them
  // (SO_LINGER 0), then a normal client must still be served promptly.
  test(
    "connections reset while still in the accept queue do not stall accepting",
    { skip: existsSync(SYSTEM_PYTHON) ? false : "needs /usr/bin/python3" },
    async () => {
      const errors: Error[] = [];
      await withServer({ onError: (e) => errors.push(e) }, echo, async (_server, port) => {
        const script = [
          "import socket, struct, sys",
          "socks = []",
          "for i in range(100):",
          "    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)",
          "    socks.append(s)",
          "for s in socks:",
          "    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))",
          "    s.close()",
        ].join("\n");
        // Synchronous: the server's event loop is blocked while they queue and reset.
        const run = spawnSync(SYSTEM_PYTHON, ["-c", script, String(port)], {
          encoding: "utf8",
          timeout: 20_000,
        });
        assert.equal(run.status, 0, run.stderr);
        const took = await within(assertServes(port, 5000), 8000, "a client after the resets");
        assert.ok(took < 2000, `a normal client waited ${took.toFixed(0)} ms behind the resets`);
        assert.deepEqual(errors.map((e) => e.message), [], "client resets are not server errors");
      });
    },
  );

  test("a client that upgrades and never reads: the server's output stays bounded", async () => {
    let closeCode = 0;
    let failedSends = 0;
    const closed = Promise.withResolvers<void>();
    await withServer({
      maxBufferedAmount: 256 * 1024,
      closeTimeout: 500,
      onError: () => {},
    }, {
      open(ws) {
        const chunk = new Uint8Array(64 * 1024);
        const timer = setInterval(() => {
          try {
            for (let i = 0; i < 16; i++) ws.send(chunk);
          } catch {
            failedSends++;
          }
          assert.ok(ws.bufferedAmount <= 256 * 1024 + 2 * 64 * 1024, `${ws.bufferedAmount}`);
          if (ws.readyState >= 2) clearInterval(timer);
        }, 10);
      },
      close(_ws, code) {
        closeCode = code;
        closed.resolve();
      },
      error() {},
    }, async (_server, port) => {
      const client = await RawClient.open(port);
      client.socket.pause(); // Never reads again.
      try {
        await within(closed.promise, 10_000, "the non-reading client is dropped");
        assert.equal(closeCode, 1008, "dropped for unsent output (1008)");
        void failedSends;
      } finally {
        client.destroy();
      }
    });
  });

  test("a half-open client (never answers pings) is failed with 1011 after pingTimeout", async () => {
    const codes: number[] = [];
    await withServer(
      { pingInterval: 200, pingTimeout: 300, closeTimeout: 300 },
      { close: (_ws, code) => void codes.push(code), error() {} },
      async (server, port) => {
        const client = await RawClient.open(port);
        try {
          // Reads (the kernel would), never answers: the frozen-laptop case.
          const ping = await client.expectFrame(2000);
          assert.equal(ping.opcode, Op.Ping);
          const { code } = await client.expectClose(3000);
          assert.equal(code, 1011);
          const deadline = performance.now() + 2000;
          while (server.stats().connections > 0 && performance.now() < deadline) await sleep(20);
          assert.equal(server.stats().connections, 0);
          assert.deepEqual(codes, [1011]);
        } finally {
          client.destroy();
        }
      },
    );
  });
});

// ---------------------------------------------------------------------------

describe("onUpgrade under hostile conditions", () => {
  test("HandshakeError: its status, message and headers are the answer; onError sees it", async () => {
    const errors: Error[] = [];
    await withServer(
      {
        onError: (e) => errors.push(e),
        onUpgrade() {
          throw new HandshakeError(429, "Slow down", { "Retry-After": "7" });
        },
      },
      echo,
      async (_server, port) => {
        const response = await request(port);
        assert.equal(response.status, 429);
        assert.equal(response.headers.get("retry-after"), "7");
        assert.equal(response.headers.get("connection"), "close");
        assert.match(response.body, /Slow down/);
        assert.equal(errors.length, 1);
        assert.ok(errors[0] instanceof HandshakeError);
      },
    );
  });

  test("a plain Error or a rejected promise answers 500 without its message; onError sees it", async () => {
    const errors: Error[] = [];
    let n = 0;
    await withServer(
      {
        onError: (e) => errors.push(e),
        onUpgrade() {
          if (n++ % 2 === 0) throw new Error("secret db password in message");
          return Promise.reject(new Error("async secret"));
        },
      },
      echo,
      async (_server, port) => {
        for (let i = 0; i < 2; i++) {
          const response = await request(port);
          assert.equal(response.status, 500);
          assert.doesNotMatch(response.body, /secret/);
        }
        assert.deepEqual(errors.map((e) => e.message), [
          "secret db password in message",
          "async secret",
        ]);
      },
    );
  });

  test("a hook slower than handshakeTimeout: 408, the socket closed, its late answer ignored", async () => {
    const watcher = watchUnhandledRejections();
    const opened: unknown[] = [];
    const hookDone = Promise.withResolvers<void>();
    let calls = 0;
    try {
      await withServer<string>(
        {
          handshakeTimeout: 400,
          onError: () => {},
          async onUpgrade() {
            calls++;
            await sleep(900);
            hookDone.resolve();
            if (calls === 1) return { data: "late" };
            throw new Error("late failure");
          },
        },
        { open: (ws) => void opened.push(ws.data) },
        async (server, port) => {
          for (let i = 0; i < 2; i++) {
            const client = await RawClient.connect(port);
            const started = performance.now();
            try {
              client.write(upgradeRequest(`${HOST}:${port}`));
              const response = await client.readResponse(3000);
              assert.equal(response.status, 408);
              assert.ok(performance.now() - started < 800);
              assert.ok(await client.waitForEnd(2000), "closed after the 408");
            } finally {
              client.destroy();
            }
          }
          await within(hookDone.promise, 3000, "the hook finishing");
          await sleep(1000);
          assert.deepEqual(opened, [], "a hook that answered too late opens nothing");
          assert.equal(server.connections.size, 0);
        },
      );
      assert.deepEqual(watcher.reasons, []);
    } finally {
      watcher.stop();
    }
  });

  test("a subprotocol the client did not offer is never selected (500)", async () => {
    await withServer(
      {
        onError: () => {},
        onUpgrade: () => ({ protocol: "admin" }),
      },
      echo,
      async (_server, port) => {
        const response = await request(port, { "Sec-WebSocket-Protocol": "chat" });
        assert.equal(response.status, 500);
        assert.equal(response.headers.get("sec-websocket-protocol"), null);
      },
    );
  });

  test("header values with CR/LF are refused (500), never written", async () => {
    const errors: Error[] = [];
    await withServer(
      {
        onError: (e) => errors.push(e),
        onUpgrade: () => ({ headers: { "X-Evil": "a\r\nX-Injected: 1" } }),
      },
      echo,
      async (_server, port) => {
        const response = await request(port);
        assert.equal(response.status, 500);
        assert.doesNotMatch(response.head, /x-injected/i);
        assert.equal(errors.length, 1);
      },
    );
  });

  // Regression: the hook's headers are appended to the 101 as they are, so it can
  // add a second Sec-WebSocket-Accept, `Connection: close`, another Upgrade,
  // a Sec-WebSocket-Protocol the client never offered (and the server never
  // selected: ws.protocol stays ""), a Sec-WebSocket-Extensions the server
  // does not run, or message framing (Content-Length) on a 101. RFC 6455
  // §4.1 makes the client fail such a handshake; the server should refuse
  // to write it (500 and onError, as for a bad subprotocol).
  for (
    const [name, value] of [
      ["Sec-WebSocket-Accept", "bogus"],
      ["Connection", "close"],
      ["Upgrade", "h2c"],
      ["Sec-WebSocket-Protocol", "evil"],
      ["Sec-WebSocket-Extensions", "permessage-deflate"],
      ["Content-Length", "5"],
    ]
  ) {
    test(`onUpgrade headers cannot set ${name} on the 101`, async () => {
      const errors: Error[] = [];
      await withServer(
        {
          onError: (e) => errors.push(e),
          onUpgrade: () => ({ headers: { [name]: value, "Set-Cookie": "a=1" } }),
        },
        echo,
        async (_server, port) => {
          const key = newKey();
          const client = await RawClient.connect(port);
          let head: string;
          try {
            client.write(upgradeRequest(`${HOST}:${port}`, { key }));
            head = await readHead(client);
          } finally {
            client.destroy();
          }
          if (!head.startsWith("HTTP/1.1 101 ")) {
            assert.match(head, /^HTTP\/1\.1 500 /);
            assert.equal(errors.length, 1, "reported to onError");
            return;
          }
          // If it is accepted at all, the handshake headers must be the server's alone.
          const lines = headerLines(head);
          const values = (n: string) => lines.filter(([k]) => k === n).map(([, v]) => v);
          assert.deepEqual(values("sec-websocket-accept"), [expectedAccept(key)], head);
          assert.deepEqual(values("connection"), ["Upgrade"], head);
          assert.deepEqual(values("upgrade"), ["websocket"], head);
          assert.deepEqual(values("sec-websocket-protocol"), [], head);
          assert.deepEqual(values("sec-websocket-extensions"), [], head);
          assert.deepEqual(values("content-length"), [], head);
        },
      );
    });
  }

  // Regression: `!decision` treats any falsy answer as "accept", and any other
  // non-object (a number, a string, `true`) is accepted too: a hook written
  // as `return isAllowed(request)` lets everybody in when it returns false.
  // The JSDoc allows nothing, an UpgradeDecision or a Response; anything
  // else should fail closed (500, onError).
  test("an onUpgrade answer that is not a decision (false, 0, a string) fails closed", async () => {
    const answers: unknown[] = [false, 0, "", "yes", 42, true];
    const errors: Error[] = [];
    let next = 0;
    const opened: number[] = [];
    await withServer(
      {
        onError: (e) => errors.push(e),
        onUpgrade: () => answers[next++] as undefined,
      },
      { open: () => void opened.push(next - 1) },
      async (_server, port) => {
        const statuses: Record<string, number> = {};
        for (const answer of answers) {
          statuses[JSON.stringify(answer)] = (await request(port)).status;
        }
        assert.deepEqual(
          statuses,
          Object.fromEntries(answers.map((a) => [JSON.stringify(a), 500])),
          `accepted after opening ${opened.length} connections`,
        );
        assert.equal(errors.length, answers.length);
      },
    );
  });

  // Regression: HandshakeError's status is written unchecked: 101 makes a
  // "101 Switching Protocols" that switches nothing (with Content-Length and
  // Connection: close), NaN makes "HTTP/1.1 NaN Error", 200 says success.
  // A status outside 400-599 should become 500 (reported as a fault).
  test("a HandshakeError with a status that is not an error answers a well-formed 4xx/5xx", async () => {
    const statuses = [101, Number.NaN, 200, 99999];
    let next = 0;
    await withServer(
      {
        onError: () => {},
        onUpgrade() {
          throw new HandshakeError(statuses[next++], "nope");
        },
      },
      echo,
      async (_server, port) => {
        for (const status of statuses) {
          const client = await RawClient.connect(port);
          try {
            client.write(upgradeRequest(`${HOST}:${port}`));
            const head = (await client.readBytes(12, 3000)).reduce(
              (s, b) => s + String.fromCharCode(b),
              "",
            );
            assert.match(
              head,
              /^HTTP\/1\.1 [45]\d\d$/,
              `HandshakeError(${status}) answered ${head}`,
            );
          } finally {
            client.destroy();
          }
        }
      },
    );
  });

  // Regression: buildErrorResponse drops Content-Length and Connection from the
  // application's headers but not Transfer-Encoding, then adds its own
  // Content-Length: a response with both (RFC 9112 §6.1: a sender MUST
  // NOT), which a client reads as chunked, and which is how responses get
  // desynchronized behind a proxy.
  test("an error answer never carries both Transfer-Encoding and Content-Length", async () => {
    let next = 0;
    await withServer(
      {
        onError: () => {},
        onUpgrade() {
          if (next++ === 0) {
            throw new HandshakeError(401, "who?", { "Transfer-Encoding": "chunked" });
          }
          return new Response("moved", {
            status: 302,
            headers: { Location: "/elsewhere", "Transfer-Encoding": "chunked" },
          });
        },
      },
      echo,
      async (_server, port) => {
        for (const expected of [401, 302]) {
          const response = await request(port);
          assert.equal(response.status, expected);
          assert.equal(response.headers.get("transfer-encoding"), null, response.head);
        }
      },
    );
  });
});

// ---------------------------------------------------------------------------

describe("shutdown", () => {
  test("1001 to all, waits for replies, drops the mute at closeTimeout; idempotent; refuses new", async () => {
    const server = await serve({ port: 0, hostname: HOST, closeTimeout: 500 }, echo);
    const port = server.addr.port;
    const polite = await RawClient.open(port);
    const mute = await RawClient.open(port);
    const deaf = await RawClient.open(port);
    deaf.socket.pause();
    let finishedCount = 0;
    server.finished.then(() => finishedCount++);
    try {
      const started = performance.now();
      const first = server.shutdown();
      const second = server.shutdown({ code: 4000, reason: "ignored" });
      assert.equal(first, second, "later calls return the first call's promise");
      const closeOfPolite = await polite.expectClose(2000);
      assert.equal(closeOfPolite.code, 1001);
      polite.write(closeFrame(1001));
      assert.equal((await mute.expectClose(2000)).code, 1001);
      // New connections are refused (or reset at once).
      const refused = await new Promise<boolean>((resolve) => {
        const socket = net.connect({ port, host: HOST });
        socket.on("error", () => resolve(true));
        socket.on("close", () => resolve(true));
        socket.on("data", () => resolve(false));
        socket.on("connect", () => socket.write(upgradeRequest(`${HOST}:${port}`)));
        setTimeout(() => resolve(false), 2000);
      });
      assert.ok(refused, "a connection during shutdown is not served");
      assert.ok(await polite.waitForEnd(1000), "the polite client's close is answered by EOF");
      await within(first, 3000, "shutdown");
      const took = performance.now() - started;
      assert.ok(took >= 400 && took < 2000, `shutdown took ${took.toFixed(0)} ms`);
      assert.ok(await mute.waitForEnd(1000), "the mute client was dropped");
      deaf.socket.resume(); // A paused node:net socket reports no EOF.
      assert.ok(await deaf.waitForEnd(1000), "the client that never reads was dropped");
      await sleep(50);
      assert.equal(finishedCount, 1);
      assert.equal(server.stats().connections, 0);
      await within(server.shutdown(), 1000, "shutdown after shutdown");
    } finally {
      polite.destroy();
      mute.destroy();
      deaf.destroy();
    }
  });

  test("handshakes and onUpgrade hooks in flight at shutdown: closed, nothing opens later", async () => {
    const watcher = watchUnhandledRejections();
    const gate = Promise.withResolvers<void>();
    const opened: string[] = [];
    try {
      const server = await serve<string>({
        port: 0,
        hostname: HOST,
        async onUpgrade() {
          await gate.promise;
          return { data: "late" };
        },
      }, { open: (ws) => void opened.push(ws.data) });
      const port = server.addr.port;
      const partial = await RawClient.connect(port);
      partial.write("GET / HTTP/1.1\r\nHost: x\r\n");
      const waiting = await RawClient.connect(port);
      waiting.write(upgradeRequest(`${HOST}:${port}`));
      await sleep(100);
      try {
        await within(server.shutdown(), 2000, "shutdown with a hook pending");
        assert.ok(await partial.waitForEnd(1000));
        assert.ok(await waiting.waitForEnd(1000));
        gate.resolve();
        await sleep(100);
        assert.deepEqual(opened, []);
        assert.equal(server.connections.size, 0);
        assert.ok(!waiting.error || waiting.buffered === 0);
      } finally {
        partial.destroy();
        waiting.destroy();
      }
      assert.deepEqual(watcher.reasons, []);
    } finally {
      watcher.stop();
    }
  });

  test("shutdown from inside a message handler closes every connection, the caller's too", async () => {
    let server: Server | null = null;
    let shutdown: Promise<void> | null = null;
    const codes: number[] = [];
    server = await serve({ port: 0, hostname: HOST, closeTimeout: 1000 }, {
      message(_ws, data) {
        if (data === "stop") shutdown = server!.shutdown({ code: 1012, reason: "restart" });
      },
      close: (_ws, code) => void codes.push(code),
    });
    const port = server.addr.port;
    const a = await RawClient.open(port);
    const b = await RawClient.open(port);
    try {
      a.write(buildFrame({ opcode: Op.Text, payload: "stop" }));
      for (const client of [a, b]) {
        const { code, reason } = await client.expectClose(2000);
        assert.deepEqual([code, reason], [1012, "restart"]);
        client.write(closeFrame(1012));
      }
      await sleep(10);
      assert.ok(shutdown !== null);
      await within(shutdown!, 2000, "shutdown started by a handler");
      assert.deepEqual(codes, [1012, 1012]);
    } finally {
      a.destroy();
      b.destroy();
      await within(server.shutdown(), 3000, "shutdown");
    }
  });
});

// ---------------------------------------------------------------------------

describe("user code errors under load", () => {
  test("open and message handlers throwing for some of 60 connections leave the others alone", async () => {
    const reported: Error[] = [];
    let n = 0;
    await withServer<number>({
      onError: (e) => reported.push(e),
      onUpgrade: () => ({ data: n++ }),
    }, {
      open(ws) {
        if (ws.data % 3 === 0) throw new Error(`open ${ws.data}`);
      },
      message(ws, data) {
        if (ws.data % 3 === 1) throw new Error(`message ${ws.data}`);
        ws.send(data);
      },
    }, async (server, port) => {
      const clients = await Promise.all(Array.from({ length: 60 }, () => RawClient.open(port)));
      try {
        const results = await Promise.all(clients.map(async (client, i) => {
          if (i % 3 === 0) {
            const { code } = await client.expectClose(3000);
            client.write(closeFrame(code));
            return code;
          }
          client.write(buildFrame({ opcode: Op.Text, payload: `m${i}` }));
          const frame = await client.expectFrame(3000);
          if (frame.opcode === Op.Close) {
            client.write(closeFrame(1011));
            return (frame.payload[0] << 8) | frame.payload[1];
          }
          // Several rounds for the healthy ones, while the others fail.
          for (let r = 0; r < 5; r++) await assertEchoes(client, `m${i}.${r}`);
          return 0;
        }));
        // Connection i got data i (opened in order, one at a time per client).
        const expected = results.map((_, i) => (i % 3 === 2 ? 0 : 1011));
        assert.deepEqual([...results].sort(), [...expected].sort());
        assert.equal(reported.length, 40);
        await waitUntil(() => server.stats().connections === 20, 3000);
        assert.equal(server.stats().connections, 20);
      } finally {
        for (const client of clients) client.destroy();
      }
    });
  });
});

// ---------------------------------------------------------------------------

const tlsSkip = opensslSkipReason("the TLS server tests");

describe("TLS server", { skip: tlsSkip ?? false }, () => {
  test("plaintext HTTP on the TLS port is closed at once, and TLS clients still connect", async () => {
    const certs = makeTestCerts();
    try {
      await withServer(
        { tls: { cert: certs.cert, key: certs.key }, handshakeTimeout: 5000, onError: () => {} },
        echo,
        async (_server, port) => {
          const client = await RawClient.connect(port);
          const started = performance.now();
          try {
            client.write(upgradeRequest(`${HOST}:${port}`));
            assert.ok(await client.waitForEnd(2000), "a plaintext client is dropped");
            assert.ok(performance.now() - started < 2000);
            assert.doesNotMatch(
              new TextDecoder().decode(await client.readBytes(client.buffered, 100)),
              /101 Switching/,
            );
          } finally {
            client.destroy();
          }
          const { connect } = await import("../../mod.ts");
          const ws = await connect(`wss://localhost:${port}/`, { caCerts: [certs.ca] });
          const reader = ws.readable.getReader();
          ws.send("over tls");
          assert.equal((await within(reader.read(), 3000, "echo")).value, "over tls");
          ws.close();
          await ws.closed;
        },
      );
    } finally {
      certs.cleanup();
    }
  });

  // Regression (Deno): the Deno adapter's node:tls createSecureContext() takes
  // any string without checking it, so serve() resolves with a "wss://" URL
  // that can never complete a TLS handshake (every client sees an unexpected
  // EOF, the server reports nothing). Bun rejects at serve() time with the
  // OpenSSL error; both should.
  test("invalid TLS material is rejected at serve() time, naming the problem", async () => {
    const certs = makeTestCerts();
    const other = makeTestCerts("Another CA");
    try {
      const cases: [string, { cert: string; key: string }][] = [
        ["garbage certificate", { cert: "garbage", key: certs.key }],
        ["garbage key", { cert: certs.cert, key: "garbage" }],
        ["key that does not match", { cert: certs.cert, key: other.key }],
        ["cert and key swapped", { cert: certs.key, key: certs.cert }],
      ];
      const outcomes: Record<string, string> = {};
      for (const [label, tls] of cases) {
        try {
          const server = await serve({ port: 0, hostname: HOST, tls }, echo);
          await server.shutdown();
          outcomes[label] = "served";
        } catch (error) {
          outcomes[label] = "rejected";
          assert.ok(error instanceof TypeError, `${label}: ${error}`);
          assert.match(error.message, /TLS (certificate|private key)/, label);
        }
      }
      assert.deepEqual(outcomes, Object.fromEntries(cases.map(([l]) => [l, "rejected"])));
    } finally {
      certs.cleanup();
      other.cleanup();
    }
  });

  test("missing certificate files are rejected at serve() with the path", async () => {
    await assert.rejects(
      serve({
        port: 0,
        hostname: HOST,
        tls: { certFile: "/nonexistent/sluice-cert.pem", keyFile: "/nonexistent/sluice-key.pem" },
      }, echo),
      /ENOENT.*nonexistent\/sluice-/,
    );
  });
});

// ---------------------------------------------------------------------------

describe("listen errors", () => {
  test("a port already in use rejects with EADDRINUSE; the first server is unharmed", async () => {
    await withServer({}, echo, async (_server, port) => {
      const error = await serve({ port, hostname: HOST }, echo).then(
        async (s) => {
          await s.shutdown();
          return null;
        },
        (e: unknown) => e as Error & { code?: string },
      );
      assert.ok(error !== null, "the second serve() on the same port must fail");
      assert.ok(
        error.code === "EADDRINUSE" || error.name === "AddrInUse" || /in use/i.test(error.message),
        `unclear error: ${error.name}: ${error.message}`,
      );
      await assertServes(port);
    });
  });

  test("a port that is not an integer from 0 to 65535 is a RangeError before listening", async () => {
    for (const port of ["80", 70_000, -1, 1.5, Number.NaN]) {
      await assert.rejects(
        serve({ port: port as number, hostname: HOST }, echo),
        RangeError,
        `port ${String(port)}`,
      );
    }
  });

  test("an out-of-range port or an unresolvable hostname rejects", async () => {
    for (
      const options of [
        { port: 70000, hostname: HOST },
        { port: -1, hostname: HOST },
        { port: 0, hostname: "999.1.1.1" },
      ]
    ) {
      await assert.rejects(
        within(
          serve(options, echo).then(async (s) => {
            await s.shutdown();
            throw new assert.AssertionError({ message: `served ${JSON.stringify(options)}` });
          }).catch((e) => {
            if (e instanceof assert.AssertionError) throw e;
            throw new Error(`rejected: ${e}`);
          }),
          10_000,
          "serve()",
        ),
        /rejected/,
      );
    }
  });

  test("server.url and addr name the bound port", async () => {
    await withServer({}, echo, (server, port) => {
      assert.ok(port > 0);
      assert.equal(server.url, `ws://${HOST}:${port}/`);
      assert.equal(server.addr.hostname, HOST);
      return Promise.resolve();
    });
  });
});
