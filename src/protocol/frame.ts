/**
 * Frame headers and the streaming frame parser (RFC 6455 §5.2).
 *
 * ```text
 *  0                   1                   2                   3
 *  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 * +-+-+-+-+-------+-+-------------+-------------------------------+
 * |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
 * |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
 * |N|V|V|V|       |S|             |   (if payload len==126/127)   |
 * | |1|2|3|       |K|             |                               |
 * ```
 *
 * @module
 */

import { isControlOpcode, isReservedOpcode } from "./opcodes.ts";
import { nextMaskKey, unmaskInto } from "./mask.ts";
import { protocolError, tooBigError } from "./errors.ts";

/** A parsed frame header. Parsers reuse one object: copy what you keep. */
export interface FrameHeader {
  /** Final fragment of a message. */
  fin: boolean;
  /** RSV1: "compressed" under permessage-deflate (RFC 7692 §6). */
  rsv1: boolean;
  /** The 4-bit opcode. */
  opcode: number;
  /** The masking key, or `null` for an unmasked frame. */
  mask: Uint8Array | null;
  /** Payload length in bytes. */
  length: number;
}

/** A whole frame with its (unmasked) payload. */
export interface Frame {
  /** Final fragment of a message. */
  fin: boolean;
  /** RSV1 bit (compressed message under permessage-deflate). */
  rsv1: boolean;
  /** The 4-bit opcode. */
  opcode: number;
  /** The unmasked payload. */
  payload: Uint8Array;
}

/** Bytes a header takes for a payload of `length` bytes. */
export function frameHeaderSize(length: number, masked: boolean): number {
  return (length < 126 ? 2 : length < 0x10000 ? 4 : 10) + (masked ? 4 : 0);
}

/**
 * Writes a frame header into `dst` at `offset` with the minimal length
 * encoding (§5.2) and returns the number of bytes written.
 */
