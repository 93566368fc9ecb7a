/**
 * The server's opening handshake over real loopback sockets (RFC 6455 §4.2):
 * what a client that gets it right receives, what each mistake is answered
 * with, the limits and timeouts that protect the server, subprotocol
 * selection and the `onUpgrade` hook.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { HandshakeError, type WebSocketConnection } from "../../mod.ts";
import type { UpgradeRequestInfo } from "../../mod.ts";
import {
  buildFrame,
  expectedAccept,
  newKey,
  Op,
  RawClient,
  sleep,
  upgradeRequest,
  type UpgradeRequestOptions,
  utf8,
  within,
} from "./_raw_client.ts";

import { echo, withServer } from "./_server.ts";

const HOST = "127.0.0.1";

/** Sends one request (altered as asked) on a new connection and reads the answer. */
async function request(port: number, options: UpgradeRequestOptions = {}) {
  const client = await RawClient.connect(port);
  try {
    client.write(upgradeRequest(`${HOST}:${port}`, options));
    return await client.readResponse();
  } finally {
    client.destroy();
  }
}

/** Asserts an error response: its status, and a short text body that names the problem. */
function assertRejected(
  response: Awaited<ReturnType<typeof request>>,
  status: number,
  names: RegExp,
): void {
  assert.equal(response.status, status, `expected ${status}, got: ${response.head}`);
  assert.match(response.body, names);
  assert.ok(response.body.length < 200, `body is not short: ${response.body}`);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain/);
  assert.equal(response.headers.get("sec-websocket-accept"), null);
}

/** Sends a masked text frame and expects it echoed unmasked. */
async function assertEchoes(client: RawClient, text: string): Promise<void> {
  client.write(buildFrame({ opcode: Op.Text, payload: text }));
  const frame = await client.expectFrame();
  assert.equal(frame.opcode, Op.Text);
  assert.equal(frame.masked, false, "server frames must not be masked");
  assert.equal(new TextDecoder().decode(frame.payload), text);
}

describe("server handshake: a valid request", () => {
  test("gets 101 with the correct Sec-WebSocket-Accept, and the connection works", async () => {
    await withServer({}, echo, async (_server, port) => {
      // The RFC's own example key (§1.3) and a random one, checked with node:crypto.
      for (const key of ["dGhlIHNhbXBsZSBub25jZQ==", newKey()]) {
        const client = await RawClient.connect(port);
        try {
          client.write(upgradeRequest(`${HOST}:${port}`, { key }));
          const response = await client.readResponse();
          assert.equal(response.status, 101, response.head);
          assert.equal(response.headers.get("sec-websocket-accept"), expectedAccept(key));
          assert.equal(response.headers.get("upgrade")?.toLowerCase(), "websocket");
          assert.match(response.headers.get("connection") ?? "", /^upgrade$/i);
          assert.equal(response.headers.get("sec-websocket-protocol"), null);
          await assertEchoes(client, "after the handshake");
        } finally {
          client.destroy();
        }
      }
      assert.equal(
        expectedAccept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
        "the test's own accept computation matches RFC 6455 §1.3",
      );
    });
  });

  test("accepts header names and tokens in any case, and Connection as a list", async () => {
    await withServer({}, echo, async (_server, port) => {
      const key = newKey();
      const client = await RawClient.connect(port);
      try {
        client.write(
          `GET /chat HTTP/1.1\r\nhOsT: ${HOST}:${port}\r\nUPGRADE: WebSocket\r\n` +
            `connection: keep-alive, Upgrade\r\nSEC-WEBSOCKET-KEY: ${key}\r\n` +
            `sec-websocket-version: 13\r\n\r\n`,
        );
        const response = await client.readResponse();
        assert.equal(response.status, 101, `${response.head}${response.body}`);
        assert.equal(response.headers.get("sec-websocket-accept"), expectedAccept(key));
        await assertEchoes(client, "case does not matter");
      } finally {
        client.destroy();
      }
      for (const connection of ["upgrade", "Upgrade, keep-alive", "keep-alive,UPGRADE"]) {
        const response = await request(port, { headers: { Connection: connection } });
        assert.equal(response.status, 101, `Connection: ${connection} → ${response.head}`);
      }
    });
  });

  test("processes frames sent in the same write as the request", async () => {
    await withServer({}, echo, async (_server, port) => {
      const client = await RawClient.connect(port);
      try {
        const first = buildFrame({ opcode: Op.Text, payload: "first" });
        const ping = buildFrame({ opcode: Op.Ping, payload: "p" });
        const second = buildFrame({ opcode: Op.Binary, payload: new Uint8Array([1, 2, 3]) });
        const head = utf8(upgradeRequest(`${HOST}:${port}`));
        const all = new Uint8Array(head.length + first.length + ping.length + second.length);
        all.set(head);
        all.set(first, head.length);
        all.set(ping, head.length + first.length);
        all.set(second, head.length + first.length + ping.length);
        client.write(all);
        const response = await client.readResponse();
        assert.equal(response.status, 101);
        const frames = [
          await client.expectFrame(),
          await client.expectFrame(),
          await client.expectFrame(),
        ];
        assert.deepEqual(
          frames.map((f) => [f.opcode, Array.from(f.payload)]),
          [[Op.Text, Array.from(utf8("first"))], [Op.Pong, [0x70]], [Op.Binary, [1, 2, 3]]],
        );
      } finally {
        client.destroy();
      }
    });
  });
});

