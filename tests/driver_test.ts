/**
 * The connection driver waits for a write its owner started before handing
 * the transport over (the server's 101 on a transport that settles writes
 * later): nothing the connection sends overtakes it, and its failure fails
 * the connection like a failed write of the driver's own.
 *
 * @module
 */

import assert from "node:assert/strict";
import { describe } from "node:test";
import { StreamTransport } from "../src/runtime/stream_transport.ts";
import { WebSocketConnection } from "../src/websocket.ts";
import { delay, test, within } from "./_watch.ts";

function serverOver(written: Promise<void>) {
  const chunks: Uint8Array[] = [];
  const toServer = new TransformStream<Uint8Array, Uint8Array>();
  const writable = new WritableStream<Uint8Array>({
    write(chunk) {
      chunks.push(chunk.slice());
    },
  });
  const ws = new WebSocketConnection<undefined>(
    {
      role: "server",
      maxMessageSize: 1 << 20,
      maxFrameSize: 1 << 20,
      closeTimeout: 1000,
      maxBufferedAmount: 1 << 20,
      readableHighWaterMark: undefined,
      binaryType: "arraybuffer",
      handlers: undefined,
      keepalive: { pingInterval: 0, pingTimeout: 20_000, idleTimeout: 0 },
    },
    "ws://localhost/",
    undefined,
  );
  const transport = new StreamTransport(toServer.readable, writable, {});
  ws._start({
    transport,
    protocol: "",
    extensions: "",
    headers: new Headers(),
    codec: null,
    written,
  }, null);
  return { ws, chunks, input: toServer.writable.getWriter() };
}

describe("a write adopted at the start (the 101 still in flight)", () => {
  test("what the connection sends waits for it, then goes out in order", async () => {
    let done!: () => void;
    const { ws, chunks, input } = serverOver(new Promise<void>((resolve) => (done = resolve)));
    assert.equal(ws.readyState, WebSocketConnection.OPEN);
    ws.send("first");
    ws.send(new Uint8Array([1, 2, 3]));
    await delay(20);
    assert.equal(chunks.length, 0, "nothing may overtake the adopted write");
    done();
    await within(
      (async () => {
        while (chunks.reduce((n, c) => n + c.length, 0) < 7 + 5) await delay(5);
      })(),
      2000,
      "the queued frames",
    );
    const wire = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) wire.set(c, (at += c.length) - c.length);
    assert.deepEqual(
      [...wire],
      [0x81, 5, ...new TextEncoder().encode("first"), 0x82, 3, 1, 2, 3],
    );
    ws.close(1000);
    await input.close();
    await within(ws.closed, 2000, "close");
  });

  test("its failure fails the connection (1006, the error reported) and nothing is written", async () => {
    let fail!: (error: Error) => void;
    const { ws, chunks } = serverOver(new Promise<void>((_, reject) => (fail = reject)));
    const errors: unknown[] = [];
    ws.addEventListener("error", (event) => errors.push(event));
    ws.send("queued behind the 101");
    fail(new Error("connection reset by peer"));
    const info = await within(ws.closed, 2000, "close");
    assert.equal(info.closeCode, 1006);
    assert.equal(errors.length, 1);
    assert.equal(chunks.length, 0);
  });
});
