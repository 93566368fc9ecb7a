/**
 * The Bun transport (src/runtime/bun.ts), the stream stages
 * and `webSocketFromStreams()`, and the worker supervisor.
 *
 * - "fake Bun socket": drives `bunAdapter` through a scripted socket (a
 *   stand-in for `Bun.listen`, patched in only while the listener is made),
 *   so pause/resume, queue marks, partial writes and close ordering are
 *   checked exactly, on both runtimes.
 * - "real sockets": the current runtime's adapter over loopback (TCP, TLS).
 * - streams and workers: pure streams, and child processes that are all
 *   checked dead by pid afterwards.
 *
 * Runs under both `deno test -A` and `bun test`.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { after, before, describe } from "node:test";
import fc from "fast-check";
import { delay, test, within } from "../_watch.ts";
import { makeTestCerts, opensslSkipReason, type TestCerts } from "../_certs.ts";
import { bunAdapter } from "../../src/runtime/bun.ts";
import { currentRuntime, type Listener, type Transport } from "../../src/runtime/mod.ts";
import type { ChunkConsumer } from "../../src/runtime/transport.ts";
import { encodeFrame, type Frame } from "../../src/protocol/frame.ts";
import { FrameDecoderStream, FrameEncoderStream } from "../../src/streams/frame_stream.ts";
import { MessageDecoderStream } from "../../src/streams/message_stream.ts";
import { webSocketFromStreams } from "../../src/stream_connection.ts";
import { Supervisor } from "../../src/workers.ts";

const runtime = currentRuntime();
const HOST = "127.0.0.1";
const KiB = 1024;
const MiB = 1024 * KiB;

// ---------------------------------------------------------------------------
// A scripted Bun socket.

// deno-lint-ignore no-explicit-any
type Handlers = Record<string, (...args: any[]) => void>;

class FakeSocket {
  data: unknown = undefined;
  readonly localAddress = "127.0.0.1";
  readonly localPort = 1;
  readonly remoteAddress = "127.0.0.1";
  readonly remotePort = 2;
  /** Bytes the "kernel" takes before the next drain. */
  capacity = Infinity;
  out: Uint8Array[] = [];
  paused = false;
  pauses = 0;
  resumes = 0;
  closed = false;
  shut = false;

  constructor(readonly handlers: Handlers) {}

  write(data: Uint8Array, byteOffset = 0, byteLength = data.byteLength - byteOffset): number {
    if (this.closed) return -1;
    const n = Math.min(byteLength, this.capacity);
    this.capacity -= n;
    if (n > 0) this.out.push(data.slice(byteOffset, byteOffset + n));
    return n;
  }
  end(): void {
    if (this.closed) return;
    this.closed = true;
    this.handlers.close(this); // synchronously, as Bun does
  }
  shutdown(): void {
    this.shut = true;
  }
  pause(): void {
    assert.ok(!this.paused, "pause() while already paused");
    this.paused = true;
    this.pauses++;
  }
  resume(): void {
    assert.ok(this.paused, "resume() while not paused");
    this.paused = false;
    this.resumes++;
  }
  setNoDelay(): boolean {
    return true;
  }

  // The peer's side.
  feed(bytes: Uint8Array): void {
    this.handlers.data(this, bytes);
  }
  drain(capacity: number): void {
    this.capacity = capacity;
    this.handlers.drain(this);
  }
  /** Peer FIN: Bun (without allowHalfOpen) reports end, then closes. */
  peerEnd(): void {
    this.handlers.end(this);
    if (this.closed) return;
    this.closed = true;
    this.handlers.close(this);
  }
  reset(error: Error): void {
    this.handlers.error(this, error);
    if (this.closed) return;
    this.closed = true;
    this.handlers.close(this, error);
  }
  wire(): Uint8Array {
    return Buffer.concat(this.out);
  }
}

/** A bun transport over a fresh FakeSocket, on either runtime. */
async function fakeTransport(): Promise<{ socket: FakeSocket; transport: Transport }> {
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  let handlers: Handlers | undefined;
  const fakeListen = (options: { hostname: string; socket: Handlers }) => {
    handlers = options.socket;
    return { hostname: options.hostname, port: 4242, stop() {} };
  };
  let listener: Listener;
  if (typeof g.Bun === "object" && g.Bun !== null) {
    const saved = g.Bun.listen;
    g.Bun.listen = fakeListen;
    try {
      listener = await bunAdapter.listen({ hostname: HOST, port: 0 });
    } finally {
      g.Bun.listen = saved;
    }
  } else {
    g.Bun = { listen: fakeListen, allocUnsafe: (n: number) => new Uint8Array(n) };
    try {
      listener = await bunAdapter.listen({ hostname: HOST, port: 0 });
    } finally {
      delete g.Bun;
    }
  }
  const socket = new FakeSocket(handlers!);
  handlers!.open(socket);
  const transport = await within(listener.accept(), 1000, "fake accept");
  listener.close();
  assert.ok(transport !== null);
  return { socket, transport };
}

