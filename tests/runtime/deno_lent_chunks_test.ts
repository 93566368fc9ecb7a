/**
 * The Deno transport's lent chunks and pooled read buffers (`ReadBufferPool` in
 * src/runtime/deno.ts): a chunk lent to `consumer.data()` must stay intact
 * until `data()` returns, and a chunk from `read()` until the next `read()`,
 * whatever other connections do meanwhile.
 *
 * Deno's `conn.read(buf)` is eager: bytes already waiting on the socket are
 * copied into `buf` during the call itself (the promise settles later). So a
 * buffer that goes back to a pool while its chunk is lent can be filled with
 * another connection's bytes before `data()` returns, if a `take()` and a
 * read happen in between (e.g. a second `setConsumer()`, which shrinks to a
 * pooled 128-byte buffer and starts a read at once).
 *
 * Deno only (the Bun adapter has no pools): skipped elsewhere.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { delay, within } from "../_watch.ts";
import { denoAdapter, type Transport } from "../../src/runtime/mod.ts";

const isDeno = typeof (globalThis as { Deno?: { version?: { deno?: unknown } } }).Deno?.version
  ?.deno === "string";
const skip = !isDeno && "Deno adapter only";
const HOST = "127.0.0.1";

async function send(transport: Transport, data: Uint8Array): Promise<void> {
  const pending = transport.write(data);
  if (pending !== undefined) await pending;
}

/** A connected client and server transport, with the listener already closed. */
async function connectedPair(): Promise<{ client: Transport; server: Transport }> {
  const listener = await denoAdapter.listen({ hostname: HOST, port: 0 });
  try {
    const accepted = listener.accept();
    const client = await denoAdapter.connect({ hostname: HOST, port: listener.addr.port });
    const server = await within(accepted, 5000, "accept");
    assert.ok(server !== null);
    return { client, server };
  } finally {
    listener.close();
  }
}

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = performance.now() + 5000;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`Timed out: ${what}`);
    await delay(5);
  }
}

const noEnd = { end() {} };

/**
 * Puts `server` on a second consumer, so that its reads go into a pooled
 * 128-byte buffer: the first chunk (a few bytes) goes to a first consumer
 * that hands over from within data(). Resolves once handed over.
 */
async function onSecondConsumer(
  client: Transport,
  server: Transport,
  second: { data(chunk: Uint8Array): boolean; end(error: Error | null): void },
): Promise<void> {
  let handedOver = false;
  server.setConsumer!({
    data() {
      server.setConsumer!(second);
      handedOver = true;
      return true;
    },
    ...noEnd,
  });
  await send(client, new Uint8Array(8).fill(0x68));
  await waitFor(() => handedOver, "hand-over to the second consumer");
}

/**
 * Stops `server` with its consumer dropped (delivery stopped, the 512-byte
 * head buffer kept): a later setConsumer() is "a consumer after the first",
 * which shrinks the buffer to a pooled 128-byte one and reads at once.
 */
async function stoppedAfterFirstConsumer(client: Transport, server: Transport): Promise<void> {
  let dropped = false;
  server.setConsumer!({
    data() {
      server.dropConsumer!();
      dropped = true;
      return false;
    },
    ...noEnd,
  });
  await send(client, new Uint8Array(8).fill(0x62));
  await waitFor(() => dropped, "the first consumer dropped");
}

