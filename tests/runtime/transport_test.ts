/**
 * The current runtime's adapter over real loopback sockets: what every layer
 * above relies on (byte-exact, ordered, bounded memory, clean ends, TLS).
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { within } from "../_watch.ts";
import { makeTestCerts, opensslSkipReason, type TestCerts } from "../_certs.ts";
import { currentRuntime, type Listener, type Transport } from "../../src/runtime/mod.ts";

const runtime = currentRuntime();
const HOST = "127.0.0.1";
const MiB = 1024 * 1024;

/** Resolves true if `promise` is still pending after `ms`. */
async function staysPending(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const pending = Symbol("pending");
  const timeout = new Promise<symbol>((resolve) => {
    timer = setTimeout(() => resolve(pending), ms);
  });
  try {
    return (await Promise.race([promise, timeout])) === pending;
  } finally {
    clearTimeout(timer);
  }
}

async function send(transport: Transport, data: Uint8Array): Promise<void> {
  const pending = transport.write(data);
  if (pending !== undefined) await pending;
}

/** Reads exactly `n` bytes, copying, since read() chunks are reused. */
async function readExactly(transport: Transport, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let filled = 0;
  while (filled < n) {
    const chunk = await transport.read();
    if (chunk === null) throw new Error(`Stream ended after ${filled} of ${n} bytes`);
    assert.ok(filled + chunk.byteLength <= n, "received more bytes than were sent");
    out.set(chunk, filled);
    filled += chunk.byteLength;
  }
  return out;
}

