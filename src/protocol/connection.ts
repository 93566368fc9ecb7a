/**
 * The sans-I/O WebSocket connection (RFC 6455 §5-§7): bytes in, events and
 * bytes to send out. It owns the frame parser, the message assembler and the
 * closing handshake state machine, and it answers what the protocol obliges
 * (pongs, the close echo) by itself. The I/O layer only moves bytes, keeps
 * time and closes the socket when {@linkcode WebSocketProtocol.state} says so.
 *
 * @module
 */

import { frameHeaderSize, FrameParser, writeFrameHeader } from "./frame.ts";
import {
  type InflateFunction,
  MessageAssembler,
  type MessageHandler,
  NO_BYTES,
} from "./message.ts";
import { isControlOpcode, Opcode } from "./opcodes.ts";
import { nextMaskKey, unmaskInto } from "./mask.ts";
import { CloseCode, encodeClosePayload, isValidWireCloseCode } from "./close_codes.ts";
import { WebSocketError } from "./errors.ts";
import { roomBefore } from "./frame_room.ts";

/** The WHATWG `readyState` values. */
export const ReadyState = {
  /** The opening handshake is in progress. */
  CONNECTING: 0,
  /** Messages flow both ways. */
  OPEN: 1,
  /** A close frame was sent; waiting for the peer's. */
  CLOSING: 2,
  /** The closing handshake is complete or the connection failed. */
  CLOSED: 3,
} as const;

/** One of the {@linkcode ReadyState} values. */
export type ReadyState = typeof ReadyState[keyof typeof ReadyState];

/** What a connection reports as it receives. */
export interface ProtocolHandler {
  /** A complete text message. */
  text(data: string): void;
  /**
   * A complete binary message, owned by the receiver: exactly sized, or a
   * view into a larger buffer while {@linkcode WebSocketProtocol.deliverViews}
   * is set (see there).
   */
  binary(data: Uint8Array): void;
  /** A ping was received (the pong is already queued). */
  ping?(payload: Uint8Array): void;
  /** A pong was received. */
  pong?(payload: Uint8Array): void;
}

/** A negotiated compression codec (permessage-deflate). */
export interface MessageCodec {
  /** Compresses one message payload. */
  compress(data: Uint8Array): Uint8Array;
  /** Inflates one message, throwing a 1009 {@linkcode WebSocketError} past `maxSize`. */
  decompress: InflateFunction;
  /** Messages smaller than this many bytes are sent uncompressed. */
  threshold: number;
  /** Frees the codec's memory once the connection is over. */
  close?(): void;
}

/** Options for {@linkcode WebSocketProtocol}. */
export interface ProtocolOptions {
  /** `"server"` expects masked frames and sends unmasked ones; `"client"` the reverse. */
  role: "server" | "client";
  /** Largest message in bytes (after decompression). */
  maxMessageSize: number;
  /** Largest single frame in bytes. @default {maxMessageSize} */
  maxFrameSize?: number;
  /** Most frames one data message may span before close 1009. @default {65536} */
  maxFragments?: number;
  /** The negotiated compression, if any. */
  codec?: MessageCodec | null;
  /**
   * Makes buffers whose bytes are all written before anyone reads them
   * (large received payloads, frames to send, the frame arena, of which only
   * written bytes are ever taken), so a runtime may hand out uninitialized
   * memory. @default {(size) => new Uint8Array(size)}
   */
  allocate?: (size: number) => Uint8Array;
  /**
   * Server payloads up to this many bytes are copied next to their header,
   * so that the frame leaves in one socket write; larger ones are queued as
   * they are, after their header. A fresh frame per large message is faster
   * where the allocator takes it well (Bun, 64 KiB echo: 30-34 → 27-31 µs
   * per message) but on Deno it raised the resident memory that a
   * never-reading-peers attack leaves behind by ~100 MiB, hence a default
   * that the runtime adapter may raise. @default {16384}
   */
  copyLimit?: number;
  /**
   * Cut small binary messages from a shared per-connection buffer while
   * {@linkcode WebSocketProtocol.deliverViews} is set (see
   * `MessageAssemblerOptions.slab`). @default {false}
   */
  slabSmallMessages?: boolean;
}

