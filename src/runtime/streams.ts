/**
 * WHATWG stream views of a {@linkcode Transport}, for composing with
 * `TransformStream` stages. The fast path stays `read()`/`write()`; these
 * trade a copy per chunk for composability.
 *
 * @module
 */

import type { Transport } from "./transport.ts";

/**
 * A readable stream over `transport`. Each chunk is copied because `read()`
 * may reuse its buffer; reads happen only when the stream pulls, so a slow
 * consumer still stops the socket. Cancelling the stream closes the transport.
 *
 * @example Pipe a connection into a stage
 * ```ts ignore
 * const lines = transportReadable(conn).pipeThrough(new TextDecoderStream());
 * ```
 */
export function transportReadable(transport: Transport): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const chunk = await transport.read();
      if (chunk === null) controller.close();
      else controller.enqueue(chunk.slice());
    },
    cancel() {
      transport.close();
    },
  });
}

/**
 * A writable stream over `transport` whose writes settle only once the bytes
 * reached the kernel, so producers feel the socket's backpressure. Closing the
 * stream leaves the transport open (it has no half-close); aborting closes it.
 *
 * @example Pipe a stage into a connection
 * ```ts ignore
 * await frames.pipeTo(transportWritable(conn), { preventClose: true });
 * ```
 */
export function transportWritable(transport: Transport): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>({
    write(chunk) {
      return transport.write(chunk);
    },
    abort() {
      transport.close();
    },
  });
}
