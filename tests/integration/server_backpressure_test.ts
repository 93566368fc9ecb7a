/**
 * Receive backpressure on the server, over real loopback sockets: while the
 * application does not consume a connection's messages, the server stops
 * reading its socket, so a client flooding it stalls on its own full socket
 * buffer instead of growing the server's memory; once the application reads
 * again, every message arrives intact and in order.
 *
 * Both faces are covered: a handler holding `ws.readable` without reading it
 * (the stream's high-water mark is 1 MiB), and a `message` callback returning
 * a promise that has not settled.
 *
 * The server's JavaScript-side backlog has no public counter, so the test
 * counts it itself: it wraps the current runtime adapter's `listen()` so that
 * every byte the server reads from a socket is counted. Bytes read minus
 * bytes the application consumed is what the server holds in memory.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { type Message, serve, type Server, type WebSocketConnection } from "../../mod.ts";
import { currentRuntime, type Listener, type Transport } from "../../src/runtime/mod.ts";
import { buildFrame, Op, pattern, RawClient, sleep, within } from "./_raw_client.ts";

const HOST = "127.0.0.1";
const KiB = 1024;
const MiB = 1024 * KiB;
/** Each flood message: a 4-byte sequence number, then a pattern seeded by it. */
const MESSAGE_SIZE = 64 * KiB;
/** How long the client floods a connection that is not being read. */
const FLOOD_MS = 2000;
/** The `readable` side's high-water mark, configured below (the default is 1 MiB). */
const READABLE_HIGH_WATER = 512 * KiB;
/** Frame headers of the flood messages read along with them, generously. */
const HEADER_SLACK = 4 * KiB;
/** A single socket read larger than this would make the bounds below meaningless. */
const MAX_SANE_CHUNK = 1 * MiB;

function floodMessage(seq: number): Uint8Array {
  const payload = pattern(MESSAGE_SIZE, seq & 0xff);
  new DataView(payload.buffer).setUint32(0, seq);
  return payload;
}

/** Checks that `messages` are the flood messages 0..n-1, in order and intact. */
function assertInOrder(messages: Message[], n: number): void {
  assert.equal(messages.length, n, `expected ${n} messages, got ${messages.length}`);
  for (let seq = 0; seq < n; seq++) {
    const message = messages[seq];
    assert.ok(message instanceof Uint8Array, `message ${seq} is not binary`);
    assert.equal(message.length, MESSAGE_SIZE);
    const got = new DataView(message.buffer, message.byteOffset).getUint32(0);
    assert.equal(got, seq, `message ${seq} arrived as number ${got}`);
    const expected = floodMessage(seq);
    for (let i = 4; i < MESSAGE_SIZE; i++) {
      if (message[i] !== expected[i]) assert.fail(`message ${seq} differs at byte ${i}`);
    }
  }
}

/** Upper bound of what the kernel may buffer on one loopback connection (both ends). */
function kernelBufferBound(): number {
  try {
    const max = (file: string) => Number(readFileSync(file, "utf8").trim().split(/\s+/).pop());
    return max("/proc/sys/net/ipv4/tcp_wmem") + max("/proc/sys/net/ipv4/tcp_rmem");
  } catch {
    return 64 * MiB; // Not Linux: a generous guess.
  }
}

interface FloodResult {
  /** Messages handed to the client's socket. */
  sent: number;
  /** Bytes the client's kernel took (written minus what node:net still holds). */
  accepted: number;
  /** `accepted` sampled every 100 ms. */
  timeline: number[];
}

/**
 * Writes flood messages for `ms`, as fast as the socket takes them: whenever
 * `socket.write()` says its buffer is full, waits for `drain` (or 50 ms).
 */