describe("server handshake: rejected requests", () => {
  test("a method other than GET gets 405", async () => {
    await withServer({}, echo, async (_server, port) => {
      const response = await request(port, { method: "POST" });
      assertRejected(response, 405, /GET/);
      assert.equal(response.headers.get("allow"), "GET");
    });
  });

  test("HTTP/1.0 gets 400 asking for HTTP/1.1", async () => {
    await withServer({}, echo, async (_server, port) => {
      assertRejected(await request(port, { version: "HTTP/1.0" }), 400, /HTTP\/1\.1/);
    });
  });

  test("a missing Host header gets 400", async () => {
    await withServer({}, echo, async (_server, port) => {
      assertRejected(await request(port, { headers: { Host: null } }), 400, /Host/);
    });
  });

  test("a request that asks for no WebSocket upgrade gets 426 Upgrade: websocket", async () => {
    // Without a fetch option the port only speaks WebSocket: a browser
    // pointed at it is told what it is (RFC 9110 §15.5.22).
    await withServer({}, echo, async (_server, port) => {
      for (const upgrade of [null, "h2c"]) {
        const response = await request(port, { headers: { Upgrade: upgrade } });
        assertRejected(response, 426, /websocket/i);
        assert.equal(response.headers.get("upgrade"), "websocket");
      }
    });
  });

  test("a Connection header without the Upgrade token gets 400", async () => {
    await withServer({}, echo, async (_server, port) => {
      assertRejected(await request(port, { headers: { Connection: null } }), 400, /Connection/);
      const response = await request(port, { headers: { Connection: "keep-alive" } });
      assertRejected(response, 400, /Connection/);
      // A token that merely contains "upgrade" is not the Upgrade token.
      const lookalike = await request(port, { headers: { Connection: "upgrades" } });
      assertRejected(lookalike, 400, /Connection/);
    });
  });

  test("a Sec-WebSocket-Key that is not base64 of 16 bytes gets 400", async () => {
    await withServer({}, echo, async (_server, port) => {
      const response = await request(port, { headers: { "Sec-WebSocket-Key": null } });
      assertRejected(response, 400, /Sec-WebSocket-Key/);
      const bad = [
        "not base64 at all!!",
        Buffer.from(new Uint8Array(15)).toString("base64"), // 15 bytes
        Buffer.from(new Uint8Array(17)).toString("base64"), // 17 bytes
        "dGhlIHNhbXBsZSBub25jZQ", // unpadded
      ];
      for (const key of bad) {
        const answer = await request(port, { headers: { "Sec-WebSocket-Key": key } });
        assertRejected(answer, 400, /Sec-WebSocket-Key/);
      }
    });
  });

  test("another Sec-WebSocket-Version gets 426 naming version 13; none gets 400", async () => {
    await withServer({}, echo, async (_server, port) => {
      for (const version of ["8", "12", "14"]) {
        const response = await request(port, { headers: { "Sec-WebSocket-Version": version } });
        assertRejected(response, 426, /13/);
        assert.equal(response.headers.get("sec-websocket-version"), "13");
      }
      const missing = await request(port, { headers: { "Sec-WebSocket-Version": null } });
      assertRejected(missing, 400, /Sec-WebSocket-Version/);
    });
  });

  test("an Origin outside allowedOrigins gets 403; listed or absent ones are accepted", async () => {
    const options = { allowedOrigins: ["https://good.example"] };
    await withServer(options, echo, async (_server, port) => {
      const denied = await request(port, { headers: { Origin: "https://evil.example" } });
      assertRejected(denied, 403, /evil\.example|[Oo]rigin/);
      const allowed = await request(port, { headers: { Origin: "https://good.example" } });
      assert.equal(allowed.status, 101);
      assert.equal((await request(port)).status, 101, "a request without Origin is allowed");
    });
  });

  test("reports failed handshakes to onError with their status", async () => {
    const errors: Error[] = [];
    await withServer({ onError: (error) => errors.push(error) }, echo, async (_server, port) => {
      await request(port, { method: "PUT" });
    });
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof HandshakeError);
    assert.equal((errors[0] as HandshakeError).status, 405);
  });
});

