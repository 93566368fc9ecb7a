/**
 * `ReconnectingWebSocket` over real loopback sockets. What users rely on: it
 * comes back after the server drops connections or restarts, waiting longer
 * after each consecutive failure up to a cap; it does not hammer a server
 * that refuses it; messages sent while disconnected are queued (bounded) or
 * refused, as configured; and `close()` (or the signal) stops it for good.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { after, before, describe } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { delay, test as watchedTest, within } from "../_watch.ts";
import {
  type ReconnectEvent,
  ReconnectingWebSocket,
  shouldReconnectByDefault,
} from "../../src/reconnect.ts";
import { serve, type Server } from "../../src/server.ts";
import { HandshakeError, WebSocketError } from "../../src/protocol/errors.ts";
import type { WebSocketConnection } from "../../src/websocket.ts";
import { rawServer, serverFrame } from "./client_peers/raw_server.ts";

/** Every client made in a test, closed at its end so no test leaks a reconnect loop. */
const clients: ReconnectingWebSocket[] = [];
function client(url: string, options: ConstructorParameters<typeof ReconnectingWebSocket>[1]) {
  const rws = new ReconnectingWebSocket(url, options);
  clients.push(rws);
  return rws;
}

/** The watched `test()`, plus: every client closed and every down server stopped afterwards. */
function test(name: string, body: () => Promise<void>): void {
  watchedTest(name, body, {
    async cleanup() {
      for (const rws of clients.splice(0)) {
        rws.close();
        await within(rws.closed, 5_000, "client closed after the test");
      }
      for (const server of downServers.splice(0)) {
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    },
  });
}

/** Records every event a client fires, in order. */
function record(rws: ReconnectingWebSocket) {
  const log: string[] = [];
  const reconnects: ReconnectEvent[] = [];
  const messages: unknown[] = [];
  const errors: Error[] = [];
  let closeEvent: CloseEvent | null = null;
  rws.addEventListener("open", () => log.push("open"));
  rws.addEventListener("message", (e) => {
    log.push("message");
    messages.push(e.data);
  });
  rws.addEventListener("error", (e) => {
    log.push("error");
    errors.push(e.error);
  });
  rws.addEventListener("reconnecting", (e) => {
    log.push(`reconnecting ${e.attempt}`);
    reconnects.push(e);
  });
  rws.addEventListener("close", (e) => {
    log.push("close");
    closeEvent = e;
  });
  return {
    log,
    reconnects,
    messages,
    errors,
    get closeEvent(): CloseEvent | null {
      return closeEvent;
    },
    count: (entry: string) => log.filter((e) => e === entry).length,
  };
}

async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
    await delay(5);
  }
}

/**
 * A server that is "down": it accepts each TCP connection and drops it at
 * once, so every attempt fails. (A released port would be racy: under
 * parallel tests the kernel may hand it to another test's server.) It is
 * closed automatically at the end of the test.
 */
const downServers: net.Server[] = [];
function downServer(): Promise<{ url: string; attempts: () => number }> {
  let attempts = 0;
  const server = net.createServer((socket) => {
    attempts++;
    socket.destroy();
  });
  downServers.push(server);
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      resolve({ url: `ws://127.0.0.1:${port}/`, attempts: () => attempts });
    });
  });
}

type Mode = "echo" | "drop" | "greet";

/**
 * A Sluice server whose behaviour on open the test picks: echo, drop at once
 * (terminate, no close frame), or greet. Messages `close <code>` make it close
 * with that code. It records what it receives and how connections ended.
 */
async function testServer(port = 0) {
  const state = {
    mode: "echo" as Mode,
    received: [] as (string | number)[],
    opened: 0,
    closes: [] as { code: number; reason: string }[],
  };
  const server = await serve({ hostname: "127.0.0.1", port }, {
    open(ws) {
      state.opened++;
      if (state.mode === "drop") ws.terminate();
      if (state.mode === "greet") ws.send("welcome");
    },
    message(ws: WebSocketConnection<undefined>, data) {
      state.received.push(typeof data === "string" ? data : data.byteLength);
      if (typeof data === "string" && data.startsWith("close ")) {
        ws._closeWith(Number(data.slice(6)), "server says bye");
        return;
      }
      ws.send(data);
    },
    close(_ws, code, reason) {
      state.closes.push({ code, reason });
    },
  });
  return { server, state };
}