async function flood(client: RawClient, ms: number): Promise<FloodResult> {
  const socket = client.socket;
  let wake: (() => void) | null = null;
  const onDrain = () => wake?.();
  socket.on("drain", onDrain);
  let written = 0;
  let sent = 0;
  const timeline: number[] = [];
  const start = performance.now();
  let nextSample = start;
  try {
    while (performance.now() - start < ms && !client.ended) {
      if (performance.now() >= nextSample) {
        timeline.push(written - socket.writableLength);
        nextSample += 100;
      }
      const frame = buildFrame({ opcode: Op.Binary, payload: floodMessage(sent) });
      sent++;
      written += frame.length;
      if (!socket.write(frame)) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 50);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = null;
      }
    }
  } finally {
    socket.off("drain", onDrain);
  }
  timeline.push(written - socket.writableLength);
  return { sent, accepted: written - socket.writableLength, timeline };
}

/** Waits until node:net has handed every byte to the kernel, then sends a text "end". */
async function finishSending(client: RawClient): Promise<void> {
  const socket = client.socket;
  const deadline = performance.now() + 20_000;
  while (socket.writableLength > 0) {
    if (performance.now() > deadline) throw new Error("The client's writes never drained");
    await sleep(10);
  }
  client.write(buildFrame({ opcode: Op.Text, payload: "end" }));
}

/**
 * Asserts the flood stalled: no progress over its last second, and no more
 * pushed than the kernel can buffer plus what the server may hold.
 */
function assertStalled(result: FloodResult): void {
  const { timeline, accepted } = result;
  const oneSecondAgo = timeline[Math.max(0, timeline.length - 11)];
  const progress = accepted - oneSecondAgo;
  assert.ok(
    progress <= 256 * KiB,
    `the client kept writing: ${(progress / MiB).toFixed(2)} MiB in the last second`,
  );
  const bound = kernelBufferBound() + READABLE_HIGH_WATER + MAX_SANE_CHUNK + MESSAGE_SIZE;
  assert.ok(
    accepted < bound,
    `the client pushed ${(accepted / MiB).toFixed(1)} MiB, over ${(bound / MiB).toFixed(1)} MiB`,
  );
}

/**
 * Counts the bytes the server reads from its sockets, by wrapping the
 * current runtime adapter's `listen()` (which `serve()` looks up on each
 * call) until `restore()`. Reading is otherwise unchanged.
 */
function countServerReads(): { read(): number; largestChunk(): number; restore(): void } {
  const adapter = currentRuntime();
  const original = adapter.listen;
  let total = 0;
  let largest = 0;
  const wrap = (transport: Transport): Transport => ({
    async read() {
      const chunk = await transport.read();
      if (chunk !== null) {
        total += chunk.byteLength;
        largest = Math.max(largest, chunk.byteLength);
      }
      return chunk;
    },
    write: (data) => transport.write(data),
    close: () => transport.close(),
    get bufferedAmount() {
      return transport.bufferedAmount;
    },
    localAddr: transport.localAddr,
    remoteAddr: transport.remoteAddr,
  });
  adapter.listen = async (options) => {
    const listener = await original.call(adapter, options);
    const counting: Listener = {
      addr: listener.addr,
      accept: async () => {
        const transport = await listener.accept();
        return transport === null ? null : wrap(transport);
      },
      close: () => listener.close(),
    };
    return counting;
  };
  return {
    read: () => total,
    largestChunk: () => largest,
    restore: () => {
      adapter.listen = original;
    },
  };
}

const mib = (n: number) => `${(n / MiB).toFixed(2)} MiB`;