describe("server handshake: limits", () => {
  test("a head of exactly maxHandshakeSize bytes is accepted, one byte more gets 431", async () => {
    const limit = 1024;
    await withServer({ maxHandshakeSize: limit }, echo, async (_server, port) => {
      const base = upgradeRequest(`${HOST}:${port}`, { headers: { "X-Pad": "" } });
      const padding = (n: number) => "x".repeat(n);
      const exact = upgradeRequest(`${HOST}:${port}`, {
        headers: { "X-Pad": padding(limit - base.length) },
      });
      assert.equal(exact.length, limit);
      const ok = await RawClient.connect(port);
      try {
        ok.write(exact);
        assert.equal((await ok.readResponse()).status, 101);
        await assertEchoes(ok, "fits");
      } finally {
        ok.destroy();
      }

      const over = await RawClient.connect(port);
      try {
        over.write(upgradeRequest(`${HOST}:${port}`, {
          headers: { "X-Pad": padding(limit - base.length + 1) },
        }));
        const response = await over.readResponse();
        assertRejected(response, 431, /limit|large|1024/i);
        assert.ok(await over.waitForEnd(5000), "the server closes the connection after 431");
      } finally {
        over.destroy();
      }
    });
  });

  test("a client streaming an endless head gets 431 and is disconnected", async () => {
    await withServer({ maxHandshakeSize: 4096 }, echo, async (_server, port) => {
      const client = await RawClient.connect(port);
      try {
        client.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n`);
        // Keep sending header lines; the server must stop us, not buffer them all.
        let sent = 0;
        const writer = (async () => {
          while (!client.ended && sent < 8 * 1024 * 1024) {
            client.write(`X-Filler-${sent}: ${"y".repeat(1000)}\r\n`);
            sent += 1024;
            await sleep(1);
          }
        })();
        const response = await client.readResponse(5000);
        assert.equal(response.status, 431);
        assert.ok(await client.waitForEnd(5000), "the server closes the connection");
        await within(writer, 5000, "filler writer to stop");
        assert.ok(sent < 8 * 1024 * 1024, "the server kept accepting head bytes");
      } finally {
        client.destroy();
      }
    });
  });

  test("a client that never finishes its handshake is dropped after handshakeTimeout", async () => {
    const handshakeTimeout = 300;
    await withServer({ handshakeTimeout }, echo, async (_server, port) => {
      const silent = await RawClient.connect(port);
      const partial = await RawClient.connect(port);
      const trickle = await RawClient.connect(port);
      const started = performance.now();
      try {
        partial.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nUpgrade: websocket\r\n`);
        // A slow client sending a byte every 50 ms never has a quiet period, yet
        // the timeout covers the whole handshake.
        const trickling = (async () => {
          const text = upgradeRequest(`${HOST}:${port}`);
          for (let i = 0; i < text.length - 4 && !trickle.ended; i++) {
            trickle.write(text[i]);
            await sleep(50);
          }
        })();
        for (
          const [name, client] of [["silent", silent], ["partial", partial], [
            "trickle",
            trickle,
          ]] as const
        ) {
          assert.ok(await client.waitForEnd(5000), `${name} client was not dropped`);
          const after = client.endedAt! - started;
          assert.ok(after >= handshakeTimeout - 50, `${name} dropped too early: ${after} ms`);
          assert.ok(after < 3000, `${name} dropped only after ${after} ms`);
          // It is told why before being dropped.
          const response = await client.readResponse(100);
          assert.equal(response.status, 408, `${name}: ${response.head}`);
        }
        await within(trickling, 10_000, "trickling writer");
      } finally {
        silent.destroy();
        partial.destroy();
        trickle.destroy();
      }
    });
  });
});

describe("server handshake: connection URLs", () => {
  test("each connection's url is the one it asked for, over many distinct URLs", async () => {
    const urls: string[] = [];
    await withServer({}, {
      open(ws) {
        urls.push(ws.url);
      },
    }, async (_server, port) => {
      const asked: string[] = [];
      // More distinct URLs than the server keeps strings for, then repeats.
      const targets = [
        ...Array.from({ length: 300 }, (_, i) => ({ host: HOST, path: `/room/${i}?q=${i}` })),
        { host: "localhost", path: "/room/1?q=1" },
        { host: HOST, path: "/" },
        { host: HOST, path: "/room/1?q=1" },
      ];
      for (const { host, path } of targets) {
        const client = await RawClient.connect(port);
        try {
          client.write(upgradeRequest(`${host}:${port}`, { path }));
          assert.equal((await client.readResponse()).status, 101);
          asked.push(`ws://${host}:${port}${path}`);
        } finally {
          client.destroy();
        }
      }
      assert.deepEqual(urls, asked);
    });
  });
});

