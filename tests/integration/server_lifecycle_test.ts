/**
 * The server under faults, over real loopback sockets: which connections
 * `server.connections` lists, clients that reset in the handshake, the TLS
 * handshake deadline, untrusted handshake hooks, `shutdown()` options, the
 * start-up check of node:zlib, and the accept loop's back-off.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import * as zlib from "node:zlib";
import { connect, HandshakeError, serve, WebSocket } from "../../mod.ts";
import type { Server } from "../../mod.ts";
import { acceptLoop } from "../../src/server.ts";
import type { Listener, Transport } from "../../src/runtime/transport.ts";
import { buildFrame, closeFrame, Op, RawClient, upgradeRequest } from "./_raw_client.ts";
import { delay, test, within } from "../_watch.ts";
import { makeTestCerts, opensslSkipReason } from "../_certs.ts";

import { echo, withServer } from "./_server.ts";

const HOST = "127.0.0.1";
const decoder = new TextDecoder();

/** Polls `condition` every 10 ms for up to `ms`; returns whether it came true. */
async function eventually(condition: () => boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) return false;
    await delay(10);
  }
  return true;
}

async function request(port: number, options: Parameters<typeof upgradeRequest>[1] = {}) {
  const client = await RawClient.connect(port);
  try {
    client.write(upgradeRequest(`${HOST}:${port}`, options));
    return await client.readResponse();
  } finally {
    client.destroy();
  }
}

async function assertEchoes(client: RawClient, text: string): Promise<void> {
  client.write(buildFrame({ opcode: Op.Text, payload: text }));
  const frame = await client.expectFrame();
  assert.equal(decoder.decode(frame.payload), text);
}

describe("server.connections lists only open connections", () => {
  test("30 clients that reset right after their request leave no trace", async () => {
    const events: string[] = [];
    await withServer({}, {
      open: () => void events.push("open"),
      close: () => void events.push("close"),
    }, async (server, port) => {
      for (let i = 0; i < 30; i++) {
        const socket = net.connect(port, HOST);
        socket.on("error", () => {});
        await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
        socket.write(upgradeRequest(`${HOST}:${port}`));
        const reset = (socket as { resetAndDestroy?: () => void }).resetAndDestroy;
        if (typeof reset === "function") reset.call(socket);
        else socket.destroy();
      }
      assert.ok(
        await eventually(() => server.connections.size === 0),
        `${server.connections.size} reset clients are still listed`,
      );
      // A connection that never opened gets no close either; one that did gets both.
      const opens = events.filter((e) => e === "open").length;
      assert.ok(await eventually(() => events.length === 2 * opens), events.join());
      // The server still serves.
      const client = await RawClient.open(port);
      try {
        assert.equal(server.connections.size, 1);
      } finally {
        client.destroy();
      }
    });
  });

  test("a broadcast loop in a handler meets no connection still in its handshake", async () => {
    const errors: Error[] = [];
    let sends = 0;
    let current: Server | undefined;
    await withServer({ onError: (e) => errors.push(e) }, {
      message(_ws, data) {
        for (const ws of current!.connections) {
          ws.send(data);
          sends++;
        }
      },
      error: (_ws, error) => void errors.push(error),
    }, async (server, port) => {
      current = server;
      const broadcaster = await RawClient.open(port);
      const joiners: RawClient[] = [];
      try {
        // Up to 400 clients join while the broadcaster sends 3000 messages in bursts.
        let stop = false;
        const joining = (async () => {
          while (!stop && joiners.length < 400) {
            const batch = await Promise.all(
              Array.from({ length: 10 }, async () => {
                const client = await RawClient.connect(port);
                client.write(upgradeRequest(`${HOST}:${port}`));
                return client;
              }),
            );
            joiners.push(...batch);
          }
        })();
        // Every turn of the event loop, nothing in the set may still be connecting.
        let connecting = 0;
        const watching = (async () => {
          while (!stop) {
            for (const ws of server.connections) if (ws.readyState === 0) connecting++;
            await new Promise((resolve) => setTimeout(resolve, 0));
          }
        })();
        let i = 0;
        try {
          for (let burst = 0; burst < 150 && !broadcaster.ended; burst++) {
            const first = i;
            for (let k = 0; k < 20; k++) {
              broadcaster.write(buildFrame({ opcode: Op.Text, payload: `m${i++}` }));
            }
            for (let n = first; n < i; n++) {
              const frame = await broadcaster.expectFrame();
              assert.equal(frame.opcode, Op.Text, `the broadcaster got ${frame.opcode}, not m${n}`);
              assert.equal(decoder.decode(frame.payload), `m${n}`);
            }
          }
        } finally {
          stop = true;
        }
        await within(joining, 20_000, "joiners");
        await within(watching, 5000, "watcher");
        assert.equal(connecting, 0, "connections still connecting were listed");
        assert.deepEqual(errors, [], "no send threw, nothing was reported");
        assert.ok(sends >= i);
      } finally {
        broadcaster.destroy();
        for (const client of joiners) client.destroy();
      }
    });
  });
});