/** `n` bytes numbered from `start` (mod 256). */
function numbered(start: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (start + i) & 255;
  return out;
}

function settledState(promise: Promise<unknown>): { state: string; error?: unknown } {
  const s: { state: string; error?: unknown } = { state: "pending" };
  promise.then(() => (s.state = "resolved"), (error) => {
    s.state = "rejected";
    s.error = error;
  });
  return s;
}

describe("bun transport over a fake Bun socket", () => {
  test("pull mode: pauses only above 64 KiB queued, resumes below it, order kept", async () => {
    const { socket, transport } = await fakeTransport();
    const chunk = 16 * KiB;
    for (let i = 0; i < 4; i++) socket.feed(numbered(i * chunk, chunk));
    assert.equal(socket.paused, false, "exactly 64 KiB queued is not above the mark");
    socket.feed(numbered(4 * chunk, chunk));
    assert.equal(socket.paused, true, "above 64 KiB queued: paused");
    // Bun may still hand over what it had read: queued, not lost.
    socket.feed(numbered(5 * chunk, chunk));
    assert.equal(socket.pauses, 1);
    const got: Uint8Array[] = [];
    got.push((await transport.read())!);
    got.push((await transport.read())!);
    assert.equal(socket.paused, true, "64 KiB still queued");
    got.push((await transport.read())!);
    assert.equal(socket.paused, false, "below the mark: resumed");
    for (let i = 0; i < 3; i++) got.push((await transport.read())!);
    assert.ok(Buffer.concat(got).equals(Buffer.from(numbered(0, 6 * chunk))));
    socket.peerEnd();
    assert.equal(await transport.read(), null);
    transport.close();
  });

  test("push mode: end while chunks wait for a stopped consumer loses none, ends after them", async () => {
    const { socket, transport } = await fakeTransport();
    const got: number[] = [];
    let ends = 0;
    let endedAfter = -1;
    let stop = true;
    transport.setConsumer!({
      data(chunk) {
        got.push(...chunk);
        return !stop;
      },
      end(error) {
        assert.equal(error, null);
        ends++;
        endedAfter = got.length;
      },
    });
    socket.feed(numbered(0, 10));
    assert.equal(socket.paused, true, "a consumer returning false pauses the socket");
    socket.feed(numbered(10, 10)); // already read by Bun: queued
    socket.feed(numbered(20, 10));
    socket.peerEnd();
    assert.equal(ends, 0, "end must wait for the queued chunks");
    transport.resumeConsumer!(); // delivers 10..19, stops again
    assert.equal(got.length, 20);
    assert.equal(ends, 0);
    stop = false;
    transport.resumeConsumer!();
    assert.deepEqual(got, [...numbered(0, 30)]);
    assert.equal(ends, 1);
    assert.equal(endedAfter, 30, "end reported after every chunk");
    transport.resumeConsumer!();
    assert.equal(ends, 1, "end reported once");
    transport.close();
  });

  test("push mode: a socket error waits behind queued chunks, then end(error) once", async () => {
    const { socket, transport } = await fakeTransport();
    const got: number[] = [];
    const ends: (Error | null)[] = [];
    transport.setConsumer!({
      data(chunk) {
        got.push(...chunk);
        return false;
      },
      end: (error) => ends.push(error),
    });
    socket.feed(numbered(0, 5));
    socket.feed(numbered(5, 5));
    const boom = new Error("ECONNRESET");
    socket.reset(boom);
    assert.deepEqual(ends, []);
    transport.resumeConsumer!();
    assert.deepEqual(got, [...numbered(0, 10)]);
    transport.resumeConsumer!();
    assert.deepEqual(ends, [boom]);
    transport.close();
  });

  test("read() and setConsumer()/dropConsumer() interleaved keep every byte in order", async () => {
    const { socket, transport } = await fakeTransport();
    const got: number[] = [];
    socket.feed(numbered(0, 3));
    socket.feed(numbered(3, 3));
    got.push(...(await transport.read())!); // 0..2 through read()
    let calls = 0;
    const second: ChunkConsumer = {
      data(chunk) {
        got.push(...chunk);
        // back to read() after its second chunk
        if (++calls === 2) {
          transport.dropConsumer!();
          return false;
        }
        return true;
      },
      end: () => assert.fail("dropped before the end"),
    };
    transport.setConsumer!({
      data(chunk) {
        got.push(...chunk);
        transport.setConsumer!(second); // hand over from inside data()
        return false; // counts no more
      },
      end: () => assert.fail("handed over before the end"),
    });
    // 3..5 went to the first consumer at once (queued before).
    assert.equal(got.length, 6);
    assert.equal(socket.paused, false, "a handed-over consumer's false must not pause");
    socket.feed(numbered(6, 3)); // second
    socket.feed(numbered(9, 3)); // second, then dropConsumer
    socket.feed(numbered(12, 3)); // queued for read()
    const pending = transport.read();
    got.push(...(await pending)!);
    const waiting = transport.read(); // nothing queued: waits
    socket.feed(numbered(15, 3));
    got.push(...(await within(waiting, 1000, "read after feed"))!);
    assert.deepEqual(got, [...numbered(0, 18)]);
    socket.peerEnd();
    assert.equal(await transport.read(), null);
    transport.close();
  });

  test("a consumer set while the pull queue is above the mark resumes the socket only when drained", async () => {
    const { socket, transport } = await fakeTransport();
    for (let i = 0; i < 5; i++) socket.feed(numbered(i, 16 * KiB));
    assert.equal(socket.paused, true);
    let taken = 0;
    let allow = 2;
    transport.setConsumer!({
      data(chunk) {
        taken += chunk.length;
        return --allow > 0;
      },
      end: () => {},
    });
    assert.equal(taken, 32 * KiB);
    assert.equal(socket.paused, true, "stopped consumer: still paused");
    allow = 100;
    transport.resumeConsumer!();
    assert.equal(taken, 80 * KiB);
    assert.equal(socket.paused, false, "drained and ready: resumed");
    transport.close();
  });

  test("partial writes: many small writes behind a partial one arrive whole, in order; bufferedAmount exact", async () => {
    const { socket, transport } = await fakeTransport();
    socket.capacity = 7;
    const backing = numbered(0, 100_000 + 3);
    const pendings: Promise<void>[] = [];
    const order: number[] = [];
    let at = 3; // views with a non-zero byteOffset, as the driver writes
    let total = 0;
    for (let i = 0; at < backing.length; i++) {
      const n = Math.min(1 + (i * 37) % 97, backing.length - at);
      const p = transport.write(backing.subarray(at, at + n));
      at += n;
      total += n;
      if (p !== undefined) pendings.push(p.then(() => void order.push(i)));
    }
    assert.ok(pendings.length > 100);
    assert.equal(transport.bufferedAmount, total - 7);
    let seed = 1;
    while (socket.wire().length < total) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      socket.drain(seed % 3000);
      assert.equal(transport.bufferedAmount, total - socket.wire().length);
    }
    await within(Promise.all(pendings), 1000, "every queued write settles");
    assert.deepEqual(order, [...order].sort((a, b) => a - b), "resolved in order");
    assert.ok(Buffer.from(socket.wire()).equals(Buffer.from(backing.subarray(3))));
    assert.equal(transport.bufferedAmount, 0);
    transport.close();
  });

  test("close() with writes queued rejects each of them, zeroes bufferedAmount, ends the socket", async () => {
    const { socket, transport } = await fakeTransport();
    socket.capacity = 5;
    const states = [1, 2, 3].map(() => settledState(transport.write(numbered(0, 10))!));
    assert.equal(transport.bufferedAmount, 25);
    const reading = settledState(transport.read());
    transport.close();
    await delay(0);
    assert.deepEqual(states.map((s) => s.state), ["rejected", "rejected", "rejected"]);
    assert.equal(reading.state, "resolved");
    assert.equal(transport.bufferedAmount, 0);
    assert.ok(socket.closed);
    assert.throws(() => transport.write(numbered(0, 1)));
    socket.drain(100); // a late drain must not write anything
    assert.equal(socket.wire().length, 5);
  });

  test("a reset mid-write rejects the queued writes and the pending read with the error", async () => {
    const { socket, transport } = await fakeTransport();
    socket.capacity = 3;
    const w1 = settledState(transport.write(numbered(0, 10))!);
    const w2 = settledState(transport.write(numbered(10, 10))!);
    const r = settledState(transport.read());
    const boom = new Error("ECONNRESET");
    socket.reset(boom);
    await delay(0);
    assert.equal(w1.state, "rejected");
    assert.equal(w2.state, "rejected");
    assert.equal(w1.error, boom);
    assert.equal(r.state, "rejected");
    assert.equal(r.error, boom);
    assert.equal(transport.bufferedAmount, 0);
    assert.throws(() => transport.write(numbered(0, 1)), "a closed socket's write throws");
    transport.close();
  });
});

