/**
 * Stream views of a transport: chunks survive buffer reuse, reads follow the
 * consumer, and writes wait for the transport.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { transportReadable, transportWritable } from "../../src/runtime/streams.ts";
import type { NetAddress, Transport } from "../../src/runtime/transport.ts";

/** A transport that reuses one read buffer, as the Deno adapter does. */
class FakeTransport implements Transport {
  readonly localAddr: NetAddress = { hostname: "127.0.0.1", port: 1 };
  readonly remoteAddr: NetAddress = { hostname: "127.0.0.1", port: 2 };
  reads = 0;
  closed = false;
  written: Uint8Array[] = [];
  pendingWrite: PromiseWithResolvers<void> | undefined;
  #buf = new Uint8Array(4);
  #chunks: number;

  constructor(chunks: number) {
    this.#chunks = chunks;
  }

  get bufferedAmount(): number {
    return 0;
  }

  read(): Promise<Uint8Array | null> {
    if (this.closed || this.reads === this.#chunks) return Promise.resolve(null);
    this.#buf.fill(this.reads++);
    return Promise.resolve(this.#buf);
  }

  write(data: Uint8Array): Promise<void> | undefined {
    this.written.push(data);
    this.pendingWrite = Promise.withResolvers();
    return this.pendingWrite.promise;
  }

  close(): void {
    this.closed = true;
  }
}

function tick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 10));
}

describe("transport streams", () => {
  test("readable chunks are copies that survive the next read", async () => {
    const transport = new FakeTransport(3);
    const chunks: Uint8Array[] = [];
    for await (const chunk of transportReadable(transport)) chunks.push(chunk);
    assert.deepEqual(chunks, [
      new Uint8Array([0, 0, 0, 0]),
      new Uint8Array([1, 1, 1, 1]),
      new Uint8Array([2, 2, 2, 2]),
    ]);
  });

  test("readable only reads when the consumer pulls", async () => {
    const transport = new FakeTransport(1000);
    const reader = transportReadable(transport).getReader();
    await tick();
    const before = transport.reads;
    assert.ok(before <= 1, `read ${before} chunks ahead of an idle consumer`);
    await reader.read();
    await tick();
    assert.ok(transport.reads <= before + 1, "one consumer read caused many transport reads");
    await reader.cancel();
    assert.ok(transport.closed, "cancel must close the transport");
  });

  test("writable waits for the transport's write to settle", async () => {
    const transport = new FakeTransport(0);
    const writer = transportWritable(transport).getWriter();
    const first = writer.write(new Uint8Array([1]));
    let secondDone = false;
    const second = writer.write(new Uint8Array([2])).then(() => secondDone = true);
    await tick();
    assert.equal(transport.written.length, 1, "second chunk written before the first settled");
    assert.equal(secondDone, false);
    transport.pendingWrite?.resolve();
    await first;
    await tick();
    assert.equal(transport.written.length, 2);
    transport.pendingWrite?.resolve();
    await second;
    await writer.close();
    assert.equal(transport.closed, false, "closing the writable must not close the transport");
  });
});