describe("server handshake: HTTP versions", () => {
  test("a request line with another HTTP major version gets 505", async () => {
    await withServer({}, echo, async (_server, port) => {
      for (const version of ["HTTP/2.0", "HTTP/9.9", "HTTP/0.9"]) {
        const response = await request(port, { version });
        assert.equal(response.status, 505, `${version}: ${response.head}`);
        assert.match(response.body, /HTTP\/1\.1/);
      }
      assert.equal((await request(port)).status, 101);
    });
  });
});

describe(
  "server handshake: the deadline covers TLS",
  { skip: opensslSkipReason() || false },
  () => {
    test("clients that never finish TLS are closed within handshakeTimeout, others connect", async () => {
      const certs = makeTestCerts();
      const handshakeTimeout = 500;
      try {
        await withServer({ handshakeTimeout, tls: certs }, echo, async (server, port) => {
          const started = performance.now();
          const silent: RawClient[] = [];
          for (let i = 0; i < 20; i++) silent.push(await RawClient.connect(port));
          const garbage: RawClient[] = [];
          for (let i = 0; i < 5; i++) {
            const client = await RawClient.connect(port);
            client.write(upgradeRequest(`${HOST}:${port}`)); // plaintext, not a ClientHello
            garbage.push(client);
          }
          try {
            // A real client still gets through meanwhile.
            const ws = await within(
              connect(`wss://localhost:${port}/`, { caCerts: [certs.ca] }),
              5000,
              "a TLS client's connect",
            );
            const reply = new Promise((resolve) => ws.addEventListener("message", resolve));
            ws.send("through");
            const event = await within(reply, 5000, "echo over TLS") as MessageEvent;
            assert.equal(event.data, "through");
            ws.close();
            await within(ws.closed, 5000, "TLS client close");

            for (const [i, client] of silent.entries()) {
              assert.ok(await client.waitForEnd(5000), `silent client ${i} was not closed`);
              const after = client.endedAt! - started;
              assert.ok(
                after >= handshakeTimeout - 50,
                `silent client ${i} closed after ${after} ms`,
              );
              // No HTTP answer can reach a client without TLS.
              assert.equal(client.buffered, 0, "a silent client got bytes");
            }
            for (const [i, client] of garbage.entries()) {
              assert.ok(await client.waitForEnd(5000), `garbage client ${i} was not closed`);
            }
            assert.ok(await eventually(() => server.connections.size === 0));
          } finally {
            for (const client of [...silent, ...garbage]) client.destroy();
          }
        });
      } finally {
        certs.cleanup();
      }
    });
  },
);