describe("server handshake: deadlines", () => {
  test("each handshake gets its own full handshakeTimeout; opened connections are untouched", async () => {
    const handshakeTimeout = 600;
    await withServer({ handshakeTimeout }, echo, async (_server, port) => {
      const stalled: { client: RawClient; started: number }[] = [];
      const opened: RawClient[] = [];
      try {
        // Three stalled clients 200 ms apart, with a complete handshake in between each.
        for (let i = 0; i < 3; i++) {
          const client = await RawClient.connect(port);
          stalled.push({ client, started: performance.now() });
          client.write(`GET / HTTP/1.1\r\nHost: ${HOST}:${port}\r\n`);
          const ok = await RawClient.connect(port);
          ok.write(upgradeRequest(`${HOST}:${port}`));
          assert.equal((await ok.readResponse()).status, 101);
          opened.push(ok);
          await sleep(200);
        }
        for (const [i, { client, started }] of stalled.entries()) {
          assert.ok(await client.waitForEnd(5000), `stalled client ${i} was not dropped`);
          const after = client.endedAt! - started;
          assert.ok(after >= handshakeTimeout - 50, `client ${i} dropped after ${after} ms`);
          assert.ok(after < handshakeTimeout + 1000, `client ${i} dropped only after ${after} ms`);
          assert.equal((await client.readResponse(100)).status, 408);
        }
        // Past every deadline, the opened connections still echo.
        for (const ok of opened) {
          assert.ok(!ok.ended, "an opened connection was dropped");
          ok.write(buildFrame({ opcode: Op.Text, payload: "still here" }));
          const frame = await ok.expectFrame(2000);
          assert.equal(Buffer.from(frame.payload).toString(), "still here");
        }
        // A handshake started after all that still gets its full time.
        const late = await RawClient.connect(port);
        const lateStart = performance.now();
        late.write(`GET / HTTP/1.1\r\n`);
        assert.ok(await late.waitForEnd(5000), "the late client was not dropped");
        assert.ok(late.endedAt! - lateStart >= handshakeTimeout - 50, "late client dropped early");
        late.destroy();
      } finally {
        for (const { client } of stalled) client.destroy();
        for (const ok of opened) ok.destroy();
      }
    });
  });
});

describe("server handshake: subprotocols", () => {
  async function offered(port: number, offer: string | null) {
    const client = await RawClient.connect(port);
    const headers: Record<string, string> = offer === null
      ? {}
      : { "Sec-WebSocket-Protocol": offer };
    client.write(upgradeRequest(`${HOST}:${port}`, { headers }));
    const response = await client.readResponse();
    return { client, response };
  }

  test("a server list selects the first offered one it supports, never another", async () => {
    const seen: string[] = [];
    const options = { protocols: ["chat.v2", "chat.v1"] };
    await withServer(options, (ws: WebSocketConnection) => {
      seen.push(ws.protocol);
    }, async (_server, port) => {
      const cases: [string | null, string | null][] = [
        ["chat.v1, chat.v2", "chat.v1"],
        ["other, chat.v2", "chat.v2"],
        ["chat.v3", null],
        [null, null],
      ];
      for (const [offer, expected] of cases) {
        const { client, response } = await offered(port, offer);
        try {
          assert.equal(response.status, 101);
          assert.equal(
            response.headers.get("sec-websocket-protocol"),
            expected,
            `offer ${offer}`,
          );
        } finally {
          client.destroy();
        }
      }
      await sleep(50);
      assert.deepEqual(seen, ["chat.v1", "chat.v2", "", ""]);
    });
  });

  test("a selector function chooses among the offered ones", async () => {
    const calls: string[][] = [];
    const options = {
      protocols: (offer: string[], info: UpgradeRequestInfo) => {
        calls.push(offer);
        if (info.url.pathname === "/bogus") return "never-offered";
        return offer.includes("b") ? "b" : null;
      },
    };
    const errors: Error[] = [];
    await withServer({ ...options, onError: (e) => errors.push(e) }, echo, async (_s, port) => {
      const { client, response } = await offered(port, "a, b, c");
      client.destroy();
      assert.equal(response.status, 101);
      assert.equal(response.headers.get("sec-websocket-protocol"), "b");

      const none = await offered(port, "a, c");
      none.client.destroy();
      assert.equal(none.response.status, 101);
      assert.equal(none.response.headers.get("sec-websocket-protocol"), null);
      assert.deepEqual(calls, [["a", "b", "c"], ["a", "c"]]);

      // A selector that picks something the client never offered is a server
      // bug: the handshake must not go through with that protocol.
      const bogusClient = await RawClient.connect(port);
      try {
        bogusClient.write(upgradeRequest(`${HOST}:${port}`, {
          path: "/bogus",
          headers: { "Sec-WebSocket-Protocol": "a" },
        }));
        const bogus = await bogusClient.readResponse();
        assert.notEqual(bogus.headers.get("sec-websocket-protocol"), "never-offered");
        assert.notEqual(bogus.status, 101);
        assert.equal(errors.length, 1, "the selector's mistake is reported to onError");
      } finally {
        bogusClient.destroy();
      }
    });
  });
});