const encoder = new TextEncoder();

function zeroed(size: number): Uint8Array {
  return new Uint8Array(size);
}
/** Size of a connection's frame arena (allocated on its first send). */
const ARENA_SIZE = 16 * 1024;
/** An unmasked close, ping and pong frame with no payload, by opcode from close (shared, never written). */
const EMPTY_CONTROL_FRAMES = [
  Uint8Array.of(0x80 | Opcode.Close, 0),
  Uint8Array.of(0x80 | Opcode.Ping, 0),
  Uint8Array.of(0x80 | Opcode.Pong, 0),
];
/** Text up to this many UTF-16 units is encoded once into scratch, then copied next to its header. */
const TEXT_COPY_THRESHOLD = 16 * 1024;
const textScratch = new Uint8Array(3 * TEXT_COPY_THRESHOLD);
/** Default of {@linkcode ProtocolOptions.copyLimit}. */
const COPY_LIMIT = 16 * 1024;

/**
 * One WebSocket connection's protocol state, after the opening handshake.
 *
 * @example Feeding bytes and collecting replies
 * ```ts
 * import { WebSocketProtocol } from "@sluice/ws";
 * const messages: string[] = [];
 * const ws = new WebSocketProtocol({ role: "client", maxMessageSize: 1 << 20 }, {
 *   text: (s) => messages.push(s),
 *   binary: () => {},
 * });
 * ws.receive(new Uint8Array([0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])); // "Hello"
 * ws.close(1000);
 * const bytesToSend = ws.takeOutput();
 * ```
 */
export class WebSocketProtocol {
  /** What the assembler reports, routed into the connection (an object, not five closures). */
  static #Events = class implements MessageHandler {
    readonly #protocol: WebSocketProtocol;

    constructor(protocol: WebSocketProtocol) {
      this.#protocol = protocol;
    }

    text(data: string): void {
      this.#protocol.#handler.text(data);
    }

    binary(data: Uint8Array): void {
      this.#protocol.#handler.binary(data);
    }

    ping(payload: Uint8Array): void {
      this.#protocol.#onPing(payload);
    }

    pong(payload: Uint8Array): void {
      this.#protocol.#handler.pong?.(payload);
    }

