/**
 * Message assembly (RFC 6455 §5.4, §5.5, §5.6, §8.1): frames in, messages and
 * control events out. Checks fragmentation order, message size limits, UTF-8
 * of text (as each byte arrives, not at the end) and close payloads.
 *
 * @module
 */

import type { FrameHandler, FrameHeader } from "./frame.ts";
import { Opcode } from "./opcodes.ts";
import { applyMask, unmaskInto } from "./mask.ts";
import { invalidDataError, protocolError, tooBigError, type WebSocketError } from "./errors.ts";
import { parseClosePayload } from "./close_codes.ts";

/** Receives complete messages and control frames, synchronously. */
export interface MessageHandler {
  /** A complete text message. */
  text(data: string): void;
  /** A complete binary message; the buffer is exactly sized and owned by the receiver. */
  binary(data: Uint8Array): void;
  /** A ping and its payload. */
  ping(payload: Uint8Array): void;
  /** A pong and its payload. */
  pong(payload: Uint8Array): void;
  /** A valid close frame. */
  close(code: number, reason: string): void;
}

/** Inflates one compressed message, throwing a 1009 error past `maxSize`. */
export type InflateFunction = (data: Uint8Array, maxSize: number) => Uint8Array;

/** Options for {@linkcode MessageAssembler}. */
export interface MessageAssemblerOptions {
  /** Largest message, in bytes after decompression, before close 1009. */
  maxMessageSize: number;
  /** Set when permessage-deflate is active: inflates RSV1 messages. */
  inflate?: InflateFunction;
}

/** Whole-message decodes keep no state between calls, so one decoder serves all connections. */
const oneShotDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const SCRATCH_KEEP = 1 << 20;
let scratch = new Uint8Array(64 * 1024);