describe("ReconnectingWebSocket reconnects", () => {
  let server: Server;
  let state: Awaited<ReturnType<typeof testServer>>["state"];
  before(async () => {
    ({ server, state } = await testServer());
  });
  after(async () => {
    await server.shutdown();
  });

  test("after the server drops the connection, and the new one carries messages", async () => {
    state.mode = "echo";
    const rws = client(server.url, { minDelay: 30, jitter: "none" });
    const events = record(rws);
    await until(() => events.count("open") === 1, 5_000, "first open");
    assert.equal(rws.readyState, ReconnectingWebSocket.OPEN);
    const first = rws.socket;
    first!.terminate(); // As if the network dropped: no close frame.
    await until(() => events.count("open") === 2, 5_000, "second open");
    assert.notEqual(rws.socket, first, "a new connection");
    assert.deepEqual(events.log, ["open", "reconnecting 1", "open"]);
    const [event] = events.reconnects;
    assert.equal(event.attempt, 1);
    assert.equal(event.delay, 30);
    assert.equal(event.closeCode, 1006);
    assert.equal(event.wasClean, false);
    rws.send("still here");
    await until(() => events.messages.length === 1, 5_000, "echo");
    assert.deepEqual(events.messages, ["still here"]);
  });

  test("after the server shuts down (1001) and restarts on the same port", async () => {
    const first = await testServer();
    const port = first.server.addr.port;
    const rws = client(first.server.url, {
      minDelay: 20,
      maxDelay: 80,
      factor: 2,
      jitter: "none",
    });
    const events = record(rws);
    await until(() => events.count("open") === 1, 5_000, "first open");
    await first.server.shutdown();
    // While it is down, attempts are refused and the delays grow to the cap.
    await until(() => events.reconnects.length >= 5, 5_000, "five reconnection attempts");
    const second = await testServer(port);
    try {
      await until(() => events.count("open") === 2, 5_000, "reopened on the restarted server");
      const delays = events.reconnects.map((e) => e.delay);
      assert.deepEqual(delays.slice(0, 5), [20, 40, 80, 80, 80]);
      assert.deepEqual(
        events.reconnects.map((e) => e.attempt),
        delays.map((_, i) => i + 1),
      );
      assert.equal(events.reconnects[0].closeCode, 1001, "the shutdown's close code");
      assert.ok(events.errors.length >= 4, "each refused attempt is an error event");
      rws.send("back");
      await until(() => second.state.received.includes("back"), 5_000, "message after restart");
    } finally {
      rws.close();
      await second.server.shutdown();
    }
  });

  test("a greeting sent as the connection opens arrives, after the open event", async () => {
    state.mode = "greet";
    const rws = client(server.url, { minDelay: 20 });
    const events = record(rws);
    await until(() => events.messages.length === 1, 5_000, "greeting");
    assert.deepEqual(events.log.slice(0, 2), ["open", "message"]);
    assert.deepEqual(events.messages, ["welcome"]);
    state.mode = "echo";
  });

  test("binaryType arraybuffer and blob are honoured", async () => {
    state.mode = "echo";
    const rws = client(server.url, { minDelay: 20 });
    const events = record(rws);
    await until(() => events.count("open") === 1, 5_000, "open");
    rws.send(new Uint8Array([1, 2, 3]));
    await until(() => events.messages.length === 1, 5_000, "binary echo");
    assert.ok(events.messages[0] instanceof ArrayBuffer);
    assert.deepEqual(new Uint8Array(events.messages[0] as ArrayBuffer), new Uint8Array([1, 2, 3]));
    rws.binaryType = "blob";
    rws.send(new Uint8Array([4, 5]));
    await until(() => events.messages.length === 2, 5_000, "blob echo");
    assert.ok(events.messages[1] instanceof Blob);
    assert.deepEqual(
      new Uint8Array(await (events.messages[1] as Blob).arrayBuffer()),
      new Uint8Array([4, 5]),
    );
  });

  test("a server that accepts and drops at once still gets a growing backoff", async () => {
    state.mode = "drop";
    const rws = client(server.url, {
      minDelay: 10,
      maxDelay: 1_000,
      jitter: "none",
      stableAfter: 60_000,
    });
    const events = record(rws);
    await until(() => events.reconnects.length >= 4, 5_000, "four reconnections");
    state.mode = "echo";
    assert.deepEqual(events.reconnects.slice(0, 4).map((e) => e.delay), [10, 20, 40, 80]);
    assert.ok(events.count("open") >= 4, "each connection did open");
  });

  test("a connection that stayed up for stableAfter resets the backoff", async () => {
    state.mode = "echo";
    const rws = client(server.url, { minDelay: 10, jitter: "none", stableAfter: 50 });
    const events = record(rws);
    for (let round = 1; round <= 3; round++) {
      await until(() => events.count("open") === round, 5_000, `open ${round}`);
      await delay(80); // Longer than stableAfter.
      rws.socket!.terminate();
      await until(() => events.reconnects.length === round, 5_000, `reconnect ${round}`);
    }
    assert.deepEqual(events.reconnects.map((e) => [e.attempt, e.delay]), [
      [1, 10],
      [1, 10],
      [1, 10],
    ]);
  });

  test("after a server close with 1011", async () => {
    state.mode = "echo";
    const rws = client(server.url, { minDelay: 20 });
    const events = record(rws);
    await until(() => events.count("open") === 1, 5_000, "open");
    rws.send("close 1011");
    await until(() => events.count("open") === 2, 5_000, "reopened");
    assert.equal(events.reconnects[0].closeCode, 1011);
    assert.equal(events.reconnects[0].reason, "server says bye");
    assert.equal(events.reconnects[0].wasClean, true);
  });

  // 1012-1014 are registered by IANA and sent by ws, websockets and
  // browsers' servers: a server saying "restarting" or "try again later"
  // must get a reconnection. The raw server never closes TCP, so the client
  // gives up waiting for it after closeTimeout.
  for (const code of [1012, 1013, 1014]) {
    test(`after a server close with ${code} (sent by a raw server)`, async () => {
      const raw = await rawServer();
      try {
        const rws = client(raw.url, { minDelay: 20, closeTimeout: 200 });
        const events = record(rws);
        const first = await raw.accept();
        await first.accept(await first.readRequest());
        await until(() => events.count("open") === 1, 5_000, "open");
        first.write(serverFrame(0x8, new Uint8Array([code >> 8, code & 0xff])));
        const second = await raw.accept();
        await second.accept(await second.readRequest());
        await until(() => events.count("open") === 2, 5_000, "reopened");
        assert.equal(events.reconnects.length, 1);
      } finally {
        await raw.close();
      }
    });
  }
});