describe("server handshake: user code is untrusted", () => {
  /** Runs `body` with console.error recorded (and silenced). */
  async function recordingConsole(body: (logged: unknown[][]) => Promise<void>) {
    const original = console.error;
    const logged: unknown[][] = [];
    console.error = (...args: unknown[]) => void logged.push(args);
    try {
      await body(logged);
    } finally {
      console.error = original;
    }
  }

  test("onUpgrade throwing or rejecting answers 500, reaches onError; the server goes on", async () => {
    const errors: Error[] = [];
    const options = {
      onError: (e: Error) => errors.push(e),
      async onUpgrade(info: { url: URL }) {
        const mode = info.url.searchParams.get("mode");
        if (mode === "throw") throw new Error("boom in onUpgrade");
        if (mode === "reject") {
          await delay(1);
          throw new Error("async boom in onUpgrade");
        }
        if (mode === "string") throw "not an Error";
        if (mode === "deny") throw new HandshakeError(403, "Denied");
      },
    };
    await withServer(options, echo, async (server, port) => {
      for (const mode of ["throw", "reject", "string"]) {
        const response = await request(port, { path: `/?mode=${mode}` });
        assert.equal(response.status, 500, `${mode}: ${response.head}`);
        assert.doesNotMatch(response.body, /boom/, "the exception is not shown to the client");
      }
      assert.equal((await request(port, { path: "/?mode=deny" })).status, 403);
      assert.deepEqual(
        errors.map((e) => e.message),
        ["boom in onUpgrade", "async boom in onUpgrade", "not an Error", "Denied"],
      );
      const client = await RawClient.open(port);
      try {
        await assertEchoes(client, "still serving");
        assert.equal(server.connections.size, 1);
      } finally {
        client.destroy();
      }
    });
  });

  test("a protocols function that throws, or picks one not offered, answers 500", async () => {
    const errors: Error[] = [];
    const options = {
      onError: (e: Error) => errors.push(e),
      protocols(offered: string[]) {
        if (offered.includes("throw")) throw new Error("selector failed");
        return offered.includes("bogus") ? "never-offered" : offered[0];
      },
    };
    await withServer(options, echo, async (_server, port) => {
      const thrown = await request(port, { headers: { "Sec-WebSocket-Protocol": "throw" } });
      assert.equal(thrown.status, 500);
      const bogus = await request(port, { headers: { "Sec-WebSocket-Protocol": "bogus, a" } });
      assert.equal(bogus.status, 500);
      assert.equal(bogus.headers.get("sec-websocket-protocol"), null);
      assert.equal(errors.length, 2);
      assert.match(errors[0].message, /selector failed/);
      assert.match(errors[1].message, /never-offered/, "the error names the protocol chosen");
      assert.match(errors[1].message, /bogus/, "and what the client offered");
      const ok = await request(port, { headers: { "Sec-WebSocket-Protocol": "a" } });
      assert.equal(ok.status, 101);
      assert.equal(ok.headers.get("sec-websocket-protocol"), "a");
    });
  });

  test("without onError, a hook's exception is logged; a throwing onError is contained", async () => {
    await recordingConsole(async (logged) => {
      const onUpgrade = () => {
        throw new Error("unlogged?");
      };
      await withServer({ onUpgrade }, echo, async (_server, port) => {
        assert.equal((await request(port)).status, 500);
      });
      assert.ok(
        logged.some((args) => args.some((a) => a instanceof Error && a.message === "unlogged?")),
        "the exception was logged with console.error",
      );
      logged.length = 0;
      const onError = () => {
        throw new Error("onError failed");
      };
      await withServer({ onUpgrade, onError }, echo, async (_server, port) => {
        assert.equal((await request(port)).status, 500);
        assert.equal((await request(port, { method: "POST" })).status, 405);
      });
      assert.ok(logged.length >= 1, "the failing onError was logged");
    });
  });
});

describe("server.shutdown() options", () => {
  test("a server may close with 1012 (Service Restart) and a reason", async () => {
    const server = await serve({ port: 0, hostname: HOST }, echo);
    const client = await RawClient.open(server.addr.port);
    try {
      const done = server.shutdown({ code: 1012, reason: "restart" });
      const { code, reason } = await client.expectClose();
      assert.equal(code, 1012);
      assert.equal(reason, "restart");
      client.write(closeFrame(1012));
      await within(done, 10_000, "shutdown");
      await within(server.finished, 1000, "finished");
    } finally {
      client.destroy();
    }
  });

  test("invalid options throw at once and leave the server running", async () => {
    await withServer({}, echo, async (server, port) => {
      const before = await RawClient.open(port);
      try {
        // Codes IANA's registry does not allow on the wire, and non-integers.
        for (const code of [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 1000.5, NaN]) {
          assert.throws(() => server.shutdown({ code }), RangeError, `code ${code}`);
        }
        assert.throws(() => server.shutdown({ code: "1000" as unknown as number }), TypeError);
        assert.throws(() => server.shutdown({ reason: 7 as unknown as string }), TypeError);
        // 124 bytes of UTF-8 do not fit; 123 do.
        assert.throws(() => server.shutdown({ reason: "é".repeat(62) }), RangeError);
        // Nothing was stopped: the open connection works and new ones are accepted.
        await assertEchoes(before, "still open");
        const after = await RawClient.open(port);
        try {
          await assertEchoes(after, "still accepting");
          assert.equal(server.connections.size, 2);
        } finally {
          after.destroy();
        }
        const done = server.shutdown({ code: 3000, reason: "é".repeat(61) + "x" });
        const { code } = await before.expectClose();
        assert.equal(code, 3000);
        before.write(closeFrame(3000));
        await within(done, 10_000, "shutdown");
      } finally {
        before.destroy();
      }
    });
  });
});