/** A shared buffer for unmasking text before decoding; use is synchronous. */
function scratchFor(length: number): Uint8Array {
  if (length <= scratch.length) return scratch;
  const buf = new Uint8Array(length);
  if (length <= SCRATCH_KEEP) scratch = buf;
  return buf;
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** What the frame or message in progress is. */
const Kind = { None: 0, Control: 1, Text: 2, Binary: 3 } as const;

/**
 * Assembles frames from a {@linkcode FrameParser} into messages for a
 * {@linkcode MessageHandler}. Errors are thrown as {@linkcode WebSocketError}
 * from inside the parser's `push()`.
 */
export class MessageAssembler implements FrameHandler {
  #handler: MessageHandler;
  #maxMessageSize: number;
  #inflate: InflateFunction | undefined;
  /** Streaming decoder for fragmented text, made on first use (idle connections skip it). */
  #streamDecoder: TextDecoder | null = null;

  // The frame in progress.
  #frameKind: number = Kind.None;
  #frameOpcode = 0;
  #frameFin = false;
  #frameLength = 0;
  #mask: Uint8Array | null = null;
  #frameBuf: Uint8Array | null = null;
  /** Whether this frame's payload is kept (binary, compressed, control) or decoded on the fly. */
  #buffered = false;

  // The message in progress.
  #messageKind: number = Kind.None;
  #compressed = false;
  #size = 0;
  #parts: Uint8Array[] = [];
  #text = "";
  #singleFrame = false;
  #oneShot = false;

  /** Creates an assembler reporting to `handler`. */
  constructor(handler: MessageHandler, options: MessageAssemblerOptions) {
    this.#handler = handler;
    this.#maxMessageSize = options.maxMessageSize;
    this.#inflate = options.inflate;
  }

  /** Sets the inflater once permessage-deflate is negotiated. */
  set inflate(fn: InflateFunction | undefined) {
    this.#inflate = fn;
  }

  /** Whether a fragmented message is partly received. */
  get midMessage(): boolean {
    return this.#messageKind !== Kind.None;
  }

  frameStart(header: FrameHeader): void {
    const { opcode, length } = header;
    this.#frameOpcode = opcode;
    this.#frameFin = header.fin;
    this.#frameLength = length;
    this.#mask = header.mask;
    this.#singleFrame = false;
    this.#frameBuf = null;
    if (opcode >= 0x8) {
      this.#frameKind = Kind.Control;
      this.#buffered = true;
      return;
    }
    if (opcode === Opcode.Continuation) {
      if (this.#messageKind === Kind.None) {
        throw protocolError(
          "UNEXPECTED_CONTINUATION",
          "Continuation frame without a message to continue",
        );
      }
    } else {
      if (this.#messageKind !== Kind.None) {
        throw protocolError(
          "EXPECTED_CONTINUATION",
          "New data frame inside a fragmented message: expected a continuation frame",
        );
      }
      this.#messageKind = opcode === Opcode.Text ? Kind.Text : Kind.Binary;
      this.#compressed = header.rsv1;
      this.#size = 0;
      this.#singleFrame = header.fin;
    }
    this.#size += length;
    if (this.#size > this.#maxMessageSize) throw this.#tooBig();
    this.#frameKind = this.#messageKind;
    // Binary and compressed payloads are kept; plain text is decoded as it comes.
    this.#buffered = this.#messageKind === Kind.Binary || this.#compressed;
  }

  framePayload(chunk: Uint8Array, start: number, end: number, offset: number): void {
    if (this.#buffered) {
      let buf = this.#frameBuf;
      if (buf === null) {
        if (end - start === this.#frameLength) {
          // The whole payload in one piece: copy it without zero-filling a
          // new buffer first, then unmask the copy.
          buf = this.#frameBuf = chunk.slice(start, end);
          if (this.#mask !== null) applyMask(buf, this.#mask, 0);
          return;
        }
        buf = this.#frameBuf = new Uint8Array(this.#frameLength);
      }
      unmaskInto(chunk.subarray(start, end), buf, offset, this.#mask, offset);
      return;
    }
    const data = chunk.subarray(start, end);
    // Uncompressed text: validate and decode as the bytes arrive.
    const buf = scratchFor(data.length);
    unmaskInto(data, buf, 0, this.#mask, offset);
    const bytes = buf.subarray(0, data.length);
    try {
      if (this.#singleFrame && data.length === this.#frameLength) {
        // The whole of a single-frame message, in one piece: one-shot decode.
        this.#text = oneShotDecoder.decode(bytes);
        this.#oneShot = true;
      } else {
        this.#streamDecoder ??= new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
        this.#text += this.#streamDecoder.decode(bytes, { stream: true });
      }
    } catch {
      throw invalidDataError("INVALID_UTF8", "Text message is not valid UTF-8");
    }
  }

  frameEnd(): void {
    const kind = this.#frameKind;
    this.#frameKind = Kind.None;
    if (kind === Kind.Control) {
      const payload = this.#frameBuf ?? new Uint8Array(0);
      this.#frameBuf = null;
      if (this.#frameOpcode === Opcode.Ping) this.#handler.ping(payload);
      else if (this.#frameOpcode === Opcode.Pong) this.#handler.pong(payload);
      else {
        const { code, reason } = parseClosePayload(payload);
        this.#handler.close(code, reason);
      }
      return;
    }
    if (this.#buffered) {
      const payload = this.#frameBuf ?? new Uint8Array(0);
      this.#frameBuf = null;
      if (this.#singleFrame && !this.#compressed) {
        // Fast path: a single-frame binary message is its own payload.
        this.#messageKind = Kind.None;
        this.#handler.binary(payload);
        return;
      }
      this.#parts.push(payload);
    }
    if (!this.#frameFin) return;
    this.#endMessage();
  }

  #endMessage(): void {
    const kind = this.#messageKind;
    this.#messageKind = Kind.None;
    if (this.#compressed) {
      const compressed = concat(this.#parts, this.#sizeOfParts());
      this.#parts = [];
      if (this.#inflate === undefined) {
        throw protocolError("RESERVED_BITS", "RSV1 is set but permessage-deflate is not active");
      }
      const data = this.#inflate(compressed, this.#maxMessageSize);
      if (kind === Kind.Binary) return this.#handler.binary(data);
      let text: string;
      try {
        text = oneShotDecoder.decode(data);
      } catch {
        throw invalidDataError("INVALID_UTF8", "Text message is not valid UTF-8");
      }
      return this.#handler.text(text);
    }
    if (kind === Kind.Binary) {
      const data = concat(this.#parts, this.#size);
      this.#parts = [];
      return this.#handler.binary(data);
    }
    let text = this.#text;
    this.#text = "";
    if (this.#oneShot) {
      this.#oneShot = false;
    } else {
      try {
        // An empty text message never created the decoder.
        if (this.#streamDecoder !== null) text += this.#streamDecoder.decode();
      } catch {
        throw invalidDataError("INVALID_UTF8", "Text message ends inside a UTF-8 sequence");
      }
    }
    this.#handler.text(text);
  }

  #sizeOfParts(): number {
    let total = 0;
    for (const part of this.#parts) total += part.length;
    return total;
  }

  #tooBig(): WebSocketError {
    return tooBigError(
      "MESSAGE_TOO_BIG",
      `Message of ${this.#size} bytes or more is over the limit of ${this.#maxMessageSize} bytes`,
    );
  }
}
