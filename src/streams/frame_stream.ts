/**
 * Frame stages as `TransformStream`s: bytes → frames and frames → bytes.
 *
 * Each stage wraps one protocol core class: the connection runs the same
 * classes back to back in one synchronous step per socket read (no promise
 * per frame), which stages cannot do across their boundaries. A pipeline of
 * stages parses and builds frames and messages with the same rules and
 * limits, but the closing handshake, automatic pongs and compression are the
 * pipeline owner's job; for a complete connection over a pair of byte
 * streams use `webSocketFromStreams()`.
 *
 * @module
 */

import {
  encodeFrame,
  type Frame,
  type FrameHandler,
  type FrameHeader,
  FrameParser,
} from "../protocol/frame.ts";
import { unmaskInto } from "../protocol/mask.ts";

/** Options for {@linkcode FrameDecoderStream}. */
export interface FrameDecoderOptions {
  /** Which side decodes: a server requires masked frames, a client unmasked ones. */
  role: "server" | "client";
  /** Largest frame payload in bytes. @default {16777216} */
  maxFrameSize?: number;
  /** Accept RSV1 on the first frame of a message (permessage-deflate). @default {false} */
  allowRsv1?: boolean;
}

/** Collects frame parts into whole, unmasked frames. */
class FrameCollector implements FrameHandler {
  #frames: Frame[] = [];
  #current: Frame | null = null;
  #mask: Uint8Array | null = null;

  frameStart(header: FrameHeader): void {
    this.#current = {
      fin: header.fin,
      rsv1: header.rsv1,
      opcode: header.opcode,
      payload: new Uint8Array(header.length),
    };
    this.#mask = header.mask === null ? null : header.mask.slice();
  }

  framePayload(chunk: Uint8Array, start: number, end: number, offset: number): void {
    unmaskInto(chunk.subarray(start, end), this.#current!.payload, offset, this.#mask, offset);
  }

  frameEnd(): void {
    this.#frames.push(this.#current!);
    this.#current = null;
  }

  take(): Frame[] {
    const frames = this.#frames;
    this.#frames = [];
    return frames;
  }
}

/**
 * Parses a byte stream into validated, unmasked frames. A protocol
 * violation errors the stream with a `WebSocketError` carrying its close code.
 *
 * @example Decoding the RFC 6455 §5.7 masked "Hello"
 * ```ts
 * import { FrameDecoderStream } from "@sluice/ws";
 * const bytes = new Uint8Array([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]);
 * const frames = ReadableStream.from([bytes]).pipeThrough(new FrameDecoderStream({ role: "server" }));
 * for await (const frame of frames) console.log(new TextDecoder().decode(frame.payload)); // "Hello"
 * ```
 */
export class FrameDecoderStream extends TransformStream<Uint8Array, Frame> {
  /** Creates a decoder for the given side. */
  constructor(options: FrameDecoderOptions) {
    const collector = new FrameCollector();
    const parser = new FrameParser(collector, {
      role: options.role,
      maxFrameSize: options.maxFrameSize ?? 16 * 1024 * 1024,
      allowRsv1: options.allowRsv1,
    });
    super({
      transform(chunk, controller) {
        parser.push(chunk);
        for (const frame of collector.take()) controller.enqueue(frame);
      },
      flush() {
        if (parser.midFrame) throw new TypeError("Stream ended in the middle of a frame");
      },
    });
  }
}

/** Options for {@linkcode FrameEncoderStream}. */
export interface FrameEncoderOptions {
  /** Which side encodes: clients mask every frame with a fresh key (§5.3). */
  role: "server" | "client";
}

/**
 * Encodes frames to bytes, masking them when the role is `"client"`.
 *
 * @example Encoding a text frame
 * ```ts
 * import { FrameEncoderStream, Opcode } from "@sluice/ws";
 * const payload = new TextEncoder().encode("Hello");
 * const frame = { fin: true, rsv1: false, opcode: Opcode.Text, payload };
 * const bytes = ReadableStream.from([frame]).pipeThrough(new FrameEncoderStream({ role: "server" }));
 * for await (const chunk of bytes) console.log(chunk); // 81 05 48 65 6c 6c 6f
 * ```
 */
export class FrameEncoderStream extends TransformStream<Frame, Uint8Array> {
  /** Creates an encoder for the given side. */
  constructor(options: FrameEncoderOptions) {
    const mask = options.role === "client";
    super({
      transform(frame, controller) {
        controller.enqueue(
          encodeFrame(frame.opcode, frame.payload, { fin: frame.fin, rsv1: frame.rsv1, mask }),
        );
      },
    });
  }
}