describe("ReconnectingWebSocket stops", () => {
  let server: Server;
  let state: Awaited<ReturnType<typeof testServer>>["state"];
  before(async () => {
    ({ server, state } = await testServer());
  });
  after(async () => {
    await server.shutdown();
  });

  test("close() on an open connection: clean close, close event once, no reconnect", async () => {
    state.mode = "echo";
    state.closes.length = 0;
    const rws = client(server.url, { minDelay: 10 });
    const events = record(rws);
    await until(() => events.count("open") === 1, 5_000, "open");
    const opened = state.opened;
    rws.close(4000, "done for today");
    assert.equal(rws.readyState, ReconnectingWebSocket.CLOSING);
    const info = await within(rws.closed, 5_000, "closed");
    assert.equal(rws.readyState, ReconnectingWebSocket.CLOSED);
    assert.equal(info.closeCode, 4000, "the server echoed our code");
    assert.equal(info.wasClean, true);
    await delay(100); // Ten times minDelay: a reconnect would have happened.
    assert.equal(state.opened, opened, "no new connection");
    assert.deepEqual(events.log, ["open", "close"]);
    assert.equal(events.closeEvent?.code, 4000);
    assert.deepEqual(state.closes, [{ code: 4000, reason: "done for today" }]);
    assert.throws(() => rws.send("after close"), { name: "InvalidStateError" });
    rws.close(); // Idempotent.
  });

  test("close() while waiting to reconnect: no further attempt", async () => {
    const down = await downServer();
    const rws = client(down.url, { minDelay: 150, jitter: "none" });
    const events = record(rws);
    await until(() => events.reconnects.length === 1, 5_000, "first reconnecting");
    rws.close();
    const info = await within(rws.closed, 1_000, "closed");
    assert.equal(info.closeCode, 1006);
    await delay(300);
    assert.equal(events.count("error"), 1, "only the first attempt ran");
    assert.equal(down.attempts(), 1);
    assert.deepEqual(events.log, ["error", "reconnecting 1", "close"]);
  });

  test("close() during a handshake aborts it", async () => {
    const raw = await rawServer();
    try {
      const rws = client(raw.url, { minDelay: 10 });
      const events = record(rws);
      const peer = await raw.accept();
      await peer.readRequest(); // ...and never answer.
      rws.close();
      await within(rws.closed, 1_000, "closed");
      await within(peer.ended, 2_000, "handshake socket closed");
      assert.deepEqual(events.log, ["close"], "an abort by the user is not an error");
      await delay(100);
      assert.equal(raw.peers.length, 1, "no new attempt");
    } finally {
      await raw.close();
    }
  });

  test("aborting the signal stops it like close()", async () => {
    state.mode = "echo";
    const controller = new AbortController();
    const rws = client(server.url, { minDelay: 10, signal: controller.signal });
    const events = record(rws);
    await until(() => events.count("open") === 1, 5_000, "open");
    state.closes.length = 0;
    controller.abort();
    const info = await within(rws.closed, 5_000, "closed");
    assert.equal(info.wasClean, true);
    assert.equal(state.closes[0]?.code, 1000, "closed with 1000, as connect() does");
    assert.equal(events.count("reconnecting"), 0);
    const already = client(server.url, { signal: AbortSignal.abort() });
    const closedAtOnce = record(already);
    await within(already.closed, 1_000, "closed at once");
    assert.deepEqual(closedAtOnce.log, ["close"]);
  });

  test("a server close with 1000 stops it; reconnectOnNormalClose reconnects", async () => {
    state.mode = "echo";
    const rws = client(server.url, { minDelay: 10 });
    const events = record(rws);
    await until(() => events.count("open") === 1, 5_000, "open");
    rws.send("close 1000");
    const info = await within(rws.closed, 5_000, "closed");
    assert.deepEqual(info, { closeCode: 1000, reason: "server says bye", wasClean: true });
    assert.equal(events.count("reconnecting"), 0);

    const again = client(server.url, { minDelay: 10, reconnectOnNormalClose: true });
    const againEvents = record(again);
    await until(() => againEvents.count("open") === 1, 5_000, "open");
    again.send("close 1000");
    await until(() => againEvents.count("open") === 2, 5_000, "reopened");
  });

  for (const code of [1008, 4000]) {
    test(`a server close with ${code} stops it`, async () => {
      state.mode = "echo";
      const rws = client(server.url, { minDelay: 10 });
      const events = record(rws);
      await until(() => events.count("open") === 1, 5_000, "open");
      rws.send(`close ${code}`);
      const info = await within(rws.closed, 5_000, "closed");
      assert.equal(info.closeCode, code);
      assert.equal(events.count("reconnecting"), 0);
    });
  }

  test("maxAttempts bounds consecutive attempts, then close fires", async () => {
    const down = await downServer();
    const rws = client(down.url, {
      minDelay: 5,
      maxDelay: 20,
      jitter: "none",
      maxAttempts: 3,
    });
    const events = record(rws);
    const info = await within(rws.closed, 5_000, "gave up");
    assert.equal(info.closeCode, 1006);
    assert.deepEqual(events.log, [
      "error",
      "reconnecting 1",
      "error",
      "reconnecting 2",
      "error",
      "reconnecting 3",
      "error",
      "close",
    ]);
    assert.deepEqual(events.reconnects.map((e) => e.delay), [5, 10, 20]);
    assert.equal(down.attempts(), 4, "the first try and three reconnections");
    const never = client(down.url, { maxAttempts: 0 });
    const neverEvents = record(never);
    await within(never.closed, 5_000, "gave up at once");
    assert.deepEqual(neverEvents.log, ["error", "close"]);
  });

  test("a handshake refused with 401 is not retried; 503 is", async () => {
    let status = 401;
    const gate = await serve({
      hostname: "127.0.0.1",
      port: 0,
      onUpgrade() {
        if (status !== 101) throw new HandshakeError(status, "Not now");
      },
    }, () => {});
    try {
      const refused = client(gate.url, { minDelay: 10 });
      const refusedEvents = record(refused);
      await within(refused.closed, 5_000, "gave up");
      assert.deepEqual(refusedEvents.log, ["error", "close"]);
      assert.ok(refusedEvents.errors[0] instanceof HandshakeError);
      assert.equal((refusedEvents.errors[0] as HandshakeError).status, 401);

      status = 503;
      const busy = client(gate.url, { minDelay: 10, jitter: "none" });
      const busyEvents = record(busy);
      await until(() => busyEvents.reconnects.length === 2, 5_000, "two retries");
      status = 101;
      await until(() => busyEvents.count("open") === 1, 5_000, "open once the server is ready");
    } finally {
      await gate.shutdown();
    }
  });
});

