/**
 * Pub/sub over real loopback connections, on Deno and Bun: the API surface
 * (`ws.subscribe`/`publish`, `server.publish`, counts, cleanup on close),
 * shared compressed frames, and each slow-subscriber policy against a raw
 * client that stops reading (its TCP window fills): the server's backlog for
 * it stays bounded while publishing goes on, fast subscribers receive every
 * message in order, and the slow one resumes with the documented content.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe } from "node:test";
import assert from "node:assert/strict";
import { connect, serve, type Server, type WebSocketConnection } from "../../mod.ts";
import type { PubSubOptions, SlowPolicy } from "../../src/pubsub.ts";
import { test } from "../_watch.ts";
import { Op, RawClient, type ServerFrame, sleep, within } from "./_raw_client.ts";

const HOST = "127.0.0.1";
const KiB = 1024;
const MESSAGE = 8 * KiB;
const MAX_BUFFERED = 128 * KiB;
/** Keys of the "latest" test: message seq % KEYS. */
const KEYS = 4;

function message(seq: number): Uint8Array {
  const bytes = new Uint8Array(MESSAGE);
  for (let i = 5; i < MESSAGE; i++) bytes[i] = (i + seq) & 0xff;
  new DataView(bytes.buffer).setUint32(0, seq);
  bytes[4] = seq % KEYS;
  return bytes;
}

/** The seq of a received message frame, checking that it is intact. */
function seqOf(frame: ServerFrame): number {
  assert.equal(frame.opcode, Op.Binary);
  assert.equal(frame.payload.length, MESSAGE);
  const seq = new DataView(frame.payload.buffer, frame.payload.byteOffset).getUint32(0);
  const expected = message(seq);
  for (let i = 4; i < MESSAGE; i += 97) {
    if (frame.payload[i] !== expected[i]) assert.fail(`message ${seq} differs at byte ${i}`);
  }
  return seq;
}

/** Reads binary messages until `last` arrives (or a close frame); returns their seqs. */
async function readUntil(
  client: RawClient,
  last: () => number,
  ms: number,
): Promise<{ seqs: number[]; close: ServerFrame | null }> {
  const seqs: number[] = [];
  const deadline = performance.now() + ms;
  for (;;) {
    const frame = await client.readFrame(Math.max(1, deadline - performance.now()));
    if (frame === null) return { seqs, close: null };
    if (frame.opcode === Op.Close) return { seqs, close: frame };
    const seq = seqOf(frame);
    seqs.push(seq);
    if (seq === last()) return { seqs, close: null };
  }
}

interface Setup {
  server: Server;
  /** Server-side connections by the path they came in on. */
  byPath: Map<string, WebSocketConnection<string>[]>;
  dropped: number[];
}

async function start(policy: SlowPolicy, extra: PubSubOptions<WebSocketConnection<string>> = {}) {
  const setup: Setup = { server: null!, byPath: new Map(), dropped: [] };
  setup.server = await serve<string>({
    port: 0,
    hostname: HOST,
    pubsub: {
      maxBuffered: MAX_BUFFERED,
      onDrop: (_ws, _topic, skipped) => setup.dropped.push(skipped),
      ...extra,
    },
    onUpgrade: (request) => ({ data: request.url.pathname }),
  }, {
    open(ws) {
      const list = setup.byPath.get(ws.data) ?? [];
      list.push(ws);
      setup.byPath.set(ws.data, list);
      ws.subscribe("feed", {
        policy,
        key: policy === "latest"
          ? (data: string | Uint8Array) => (data as Uint8Array)[4]
          : undefined,
      });
    },
  });
  return setup;
}

async function until(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`Timed out after ${ms} ms: ${what}`);
    await sleep(5);
  }
}

/**
 * Two fast raw subscribers and one that stops reading; publishes until the
 * slow one has been over its limit for 300 publishes, keeping the fast ones
 * under it. Returns what each side saw.
 */
