/**
 * A {@linkcode Transport} over any pair of WHATWG byte streams, so that a
 * full WebSocket connection (the same driver as over TCP) can run over a
 * pipe, a worker's message channel turned into streams, a custom tunnel, or
 * an in-memory pair in tests.
 *
 * Nothing here touches `Deno` or `Bun`.
 *
 * @module
 */

import type { NetAddress, Transport } from "./transport.ts";

const NO_ADDRESS: NetAddress = { hostname: "", port: 0 };
/** Longest run of reads without a turn of the event loop (see `read`). */
const EVENT_LOOP_TURN_MS = 5;

/**
 * Wraps `readable` and `writable`. Reads pull from the readable only when the
 * connection asks (so a busy application pushes back on the producer);
 * writes settle once the writable's sink took the chunk, so the connection
 * sees the sink's backpressure in `bufferedAmount`.
 */
export class StreamTransport implements Transport {
  readonly localAddr: NetAddress;
  readonly remoteAddr: NetAddress;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #buffered = 0;
  #closed = false;
  #lastTurn = performance.now();

  constructor(
    readable: ReadableStream<Uint8Array>,
    writable: WritableStream<Uint8Array>,
    addresses: { localAddr?: NetAddress; remoteAddr?: NetAddress } = {},
  ) {
    this.#reader = readable.getReader();
    this.#writer = writable.getWriter();
    this.localAddr = addresses.localAddr ?? NO_ADDRESS;
    this.remoteAddr = addresses.remoteAddr ?? NO_ADDRESS;
  }

  get bufferedAmount(): number {
    return this.#buffered;
  }

  read(): Promise<Uint8Array | null> {
    if (this.#closed) return Promise.resolve(null);
    // A source that is always ready resolves every read in a microtask: give
    // the event loop a turn every few milliseconds, or timers (closeTimeout,
    // keepalive, the application's) would never run.
    if (performance.now() - this.#lastTurn < EVENT_LOOP_TURN_MS) return this.#read();
    return new Promise<void>((resolve) => setTimeout(resolve, 0)).then(() => {
      this.#lastTurn = performance.now();
      return this.#read();
    });
  }

  #read(): Promise<Uint8Array | null> {
    if (this.#closed) return Promise.resolve(null);
    return this.#reader.read().then(({ value, done }) => {
      if (done || this.#closed) return null;
      if (!(value instanceof Uint8Array)) {
        throw new TypeError(
          `The readable side must yield Uint8Array chunks, got ${
            Object.prototype.toString.call(value)
          }`,
        );
      }
      return value;
    }, (error) => {
      if (this.#closed) return null;
      throw error;
    });
  }

  write(data: Uint8Array): Promise<void> | undefined {
    if (this.#closed) throw new Error("Cannot write: the stream pair is closed.");
    if (data.byteLength === 0) return undefined;
    const size = data.byteLength;
    this.#buffered += size;
    return this.#writer.write(data).then(() => {
      this.#buffered -= size;
    }, (error) => {
      this.#buffered -= size;
      throw error;
    });
  }

  closeWrite(): void {
    if (this.#closed || this.#buffered > 0) return;
    this.#writer.close().catch(() => {});
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Writes already accepted are delivered, then the writable closes.
    this.#writer.close().catch(() => {});
    this.#reader.cancel().catch(() => {});
  }
}