describe("ReconnectingWebSocket while disconnected", () => {
  let server: Server;
  let state: Awaited<ReturnType<typeof testServer>>["state"];
  before(async () => {
    ({ server, state } = await testServer());
  });
  after(async () => {
    await server.shutdown();
  });

  test('"queue": messages sent while disconnected go out, in order, after open listeners', async () => {
    state.mode = "echo";
    state.received.length = 0;
    const rws = client(server.url, { minDelay: 20, jitter: "none" });
    rws.addEventListener("open", () => rws.send("auth")); // Runs first on every connection.
    const events = record(rws);
    assert.equal(rws.readyState, ReconnectingWebSocket.CONNECTING);
    const reused = new Uint8Array([1, 2, 3, 4, 5]);
    rws.send("q1");
    rws.send(reused);
    reused.fill(0); // The queue kept a copy.
    rws.send("q3 ✓");
    assert.equal(rws.queuedMessages, 3);
    assert.equal(rws.bufferedAmount, 2 + 5 + 6, "UTF-8 bytes of everything queued");
    await until(() => state.received.length === 4, 5_000, "queued messages delivered");
    assert.deepEqual(state.received, ["auth", "q1", 5, "q3 ✓"]);
    assert.equal(rws.queuedMessages, 0);
    await until(() => events.messages.length === 4, 5_000, "echoes");
    assert.deepEqual(
      new Uint8Array(events.messages[2] as ArrayBuffer),
      new Uint8Array([1, 2, 3, 4, 5]),
    );

    // And again across a reconnection.
    state.received.length = 0;
    rws.socket!.terminate();
    await until(() => rws.readyState === ReconnectingWebSocket.CONNECTING, 1_000, "disconnected");
    rws.send("while down");
    await until(() => state.received.length === 2, 5_000, "delivered after reconnect");
    assert.deepEqual(state.received, ["auth", "while down"]);
  });

  test('"queue" is bounded: maxQueued and maxQueuedBytes throw RangeError', async () => {
    const down = await downServer();
    const byCount = client(down.url, { minDelay: 1_000, maxQueued: 2 });
    byCount.send("a");
    byCount.send("b");
    assert.throws(() => byCount.send("c"), RangeError);
    assert.equal(byCount.queuedMessages, 2, "the failed send changed nothing");

    const byBytes = client(down.url, { minDelay: 1_000, maxQueuedBytes: 10 });
    byBytes.send("12345");
    byBytes.send(new Uint8Array(5));
    assert.throws(() => byBytes.send("x"), /maxQueuedBytes/);
    assert.throws(() => byBytes.send(new Blob(["y"])), RangeError);
    assert.equal(byBytes.bufferedAmount, 10);
    byBytes.close();
    assert.equal(byBytes.bufferedAmount, 0, "close() discards the queue");
  });

  test('"reject": send() while disconnected throws InvalidStateError, nothing is sent later', async () => {
    state.mode = "echo";
    state.received.length = 0;
    const rws = client(server.url, { minDelay: 20, whileDisconnected: "reject" });
    const events = record(rws);
    assert.throws(() => rws.send("too early"), { name: "InvalidStateError" });
    await until(() => events.count("open") === 1, 5_000, "open");
    rws.send("now");
    await until(() => state.received.length === 1, 5_000, "sent while open");
    rws.socket!.terminate();
    await until(() => rws.readyState === ReconnectingWebSocket.CONNECTING, 1_000, "disconnected");
    assert.throws(() => rws.send("while down"), { name: "InvalidStateError" });
    await until(() => events.count("open") === 2, 5_000, "reopened");
    await delay(50);
    assert.deepEqual(state.received, ["now"]);
  });
});