async function slowScenario(policy: SlowPolicy) {
  const setup = await start(policy);
  const { server, byPath } = setup;
  const port = server.addr.port;
  const fastClients = [
    await RawClient.open(port, { path: "/fast" }),
    await RawClient.open(port, { path: "/fast" }),
  ];
  const slowClient = await RawClient.open(port, { path: "/slow" });
  slowClient.socket.pause(); // stop reading: the TCP window fills
  try {
    await until(() => server.subscriberCount("feed") === 3, 5000, "three subscribers");
    const slow = byPath.get("/slow")![0];
    const fast = byPath.get("/fast")!;
    let published = 0;
    const final = { seq: -1 };
    const fastReads = fastClients.map((c) => readUntil(c, () => final.seq, 60_000));
    let slowPublishes = 0;
    let maxBacklog = 0;
    while (slowPublishes < 300) {
      assert.ok(published < 8000, `the slow subscriber never went over ${MAX_BUFFERED} bytes`);
      if (fast.some((ws) => ws.bufferedAmount > MAX_BUFFERED / 2)) {
        await sleep(1);
        continue;
      }
      if (slow.bufferedAmount > MAX_BUFFERED) slowPublishes++;
      server.publish("feed", message(published++));
      maxBacklog = Math.max(maxBacklog, slow.bufferedAmount);
      if (published % 16 === 0) await sleep(0);
    }
    return {
      setup,
      slow,
      fastClients,
      fastReads,
      slowClient,
      maxBacklog,
      published: () => published,
      /** Publishes the last 5 messages; every reader stops at the last one. */
      publishTail: () => {
        final.seq = published + 4;
        for (let i = 0; i < 5; i++) server.publish("feed", message(published++));
      },
    };
  } catch (error) {
    for (const c of [...fastClients, slowClient]) c.destroy();
    await server.shutdown();
    throw error;
  }
}

function assertAll(seqs: number[], n: number, who: string): void {
  assert.equal(seqs.length, n, `${who}: ${seqs.length} of ${n} messages`);
  for (let i = 0; i < n; i++) {
    if (seqs[i] !== i) assert.fail(`${who}: message ${i} arrived as ${seqs[i]}`);
  }
}

