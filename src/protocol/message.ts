/**
 * Message assembly (RFC 6455 §5.4, §5.5, §5.6, §8.1): frames in, messages and
 * control events out. Checks fragmentation order, message size limits, UTF-8
 * of text (as each byte arrives, not at the end) and close payloads.
 *
 * @module
 */

import { type FrameHandler, type FrameHeader, frameHeaderSize } from "./frame.ts";
import { Opcode } from "./opcodes.ts";
import { applyMask, unmaskCopySmall, unmaskInto } from "./mask.ts";
import { invalidDataError, protocolError, tooBigError, type WebSocketError } from "./errors.ts";
import { parseClosePayload } from "./close_codes.ts";
import { Utf8Validator } from "./utf8.ts";
import { giveRoom } from "./frame_room.ts";

/** Receives complete messages and control frames, synchronously. */
export interface MessageHandler {
  /** A complete text message. */
  text(data: string): void;
  /**
   * A complete binary message, owned by the receiver: an exactly sized
   * buffer, or (while {@linkcode MessageAssembler.deliverViews} is set) a view
   * into a larger one whose other bytes nothing uses, or for a small message
   * with `slab` set, that holds only this connection's other messages.
   */
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

/**
 * Default of {@linkcode MessageAssemblerOptions.maxFragments}. Memory does not
 * depend on it (fragments go into one buffer bounded by `maxMessageSize`); it
 * bounds the work a peer can make one message cost with empty or 1-byte
 * fragments (a flood of empty continuation frames is failed after ~390 KB of
 * wire instead of going on forever), while leaving room for senders that
 * stream a message piece by piece: a 16 MiB message in 256-byte fragments, or
 * python-websockets sending an async iterator of small items.
 */
export const DEFAULT_MAX_FRAGMENTS = 65_536;

/** Options for {@linkcode MessageAssembler}. */
export interface MessageAssemblerOptions {
  /** Largest message, in bytes after decompression, before close 1009. */
  maxMessageSize: number;
  /**
   * Most frames one data message may span (the first frame and its
   * continuations; interleaved control frames do not count) before close 1009
   * (`TOO_MANY_FRAGMENTS`). @default {65536}
   */
  maxFragments?: number;
  /** Set when permessage-deflate is active: inflates RSV1 messages. */
  inflate?: InflateFunction;
  /**
   * Makes the buffer for a payload that arrives in pieces. Every byte of it
   * is written before the message is delivered (a message that fails is
   * never delivered), so a runtime may hand out uninitialized memory and
   * skip zero-filling large payloads. @default {(size) => new Uint8Array(size)}
   */
  allocate?: (size: number) => Uint8Array;
  /**
   * Leave room for a server frame header in front of large binary payloads
   * delivered as views (see `frame_room.ts`), so that a server sending them
   * on writes one buffer. Only useful to servers. @default {false}
   */
  frameRoom?: boolean;
  /**
   * Deliver small single-frame binary messages (while views are allowed) as
   * views into a buffer shared with this connection's other recent small
   * messages, for runtimes where allocating a buffer costs far more than a
   * view (Deno's V8: ~250 ns against ~10 ns). Let go of it with
   * {@linkcode MessageAssembler.releaseSlab} when the connection is idle.
   * @default {false}
   */
  slab?: boolean;
}

function zeroed(size: number): Uint8Array {
  return new Uint8Array(size);
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

/**
 * How a fragmented message is held, bounded by its bytes rather than by its
 * fragment count. A fragment of at least `PART_MIN` bytes is kept as its own
 * part, copied once as it arrives (as a single frame is), so large fragments
 * cost what they always did. Smaller fragments are appended to a tail buffer
 * that doubles from `TAIL_START` up to `TAIL_MAX` and is then sealed as a
 * part, exactly sized. So a message of `n` bytes holds at most about
 * `2n / PART_MIN + 1` parts and, with the tail's capacity capped by what the
 * message may still hold, never more than `maxMessageSize` bytes of buffer,
 * however it is cut: an empty fragment costs nothing, a 1-byte one a byte. (One growing buffer for everything
 * would also be bounded, but its doubling re-zeroes and re-copies large
 * fragments: +140% on Deno for 1 MiB in 64 KiB fragments, measured.)
 */
const PART_MIN = 4096;
const TAIL_START = 256;
const TAIL_MAX = 64 * 1024;
/** Below this many bytes a payload piece is unmasked by a byte loop (no views made). */
const SMALL_PIECE = 16;

/**
 * Single-frame binary payloads of at least this many bytes may be delivered
 * as views (see {@linkcode MessageAssembler.deliverViews}): in place in an
 * owned input chunk, or with room for a frame header in front.
 */
const VIEW_MIN = 8 * 1024;

/** Size of the shared buffer small messages are cut from (see `MessageAssemblerOptions.slab`). */
const SLAB_SIZE = 4096;
/** Largest message cut from the slab. */
const SLAB_MESSAGE_MAX = 256;

/** The parts of no message (shared: a connection makes its own list on its first fragment). */
const NO_PARTS: Uint8Array[] = [];
/** No bytes: the payload of empty control frames (shared: there are no bytes to write to). */
export const NO_BYTES: Uint8Array = new Uint8Array(0);

/** What the frame in progress is. */
const Kind = { None: 0, Control: 1, Text: 2, Binary: 3 } as const;

function textError(): WebSocketError {
  return invalidDataError("INVALID_UTF8", "Text message is not valid UTF-8");
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * Assembles frames from a {@linkcode FrameParser} into messages for a
 * {@linkcode MessageHandler}. Errors are thrown as {@linkcode WebSocketError}
 * from inside the parser's `push()`.
 *
 * What a message in progress holds is bounded by its bytes, not by how many
 * fragments carry them (see `PART_MIN` above), and the number of fragments is
 * bounded by `maxFragments`. Text is checked for UTF-8 as its bytes arrive
 * (§8.1 fail-fast) and decoded once, at the end.
 */
export class MessageAssembler implements FrameHandler {
  #handler: MessageHandler;
  #maxMessageSize: number;
  #maxFragments: number;
  #inflate: InflateFunction | undefined;
  #allocate: (size: number) => Uint8Array;
  #frameRoom: boolean;
  #slabOn: boolean;
  /** Where small messages are cut from (see `MessageAssemblerOptions.slab`). */
  #slab: Uint8Array | null = null;
  #slabAt = 0;
  /** Made with the first uncompressed text message (idle connections never need one). */
  #utf8: Utf8Validator | null = null;
  #views = false;
  #ownedInput = false;

  // The frame in progress.
  #frameKind: number = Kind.None;
  #frameOpcode = 0;
  #frameFin = false;
  #frameLength = 0;
  #mask: Uint8Array | null = null;
  /** Whether the payload goes into `#frameBuf` (else into the tail). */
  #ownBuffer = true;
  /** Whether the payload is uncompressed text, checked for UTF-8 as it arrives. */
  #frameText = false;
  /** Whether the payload is a whole uncompressed binary message that may be delivered as a view. */
  #frameView = false;
  /** Whether the payload is a small whole binary message to cut from the slab. */
  #frameSlab = false;
  #frameBuf: Uint8Array | null = null;

  // The message in progress.
  #messageKind: number = Kind.None;
  #compressed = false;
  /** Payload bytes announced by the message's frame headers so far. */
  #size = 0;
  #fragments = 0;
  /** Complete pieces of the message (compressed if RSV1), in order. */
  #parts: Uint8Array[] = NO_PARTS;
  /** Bytes in the parts (each exactly sized). */
  #partsLength = 0;
  /** Small fragments, appended: `#tail[0..#tailLength)` is complete frames. */
  #tail: Uint8Array | null = null;
  #tailLength = 0;
  /** Uncompressed text bytes are checked for UTF-8 as they arrive. */
  #checkText = false;
  #singleFrame = false;
  /** A single-frame text message decoded from one piece, straight into `#text`. */
  #oneShot = false;
  #text = "";

  /** Creates an assembler reporting to `handler`. */
  constructor(handler: MessageHandler, options: MessageAssemblerOptions) {
    this.#handler = handler;
    this.#maxMessageSize = options.maxMessageSize;
    this.#maxFragments = options.maxFragments ?? DEFAULT_MAX_FRAGMENTS;
    if (!(this.#maxFragments >= 1)) {
      throw new RangeError(`maxFragments must be at least 1, got ${String(options.maxFragments)}`);
    }
    this.#inflate = options.inflate;
    this.#allocate = options.allocate ?? zeroed;
    this.#frameRoom = options.frameRoom ?? false;
    this.#slabOn = options.slab ?? false;
  }

  /** Lets go of the buffer small messages are cut from (messages delivered keep theirs). */
  releaseSlab(): void {
    this.#slab = null;
  }

  /**
   * Whether single-frame binary messages may be delivered as views into a
   * larger buffer (large ones: that nothing else uses; small ones with
   * `slab`: the slab) rather than as exactly sized buffers: set it while the
   * receiver hands on `Uint8Array`s, clear it while it needs whole
   * `ArrayBuffer`s (a view would cost a copy then).
   */
  set deliverViews(value: boolean) {
    this.#views = value;
  }

  /**
   * Whether the chunks pushed from now on are owned by this assembler (a
   * runtime that hands out a fresh buffer per read): their payload bytes
   * may then be unmasked in place and delivered as views of the chunk.
   */
  set ownedInput(value: boolean) {
    this.#ownedInput = value;
  }

  /** Sets the inflater once permessage-deflate is negotiated. */
  set inflate(fn: InflateFunction | undefined) {
    this.#inflate = fn;
  }

  /** Whether a fragmented message is partly received. */
  get midMessage(): boolean {
    return this.#messageKind !== Kind.None;
  }

  /**
   * Bytes of buffer held for the message and frame in progress (capacity,
   * not content): at most about twice the bytes received plus 256, never
   * more than `maxMessageSize` (a control frame's at most 125 aside).
   */
  get bufferedBytes(): number {
    return this.#partsLength + (this.#tail?.length ?? 0) + (this.#frameBuf?.length ?? 0);
  }

  /** Buffers held for the message and frame in progress. */
  get bufferedParts(): number {
    return this.#parts.length + (this.#tail === null ? 0 : 1) + (this.#frameBuf === null ? 0 : 1);
  }

  frameStart(header: FrameHeader): void {
    const { opcode, length } = header;
    this.#frameOpcode = opcode;
    this.#frameFin = header.fin;
    this.#frameLength = length;
    this.#mask = header.mask;
    this.#frameBuf = null;
    if (opcode >= 0x8) {
      this.#frameKind = Kind.Control;
      this.#ownBuffer = true;
      this.#frameText = false;
      this.#frameView = false;
      this.#frameSlab = false;
      return;
    }
    if (opcode === Opcode.Continuation) {
      if (this.#messageKind === Kind.None) {
        throw protocolError(
          "UNEXPECTED_CONTINUATION",
          "Continuation frame without a message to continue",
        );
      }
      if (++this.#fragments > this.#maxFragments) {
        // 1009 rather than 1008: like its size, the message's fragment count
        // is more than this endpoint will process (§7.4.1 "too big").
        throw tooBigError(
          "TOO_MANY_FRAGMENTS",
          `Message is split into more than ${this.#maxFragments} fragments; ` +
            "raise maxFragments to accept it",
        );
      }
    } else {
      if (this.#messageKind !== Kind.None) {
        throw protocolError(
          "EXPECTED_CONTINUATION",
          "New data frame inside a fragmented message: expected a continuation frame",
        );
      }
      const kind = opcode === Opcode.Text ? Kind.Text : Kind.Binary;
      this.#messageKind = kind;
      this.#compressed = header.rsv1;
      this.#size = 0;
      this.#fragments = 1;
      this.#singleFrame = header.fin;
      this.#checkText = kind === Kind.Text && !header.rsv1;
      if (this.#checkText) (this.#utf8 ??= new Utf8Validator()).reset();
    }
    this.#size += length;
    if (this.#size > this.#maxMessageSize) throw this.#tooBig();
    this.#frameKind = this.#messageKind;
    this.#ownBuffer = this.#singleFrame || length >= PART_MIN;
    this.#frameText = this.#checkText;
    const wholeBinary = this.#views && this.#singleFrame && this.#messageKind === Kind.Binary &&
      !this.#compressed;
    this.#frameView = wholeBinary && length >= VIEW_MIN;
    this.#frameSlab = wholeBinary && this.#slabOn && length > 0 && length <= SLAB_MESSAGE_MAX;
    // The tail's bytes come before this frame's; sealing them now also means
    // a tail and a frame buffer are never both growing.
    if (this.#ownBuffer) this.#sealTail();
  }

  framePayload(chunk: Uint8Array, start: number, end: number, offset: number): void {
    const n = end - start;
    let buf: Uint8Array;
    let at: number;
    if (this.#ownBuffer) {
      buf = this.#frameBuf!;
      if (offset === 0) {
        if (n === this.#frameLength) {
          if (this.#frameText && this.#singleFrame) {
            // The whole of a single-frame text message in one piece: decode
            // it from a shared scratch buffer, keeping no copy.
            this.#decodeOneShot(chunk, start, end);
            return;
          }
          if (this.#frameView) {
            this.#takeView(chunk, start, end);
            return;
          }
          if (this.#frameSlab) {
            this.#frameBuf = this.#cutFromSlab(chunk, start, end);
            return;
          }
          // The whole payload in one piece: copy it without zero-filling a
          // new buffer first, then unmask the copy.
          buf = this.#frameBuf = chunk.slice(start, end);
          if (this.#mask !== null) applyMask(buf, this.#mask, 0);
          if (this.#frameText && !this.#utf8!.push(buf, 0, n)) throw textError();
          return;
        }
        buf = this.#frameBuf = this.#frameView && this.#frameRoom
          ? this.#allocateWithRoom(this.#frameLength)
          : this.#allocate(this.#frameLength);
      }
      at = offset;
    } else {
      if (offset === 0) this.#reserveTail(this.#frameLength);
      buf = this.#tail!;
      at = this.#tailLength + offset;
    }
    const mask = this.#mask;
    if (n < SMALL_PIECE) {
      unmaskCopySmall(chunk, start, end, buf, at, mask, offset);
    } else {
      unmaskInto(chunk.subarray(start, end), buf, at, mask, offset);
    }
    if (this.#frameText && !this.#utf8!.push(buf, at, at + n)) throw textError();
  }

  framePayloadTarget(offset: number, remaining: number): Uint8Array | null {
    // Only into a buffer already made for this frame (its first piece came
    // through push()); offset + remaining is its length.
    const buf = this.#ownBuffer ? this.#frameBuf : null;
    if (buf === null || offset === 0 || offset + remaining !== buf.length) return null;
    return buf.subarray(offset);
  }

  framePayloadInPlace(offset: number, n: number): void {
    const buf = this.#frameBuf!;
    if (this.#mask !== null) applyMask(buf.subarray(offset, offset + n), this.#mask, offset);
    if (this.#frameText && !this.#utf8!.push(buf, offset, offset + n)) throw textError();
  }

  frameEnd(): void {
    const kind = this.#frameKind;
    this.#frameKind = Kind.None;
    if (kind === Kind.Control) {
      // An empty control payload is one shared empty array: nothing to write to.
      const payload = this.#frameBuf ?? NO_BYTES;
      this.#frameBuf = null;
      if (this.#frameOpcode === Opcode.Ping) this.#handler.ping(payload);
      else if (this.#frameOpcode === Opcode.Pong) this.#handler.pong(payload);
      else {
        const { code, reason } = parseClosePayload(payload);
        this.#handler.close(code, reason);
      }
      return;
    }
    if (this.#ownBuffer) {
      const payload = this.#frameBuf;
      this.#frameBuf = null;
      if (this.#singleFrame && !this.#compressed && kind === Kind.Binary) {
        // Fast path: a single-frame binary message is its own payload.
        this.#messageKind = Kind.None;
        this.#handler.binary(payload ?? new Uint8Array(0));
        return;
      }
      if (payload !== null) {
        this.#addPart(payload);
      }
    } else {
      this.#tailLength += this.#frameLength;
    }
    if (!this.#frameFin) return;
    this.#endMessage();
  }

  /**
   * A whole binary message payload in one piece, delivered as a view: in
   * place when the chunk is owned and the payload is most of it (so a view
   * kept long pins at most twice its bytes), else copied with the bytes
   * before it, which are then room for a frame header.
   */
  #takeView(chunk: Uint8Array, start: number, end: number): void {
    const n = end - start;
    if (this.#ownedInput && 2 * n >= chunk.length) {
      const view = chunk.subarray(start, end);
      if (this.#mask !== null) applyMask(view, this.#mask, 0);
      // The bytes just before the payload in this chunk are its own frame
      // header (a client's, 4 bytes longer than a server's): free to reuse.
      const room = this.#frameRoom ? frameHeaderSize(n, false) : 0;
      if (room > 0 && start >= room) giveRoom(view, room);
      this.#frameBuf = view;
      return;
    }
    // A fresh buffer, unmasked while copied (one pass through the SIMD
    // scratch rather than a copy and then a masking pass).
    const view = this.#frameRoom ? this.#allocateWithRoom(n) : this.#allocate(n);
    unmaskInto(chunk.subarray(start, end), view, 0, this.#mask, 0);
    this.#frameBuf = view;
  }

  /** A small payload copied (unmasked) into the next bytes of the slab, as a view. */
  #cutFromSlab(chunk: Uint8Array, start: number, end: number): Uint8Array {
    const n = end - start;
    let slab = this.#slab;
    if (slab === null || this.#slabAt + n > slab.length) {
      slab = this.#slab = new Uint8Array(SLAB_SIZE);
      this.#slabAt = 0;
    }
    const at = this.#slabAt;
    this.#slabAt = at + n;
    unmaskCopySmall(chunk, start, end, slab, at, this.#mask);
    return slab.subarray(at, at + n);
  }

  /** A payload buffer of `length` bytes with room for a server frame header in front. */
  #allocateWithRoom(length: number): Uint8Array {
    const room = frameHeaderSize(length, false);
    const buf = this.#allocate(room + length);
    // The room is reachable through the view's `.buffer`: it must not show
    // what an uninitialized allocation held (another connection's bytes).
    buf.fill(0, 0, room);
    const view = buf.subarray(room);
    giveRoom(view, room);
    return view;
  }

  #decodeOneShot(chunk: Uint8Array, start: number, end: number): void {
    const n = end - start;
    const buf = scratchFor(n);
    unmaskInto(chunk.subarray(start, end), buf, 0, this.#mask, 0);
    try {
      this.#text = oneShotDecoder.decode(buf.subarray(0, n));
    } catch {
      throw textError();
    }
    this.#oneShot = true;
  }

  /** Makes room in the tail for a small frame of `length` bytes. */
  #reserveTail(length: number): void {
    const needed = this.#tailLength + length;
    const capacity = this.#tail?.length ?? 0;
    if (needed <= capacity) return;
    if (needed > TAIL_MAX) {
      this.#sealTail();
      const room = this.#maxMessageSize - this.#partsLength;
      this.#tail = new Uint8Array(Math.min(room, Math.max(TAIL_START, length)));
      return;
    }
    // Never past what the message may still hold: needed <= that, as the
    // header was checked against maxMessageSize.
    const room = this.#maxMessageSize - this.#partsLength;
    const next = new Uint8Array(
      Math.min(TAIL_MAX, room, Math.max(needed, capacity * 2, TAIL_START)),
    );
    if (this.#tailLength > 0) next.set(this.#tail!.subarray(0, this.#tailLength));
    this.#tail = next;
  }

  /**
   * Moves the tail's bytes, if any, to the parts, exactly sized (a copy of
   * at most `TAIL_MAX` bytes, made at most once per `TAIL_MAX - PART_MIN`
   * bytes of small fragments or per large fragment).
   */
  #sealTail(): void {
    const tail = this.#tail;
    if (tail === null) return;
    const length = this.#tailLength;
    if (length > 0) {
      this.#addPart(length === tail.length ? tail : tail.slice(0, length));
    }
    this.#tail = null;
    this.#tailLength = 0;
  }

  #addPart(part: Uint8Array): void {
    if (this.#parts === NO_PARTS) this.#parts = [];
    this.#parts.push(part);
    this.#partsLength += part.length;
  }

  /** The message's bytes in one exactly sized buffer; the assembler lets go of them. */
  #takeBytes(): Uint8Array {
    this.#sealTail();
    const parts = this.#parts;
    this.#parts = NO_PARTS;
    this.#partsLength = 0;
    if (parts.length === 0) return new Uint8Array(0);
    // Every part is exactly sized and owned: one of them is the message.
    if (parts.length === 1) return parts[0];
    let total = 0;
    for (const part of parts) total += part.length;
    return concat(parts, total);
  }

  #endMessage(): void {
    const kind = this.#messageKind;
    this.#messageKind = Kind.None;
    if (this.#compressed) {
      const compressed = this.#takeBytes();
      if (this.#inflate === undefined) {
        throw protocolError("RESERVED_BITS", "RSV1 is set but permessage-deflate is not active");
      }
      const data = this.#inflate(compressed, this.#maxMessageSize);
      if (kind === Kind.Binary) return this.#handler.binary(data);
      return this.#handler.text(decodeText(data));
    }
    if (kind === Kind.Binary) return this.#handler.binary(this.#takeBytes());
    if (this.#oneShot) {
      const text = this.#text;
      this.#oneShot = false;
      this.#text = "";
      return this.#handler.text(text);
    }
    if (!this.#utf8!.complete) {
      throw invalidDataError("INVALID_UTF8", "Text message ends inside a UTF-8 sequence");
    }
    this.#handler.text(decodeText(this.#takeBytes()));
  }

  #tooBig(): WebSocketError {
    return tooBigError(
      "MESSAGE_TOO_BIG",
      `Message of ${this.#size} bytes or more is over the limit of ${this.#maxMessageSize} bytes`,
    );
  }
}

function decodeText(bytes: Uint8Array): string {
  try {
    return oneShotDecoder.decode(bytes);
  } catch {
    throw textError();
  }
}