export function writeFrameHeader(
  dst: Uint8Array,
  offset: number,
  opcode: number,
  length: number,
  fin: boolean,
  rsv1: boolean,
  mask: Uint8Array | null,
): number {
  let i = offset;
  dst[i++] = (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode;
  const maskBit = mask === null ? 0 : 0x80;
  if (length < 126) {
    dst[i++] = maskBit | length;
  } else if (length < 0x10000) {
    dst[i++] = maskBit | 126;
    dst[i++] = length >>> 8;
    dst[i++] = length & 0xff;
  } else {
    dst[i++] = maskBit | 127;
    const hi = Math.floor(length / 0x100000000);
    const lo = length >>> 0;
    dst[i++] = hi >>> 24;
    dst[i++] = (hi >>> 16) & 0xff;
    dst[i++] = (hi >>> 8) & 0xff;
    dst[i++] = hi & 0xff;
    dst[i++] = lo >>> 24;
    dst[i++] = (lo >>> 16) & 0xff;
    dst[i++] = (lo >>> 8) & 0xff;
    dst[i++] = lo & 0xff;
  }
  if (mask !== null) {
    dst[i++] = mask[0];
    dst[i++] = mask[1];
    dst[i++] = mask[2];
    dst[i++] = mask[3];
  }
  return i - offset;
}

/** Options for {@linkcode encodeFrame}. */
export interface EncodeFrameOptions {
  /** Final fragment. @default {true} */
  fin?: boolean;
  /** Set RSV1 (compressed). @default {false} */
  rsv1?: boolean;
  /** Mask with a fresh random key, as clients must (§5.3). @default {false} */
  mask?: boolean;
}

/**
 * Encodes one frame into a single new buffer: header followed by the payload
 * (masked when asked; `payload` itself is never modified).
 *
 * @example A server's text frame
 * ```ts
 * import { encodeFrame, Opcode } from "@sluice/ws";
 * const frame = encodeFrame(Opcode.Text, new TextEncoder().encode("Hi"));
 * console.log(frame); // Uint8Array(4) [129, 2, 72, 105]
 * ```
 */
export function encodeFrame(
  opcode: number,
  payload: Uint8Array,
  options: EncodeFrameOptions = {},
): Uint8Array {
  const mask = options.mask ? nextMaskKey() : null;
  const headerSize = frameHeaderSize(payload.length, mask !== null);
  const out = new Uint8Array(headerSize + payload.length);
  writeFrameHeader(
    out,
    0,
    opcode,
    payload.length,
    options.fin ?? true,
    options.rsv1 ?? false,
    mask,
  );
  if (payload.length > 0) unmaskInto(payload, out, headerSize, mask);
  return out;
}

/** Receives the parts of each frame, in order, synchronously. */
export interface FrameHandler {
  /** A header was parsed and validated. `header` is reused: copy what you keep. */
  frameStart(header: FrameHeader): void;
  /**
   * A piece of the payload, still masked: `chunk[start..end)`, valid only
   * during the call (passed as a range, not a view, because making a
   * subarray per frame is costly on JSC). `offset` is the index of
   * `chunk[start]` within the frame payload.
   */
  framePayload(chunk: Uint8Array, start: number, end: number, offset: number): void;
  /** The frame's payload is complete. */
  frameEnd(): void;
  /**
   * Optional: where the payload bytes from `offset` on (`remaining` of them)
   * end up, if they go into one buffer the handler owns; a reader may then
   * read them straight into it ({@linkcode FrameParser.payloadTarget}).
   * `null` when the handler copies them elsewhere (or wants them as views).
   */
  framePayloadTarget?(offset: number, remaining: number): Uint8Array | null;
  /**
   * Optional, with `framePayloadTarget`: `n` payload bytes from `offset` on
   * were written into the target, still masked.
   */
  framePayloadInPlace?(offset: number, n: number): void;
}

/** Options for {@linkcode FrameParser}. */
export interface FrameParserOptions {
  /**
   * Which side parses: a server requires masked frames, a client unmasked
   * ones (§5.1).
   */
  role: "server" | "client";
  /** Largest payload of a single frame, checked before any of it is buffered. */
  maxFrameSize: number;
  /** Allow RSV1 on the first frame of a data message (permessage-deflate). @default {false} */
  allowRsv1?: boolean;
}

const MAX_HEADER = 14;

/** Bytes per slab that parsers' 4-byte mask keys are cut from. */
const KEY_SLAB_SIZE = 4096;
let keySlab = new ArrayBuffer(KEY_SLAB_SIZE);
let keySlabAt = 0;

/**
 * A parser's own 4-byte mask key, cut from a shared slab: an ArrayBuffer of
 * its own would cost ~200 bytes beside the 4 (each idle connection keeps one
 * after its first pong). A slab lives while any of its keys does.
 */
function maskKeyView(): Uint8Array {
  if (keySlabAt === KEY_SLAB_SIZE) {
    keySlab = new ArrayBuffer(KEY_SLAB_SIZE);
    keySlabAt = 0;
  }
  const key = new Uint8Array(keySlab, keySlabAt, 4);
  keySlabAt += 4;
  return key;
}

/**
 * Turns a byte stream into validated frame parts for a {@linkcode FrameHandler}.
 *
 * It copies only header bytes split across chunks (at most 14); payloads are
 * handed on as views of the input. Every rule that can be checked from the
 * header alone is checked here, before any payload is accepted. A rule broken
 * throws a {@linkcode WebSocketError}; the parser must not be used after that.
 *
 * @example A server reading a client's masked "Hello" (RFC 6455 §5.7)
 * ```ts
 * import { FrameParser } from "@sluice/ws";
 * const parser = new FrameParser({
 *   frameStart: (header) => console.log(header.opcode, header.length), // 1 5
 *   framePayload: (chunk, start, end) => console.log(end - start), // 5 (still masked)
 *   frameEnd: () => console.log("end"),
 * }, { role: "server", maxFrameSize: 1024 });
 * parser.push(new Uint8Array([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]));
 * ```
 */
export class FrameParser {
  #handler: FrameHandler;
  #expectMask: boolean;
  #maxFrameSize: number;
  #allowRsv1: boolean;
  /** Header bytes split across chunks (made on first need: most headers arrive whole). */
  #head: Uint8Array | null = null;
  #headLength = 0;
  #maskKey: Uint8Array | null = null;
  /** Reused for every frame; made with the first one. */
  #header: FrameHeader | null = null;
  #inPayload = false;
  #remaining = 0;
  #offset = 0;
  #stopped = false;

  /** Creates a parser that reports to `handler`. */
  constructor(handler: FrameHandler, options: FrameParserOptions) {
    this.#handler = handler;
    this.#expectMask = options.role === "server";
    this.#maxFrameSize = options.maxFrameSize;
    this.#allowRsv1 = options.allowRsv1 ?? false;
  }

  /** Whether RSV1 is accepted (set once permessage-deflate is negotiated). */
  set allowRsv1(value: boolean) {
    this.#allowRsv1 = value;
  }

  /** Ignore every byte from now on (after a close frame, §5.5.1). */
  stop(): void {
    this.#stopped = true;
  }

  /** Whether a frame is partly received. */
  get midFrame(): boolean {
    return this.#inPayload || this.#headLength > 0;
  }

  /**
   * Where the next payload bytes of the frame in progress go, when the
   * handler keeps them in one buffer of its own: a view of exactly the bytes
   * still to come (at least `min` of them), for a reader to read into
   * directly instead of copying through `push()`. Report what was read with
   * {@linkcode payloadWritten} before the next `push()`. `null` otherwise.
   */
  payloadTarget(min: number): Uint8Array | null {
    if (!this.#inPayload || this.#remaining < min || this.#stopped) return null;
    return this.#handler.framePayloadTarget?.(this.#offset, this.#remaining) ?? null;
  }

  /** `n` bytes (at most the target's length) were read into {@linkcode payloadTarget}. */
  payloadWritten(n: number): void {
    if (this.#stopped || n === 0) return;
    if (!this.#inPayload || n > this.#remaining) {
      throw new RangeError(`${n} bytes written past the payload in progress`);
    }
    this.#handler.framePayloadInPlace!(this.#offset, n);
    this.#offset += n;
    this.#remaining -= n;
    if (this.#remaining === 0) this.#endFrame();
  }

  /** Feeds bytes. `chunk` is only read during the call, never kept or changed. */
  push(chunk: Uint8Array): void {
    const end = chunk.length;
    let pos = 0;
    while (pos < end && !this.#stopped) {
      if (this.#inPayload) {
        const take = Math.min(this.#remaining, end - pos);
        this.#handler.framePayload(chunk, pos, pos + take, this.#offset);
        pos += take;
        this.#offset += take;
        this.#remaining -= take;
        if (this.#remaining === 0) this.#endFrame();
        continue;
      }
      // Header: parse straight from the chunk when it is all there.
      let src: Uint8Array, at: number, avail: number;
      if (this.#headLength === 0) {
        src = chunk;
        at = pos;
        avail = end - pos;
      } else {
        const take = Math.min(MAX_HEADER - this.#headLength, end - pos);
        src = this.#head!;
        src.set(chunk.subarray(pos, pos + take), this.#headLength);
        at = 0;
        avail = this.#headLength + take;
      }
      const size = avail < 2 ? 0 : this.#headerSize(src[at], src[at + 1]);
      if (size === 0 || avail < size) {
        // Incomplete: keep what we have (at most 14 bytes).
        if (this.#headLength === 0) {
          (this.#head ??= new Uint8Array(MAX_HEADER)).set(chunk.subarray(pos, end));
        }
        this.#headLength = avail;
        pos = end;
        break;
      }
      // Bytes of this chunk the header used.
      pos += size - this.#headLength;
      this.#headLength = 0;
      this.#startFrame(src, at, size);
    }
  }

  /** Validates the first two bytes and returns the full header size. */
  #headerSize(b0: number, b1: number): number {
    if ((b0 & 0x30) !== 0) {
      throw protocolError("RESERVED_BITS", "RSV2 and RSV3 must be 0: no extension defines them");
    }
    const opcode = b0 & 0x0f;
    if (isReservedOpcode(opcode)) {
      throw protocolError("RESERVED_OPCODE", `Opcode 0x${opcode.toString(16)} is reserved`);
    }
    const len7 = b1 & 0x7f;
    if (isControlOpcode(opcode)) {
      if ((b0 & 0x80) === 0) {
        throw protocolError("FRAGMENTED_CONTROL_FRAME", "Control frames must not be fragmented");
      }
      if (len7 > 125) {
        throw protocolError("CONTROL_FRAME_TOO_LONG", "Control frame payload is over 125 bytes");
      }
    }
    if ((b0 & 0x40) !== 0 && (!this.#allowRsv1 || opcode === 0 || isControlOpcode(opcode))) {
      throw protocolError(
        "RESERVED_BITS",
        this.#allowRsv1
          ? "RSV1 is only allowed on the first frame of a data message"
          : "RSV1 must be 0: no extension was negotiated",
      );
    }
    const masked = (b1 & 0x80) !== 0;
    if (masked !== this.#expectMask) {
      throw this.#expectMask
        ? protocolError("UNMASKED_FRAME", "Client frames must be masked")
        : protocolError("MASKED_FRAME", "Server frames must not be masked");
    }
    return (len7 < 126 ? 2 : len7 === 126 ? 4 : 10) + (masked ? 4 : 0);
  }

  #startFrame(src: Uint8Array, at: number, size: number): void {
    const b0 = src[at], b1 = src[at + 1];
    const len7 = b1 & 0x7f;
    let length = len7;
    let i = at + 2;
    if (len7 === 126) {
      length = (src[i] << 8) | src[i + 1];
      i += 2;
      if (length < 126) {
        throw protocolError("INVALID_LENGTH", "Payload length is not minimally encoded");
      }
    } else if (len7 === 127) {
      const hi = ((src[i] << 24) | (src[i + 1] << 16) | (src[i + 2] << 8) | src[i + 3]) >>> 0;
      const lo = ((src[i + 4] << 24) | (src[i + 5] << 16) | (src[i + 6] << 8) | src[i + 7]) >>> 0;
      i += 8;
      if (hi >= 0x80000000) {
        throw protocolError(
          "INVALID_LENGTH",
          "The most significant bit of a 64-bit length must be 0",
        );
      }
      if (hi >= 0x200000) {
        throw tooBigError("FRAME_TOO_BIG", "Frame length is beyond 2^53 bytes");
      }
      length = hi * 0x100000000 + lo;
      if (length < 0x10000) {
        throw protocolError("INVALID_LENGTH", "Payload length is not minimally encoded");
      }
    }
    if (length > this.#maxFrameSize) {
      throw tooBigError(
        "FRAME_TOO_BIG",
        `Frame of ${length} bytes is over the limit of ${this.#maxFrameSize} bytes`,
      );
    }
    const header = this.#header ??= { fin: false, rsv1: false, opcode: 0, mask: null, length: 0 };
    header.fin = (b0 & 0x80) !== 0;
    header.rsv1 = (b0 & 0x40) !== 0;
    header.opcode = b0 & 0x0f;
    header.length = length;
    if (size - (i - at) === 4) {
      // By index: a subarray per frame is costly on JSC.
      const key = this.#maskKey ??= maskKeyView();
      key[0] = src[i];
      key[1] = src[i + 1];
      key[2] = src[i + 2];
      key[3] = src[i + 3];
      header.mask = key;
    } else {
      header.mask = null;
    }
    this.#handler.frameStart(header);
    this.#remaining = length;
    this.#offset = 0;
    if (length === 0) this.#endFrame();
    else this.#inPayload = true;
  }

  #endFrame(): void {
    this.#inPayload = false;
    this.#handler.frameEnd();
  }
}