describe("pub/sub over real connections", () => {
  test("subscribe, publish to others, server.publish to all, unsubscribed on close", async () => {
    const server = await serve({ port: 0, hostname: HOST }, {
      open(ws) {
        ws.subscribe("room");
        assert.throws(() => ws.subscribe(7 as unknown as string), TypeError);
      },
      message(ws, data) {
        ws.publish("room", data);
      },
    });
    try {
      const clients = await Promise.all([0, 1, 2].map(() => connect(server.url)));
      await until(() => server.subscriberCount("room") === 3, 5000, "three subscribers");
      assert.deepEqual(server.topics, ["room"]);
      const inbox = clients.map(() => [] as unknown[]);
      clients.forEach((c, i) =>
        c.addEventListener("message", (e) => inbox[i].push((e as MessageEvent).data))
      );
      clients[0].send("from 0");
      await until(() => inbox[1].length === 1 && inbox[2].length === 1, 5000, "fan-out");
      assert.equal(server.publish("room", new Uint8Array([1, 2])), 3);
      await until(
        () => inbox[0].length === 1 && inbox[1].length === 2 && inbox[2].length === 2,
        5000,
        "everyone",
      );
      assert.equal(inbox[1][0], "from 0");
      assert.deepEqual(new Uint8Array(inbox[1][1] as ArrayBuffer), new Uint8Array([1, 2]));
      assert.equal(inbox[0].length, 1, "the publisher does not get its own message");
      clients[2].close(1000);
      await clients[2].closed;
      await until(() => server.subscriberCount("room") === 2, 5000, "unsubscribed on close");
      const stats = server.stats();
      assert.equal(stats.subscriptions, 2);
      assert.equal(stats.messagesPublished, 2);
      assert.equal(stats.messagesDelivered, 5);
      await until(() => server.stats().closes[1000] === 1, 5000, "close counted");
      for (const c of clients.slice(0, 2)) c.close(1000);
    } finally {
      await server.shutdown();
    }
  });

  test("with server_no_context_takeover one compression serves every subscriber", async () => {
    for (const takeover of [false, true]) {
      const server = await serve({
        port: 0,
        hostname: HOST,
        compression: takeover ? true : { serverNoContextTakeover: true },
      }, (ws) => ws.subscribe("t"));
      try {
        const clients = await Promise.all(
          [0, 1, 2].map(() => connect(server.url, { compression: true })),
        );
        await until(() => server.subscriberCount("t") === 3, 5000, "three subscribers");
        const text = '{"symbol":"ACME","price":12.5}'.repeat(500);
        const received = clients.map((c) =>
          new Promise((resolve) =>
            c.addEventListener("message", (e) => resolve((e as MessageEvent).data), { once: true })
          )
        );
        const before = server.stats().encodings;
        server.publish("t", text);
        assert.equal(server.stats().encodings - before, takeover ? 4 : 2, "frame + compressions");
        for (const value of await within(Promise.all(received), 5000, "messages")) {
          assert.equal(value, text);
        }
        for (const c of clients) c.close(1000);
      } finally {
        await server.shutdown();
      }
    }
  });

  test('"drop": bounded backlog, fast ones get all, the slow one gets what was not skipped', async () => {
    const run = await slowScenario("drop");
    const { setup, slow, slowClient } = run;
    try {
      assert.ok(run.maxBacklog <= MAX_BUFFERED + MESSAGE + 64, `backlog reached ${run.maxBacklog}`);
      const skipped = setup.server.stats().messagesDropped;
      assert.ok(skipped >= 300);
      slowClient.socket.resume();
      await until(() => slow.bufferedAmount === 0, 20_000, "the slow subscriber catching up");
      const tailFrom = run.published();
      run.publishTail();
      const { seqs } = await readUntil(slowClient, () => run.published() - 1, 20_000);
      for (const [i, reads] of run.fastReads.entries()) {
        assertAll((await reads).seqs, run.published(), `fast ${i}`);
      }
      for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], "in publish order");
      assert.deepEqual(
        seqs.slice(-5),
        [0, 1, 2, 3, 4].map((i) => tailFrom + i),
        "the tail after catching up",
      );
      assert.equal(
        seqs.length + skipped,
        run.published(),
        "every message either delivered or counted as skipped",
      );
      assert.equal(setup.dropped.reduce((a, b) => a + b, 0), skipped, "onDrop told the gap sizes");
    } finally {
      for (const c of [...run.fastClients, slowClient]) c.destroy();
      await setup.server.shutdown();
    }
  });

  test('"latest": bounded backlog, and after draining one newest message per key', async () => {
    const run = await slowScenario("latest");
    const { setup, slow, slowClient } = run;
    try {
      assert.ok(run.maxBacklog <= MAX_BUFFERED + MESSAGE + 64, `backlog reached ${run.maxBacklog}`);
      assert.ok(setup.server.stats().messagesConflated >= 300 - KEYS);
      const lastBefore = run.published() - 1;
      slowClient.socket.resume();
      await until(() => slow.bufferedAmount === 0, 20_000, "the slow subscriber catching up");
      await sleep(50);
      await until(() => slow.bufferedAmount === 0, 20_000, "held messages sent");
      const tailFrom = run.published();
      run.publishTail();
      const { seqs } = await readUntil(slowClient, () => run.published() - 1, 20_000);
      for (const [i, reads] of run.fastReads.entries()) {
        assertAll((await reads).seqs, run.published(), `fast ${i}`);
      }
      assert.deepEqual(seqs.slice(-5), [0, 1, 2, 3, 4].map((i) => tailFrom + i));
      const newest = new Map<number, number>();
      for (const seq of seqs) {
        const key = seq % KEYS;
        assert.ok(
          !newest.has(key) || newest.get(key)! < seq,
          "never an older value after a newer one",
        );
        newest.set(key, seq);
      }
      for (let key = 0; key < KEYS; key++) {
        const last = lastBefore - ((lastBefore - key) % KEYS + KEYS) % KEYS;
        assert.ok(seqs.includes(last), `the newest value of key ${key} (${last}) arrived`);
      }
      assert.ok(seqs.length < run.published() - 250, "conflated, not queued");
    } finally {
      for (const c of [...run.fastClients, slowClient]) c.destroy();
      await setup.server.shutdown();
    }
  });

  test('"close": the slow one is closed with 1008 naming the topic; fast ones get all', async () => {
    const setup = await start("close");
    const { server, byPath } = setup;
    const port = server.addr.port;
    const fastClients = [
      await RawClient.open(port, { path: "/fast" }),
      await RawClient.open(port, { path: "/fast" }),
    ];
    const slowClient = await RawClient.open(port, { path: "/slow" });
    slowClient.socket.pause();
    try {
      await until(() => server.subscriberCount("feed") === 3, 5000, "three subscribers");
      const fast = byPath.get("/fast")!;
      let published = 0;
      const final = { seq: -1 };
      const fastReads = fastClients.map((c) => readUntil(c, () => final.seq, 60_000));
      let end = Infinity;
      while (published < end) {
        assert.ok(published < 8000, "the slow subscriber was never closed");
        if (fast.some((ws) => ws.bufferedAmount > MAX_BUFFERED / 2)) {
          await sleep(1);
          continue;
        }
        server.publish("feed", message(published++));
        if (end === Infinity && server.subscriberCount("feed") < 3) {
          // Closed: publish 50 more to the fast ones.
          end = published + 50;
          final.seq = end - 1;
        }
        if (published % 16 === 0) await sleep(0);
      }
      assert.equal(server.stats().slowCloses, 1);
      slowClient.socket.resume();
      const { close } = await readUntil(slowClient, () => -1, 20_000);
      assert.ok(close !== null, "a close frame after the backlog");
      const code = (close.payload[0] << 8) | close.payload[1];
      assert.equal(code, 1008);
      assert.match(new TextDecoder().decode(close.payload.subarray(2)), /feed/);
      for (const [i, reads] of fastReads.entries()) {
        assertAll((await reads).seqs, published, `fast ${i}`);
      }
    } finally {
      for (const c of [...fastClients, slowClient]) c.destroy();
      await server.shutdown();
    }
  });
});