    close(code: number, reason: string): void {
      this.#protocol.#onClose(code, reason);
    }
  };

  #role: "server" | "client";
  #handler: ProtocolHandler;
  #parser: FrameParser;
  #assembler: MessageAssembler;
  #codec: MessageCodec | null;
  #allocate: (size: number) => Uint8Array;
  #copyLimit: number;
  #state: ReadyState = ReadyState.OPEN;
  /** Output chunks in order (made when the first is queued: idle connections hold none). */
  #out: Uint8Array[] | null = null;
  /**
   * Small frames are written back to back into this buffer, so a burst of
   * sends becomes one chunk with no per-frame buffer and no copy to join
   * them. Bytes handed out by takeOutput() are never written again: new
   * frames only go after them, and a full arena is replaced, not reused.
   */
  #arena: Uint8Array | null = null;
  #arenaStart = 0;
  #arenaEnd = 0;
  #outBytes = 0;
  #closeSent = false;
  #closeReceived: { code: number; reason: string } | null = null;
  #error: WebSocketError | null = null;

  /** Creates the protocol state for an open connection. */
  constructor(options: ProtocolOptions, handler: ProtocolHandler) {
    this.#role = options.role;
    this.#handler = handler;
    this.#codec = options.codec ?? null;
    this.#allocate = options.allocate ?? zeroed;
    this.#copyLimit = options.copyLimit ?? COPY_LIMIT;
    this.#assembler = new MessageAssembler(new WebSocketProtocol.#Events(this), {
      maxMessageSize: options.maxMessageSize,
      maxFragments: options.maxFragments,
      inflate: this.#codec?.decompress,
      allocate: options.allocate,
      frameRoom: options.role === "server",
      slab: options.slabSmallMessages,
    });
    this.#parser = new FrameParser(this.#assembler, {
      role: options.role,
      maxFrameSize: options.maxFrameSize ?? options.maxMessageSize,
      allowRsv1: this.#codec !== null,
    });
  }

  /** The WHATWG ready state. */
  get state(): ReadyState {
    return this.#state;
  }

  /** The error the connection failed with, if it did. */
  get error(): WebSocketError | null {
    return this.#error;
  }

  /** Whether the closing handshake completed with close frames both ways. */
  get wasClean(): boolean {
    return this.#state === ReadyState.CLOSED && this.#error === null && this.#closeSent &&
      this.#closeReceived !== null;
  }

  /** The peer's close code (1005 if its close frame had none, 1006 if none came). */
  get closeCode(): number {
    if (this.#closeReceived === null || this.#error !== null) return CloseCode.Abnormal;
    return this.#closeReceived.code;
  }

  /** The peer's close reason. */
  get closeReason(): string {
    return this.#error === null ? this.#closeReceived?.reason ?? "" : "";
  }

  /** Whether our close frame is queued or sent. */
  get closeSent(): boolean {
    return this.#closeSent;
  }

  /** Bytes queued for sending and not yet taken. */
  get outputBytes(): number {
    return this.#outBytes;
  }

  /**
   * Whether binary messages may be delivered as views into a larger buffer
   * instead of exactly sized buffers: large ones into a buffer nothing else
   * uses, small ones (with `slabSmallMessages`) into one shared with this
   * connection's neighbouring messages. Views save a copy or an allocation;
   * set it while the receiver hands messages on as `Uint8Array`s, clear it
   * while it needs each as a whole `ArrayBuffer`. A server that sends a large
   * view on (an echo, a relay) writes header and payload as one buffer with
   * no copy. @default {false}
   */
  set deliverViews(value: boolean) {
    this.#assembler.deliverViews = value;
  }

  /**
   * Lets go of buffers kept for reuse (the small-message buffer, the output
   * arena once all of it was taken); call it when the connection has gone
   * quiet. Frames already taken keep their bytes.
   */
  releaseIdleMemory(): void {
    this.#assembler.releaseSlab();
    if (this.#arenaEnd === this.#arenaStart) {
      this.#arena = null;
      this.#arenaStart = this.#arenaEnd = 0;
    }
  }

  /**
   * Feeds received bytes. Messages and control events are reported to the
   * handler before this returns; a protocol violation fails the connection
   * (close frame queued, state CLOSED, {@linkcode error} set) instead of
   * throwing. Exceptions thrown by the handler itself propagate.
   *
   * `owned`: the caller gives `chunk` away (a runtime that allocates a fresh
   * buffer per read); payloads may then be unmasked in place and delivered as
   * views of it. Otherwise `chunk` is only read during the call.
   */
  receive(chunk: Uint8Array, owned = false): void {
    if (this.#state === ReadyState.CLOSED) return;
    this.#assembler.ownedInput = owned;
    try {
      this.#parser.push(chunk);
    } catch (err) {
      if (err instanceof WebSocketError) this.fail(err);
      else throw err;
    }
  }

  /**
   * Where the next received bytes may be read directly, with no copy: a view
   * of the rest of a large payload in progress (at least `min` bytes) inside
   * the buffer that will hold the message, or `null`. Bytes read into it are
   * reported with {@linkcode receivedInPlace} instead of `receive()`.
   */
  receiveTarget(min: number): Uint8Array | null {
    if (this.#state === ReadyState.CLOSED) return null;
    return this.#parser.payloadTarget(min);
  }

  /**
   * `n` bytes were read into the view {@linkcode receiveTarget} returned
   * (and nothing was received since). Same outcomes as `receive()`.
   */
  receivedInPlace(n: number): void {
    if (this.#state === ReadyState.CLOSED) return;
    try {
      this.#parser.payloadWritten(n);
    } catch (err) {
      if (err instanceof WebSocketError) this.fail(err);
      else throw err;
    }
  }

  /**
   * The transport reached end of stream. Without a close frame first, the
   * connection closed abnormally (1006).
   */
  receiveEnd(): void {
    this.#state = ReadyState.CLOSED;
    this.#parser.stop();
  }

  /** Queues a text message. Returns false (and sends nothing) unless OPEN. */
  sendText(data: string): boolean {
    if (this.#state !== ReadyState.OPEN) return false;
    if (data.length <= TEXT_COPY_THRESHOLD && this.#codec === null) {
      // Encode once into scratch, then copy next to the header.
      const { written } = encoder.encodeInto(data, textScratch);
      this.#queueFrame(Opcode.Text, textScratch.subarray(0, written), false, true);
      return true;
    }
    return this.#sendData(Opcode.Text, encoder.encode(data), true);
  }

  /** Queues a binary message. Returns false (and sends nothing) unless OPEN. */
  sendBinary(data: Uint8Array): boolean {
    if (this.#state !== ReadyState.OPEN) return false;
    return this.#sendData(Opcode.Binary, data, data.length <= this.#copyLimit);
  }

  /**
   * Queues one complete frame encoded elsewhere (a pub/sub fan-out encodes a
   * message once for every subscriber). The bytes must be a valid frame for
   * this side: unmasked from a server, RSV1 only with the negotiated codec.
   * Returns false (and queues nothing) unless OPEN.
   */
  sendRaw(frame: Uint8Array): boolean {
    if (this.#state !== ReadyState.OPEN) return false;
    this.#sealArena();
    this.#queue(frame);
    this.#outBytes += frame.length;
    return true;
  }

  /** Queues a ping (payload at most 125 bytes). Returns false unless OPEN. */
  ping(payload: Uint8Array = NO_BYTES): boolean {
    if (payload.length > 125) throw new RangeError("Ping payload is over 125 bytes");
    if (this.#state !== ReadyState.OPEN) return false;
    this.#queueFrame(Opcode.Ping, payload, false, true);
    return true;
  }

  /** Queues an unsolicited pong (a heartbeat, §5.5.3). Returns false unless OPEN. */
  pong(payload: Uint8Array = NO_BYTES): boolean {
    if (payload.length > 125) throw new RangeError("Pong payload is over 125 bytes");
    if (this.#state !== ReadyState.OPEN) return false;
    this.#queueFrame(Opcode.Pong, payload, false, true);
    return true;
  }

  /**
   * Starts the closing handshake (§7.1.2): queues a close frame and moves to
   * CLOSING. Data queued before stays ahead of it. No-op unless OPEN.
   * Throws `RangeError` for a code that cannot be sent or a reason over 123 bytes.
   */
  close(code?: number, reason = ""): void {
    const payload = encodeClosePayload(code, reason);
    if (this.#state !== ReadyState.OPEN) return;
    this.#queueFrame(Opcode.Close, payload, false, true);
    this.#closeSent = true;
    this.#state = ReadyState.CLOSING;
  }

  /**
   * Fails the connection (§7.1.7): queues a close frame with the error's
   * code unless one was sent, stops parsing, and moves to CLOSED. The I/O
   * layer flushes and drops the transport.
   */
  fail(error: WebSocketError): void {
    if (this.#state === ReadyState.CLOSED) return;
    this.#error = error;
    this.#parser.stop();
    // Codes such as 1006 describe the failure locally and never go on the wire.
    if (!this.#closeSent && isValidWireCloseCode(error.closeCode)) {
      let reason = error.message;
      while (encoder.encode(reason).length > 123) reason = reason.slice(0, -1);
      this.#queueFrame(Opcode.Close, encodeClosePayload(error.closeCode, reason), false, true);
      this.#closeSent = true;
    }
    this.#state = ReadyState.CLOSED;
  }

  /** Takes every queued output chunk, in order. */
  takeOutput(): Uint8Array[] {
    this.#sealArena();
    const out = this.#out ?? [];
    this.#out = null;
    this.#outBytes = 0;
    return out;
  }

  #onPing(payload: Uint8Array): void {
    // §5.5.2: answer with a pong carrying the same payload "unless it already
    // received a Close frame" (the parser stops after one). A pong is a control
    // frame, so it may follow our own close (§5.5.1 forbids only data frames).
    this.#queueFrame(Opcode.Pong, payload, false, true);
    this.#handler.ping?.(payload);
  }

  #onClose(code: number, reason: string): void {
    this.#closeReceived = { code, reason };
    this.#parser.stop();
    if (!this.#closeSent) {
      // §5.5.1: reply with a close frame, echoing the code.
      this.#queueFrame(Opcode.Close, encodeClosePayload(code), false, true);
      this.#closeSent = true;
    }
    this.#state = ReadyState.CLOSED;
  }

  #sendData(opcode: number, data: Uint8Array, copy: boolean): boolean {
    const codec = this.#codec;
    if (codec !== null && data.length >= codec.threshold) {
      const compressed = codec.compress(data);
      this.#queueFrame(opcode, compressed, true, compressed.length <= this.#copyLimit);
      return true;
    }
    this.#queueFrame(opcode, data, false, copy);
    return true;
  }

  /**
   * Queues one frame. Clients always build header and masked payload in one
   * new buffer (the caller's bytes are never changed); servers copy small
   * payloads next to the header and queue large ones as they are.
   */
  #queueFrame(opcode: number, payload: Uint8Array, rsv1: boolean, copy: boolean): void {
    const length = payload.length;
    const mask = this.#role === "client" ? nextMaskKey() : null;
    const headerSize = frameHeaderSize(length, mask !== null);
    const size = headerSize + length;
    this.#outBytes += size;
    if (
      mask === null && length > Math.min(this.#copyLimit, COPY_LIMIT) &&
      roomBefore(payload) >= headerSize
    ) {
      // A payload delivered with room for a header in front (an echo, a
      // relay): header and payload leave as one buffer, with no copy. Only
      // past the size that send() promises to copy (an application may
      // reuse a smaller message's buffer as soon as send() returns).
      this.#sealArena();
      const frame = new Uint8Array(payload.buffer, payload.byteOffset - headerSize, size);
      writeFrameHeader(frame, 0, opcode, length, true, rsv1, null);
      this.#queue(frame);
      return;
    }
    if (mask === null && !copy) {
      // Large server payloads go out from where they are; the header goes
      // into the arena, ahead of them.
      const at = this.#reserve(headerSize);
      writeFrameHeader(this.#arena!, at, opcode, length, true, rsv1, null);
      this.#sealArena();
      this.#queue(payload);
      return;
    }
    if (length === 0 && mask === null && this.#arena === null && isControlOpcode(opcode)) {
      // An empty ping, pong or close (the only control frames sent) from a
      // server is always the same two bytes: a keepalive ping allocates
      // nothing (output is never written to).
      this.#queue(EMPTY_CONTROL_FRAMES[opcode - Opcode.Close]);
      return;
    }
    let frame: Uint8Array;
    let at: number;
    if (size <= ARENA_SIZE / 2 && (this.#arena !== null || !isControlOpcode(opcode))) {
      at = this.#reserve(size);
      frame = this.#arena!;
    } else {
      // Large frames get their own buffer; so do control frames when no
      // arena is in use: a keepalive ping on an idle connection must not
      // make it hold a 16 KiB arena until the next period.
      this.#sealArena();
      frame = this.#allocate(size);
      at = 0;
      this.#queue(frame);
    }
    writeFrameHeader(frame, at, opcode, length, true, rsv1, mask);
    if (length > 0) {
      unmaskInto(payload, frame, at + headerSize, mask);
    }
  }

  /** Adds a chunk to the output (a list made for one, so one keepalive ping holds no 17-slot array). */
  #queue(chunk: Uint8Array): void {
    if (this.#out === null) this.#out = [chunk];
    else this.#out.push(chunk);
  }

  /** Room for `size` bytes at the end of the arena (a new arena if it is full). */
  #reserve(size: number): number {
    if (this.#arena === null || this.#arena.length - this.#arenaEnd < size) {
      this.#sealArena();
      // Only bytes written are ever taken, so the arena need not be zeroed.
      this.#arena = this.#allocate(Math.max(ARENA_SIZE, size));
      this.#arenaStart = this.#arenaEnd = 0;
    }
    const at = this.#arenaEnd;
    this.#arenaEnd += size;
    return at;
  }

  /** Moves the arena's newest frames onto the output queue, as one chunk. */
  #sealArena(): void {
    if (this.#arenaEnd > this.#arenaStart) {
      this.#queue(this.#arena!.subarray(this.#arenaStart, this.#arenaEnd));
      this.#arenaStart = this.#arenaEnd;
    }
  }
}