describe("server backpressure", () => {
  test("a handler that holds ws.readable without reading stalls the client", {
    timeout: 60_000,
  }, async () => {
    const opened = Promise.withResolvers<WebSocketConnection>();
    const reads = countServerReads();
    let server: Server;
    try {
      server = await serve({
        port: 0,
        hostname: HOST,
        readableHighWaterMark: READABLE_HIGH_WATER,
      }, (ws) => {
        void ws.readable; // Messages now go to the stream, which nobody reads yet.
        opened.resolve(ws);
      });
    } finally {
      reads.restore();
    }
    const client = await RawClient.open(server.addr.port);
    try {
      const ws = await within(opened.promise, 5000, "the connection to open");
      const handshake = reads.read();
      const result = await flood(client, FLOOD_MS);
      assertStalled(result);
      // Nothing was consumed: all the server read since the handshake, it holds.
      // The read loop stops once the stream's queue reaches its high-water
      // mark, so it holds less than that, plus the last read, plus a partial
      // message in the assembler.
      const held = reads.read() - handshake;
      const chunk = reads.largestChunk();
      console.log(
        `streams face: client pushed ${mib(result.accepted)} (${result.sent} messages); ` +
          `server read and holds ${mib(held)}; largest read ${mib(chunk)}`,
      );
      assert.ok(chunk <= MAX_SANE_CHUNK, `a single socket read took ${mib(chunk)}`);
      const bound = READABLE_HIGH_WATER + chunk + MESSAGE_SIZE + HEADER_SLACK;
      assert.ok(
        held <= bound,
        `the server holds ${mib(held)}, over the high-water mark plus one read (${mib(bound)})`,
      );
      assert.ok(held >= READABLE_HIGH_WATER, `the stream filled only ${mib(held)}`);
      // The public counter tells the same story.
      assert.ok(ws.readableBufferedAmount >= READABLE_HIGH_WATER);
      assert.ok(
        ws.readableBufferedAmount <= bound,
        `readableBufferedAmount ${mib(ws.readableBufferedAmount)}`,
      );

      const reader = ws.readable.getReader();
      const messages: Message[] = [];
      // Now reading: the rest arrives, intact and in order.
      const finished = finishSending(client);
      for (;;) {
        const { value, done } = await within(reader.read(), 10_000, "the next message");
        assert.ok(!done, "the stream ended before the end marker");
        if (value === "end") break;
        messages.push(value);
      }
      await finished;
      assertInOrder(messages, result.sent);
    } finally {
      client.destroy();
      await within(server.shutdown(), 10_000, "shutdown");
    }
  });

  test("a message callback whose promise has not settled stalls the client", {
    timeout: 60_000,
  }, async () => {
    const gate = Promise.withResolvers<void>();
    const messages: Message[] = [];
    const ended = Promise.withResolvers<void>();
    const opened = Promise.withResolvers<void>();
    const reads = countServerReads();
    let server: Server;
    try {
      server = await serve({ port: 0, hostname: HOST }, {
        open() {
          opened.resolve();
        },
        message(_ws, data) {
          if (data === "end") {
            ended.resolve();
            return;
          }
          messages.push(data);
          return gate.promise;
        },
      });
    } finally {
      reads.restore();
    }
    const client = await RawClient.open(server.addr.port);
    try {
      await within(opened.promise, 5000, "the connection to open");
      const handshake = reads.read();
      const result = await flood(client, FLOOD_MS);
      assertStalled(result);
      // Reading stops at the first chunk that completes a message: before it,
      // less than one message was read.
      const read = reads.read() - handshake;
      const chunk = reads.largestChunk();
      console.log(
        `callback face: client pushed ${mib(result.accepted)} (${result.sent} messages); ` +
          `server read ${mib(read)} and delivered ${messages.length} messages ` +
          `while the promise was pending; largest read ${mib(chunk)}`,
      );
      assert.ok(messages.length >= 1, "the first message was delivered");
      assert.ok(chunk <= MAX_SANE_CHUNK, `a single socket read took ${mib(chunk)}`);
      const bound = chunk + MESSAGE_SIZE + HEADER_SLACK;
      assert.ok(
        read <= bound,
        `the server read ${mib(read)} while the callback's promise was pending (bound ${
          mib(bound)
        })`,
      );

      gate.resolve();
      const finished = finishSending(client);
      await within(ended.promise, 20_000, "every message to be delivered");
      await finished;
      assertInOrder(messages, result.sent);
    } finally {
      gate.resolve();
      client.destroy();
      await within(server.shutdown(), 10_000, "shutdown");
    }
  });
});