describe("compression needs node:zlib internals, checked at start", () => {
  test("serve() and connect() with compression fail at once when they are missing", async () => {
    const server = await serve({ port: 0, hostname: HOST }, echo);
    const prototypes = [zlib.InflateRaw.prototype, zlib.DeflateRaw.prototype];
    try {
      // A runtime whose node:zlib streams have no native handle.
      for (const prototype of prototypes) {
        Object.defineProperty(prototype, "_handle", {
          configurable: true,
          get: () => null,
          set: () => {},
        });
      }
      await assert.rejects(
        serve({ port: 0, hostname: HOST, compression: true }, echo),
        /compression.*_handle|_handle.*compression/s,
      );
      await assert.rejects(
        connect(server.url, { compression: true }),
        /compression/,
      );
      assert.throws(() => new WebSocket(server.url, [], { compression: true }), /compression/);
      // Without compression nothing needs zlib.
      const ws = await connect(server.url);
      ws.close();
      await within(ws.closed, 5000, "plain client close");
    } finally {
      for (const prototype of prototypes) {
        delete (prototype as unknown as Record<string, unknown>)._handle;
      }
      await server.shutdown();
    }
    // With the internals back, compression works.
    const compressed = await serve({ port: 0, hostname: HOST, compression: true }, echo);
    await compressed.shutdown();
  });
});

/** A listener whose accept() follows a script: errors, transports, then `null`. */
function scriptedListener(script: (Error | "transport")[]): Listener & { calls: number } {
  const fake = {
    addr: { hostname: HOST, port: 0 },
    calls: 0,
    accept(): Promise<Transport | null> {
      const step = script[fake.calls++];
      if (step === undefined) return Promise.resolve(null);
      if (step === "transport") return Promise.resolve({ close() {} } as unknown as Transport);
      return Promise.reject(step);
    },
    close() {},
  };
  return fake;
}

describe("the accept loop", () => {
  test("backs off from 10 ms doubling to 1 s while accept fails, and resets on success", async () => {
    const emfile = () => Object.assign(new Error("Too many open files (os error 24)"), {});
    const enfile = new Error("File table overflow (os error 23)");
    const script: (Error | "transport")[] = [
      ...Array.from({ length: 9 }, emfile),
      enfile,
      "transport",
      emfile(),
      emfile(),
    ];
    const listener = scriptedListener(script);
    const pauses: number[] = [];
    const reported: string[] = [];
    let accepted = 0;
    await within(
      acceptLoop(listener, {
        onTransport: () => void accepted++,
        onError: (error) => void reported.push(error.message),
        sleep: (ms) => {
          pauses.push(ms);
          return Promise.resolve();
        },
      }),
      5000,
      "accept loop",
    );
    assert.deepEqual(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000, 10, 20]);
    assert.equal(accepted, 1);
    assert.equal(listener.calls, script.length + 1, "the loop ends when accept() gives null");
    // Each distinct failure once, however often it repeats.
    assert.deepEqual(reported, [
      "Too many open files (os error 24)",
      "File table overflow (os error 23)",
    ]);
  });

  test("a pause is cut short by the abort signal", async () => {
    const listener = scriptedListener([new Error("EMFILE")]);
    const controller = new AbortController();
    const loop = acceptLoop(listener, {
      onTransport: () => {},
      onError: () => controller.abort(),
      minDelay: 60_000,
      signal: controller.signal,
    });
    await within(loop, 5000, "accept loop after abort");
    assert.equal(listener.calls, 1);
  });
});