describe("Deno transport: lent chunks and the read-buffer pools", { skip }, () => {
  test(
    "close() from within data(): the lent chunk is not refilled with another connection's bytes before data() returns",
    { timeout: 30000 },
    async () => {
      const a = await connectedPair();
      const b = await connectedPair();
      try {
        // B: stopped, so that setConsumer() on it takes a pooled 128-byte buffer.
        await stoppedAfterFirstConsumer(b.client, b.server);
        // B's next bytes wait on its socket, unread.
        await send(b.client, new Uint8Array(100).fill(0xbb));
        await delay(50);
        let seen: { before: Uint8Array; after: Uint8Array } | null = null;
        const bGot: Uint8Array[] = [];
        await onSecondConsumer(a.client, a.server, {
          data(chunk) {
            const before = chunk.slice();
            // A connection closing itself from data() (as the driver does on
            // a close frame or a protocol error), then, in the same call,
            // another connection getting its next consumer.
            a.server.close();
            b.server.setConsumer!({
              data(other) {
                bGot.push(other.slice());
                return true;
              },
              ...noEnd,
            });
            seen = { before, after: chunk.slice() };
            return false;
          },
          ...noEnd,
        });
        await send(a.client, new Uint8Array(100).fill(0xaa));
        await waitFor(() => seen !== null, "A's chunk");
        await waitFor(() => bGot.length > 0, "B's chunk");
        const { before, after } = seen!;
        assert.ok(before.every((x) => x === 0xaa), "A's chunk held A's bytes on entry");
        assert.ok(
          after.every((x) => x === 0xaa),
          `A's lent chunk changed during data(): ${
            after.filter((x) => x === 0xbb).length
          } of its bytes are B's`,
        );
      } finally {
        for (const { client, server } of [a, b]) {
          client.close();
          server.close();
        }
      }
    },
  );

  test(
    "a hand-over from within data() does not read into the buffer of the chunk still lent",
    { timeout: 30000 },
    async () => {
      const { client, server } = await connectedPair();
      try {
        const third: Uint8Array[] = [];
        let seen: { before: Uint8Array; after: Uint8Array } | null = null;
        await onSecondConsumer(client, server, {
          data(chunk) {
            const before = chunk.slice();
            // Hand over (as a head reader does to the frame consumer), then
            // look at the chunk again: it is still this call's.
            server.setConsumer!({
              data(next) {
                third.push(next.slice());
                return true;
              },
              ...noEnd,
            });
            seen = { before, after: chunk.slice() };
            return true;
          },
          ...noEnd,
        });
        // 300 bytes at once: the 128-byte buffer fills (and grows), the rest waits.
        const data = Uint8Array.from({ length: 300 }, (_, i) => i & 0xff);
        await send(client, data);
        await waitFor(() => seen !== null, "the second consumer's chunk");
        await waitFor(
          () => third.reduce((n, c) => n + c.length, 0) >= 300 - seen!.before.length,
          "the rest",
        );
        const { before, after } = seen!;
        assert.deepEqual([...before], [...data.subarray(0, before.length)]);
        assert.deepEqual(
          [...after],
          [...before],
          "the lent chunk changed during data(): the next read went into its buffer",
        );
      } finally {
        client.close();
        server.close();
      }
    },
  );

  test(
    "a chunk from read() stays intact after close() while other connections read through the pools",
    { timeout: 30000 },
    async () => {
      // Pull mode: close() cannot know whether the last chunk is in use, so it
      // must not give the buffer back (it is left to the collector). Would fail
      // if close() released in pull mode.
      const a = await connectedPair();
      const others: { client: Transport; server: Transport }[] = [];
      try {
        await send(a.client, new Uint8Array(100).fill(0xaa));
        const chunk = await within(a.server.read(), 5000, "A's chunk");
        assert.ok(chunk !== null);
        // A pending read too, cancelled by close(): still nothing given back early.
        a.server.close();
        for (let i = 0; i < 8; i++) {
          const pair = await connectedPair();
          others.push(pair);
          await send(pair.client, new Uint8Array(100).fill(0xbb));
          await delay(10);
          // Pull and push, first and second consumers: pooled 512 and 128 buffers.
          if (i % 2 === 0) await within(pair.server.read(), 5000, "other read");
          else await onSecondConsumer(pair.client, pair.server, { data: () => true, ...noEnd });
        }
        assert.ok(chunk.every((x) => x === 0xaa), "A's last chunk was overwritten after close()");
      } finally {
        a.client.close();
        a.server.close();
        for (const { client, server } of others) {
          client.close();
          server.close();
        }
      }
    },
  );

  test(
    "close() while a push read and a pull read are pending, then many connections: no shared bytes",
    { timeout: 30000 },
    async () => {
      // Every connection tags its bytes; pending reads at close() are cancelled
      // and their buffers go back when they settle. Each later connection must
      // see only its own tag.
      for (let round = 0; round < 3; round++) {
        const closing = await Promise.all(Array.from({ length: 20 }, () => connectedPair()));
        const pulls: Promise<Uint8Array | null>[] = [];
        closing.forEach(({ server }, i) => {
          if (i % 2 === 0) pulls.push(server.read());
          else server.setConsumer!({ data: () => true, ...noEnd });
        });
        for (const { server } of closing) server.close();
        assert.deepEqual(await Promise.all(pulls), pulls.map(() => null));
        const pairs = await Promise.all(Array.from({ length: 20 }, () => connectedPair()));
        try {
          await Promise.all(pairs.map(async ({ client, server }, i) => {
            const tag = 1 + ((round * 20 + i) % 250);
            const total = 2000 + 17 * i;
            let bytes = 0;
            let foreign = 0;
            const { promise, resolve } = Promise.withResolvers<void>();
            const check = (chunk: Uint8Array) => {
              bytes += chunk.length;
              for (const x of chunk) if (x !== tag) foreign++;
              if (bytes >= total) resolve();
            };
            if (i % 2 === 0) {
              (async () => {
                while (bytes < total) {
                  const chunk = await server.read();
                  if (chunk === null) break;
                  check(chunk);
                }
                resolve();
              })();
            } else {
              await onSecondConsumer(client, server, {
                data(chunk) {
                  check(chunk);
                  return true;
                },
                ...noEnd,
              });
            }
            const payload = new Uint8Array(total).fill(tag);
            for (let at = 0; at < total; at += 300) {
              await send(client, payload.subarray(at, Math.min(total, at + 300)));
            }
            await within(promise, 10_000, "all bytes");
            assert.equal(foreign, 0, `connection ${i} saw bytes that are not its own`);
          }));
        } finally {
          for (const { client, server } of [...closing, ...pairs]) {
            client.close();
            server.close();
          }
        }
      }
    },
  );
});