// ---------------------------------------------------------------------------
// Real sockets.

async function send(transport: Transport, data: Uint8Array): Promise<void> {
  const pending = transport.write(data);
  if (pending !== undefined) await pending;
}

async function connectedPair(
  tls?: { cert: string; key: string; ca: string },
): Promise<{ client: Transport; server: Transport }> {
  const listener = await runtime.listen({
    hostname: HOST,
    port: 0,
    tls: tls && { cert: tls.cert, key: tls.key },
  });
  try {
    const accepted = listener.accept();
    const client = await runtime.connect({
      hostname: HOST,
      port: listener.addr.port,
      tls: tls && { serverName: "localhost", caCerts: [tls.ca] },
    });
    const server = await within(accepted, 5000, "accept");
    assert.ok(server !== null);
    return { client, server };
  } finally {
    listener.close();
  }
}

async function readAll(transport: Transport, ms: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  await within(
    (async () => {
      for (let c = await transport.read(); c !== null; c = await transport.read()) {
        parts.push(c.slice());
      }
    })(),
    ms,
    "read to the end",
  );
  return Buffer.concat(parts);
}

describe(`${runtime.name} transport, real sockets`, () => {
  test("half-open: after the peer's FIN (closeWrite) we can still answer it, as on Deno", async () => {
    const { client, server } = await connectedPair();
    try {
      await send(client, numbered(0, 7));
      client.closeWrite!();
      const request = await readAll(server, 5000); // data, then null at FIN
      assert.equal(request.length, 7);
      await delay(50);
      const answer = numbered(0, 4 * MiB);
      let written: Promise<void> | undefined;
      assert.doesNotThrow(() => {
        written = send(server, answer);
      }, "write after the peer's FIN");
      let got = 0;
      await within(
        (async () => {
          while (got < answer.length) {
            const c = await client.read();
            if (c === null) break;
            got += c.length;
          }
        })(),
        10_000,
        "the answer",
      );
      await within(written!, 10_000, "answer written");
      assert.equal(got, answer.length, "the peer got the whole answer");
      server.close();
      assert.equal(await within(client.read(), 5000, "end after close"), null);
    } finally {
      client.close();
      server.close();
    }
  });

  test("a stopped push consumer stops reading: the sender stalls; resuming delivers every byte in order", async () => {
    const { client, server } = await connectedPair();
    try {
      const parts: Uint8Array[] = [];
      let stopped = true;
      let ended: Error | null | undefined;
      server.setConsumer!({
        data(chunk) {
          parts.push(chunk.slice());
          return !stopped;
        },
        end: (error) => (ended = error),
      });
      const block = MiB;
      let written = 0;
      let stalled: Promise<void> | undefined;
      const started = Date.now();
      while (written < 256 * MiB && Date.now() - started < 10_000) {
        const p = client.write(numbered(written, block));
        written += block;
        if (p !== undefined) {
          const state = settledState(p);
          await delay(300);
          if (state.state === "pending") {
            stalled = p;
            break;
          }
        }
      }
      assert.ok(stalled !== undefined, `never stalled after ${written / MiB} MiB`);
      const delivered = written - client.bufferedAmount;
      assert.ok(delivered < 64 * MiB, `${delivered / MiB} MiB left the sender`);
      const received = parts.reduce((n, p) => n + p.length, 0);
      assert.ok(received < 2 * MiB, `${received} bytes reached a stopped consumer`);
      stopped = false;
      server.resumeConsumer!();
      await within(stalled, 10_000, "stalled write after resume");
      client.close();
      await within(
        (async () => {
          while (ended === undefined) await delay(5);
        })(),
        10_000,
        "end after all bytes",
      );
      assert.equal(ended, null);
      const got = Buffer.concat(parts);
      assert.equal(got.length, written);
      assert.ok(got.equals(Buffer.from(numbered(0, written))), "byte-exact, in order");
    } finally {
      client.close();
      server.close();
    }
  });

  test("end of stream while chunks wait for a paused consumer: none lost, end after them", async () => {
    const { client, server } = await connectedPair();
    try {
      const parts: Uint8Array[] = [];
      let allow = 1;
      let ended: Error | null | undefined;
      let endedAt = -1;
      server.setConsumer!({
        data(chunk) {
          parts.push(chunk.slice());
          return --allow > 0;
        },
        end(error) {
          ended = error;
          endedAt = parts.reduce((n, p) => n + p.length, 0);
        },
      });
      const total = 512 * KiB;
      await send(client, numbered(0, total));
      client.close();
      await delay(200);
      assert.equal(ended, undefined, "no end while the consumer is stopped");
      allow = Infinity;
      server.resumeConsumer!();
      await within(
        (async () => {
          while (ended === undefined) await delay(5);
        })(),
        5000,
        "end",
      );
      assert.equal(ended, null);
      assert.equal(endedAt, total);
      assert.ok(Buffer.concat(parts).equals(Buffer.from(numbered(0, total))));
    } finally {
      client.close();
      server.close();
    }
  });

  test("close() with writes queued: every queued write rejects, nothing hangs", async () => {
    const { client, server } = await connectedPair();
    try {
      const states: ReturnType<typeof settledState>[] = [];
      const started = Date.now();
      while (states.length < 8 && Date.now() - started < 10_000) {
        const p = server.write(new Uint8Array(4 * MiB));
        if (p !== undefined) states.push(settledState(p));
      }
      assert.ok(states.length > 0 && server.bufferedAmount > 0);
      server.close();
      await delay(20);
      assert.ok(states.every((s) => s.state === "rejected"), JSON.stringify(states));
      assert.equal(server.bufferedAmount, 0);
    } finally {
      client.close();
      server.close();
    }
  });

  test("the peer resetting mid-write rejects the queued writes", async () => {
    const { client, server } = await connectedPair();
    try {
      const states: ReturnType<typeof settledState>[] = [];
      const started = Date.now();
      while (states.length < 8 && Date.now() - started < 10_000) {
        const p = server.write(new Uint8Array(4 * MiB));
        if (p !== undefined) states.push(settledState(p));
      }
      // Close with unread data in its receive buffer: the kernel sends RST.
      client.write(new Uint8Array(10));
      client.close();
      await within(
        (async () => {
          while (states.some((s) => s.state === "pending")) await delay(10);
        })(),
        5000,
        "queued writes settle after the reset",
      );
      assert.ok(states.every((s) => s.state === "rejected"));
      assert.equal(server.bufferedAmount, 0);
      // read() ends (null or the reset error), and never hangs.
      await within(server.read().catch(() => null), 5000, "read after reset");
    } finally {
      client.close();
      server.close();
    }
  });

  describe("over TLS", { skip: opensslSkipReason("the Bun TLS transport tests") || false }, () => {
    let certs: TestCerts | undefined;
    before(() => {
      certs = makeTestCerts();
    });
    after(() => certs?.cleanup());

    for (const direction of ["server→client", "client→server"] as const) {
      test(`${direction}: 20 000 small numbered writes under a slow reader arrive in order`, async () => {
        const { client, server } = await connectedPair(certs!);
        const [from, to] = direction === "server→client" ? [server, client] : [client, server];
        try {
          const backing = numbered(0, 6 * MiB + 1);
          let at = 1;
          const pendings: Promise<void>[] = [];
          for (let i = 0; i < 20_000 && at < backing.length; i++) {
            const n = Math.min(1 + (i * 131) % 600, backing.length - at);
            const p = from.write(backing.subarray(at, at + n));
            if (p !== undefined) pendings.push(p);
            at += n;
          }
          const total = at - 1;
          assert.ok(pendings.length > 0, "some writes queued");
          const got = new Uint8Array(total);
          let filled = 0;
          await within(
            (async () => {
              while (filled < total) {
                const c = await to.read();
                assert.ok(c !== null, `ended after ${filled} of ${total}`);
                got.set(c, filled);
                filled += c.length;
                if (filled % 7 === 0) await delay(1);
              }
            })(),
            30_000,
            "slow read",
          );
          await within(Promise.all(pendings), 5000, "queued writes");
          assert.ok(Buffer.from(got).equals(Buffer.from(backing.subarray(1, 1 + total))));
          assert.equal(from.bufferedAmount, 0);
        } finally {
          client.close();
          server.close();
        }
      });
    }
  });
});