/** Reads until end of stream and returns how many bytes arrived. */
async function drain(transport: Transport): Promise<number> {
  let total = 0;
  for (let chunk = await transport.read(); chunk !== null; chunk = await transport.read()) {
    total += chunk.byteLength;
  }
  return total;
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

function text(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

/**
 * Echoes every accepted connection until its peer ends it. Awaits each write
 * before the next read: the chunk is only valid until then.
 */
function serveEcho(listener: Listener): Promise<void> {
  const sessions: Promise<void>[] = [];
  return (async () => {
    for (let conn = await listener.accept(); conn !== null; conn = await listener.accept()) {
      const transport = conn;
      sessions.push((async () => {
        try {
          for (let c = await transport.read(); c !== null; c = await transport.read()) {
            await send(transport, c);
          }
        } catch {
          // A client that fails its TLS handshake breaks the stream; ignore it.
        } finally {
          transport.close();
        }
      })());
    }
    await Promise.all(sessions);
  })();
}

/** Runs `body` against a fresh echo server and cleans up whatever happens. */
async function withEchoServer(
  body: (port: number, hostname: string) => Promise<void>,
  options: { hostname?: string; tls?: { cert: string; key: string } } = {},
): Promise<void> {
  const hostname = options.hostname ?? HOST;
  const listener = await runtime.listen({ hostname, port: 0, tls: options.tls });
  const served = serveEcho(listener);
  try {
    await body(listener.addr.port, hostname);
  } finally {
    listener.close();
    await within(served, 5000, "echo server to finish");
  }
}

/** Writes `data` while reading the echo concurrently, and returns the echo. */
async function roundTrip(transport: Transport, data: Uint8Array): Promise<Uint8Array> {
  const [echoed] = await Promise.all([
    readExactly(transport, data.byteLength),
    send(transport, data),
  ]);
  return echoed;
}

/** A connected client and server transport, with the listener already closed. */
async function connectedPair(): Promise<{ client: Transport; server: Transport }> {
  const listener = await runtime.listen({ hostname: HOST, port: 0 });
  try {
    const accepted = listener.accept();
    const client = await runtime.connect({ hostname: HOST, port: listener.addr.port });
    const server = await within(accepted, 5000, "accept");
    assert.ok(server !== null);
    return { client, server };
  } finally {
    listener.close();
  }
}

function canListenOn(hostname: string): Promise<boolean> {
  return runtime.listen({ hostname, port: 0 }).then((listener) => {
    listener.close();
    return true;
  }, () => false);
}

const ipv6 = await canListenOn("::1");

const skipTls = opensslSkipReason("the TLS transport tests");

describe(`${runtime.name} transport`, () => {
  test("echoes a small message byte for byte", async () => {
    await withEchoServer(async (port) => {
      const client = await runtime.connect({ hostname: HOST, port });
      try {
        assert.equal(client.remoteAddr.port, port);
        assert.equal(client.remoteAddr.hostname, HOST);
        assert.equal(client.localAddr.hostname, HOST);
        await send(client, text("hello, sluice"));
        const chunk = await within(client.read(), 5000, "echo");
        // A plain Uint8Array (not Bun's Buffer), so slice() copies everywhere.
        assert.equal(Object.getPrototypeOf(chunk), Uint8Array.prototype);
        assert.deepEqual(chunk, text("hello, sluice"));
      } finally {
        client.close();
      }
    });
  });

  test("echoes 8 MiB byte-exact while reading concurrently", { timeout: 30000 }, async () => {
    const payload = randomBytes(8 * MiB);
    await withEchoServer(async (port) => {
      const client = await runtime.connect({ hostname: HOST, port });
      try {
        const echoed = await within(roundTrip(client, payload), 20000, "8 MiB echo");
        assert.ok(Buffer.from(echoed).equals(Buffer.from(payload)), "echo differs from payload");
        assert.equal(client.bufferedAmount, 0);
      } finally {
        client.close();
      }
    });
  });

  test("keeps 10 000 small writes in order", { timeout: 30000 }, async () => {
    const count = 10_000;
    const messages = Array.from({ length: count }, (_, i) => text(`<${i}>`));
    const expected = Buffer.concat(messages);
    await withEchoServer(async (port) => {
      const client = await runtime.connect({ hostname: HOST, port });
      try {
        const reading = readExactly(client, expected.byteLength);
        // Issue them all before awaiting any: they queue up behind each other.
        const pending = messages.map((m) => client.write(m));
        await within(Promise.all(pending), 20000, "small writes");
        const echoed = await within(reading, 20000, "echo of small writes");
        assert.ok(Buffer.from(echoed).equals(expected), "small writes arrived out of order");
      } finally {
        client.close();
      }
    });
  });

  test("keeps order when writes queue behind a partially written one", {
    timeout: 30000,
  }, async () => {
    // 24 MiB in uneven pieces, never awaited: the kernel buffers fill up, so
    // later writes must wait behind earlier, partially written ones, also
    // when the socket has room again by the time they are issued (new pieces
    // go out as echoed bytes come back).
    const payload = randomBytes(24 * MiB);
    await withEchoServer(async (port) => {
      const client = await runtime.connect({ hostname: HOST, port });
      try {
        const pending: (Promise<void> | undefined)[] = [];
        let offset = 0;
        let sawQueue = false;
        const issue = () => {
          if (offset === payload.byteLength) return;
          const size = Math.min(
            1 + ((pending.length * 7919) % 300_000),
            payload.byteLength - offset,
          );
          pending.push(client.write(payload.subarray(offset, offset + size)));
          offset += size;
          if (client.bufferedAmount > 0) sawQueue = true;
        };
        while (offset < payload.byteLength && client.bufferedAmount === 0) issue();
        const echoed = new Uint8Array(payload.byteLength);
        await within(
          (async () => {
            for (let got = 0; got < payload.byteLength;) {
              const chunk = await client.read();
              if (chunk === null) throw new Error(`Stream ended after ${got} bytes`);
              echoed.set(chunk, got);
              got += chunk.byteLength;
              issue();
              issue();
            }
          })(),
          20000,
          "echo of queued writes",
        );
        assert.ok(sawQueue, "expected bufferedAmount > 0 while the kernel buffers were full");
        await within(Promise.all(pending), 5000, "queued writes");
        assert.equal(client.bufferedAmount, 0);
        assert.ok(Buffer.from(echoed).equals(Buffer.from(payload)), "queued writes reordered");
      } finally {
        client.close();
      }
    });
  });

  test("listens and connects over IPv6 loopback", { skip: !ipv6 && "no ::1" }, async () => {
    await withEchoServer(async (port, hostname) => {
      const client = await runtime.connect({ hostname, port });
      try {
        assert.equal(client.remoteAddr.hostname, "::1");
        const echoed = await within(roundTrip(client, text("over v6")), 5000, "v6 echo");
        assert.deepEqual(echoed, text("over v6"));
      } finally {
        client.close();
      }
    }, { hostname: "::1" });
  });

  test("accept() resolves null once the listener is closed", async () => {
    const listener = await runtime.listen({ hostname: HOST, port: 0 });
    assert.ok(listener.addr.port > 0, "port 0 must be replaced by the bound port");
    const waiting = listener.accept();
    listener.close();
    listener.close(); // idempotent
    assert.equal(await within(waiting, 5000, "pending accept"), null);
    assert.equal(await within(listener.accept(), 5000, "accept after close"), null);
  });

  test("closing the listener keeps accepted connections open", async () => {
    const listener = await runtime.listen({ hostname: HOST, port: 0 });
    const accepted = listener.accept();
    const client = await runtime.connect({ hostname: HOST, port: listener.addr.port });
    const server = await within(accepted, 5000, "accept");
    assert.ok(server !== null);
    listener.close();
    try {
      await send(client, text("still here"));
      assert.deepEqual(await within(readExactly(server, 10), 5000, "read"), text("still here"));
    } finally {
      client.close();
      server.close();
    }
  });

  test("read() resolves null once the peer closed", async () => {
    const { client, server } = await connectedPair();
    try {
      // Data written just before close() still arrives, then end of stream.
      await send(client, text("bye"));
      client.close();
      assert.deepEqual(await within(readExactly(server, 3), 5000, "last bytes"), text("bye"));
      assert.equal(await within(server.read(), 5000, "read after peer close"), null);
      assert.equal(await within(server.read(), 5000, "second read after peer close"), null);
    } finally {
      client.close();
      server.close();
    }
  });

  test("close() ends a pending read with null and later writes fail", async () => {
    const { client, server } = await connectedPair();
    try {
      const pending = client.read();
      client.close();
      client.close(); // idempotent, never throws
      assert.equal(await within(pending, 5000, "pending read after close"), null);
      assert.equal(await within(client.read(), 5000, "read after close"), null);
      await assert.rejects(async () => await client.write(text("too late")));
      // The peer sees a clean end of stream.
      assert.equal(await within(server.read(), 5000, "peer read"), null);
    } finally {
      client.close();
      server.close();
    }
  });

  test("push mode: chunks in order, pause and resume, targets, end once", {
    timeout: 30000,
  }, async () => {
    const { client, server } = await connectedPair();
    try {
      assert.ok(server.setConsumer !== undefined, "every runtime transport has a push path");
      const data = randomBytes(3 * MiB);
      const got = new Uint8Array(data.length);
      let at = 0;
      let paused = 0;
      let chunks = 0;
      let directBytes = 0;
      let ended: Error | null | undefined;
      let target: Uint8Array | null = null;
      let wake: (() => void) | null = null;
      server.setConsumer!({
        data(chunk) {
          got.set(chunk, at); // copied at once: the chunk may be lent
          at += chunk.length;
          wake?.();
          // Pause every third chunk; resumed from a timer.
          if (++chunks % 3 === 0) {
            paused++;
            setTimeout(() => server.resumeConsumer!(), 1);
            return false;
          }
          return true;
        },
        target() {
          // Offer the rest of the buffer as a target from 1 MiB on.
          target = at >= MiB && at < data.length ? got.subarray(at) : null;
          return target;
        },
        dataInPlace(n) {
          assert.ok(target !== null, "dataInPlace only after a target");
          directBytes += n;
          at += n;
          wake?.();
          return true;
        },
        end(error) {
          assert.equal(ended, undefined, "end() is called once");
          ended = error;
          wake?.();
        },
      });
      await send(client, data);
      client.close();
      await within(
        (async () => {
          while (ended === undefined) await new Promise<void>((resolve) => (wake = resolve));
        })(),
        20_000,
        "all bytes, then the end",
      );
      assert.equal(ended, null);
      assert.equal(at, data.length);
      assert.ok(Buffer.from(got).equals(Buffer.from(data)), "byte-exact, in order");
      assert.ok(paused > 0, "the flow was paused and resumed");
      if (runtime.name === "deno") {
        assert.ok(directBytes > MiB, `only ${directBytes} bytes were read into the target`);
      }
      // Closing it ourselves ends the flow without another end().
      server.close();
    } finally {
      client.close();
      server.close();
    }
  });

  test("push mode: a consumer hands over to another, or back to read(), from data()", {
    timeout: 30000,
  }, async () => {
    const { client, server } = await connectedPair();
    try {
      const data = randomBytes(2 * MiB);
      const got: Uint8Array[] = [];
      let firstCalls = 0;
      let secondCalls = 0;
      let handedBack = false;
      const second = {
        data(chunk: Uint8Array) {
          secondCalls++;
          got.push(chunk.slice());
          // After 256 KiB, back to read() (as a handshake with an error answer does).
          if (got.reduce((n, c) => n + c.length, 0) >= 256 * 1024) {
            server.dropConsumer!();
            handedBack = true;
            return false;
          }
          return true;
        },
        end() {
          assert.fail("the second consumer was dropped before the end");
        },
      };
      server.setConsumer!({
        data(chunk) {
          firstCalls++;
          got.push(chunk.slice());
          // Hand over from within data(), returning true as a finished handshake does.
          server.setConsumer!(second);
          return true;
        },
        end() {
          assert.fail("the first consumer handed over before the end");
        },
      });
      const sending = send(client, data).then(() => client.close());
      // The rest comes through read(), in order, then null.
      const deadline = performance.now() + 20_000;
      while (!handedBack && performance.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      assert.ok(handedBack, "the second consumer got 256 KiB");
      for (;;) {
        const chunk = await within(server.read(), 10_000, "read after dropConsumer");
        if (chunk === null) break;
        got.push(chunk.slice());
      }
      await sending;
      assert.equal(firstCalls, 1);
      assert.ok(secondCalls >= 1);
      assert.ok(Buffer.concat(got).equals(Buffer.from(data)), "byte-exact, in order, nothing lost");
    } finally {
      client.close();
      server.close();
    }
  });

  test("push mode: a consumer that throws fails that connection, not the process", async () => {
    const { client, server } = await connectedPair();
    const unhandled: unknown[] = [];
    const onUnhandled = (event: PromiseRejectionEvent) => {
      event.preventDefault();
      unhandled.push(event.reason);
    };
    globalThis.addEventListener("unhandledrejection", onUnhandled);
    try {
      let ended: Error | null | undefined;
      const bug = new Error("consumer bug");
      const done = new Promise<void>((resolve) => {
        server.setConsumer!({
          data() {
            throw bug;
          },
          end(error) {
            ended = error;
            server.close();
            resolve();
          },
        });
      });
      await send(client, text("boom"));
      await within(done, 5000, "end() after the throw");
      assert.equal(ended, bug);
      // The peer sees the connection end.
      assert.equal(await within(client.read(), 5000, "peer read"), null);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(unhandled, []);
    } finally {
      globalThis.removeEventListener("unhandledrejection", onUnhandled);
      client.close();
      server.close();
    }
  });

  test("Deno: a request head is read into 512 bytes, the frames after it start at 128", {
    skip: runtime.name !== "deno" && "Deno adapter only",
  }, async () => {
    // An idle connection waits with its read buffer: after the handshake the
    // frames (pings, small messages) start small; reads that fill it grow it.
    // A read takes at most the buffer's size: each first chunk shows it.
    const { client, server } = await connectedPair();
    try {
      const lengths: number[][] = [[], []];
      const got: Uint8Array[] = [];
      // More than 512 + 128 bytes: the head's read is full, and so is the first frames' read.
      const head = Uint8Array.from({ length: 700 }, (_, i) => i % 7);
      const body = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
      const { promise: enough, resolve } = Promise.withResolvers<void>();
      const frames = {
        data(chunk: Uint8Array) {
          lengths[1].push(chunk.length);
          got.push(chunk.slice());
          if (got.reduce((n, c) => n + c.length, 0) >= head.length + body.length) resolve();
          return true;
        },
        end() {},
      };
      server.setConsumer!({
        data(chunk) {
          lengths[0].push(chunk.length);
          got.push(chunk.slice());
          server.setConsumer!(frames);
          return true;
        },
        end() {},
      });
      await send(client, head);
      // Until the head's chunk is handed over, nothing else is sent.
      while (lengths[0].length === 0) await new Promise((r) => setTimeout(r, 5));
      await send(client, body);
      await within(enough, 5000, "the frames");
      assert.deepEqual(lengths[0], [512]);
      assert.equal(lengths[1][0], 128);
      assert.ok(Math.max(...lengths[1]) > 128, `reads that fill the buffer grow it: ${lengths[1]}`);
      assert.ok(Buffer.concat(got).equals(Buffer.concat([head, body])), "in order");
    } finally {
      client.close();
      server.close();
    }
  });

  test("Deno: small read buffers are shared slabs, yet no connection sees another's bytes", {
    skip: runtime.name !== "deno" && "Deno adapter only",
    timeout: 30000,
  }, async () => {
    // Many connections open, exchange, close and reopen, each pushing bytes
    // of its own pattern through pooled buffers (heads of 512, frames of 128,
    // grown and shrunk again); closing while a read is pending or from
    // within data() must not hand a buffer to another connection too early.
    const rounds = 3;
    const connections = 40;
    for (let round = 0; round < rounds; round++) {
      const pairs = await Promise.all(Array.from({ length: connections }, () => connectedPair()));
      try {
        await Promise.all(pairs.map(async ({ client, server }, index) => {
          const tag = (round * connections + index) % 251;
          const total = 4000 + index * 37;
          const got: Uint8Array[] = [];
          const { promise: done, resolve } = Promise.withResolvers<void>();
          let bytes = 0;
          const frames = {
            data(chunk: Uint8Array) {
              got.push(chunk.slice());
              bytes += chunk.length;
              if (bytes >= total) resolve();
              // Half of them close from within data(), with the chunk lent.
              if (bytes >= total && index % 2 === 0) server.close();
              return true;
            },
            end() {
              resolve();
            },
          };
          server.setConsumer!({
            data(chunk) {
              got.push(chunk.slice());
              bytes += chunk.length;
              server.setConsumer!(frames);
              if (bytes >= total) resolve();
              return true;
            },
            end() {
              resolve();
            },
          });
          const payload = new Uint8Array(total).fill(tag);
          for (let at = 0; at < total; at += 333) {
            await send(client, payload.subarray(at, Math.min(total, at + 333)));
            if (at % 999 === 0) await new Promise((r) => setTimeout(r, 1));
          }
          await within(done, 10_000, "all bytes");
          const all = Buffer.concat(got);
          assert.equal(all.length, total);
          assert.ok(all.every((b) => b === tag), `connection ${index} saw another's bytes`);
        }));
      } finally {
        // The other half close with a read pending.
        for (const { client, server } of pairs) {
          server.close();
          client.close();
        }
      }
    }
  });

  test("the Deno read buffer grows for bulk data and shrinks back when idle", {
    skip: runtime.name !== "deno" && "Deno adapter only",
    timeout: 30000,
  }, async () => {
    // The buffer behind each chunk is the adapter's reused read buffer.
    const { client, server } = await connectedPair();
    try {
      const sending = send(server, new Uint8Array(4 * MiB));
      let largest = 0;
      for (let got = 0; got < 4 * MiB;) {
        const chunk = await within(client.read(), 5000, "bulk read");
        assert.ok(chunk !== null);
        got += chunk.byteLength;
        // A read fills the buffer when enough is waiting: the largest read shows its size.
        largest = Math.max(largest, chunk.byteLength);
      }
      await sending;
      assert.ok(largest > 4096, `buffer never grew beyond ${largest} bytes`);
      assert.ok(largest <= 256 * 1024, `buffer grew to ${largest} bytes`);
      for (let i = 0; i < 16; i++) {
        await send(server, text("ping"));
        const chunk = await within(client.read(), 5000, "small read");
        assert.ok(chunk !== null);
      }
      // 1000 bytes waiting: a read takes what the buffer holds.
      await send(server, new Uint8Array(1000));
      const chunk = await within(client.read(), 5000, "read after shrinking");
      assert.equal(
        chunk?.length,
        128,
        "buffer did not shrink back to its 128-byte minimum after small reads",
      );
    } finally {
      client.close();
      server.close();
    }
  });

  test("a peer that stops reading makes writes stall", { timeout: 30000 }, async () => {
    const { client, server } = await connectedPair();
    try {
      // The server never reads. Without backpressure the adapter would keep
      // pulling bytes into memory and every write would complete.
      const chunk = new Uint8Array(MiB).fill(7);
      const limit = 256; // MiB; far more than any kernel buffers on loopback
      const started = Date.now();
      let written = 0;
      let stalled: Promise<void> | undefined;
      for (let i = 0; i < limit && Date.now() - started < 10_000; i++) {
        const pending = client.write(chunk);
        written += chunk.byteLength;
        if (pending !== undefined && await staysPending(pending, 500)) {
          stalled = pending;
          break;
        }
      }
      assert.ok(stalled !== undefined, `writes never stalled after ${written / MiB} MiB`);
      assert.ok(client.bufferedAmount > 0, "a stalled write must show in bufferedAmount");
      // What left the client sits in the kernel's buffers and the server's
      // read queue; bounded, not the whole stream.
      const delivered = written - client.bufferedAmount;
      assert.ok(delivered < 64 * MiB, `${delivered / MiB} MiB left the client`);

      // Reading again releases the stalled write, and every byte arrives.
      const received = drain(server);
      await within(stalled, 10_000, "stalled write after the server resumed reading");
      assert.equal(client.bufferedAmount, 0);
      client.close();
      assert.equal(await within(received, 10_000, "server drain"), written);
    } finally {
      client.close();
      server.close();
    }
  });
});

describe(`${runtime.name} transport over TLS`, { skip: skipTls || false }, () => {
  let certs: TestCerts | undefined;
  let ca = "";
  let cert = "";
  let key = "";

  before(() => {
    certs = makeTestCerts();
    ({ ca, cert, key } = certs);
  });

  after(() => {
    certs?.cleanup();
  });

  test("echoes over TLS with the test CA trusted", { timeout: 30000 }, async () => {
    await withEchoServer(async (port) => {
      const client = await runtime.connect({
        hostname: HOST,
        port,
        tls: { serverName: "localhost", caCerts: [ca] },
      });
      try {
        const small = await within(roundTrip(client, text("secret")), 5000, "TLS echo");
        assert.deepEqual(small, text("secret"));
        const payload = randomBytes(2 * MiB);
        const big = await within(roundTrip(client, payload), 20000, "2 MiB TLS echo");
        assert.ok(Buffer.from(big).equals(Buffer.from(payload)), "TLS echo differs");
      } finally {
        client.close();
      }
    }, { tls: { cert, key } });
  });

  test("refuses a server whose CA is not trusted", async () => {
    await withEchoServer(async (port) => {
      await assert.rejects(
        within(
          runtime.connect({ hostname: HOST, port, tls: { serverName: "localhost" } }),
          5000,
          "connect without the CA",
        ),
        (error: Error) => !error.message.startsWith("Timed out"),
      );
    }, { tls: { cert, key } });
  });

  test("a TLS listener hands out a connection at TCP accept, before its TLS handshake", async () => {
    // So that the server's handshake deadline covers TLS: a client that
    // connects and never says hello must reach accept() to be timed out.
    const listener = await runtime.listen({ hostname: HOST, port: 0, tls: { cert, key } });
    const net = await import("node:net");
    const silent = net.connect(listener.addr.port, HOST);
    silent.on("error", () => {});
    try {
      const accepted = await within(listener.accept(), 5000, "accept of a silent TLS client");
      assert.ok(accepted !== null);
      assert.equal(accepted.tlsHandshaking, true, "its TLS handshake has not happened");
      // Closing it ends the client's socket (and any pending read here).
      const read = accepted.read().catch(() => null);
      accepted.close();
      assert.equal(await within(read, 5000, "read after close"), null);
      await within(new Promise((resolve) => silent.once("close", resolve)), 5000, "client close");

      // A client that completes TLS: the flag clears once the handshake is done.
      const client = runtime.connect({
        hostname: HOST,
        port: listener.addr.port,
        tls: { serverName: "localhost", caCerts: [ca] },
      });
      const server = await within(listener.accept(), 5000, "accept of a TLS client");
      assert.ok(server !== null);
      const conn = await within(client, 5000, "TLS connect");
      try {
        await send(conn, text("hi"));
        assert.deepEqual(await within(readExactly(server, 2), 5000, "TLS read"), text("hi"));
        assert.equal(server.tlsHandshaking, false);
        assert.ok(!conn.tlsHandshaking, "a client transport is handed out after TLS");
      } finally {
        conn.close();
        server.close();
      }

      // Garbage instead of a ClientHello: the transport ends (null or an error), never hangs.
      const garbage = net.connect(listener.addr.port, HOST);
      garbage.on("error", () => {});
      garbage.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      const bad = await within(listener.accept(), 5000, "accept of a garbage client");
      assert.ok(bad !== null);
      try {
        const end = await within(bad.read().catch(() => null), 5000, "read of garbage");
        assert.equal(end, null, "no plaintext gets through a TLS listener");
      } finally {
        bad.close();
        garbage.destroy();
      }
    } finally {
      silent.destroy();
      listener.close();
    }
  });

  test("checks the certificate against serverName", async () => {
    await withEchoServer(async (port) => {
      await assert.rejects(
        within(
          runtime.connect({
            hostname: HOST,
            port,
            tls: { serverName: "wrong.test", caCerts: [ca] },
          }),
          5000,
          "connect with the wrong name",
        ),
        (error: Error) => !error.message.startsWith("Timed out"),
      );
    }, { tls: { cert, key } });
  });
});