describe("ReconnectingWebSocket options and policy", () => {
  test("jitter keeps every delay within its documented bounds", async () => {
    for (const jitter of ["full", "equal"] as const) {
      const down = await downServer();
      const rws = client(down.url, {
        minDelay: 4,
        maxDelay: 40,
        factor: 2,
        jitter,
        maxAttempts: 8,
      });
      const events = record(rws);
      await within(rws.closed, 10_000, `${jitter}: gave up`);
      assert.equal(events.reconnects.length, 8);
      for (const event of events.reconnects) {
        const ceiling = Math.min(40, 4 * 2 ** (event.attempt - 1));
        const floor = jitter === "full" ? 4 : Math.max(4, ceiling / 2);
        assert.ok(
          event.delay >= Math.floor(floor) && event.delay <= Math.ceil(ceiling),
          `${jitter}: attempt ${event.attempt} delay ${event.delay} in [${floor}, ${ceiling}]`,
        );
      }
    }
  });

  test("the waits really last the announced delays", async () => {
    const down = await downServer();
    const rws = client(down.url, {
      minDelay: 40,
      maxDelay: 160,
      jitter: "none",
      maxAttempts: 3,
    });
    const stamps: number[] = [];
    rws.addEventListener("reconnecting", () => stamps.push(performance.now()));
    rws.addEventListener("error", () => stamps.push(performance.now()));
    await within(rws.closed, 5_000, "gave up");
    // error, reconnecting(40), error, reconnecting(80), error, reconnecting(160), error.
    const waits = [stamps[2] - stamps[1], stamps[4] - stamps[3], stamps[6] - stamps[5]];
    for (const [i, expected] of [40, 80, 160].entries()) {
      assert.ok(
        waits[i] >= expected - 5,
        `wait ${i} was ${waits[i].toFixed(0)} ms, not ${expected}`,
      );
      assert.ok(waits[i] < expected + 1_000, `wait ${i} was ${waits[i].toFixed(0)} ms`);
    }
  });

  test("invalid URLs and options throw at once", () => {
    for (const url of ["nope", "ftp://x/", "ws://x/#f"]) {
      assert.throws(() => new ReconnectingWebSocket(url), { name: "SyntaxError" });
    }
    const url = "ws://127.0.0.1:9/";
    for (
      const options of [
        { minDelay: 0 },
        { minDelay: -1 },
        { minDelay: 100, maxDelay: 50 },
        { factor: 0.5 },
        { maxAttempts: -1 },
        { maxQueued: -1 },
        { jitter: "some" as "full" },
        { whileDisconnected: "drop" as "queue" },
      ]
    ) {
      assert.throws(() => new ReconnectingWebSocket(url, options), RangeError);
    }
    return Promise.resolve();
  });

  test("close() validates code and reason like WebSocket", async () => {
    const down = await downServer();
    const rws = client(down.url, { minDelay: 1_000 });
    assert.throws(() => rws.close(1001), { name: "InvalidAccessError" });
    assert.throws(() => rws.close(1000, "x".repeat(124)), { name: "SyntaxError" });
    assert.equal(rws.readyState, ReconnectingWebSocket.CONNECTING);
  });

  test("the default policy", () => {
    const end = (closeCode: number, error: Error | null = null, opened = true) => ({
      closeCode,
      reason: "",
      wasClean: error === null,
      error,
      opened,
    });
    for (const code of [1001, 1006, 1011, 1012, 1013, 1014]) {
      assert.equal(shouldReconnectByDefault(end(code), false), true, `code ${code}`);
    }
    for (const code of [1000, 1005]) {
      assert.equal(shouldReconnectByDefault(end(code), false), false, `code ${code}`);
      assert.equal(shouldReconnectByDefault(end(code), true), true, `code ${code} opted in`);
    }
    for (const code of [1002, 1003, 1007, 1008, 1009, 1010, 3000, 4000]) {
      assert.equal(shouldReconnectByDefault(end(code), true), false, `code ${code}`);
    }
    const handshake = (status: number) => end(1006, new HandshakeError(status, "x"), false);
    for (const status of [0, 408, 429, 500, 502, 503]) {
      assert.equal(shouldReconnectByDefault(handshake(status), false), true, `status ${status}`);
    }
    for (const status of [101, 200, 302, 400, 401, 403, 404]) {
      assert.equal(shouldReconnectByDefault(handshake(status), false), false, `status ${status}`);
    }
    const refused = end(1006, new Error("Connection refused"), false);
    assert.equal(shouldReconnectByDefault(refused, false), true);
    for (const closeCode of [1002, 1007]) {
      const violation = end(1006, new WebSocketError("INVALID_UTF8", closeCode, "x"));
      assert.equal(shouldReconnectByDefault(violation, false), true, `violation ${closeCode}`);
    }
    const tooBig = end(1006, new WebSocketError("MESSAGE_TOO_BIG", 1009, "x"));
    assert.equal(shouldReconnectByDefault(tooBig, true), false, "a too big message would repeat");
    return Promise.resolve();
  });

  test("shouldReconnect replaces the policy", async () => {
    const down = await downServer();
    const seen: number[] = [];
    const rws = client(down.url, {
      minDelay: 5,
      shouldReconnect: (end) => {
        seen.push(end.closeCode);
        return seen.length < 3;
      },
    });
    const events = record(rws);
    await within(rws.closed, 5_000, "stopped by the policy");
    assert.deepEqual(seen, [1006, 1006, 1006]);
    assert.equal(events.reconnects.length, 2);
  });
});