// ---------------------------------------------------------------------------
// Stream stages and webSocketFromStreams.

async function collect<T>(stream: ReadableStream<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

/** Splits `bytes` at the given cut points (sorted, deduplicated). */
function split(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let last = 0;
  for (const p of [...points, bytes.length]) {
    if (p > last) out.push(bytes.slice(last, p));
    last = p;
  }
  return out;
}

const frameArb = fc.oneof(
  fc.record({
    opcode: fc.constantFrom(0, 1, 2),
    fin: fc.boolean(),
    payload: fc.oneof(
      fc.uint8Array({ maxLength: 130 }),
      fc.integer({ min: 65_530, max: 65_540 }).map((n) => numbered(n, n)),
    ),
  }),
  fc.record({
    opcode: fc.constantFrom(8, 9, 10),
    fin: fc.constant(true),
    payload: fc.uint8Array({ maxLength: 125 }),
  }),
);

describe("stream stages and webSocketFromStreams", () => {
  test("fast-check: any chunking (down to 1 byte) of a frame sequence decodes to the same frames", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(frameArb, { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 40 }),
        fc.boolean(),
        async (frames, cuts, byteByByte) => {
          const wire = Buffer.concat(
            frames.map((f) => encodeFrame(f.opcode, f.payload, { fin: f.fin, mask: true })),
          );
          const chunks = byteByByte && wire.length < 4000
            ? [...wire].map((b) => new Uint8Array([b]))
            : split(wire, cuts);
          const decoded = await collect(
            ReadableStream.from(chunks).pipeThrough(new FrameDecoderStream({ role: "server" })),
          );
          assert.equal(decoded.length, frames.length);
          decoded.forEach((d, i) => {
            assert.equal(d.opcode, frames[i].opcode);
            assert.equal(d.fin, frames[i].fin);
            assert.ok(Buffer.from(d.payload).equals(Buffer.from(frames[i].payload)));
          });
        },
      ),
      { numRuns: 150 },
    );
  });

  test("fast-check: 1-byte chunks through webSocketFromStreams deliver every message intact", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.string({ maxLength: 40 }), fc.uint8Array({ maxLength: 300 })), {
          minLength: 1,
          maxLength: 6,
        }),
        async (messages) => {
          const frames = messages.map((m) =>
            typeof m === "string"
              ? encodeFrame(1, new TextEncoder().encode(m), { mask: true })
              : encodeFrame(2, m, { mask: true })
          );
          const bytes = [...Buffer.concat(frames)];
          let i = 0;
          const source = new ReadableStream<Uint8Array>({
            pull(controller) {
              if (i < bytes.length) controller.enqueue(new Uint8Array([bytes[i++]]));
            },
          }, { highWaterMark: 0 });
          const sink = new WritableStream<Uint8Array>();
          const ws = webSocketFromStreams({ readable: source, writable: sink }, {
            role: "server",
            closeTimeout: 20,
          });
          try {
            const reader = ws.readable.getReader();
            for (const expected of messages) {
              const { value } = await within(reader.read(), 5000, "message");
              if (typeof expected === "string") assert.equal(value, expected);
              else assert.ok(Buffer.from(value as Uint8Array).equals(Buffer.from(expected)));
            }
            reader.releaseLock();
          } finally {
            ws.close();
            await within(ws.closed, 5000, "closed");
          }
        },
      ),
      { numRuns: 30 },
    );
  });

  test("FrameEncoderStream → FrameDecoderStream round trip, client masks", async () => {
    const frames: Frame[] = [
      { fin: false, rsv1: false, opcode: 1, payload: new TextEncoder().encode("he") },
      { fin: true, rsv1: false, opcode: 9, payload: numbered(0, 125) },
      { fin: true, rsv1: false, opcode: 0, payload: new TextEncoder().encode("llo") },
      { fin: true, rsv1: false, opcode: 2, payload: numbered(0, 70_000) },
    ];
    const messages = await collect(
      ReadableStream.from(frames)
        .pipeThrough(new FrameEncoderStream({ role: "client" }))
        .pipeThrough(new FrameDecoderStream({ role: "server" }))
        .pipeThrough(new MessageDecoderStream()),
    );
    assert.deepEqual(messages.map((m) => m.type), ["ping", "text", "binary"]);
    assert.equal((messages[1] as { data: string }).data, "hello");
  });

  test("backpressure: an unread ws.readable stops pulling the source", async () => {
    let pulled = 0;
    const frame = encodeFrame(2, new Uint8Array(1024), { mask: true });
    const source = new ReadableStream<Uint8Array>({
      pull(controller) {
        // Capped, so that the end of the test does not meet the starvation
        // shown by the "always-ready source" test below.
        if (pulled >= 8 * MiB) return new Promise<void>(() => {});
        pulled += frame.length;
        controller.enqueue(frame.slice());
      },
    }, { highWaterMark: 0 });
    const ws = webSocketFromStreams({ readable: source, writable: new WritableStream() }, {
      role: "server",
      readableHighWaterMark: 256 * KiB,
      closeTimeout: 200,
    });
    try {
      const readable = ws.readable; // switches delivery to the stream; never read
      await delay(300);
      const first = pulled;
      await delay(300);
      assert.ok(first < 2 * MiB, `${first} bytes pulled with nobody reading`);
      assert.equal(pulled, first, "pulling went on with nobody reading");
      // Reading again pulls again.
      const reader = readable.getReader();
      for (let i = 0; i < 600; i++) await within(reader.read(), 5000, "message");
      assert.ok(pulled > first);
      reader.releaseLock();
    } finally {
      ws.close();
      await within(ws.closed, 5000, "closed");
    }
  });

  test("an always-ready source does not starve timers (closeTimeout, keepalive, the app's)", async () => {
    // A source that is always ready: in memory, or a fast producer. Capped at
    // 128 MiB so that the test ends even where it is read in one chain of
    // microtasks (then no timer runs until the source is exhausted).
    const LIMIT = 128 * MiB;
    let pulled = 0;
    const frame = encodeFrame(2, new Uint8Array(1024), { mask: true });
    const source = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (pulled >= LIMIT) return new Promise<void>(() => {});
        pulled += frame.length;
        controller.enqueue(frame);
      },
    }, { highWaterMark: 0 });
    let messages = 0;
    const ws = webSocketFromStreams({ readable: source, writable: new WritableStream() }, {
      role: "server",
      closeTimeout: 50,
      handlers: { message: () => void messages++ },
    });
    let pulledWhenTimerRan = -1;
    const started = Date.now();
    await new Promise<void>((resolve) =>
      setTimeout(() => {
        pulledWhenTimerRan = pulled;
        resolve();
      }, 20)
    );
    const waited = Date.now() - started;
    ws.close();
    const info = await within(ws.closed, 5000, "closed");
    assert.ok(messages > 0);
    assert.ok(
      pulledWhenTimerRan < LIMIT,
      `a 20 ms timer ran only after ${waited} ms, once the source had given all ` +
        `${pulledWhenTimerRan / MiB} MiB: the read loop never yielded to timers`,
    );
    assert.equal(info.closeCode, 1006, "closeTimeout ended the closing handshake");
  });

  test("a source that ends mid-frame fails the connection with 1006", async () => {
    const whole = encodeFrame(2, numbered(0, 50), { mask: true });
    const ws = webSocketFromStreams({
      readable: ReadableStream.from([whole, whole.subarray(0, 20)]),
      writable: new WritableStream(),
    }, { role: "server" });
    const messages: unknown[] = [];
    ws.addEventListener("message", (e) => messages.push((e as MessageEvent).data));
    const info = await within(ws.closed, 5000, "closed");
    assert.equal(info.closeCode, 1006);
    assert.equal(info.wasClean, false);
    assert.equal(messages.length, 1, "the whole frame before it was delivered");
  });

  test("a source that errors fails the connection (1006), no unhandled rejection", async () => {
    let errors = 0;
    const ws = webSocketFromStreams({
      readable: new ReadableStream({
        pull(controller) {
          controller.error(new Error("tunnel broke"));
        },
      }),
      writable: new WritableStream(),
    }, { role: "server" });
    ws.addEventListener("error", () => errors++);
    const info = await within(ws.closed, 5000, "closed");
    assert.equal(info.closeCode, 1006);
    assert.equal(errors, 1);
  });

  test("a sink that errors fails the connection (1006) and cancels the source, no unhandled rejection", async () => {
    let cancelled = false;
    const ws = webSocketFromStreams({
      readable: new ReadableStream({
        cancel() {
          cancelled = true;
        },
      }),
      writable: new WritableStream({
        write() {
          throw new Error("sink broke");
        },
      }),
    }, { role: "server", closeTimeout: 500 });
    ws.send("hello");
    const info = await within(ws.closed, 5000, "closed");
    assert.equal(info.closeCode, 1006);
    await delay(10);
    assert.ok(cancelled, "the source was cancelled");
  });

  test("ws.close(): the peer's close, then the sink is closed and the source cancelled", async () => {
    let cancelled = false;
    let sinkClosed = false;
    const written: Uint8Array[] = [];
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const source = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const reader = readable.getReader();
        const { value, done } = await reader.read();
        reader.releaseLock();
        if (done) controller.close();
        else controller.enqueue(value);
      },
      cancel() {
        cancelled = true;
      },
    }, { highWaterMark: 0 });
    const ws = webSocketFromStreams({
      readable: source,
      writable: new WritableStream({
        write(chunk) {
          written.push(chunk.slice());
        },
        close() {
          sinkClosed = true;
        },
      }),
    }, { role: "server", closeTimeout: 2000 });
    ws.close(1000, "bye");
    await delay(20);
    assert.equal(written.at(-1)?.[0], 0x88, "a close frame was sent");
    const peer = writable.getWriter();
    await peer.write(encodeFrame(8, new Uint8Array([3, 232]), { mask: true }));
    const info = await within(ws.closed, 5000, "closed");
    assert.equal(info.closeCode, 1000);
    await delay(20);
    assert.ok(sinkClosed, "sink closed");
    assert.ok(cancelled, "source cancelled");
    await peer.close().catch(() => {});
  });

  test("cancelling ws.readable closes the connection with 1000", async () => {
    const ws = webSocketFromStreams({
      readable: new ReadableStream(),
      writable: new WritableStream(),
    }, { role: "server", closeTimeout: 100 });
    await ws.readable.cancel();
    const info = await within(ws.closed, 5000, "closed");
    assert.ok(info.closeCode === 1000 || info.closeCode === 1006, `code ${info.closeCode}`);
  });
});

