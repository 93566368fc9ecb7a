/**
 * Message stages as `TransformStream`s: frames → messages (with fragment
 * reassembly, UTF-8 validation and size limits) and messages → frames
 * (with optional fragmentation).
 *
 * @module
 */

import type { Frame } from "../protocol/frame.ts";
import { MessageAssembler } from "../protocol/message.ts";
import { Opcode } from "../protocol/opcodes.ts";

/** What {@linkcode MessageDecoderStream} yields for each message or control frame. */
export type DecodedMessage =
  | { type: "text"; data: string }
  | { type: "binary"; data: Uint8Array }
  | { type: "ping"; data: Uint8Array }
  | { type: "pong"; data: Uint8Array }
  | { type: "close"; code: number; reason: string };

/** Options for {@linkcode MessageDecoderStream}. */
export interface MessageDecoderOptions {
  /** Largest message in bytes. @default {16777216} */
  maxMessageSize?: number;
}

/**
 * Reassembles frames into messages and reports control frames between them.
 * Errors the stream with a `WebSocketError` (1002, 1007 or 1009) on a
 * violation; bad UTF-8 is caught in the frame where it appears.
 *
 * @example Reassembling the RFC 6455 §5.7 fragmented "Hello"
 * ```ts
 * import { MessageDecoderStream, Opcode } from "@sluice/ws";
 * const enc = new TextEncoder();
 * const frames = [
 *   { fin: false, rsv1: false, opcode: Opcode.Text, payload: enc.encode("Hel") },
 *   { fin: true, rsv1: false, opcode: Opcode.Continuation, payload: enc.encode("lo") },
 * ];
 * const messages = ReadableStream.from(frames).pipeThrough(new MessageDecoderStream());
 * for await (const message of messages) console.log(message); // { type: "text", data: "Hello" }
 * ```
 */
export class MessageDecoderStream extends TransformStream<Frame, DecodedMessage> {
  /** Creates a decoder with the given limits. */
  constructor(options: MessageDecoderOptions = {}) {
    const out: DecodedMessage[] = [];
    const assembler = new MessageAssembler({
      text: (data) => out.push({ type: "text", data }),
      binary: (data) => out.push({ type: "binary", data }),
      ping: (data) => out.push({ type: "ping", data }),
      pong: (data) => out.push({ type: "pong", data }),
      close: (code, reason) => out.push({ type: "close", code, reason }),
    }, { maxMessageSize: options.maxMessageSize ?? 16 * 1024 * 1024 });
    super({
      transform(frame, controller) {
        assembler.frameStart({
          fin: frame.fin,
          rsv1: frame.rsv1,
          opcode: frame.opcode,
          mask: null,
          length: frame.payload.length,
        });
        if (frame.payload.length > 0) {
          assembler.framePayload(frame.payload, 0, frame.payload.length, 0);
        }
        assembler.frameEnd();
        for (const event of out) controller.enqueue(event);
        out.length = 0;
      },
      flush() {
        if (assembler.midMessage) throw new TypeError("Stream ended in the middle of a message");
      },
    });
  }
}

/** Options for {@linkcode MessageEncoderStream}. */
export interface MessageEncoderOptions {
  /** Split messages into frames of at most this many payload bytes. @default no fragmentation */
  fragmentSize?: number;
}

const encoder = new TextEncoder();

/**
 * Turns messages (strings as text, bytes as binary) into data frames.
 *
 * @example Fragmenting a message
 * ```ts
 * import { MessageEncoderStream } from "@sluice/ws";
 * const frames = ReadableStream.from(["Hello"]).pipeThrough(
 *   new MessageEncoderStream({ fragmentSize: 3 }),
 * );
 * for await (const frame of frames) console.log(frame.opcode, frame.fin); // 1 false, then 0 true
 * ```
 */
export class MessageEncoderStream extends TransformStream<string | Uint8Array, Frame> {
  /** Creates an encoder. */
  constructor(options: MessageEncoderOptions = {}) {
    const size = options.fragmentSize ?? Infinity;
    if (!(size > 0)) throw new RangeError("fragmentSize must be positive");
    super({
      transform(message, controller) {
        const text = typeof message === "string";
        const payload = text ? encoder.encode(message) : message;
        let opcode: number = text ? Opcode.Text : Opcode.Binary;
        let offset = 0;
        do {
          const end = Math.min(payload.length, offset + size);
          controller.enqueue({
            fin: end === payload.length,
            rsv1: false,
            opcode,
            payload: payload.subarray(offset, end),
          });
          opcode = Opcode.Continuation;
          offset = end;
        } while (offset < payload.length);
      },
    });
  }
}