describe("server handshake: onUpgrade", () => {
  test("throwing HandshakeError(401) answers 401 with its message and headers", async () => {
    const options = {
      onUpgrade(info: UpgradeRequestInfo) {
        if (info.url.searchParams.get("token") !== "secret") {
          throw new HandshakeError(401, "Invalid token", { "WWW-Authenticate": "Bearer" });
        }
      },
    };
    await withServer(options, echo, async (_server, port) => {
      const denied = await request(port, { path: "/?token=wrong" });
      assertRejected(denied, 401, /Invalid token/);
      assert.equal(denied.headers.get("www-authenticate"), "Bearer");
      assert.equal((await request(port, { path: "/?token=secret" })).status, 101);
    });
  });

  test("returning a Response answers with its status and body", async () => {
    const options = {
      onUpgrade: async () => {
        await sleep(1);
        return new Response("Slow down", { status: 429, headers: { "Retry-After": "7" } });
      },
    };
    await withServer(options, echo, async (_server, port) => {
      const response = await request(port);
      assert.equal(response.status, 429);
      assert.equal(response.body.trim(), "Slow down");
      assert.equal(response.headers.get("retry-after"), "7");
      assert.equal(response.headers.get("sec-websocket-accept"), null);
    });
  });

  test("sees the request, attaches data as ws.data, and adds response headers", async () => {
    let seen: UpgradeRequestInfo | undefined;
    let clientPort: number | undefined;
    const opened: { data: unknown; url: string; auth: string | null }[] = [];
    const options = {
      onUpgrade(info: UpgradeRequestInfo) {
        seen = info;
        return {
          data: { user: info.headers.get("authorization")?.replace("Bearer ", "") },
          headers: { "Set-Cookie": "session=abc; HttpOnly", "X-Server": "sluice-test" },
        };
      },
    };
    await withServer<{ user?: string }>(options, {
      open(ws) {
        opened.push({ data: ws.data, url: ws.url, auth: ws.handshakeHeaders.get("authorization") });
      },
      message(ws, data) {
        ws.send(`${ws.data.user}:${data}`);
      },
    }, async (_server, port) => {
      const client = await RawClient.connect(port);
      try {
        client.write(upgradeRequest(`${HOST}:${port}`, {
          path: "/room/7?x=1",
          headers: { Authorization: "Bearer alice", Origin: "https://app.example" },
        }));
        const response = await client.readResponse();
        assert.equal(response.status, 101);
        assert.equal(response.headers.get("set-cookie"), "session=abc; HttpOnly");
        assert.equal(response.headers.get("x-server"), "sluice-test");
        client.write(buildFrame({ opcode: Op.Text, payload: "hi" }));
        const reply = await client.expectFrame();
        assert.equal(
          new TextDecoder().decode(reply.payload),
          "alice:hi",
          "ws.data reaches handlers",
        );
        clientPort = client.socket.localPort;
      } finally {
        client.destroy();
      }
      assert.ok(seen !== undefined);
      assert.equal(seen.url.pathname, "/room/7");
      assert.equal(seen.url.searchParams.get("x"), "1");
      assert.equal(seen.url.host, `${HOST}:${port}`);
      assert.equal(seen.headers.get("authorization"), "Bearer alice");
      assert.equal(seen.origin, "https://app.example");
      assert.equal(seen.remoteAddr.hostname, HOST);
      assert.equal(seen.remoteAddr.port, clientPort);
      assert.deepEqual(opened.map((o) => o.data), [{ user: "alice" }]);
      assert.match(opened[0].url, /^ws:\/\/127\.0\.0\.1:\d+\/room\/7\?x=1$/);
    });
  });
});