// ---------------------------------------------------------------------------
// Workers.

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(check: () => boolean, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) assert.fail(`gave up waiting: ${what}`);
    await delay(20);
  }
}

function workerCommand(script: string): [string, string[]] {
  return runtime.name === "deno"
    ? [process.execPath, ["run", "-A", script]]
    : [process.execPath, [script]];
}

describe("worker supervisor", () => {
  let dir = "";
  const seen = new Set<number>();
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "sluice-workers-"));
  });
  after(() => {
    for (const pid of seen) {
      if (isAlive(pid)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test("a crashing worker is restarted; stop() leaves no process behind", async () => {
    const marker = join(dir, "crashed");
    const script = join(dir, "worker.mjs");
    // Worker 1 crashes once, after listening; then stays up. Everyone quits with stdin.
    writeFileSync(
      script,
      `import fs from "node:fs"; import process from "node:process";
console.log("listening on ws://127.0.0.1:1/");
process.stdin.on("end", () => process.exit(0)); process.stdin.resume();
if (process.env.SLUICE_WORKER === "1" && !fs.existsSync(${JSON.stringify(marker)})) {
  fs.writeFileSync(${JSON.stringify(marker)}, "x");
  setTimeout(() => process.exit(3), 100);
}
setInterval(() => {}, 1000);
`,
    );
    const logs: string[] = [];
    const sup = new Supervisor({
      count: 2,
      command: workerCommand(script),
      log: (line) => logs.push(line),
      minRestartDelay: 50,
      stopTimeout: 3000,
    });
    try {
      assert.equal(await within(sup.ready, 15_000, "ready"), "ws://127.0.0.1:1/");
      for (const pid of sup.pids) if (pid) seen.add(pid);
      await until(() => sup.restarts === 1, "the crash to be seen");
      await until(() => sup.pids.every((pid) => pid !== undefined), "the restart");
      await until(() => logs.filter((l) => l.includes("listening on")).length >= 3, "relisten");
      for (const pid of sup.pids) if (pid) seen.add(pid);
      assert.equal(seen.size, 3);
      assert.ok(
        logs.some((l) => /\[worker 1\] pid \d+ exited with code 3/.test(l)),
        logs.join("\n"),
      );
    } finally {
      await within(sup.stop(), 10_000, "stop");
    }
    await delay(50);
    for (const pid of seen) assert.ok(!isAlive(pid), `pid ${pid} still alive`);
  });

  test("stop() during a restart delay starts nothing more; a worker ignoring SIGTERM is killed", async () => {
    const script = join(dir, "stubborn.mjs");
    writeFileSync(
      script,
      `import process from "node:process";
console.log("listening on ws://127.0.0.1:2/");
if (process.env.SLUICE_WORKER === "1") setTimeout(() => process.exit(1), 50);
else process.on("SIGTERM", () => console.log("ignoring SIGTERM"));
setInterval(() => {}, 1000);
`,
    );
    const logs: string[] = [];
    const sup = new Supervisor({
      count: 2,
      command: workerCommand(script),
      log: (line) => logs.push(line),
      minRestartDelay: 2000, // worker 1 waits here when stop() comes
      stopTimeout: 500,
    });
    try {
      await within(sup.ready, 15_000, "ready");
      for (const pid of sup.pids) if (pid) seen.add(pid);
      await until(() => sup.restarts === 1, "worker 1 to die");
    } finally {
      await within(sup.stop(), 5000, "stop (a worker ignoring SIGTERM is SIGKILLed after 500 ms)");
    }
    await delay(2500); // past the restart delay: nothing may start
    assert.equal(sup.restarts, 1);
    assert.deepEqual(sup.pids.filter((p) => p !== undefined), []);
    assert.ok(logs.some((l) => /did not stop in time/.test(l)), logs.join("\n"));
    for (const pid of seen) assert.ok(!isAlive(pid), `pid ${pid} still alive`);
  });
});
