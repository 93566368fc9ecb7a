/**
 * Helpers shared by the protocol tests: building frames byte by byte from
 * their parts, a naive reference decoder for what the core sends, recorders
 * for every handler interface, and ways to feed input split at every offset.
 *
 * The builders and the decoder here are written independently of
 * `src/protocol/` on purpose: a test that encoded with the code under test and
 * decoded with it too could not catch a bug both share.
 *
 * @module
 */

import { concat, pattern, utf8 } from "../_bytes.ts";
import type { FrameHandler, FrameHeader } from "../../src/protocol/frame.ts";
import type { MessageHandler } from "../../src/protocol/message.ts";
import {
  type ProtocolHandler,
  type ProtocolOptions,
  WebSocketProtocol,
} from "../../src/protocol/connection.ts";

// The byte helpers shared with the integration tests, for the protocol tests.
export { concat, pattern, utf8 };

/** Bytes from numbers, e.g. `bytes(0x81, 0x05)`. */
export function bytes(...values: number[]): Uint8Array {
  return new Uint8Array(values);
}

/** Lowercase hex with a space between bytes, for readable assertion failures. */
export function hex(data: Uint8Array): string {
  return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join(" ");
}

/** The §5.3 transformation done the obvious way, into a new array. */
export function naiveMask(data: Uint8Array, mask: Uint8Array, offset = 0): Uint8Array {
  const out = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = data[i] ^ mask[(offset + i) % 4];
  return out;
}

/** The masking key the tests use when they need a fixed one (§5.7's example key). */
export const KEY = bytes(0x37, 0xfa, 0x21, 0x3d);

/** How to build one frame. Every field can be set to something RFC 6455 forbids. */
export interface FrameParts {
  /** @default {true} */
  fin?: boolean;
  /** @default {false} */
  rsv1?: boolean;
  /** @default {false} */
  rsv2?: boolean;
  /** @default {false} */
  rsv3?: boolean;
  /** The 4-bit opcode. */
  opcode: number;
  /** The unmasked payload. @default {empty} */
  payload?: Uint8Array;
  /** Masking key, or `null` for an unmasked frame. @default {null} */
  mask?: Uint8Array | null;
  /** Force the length encoding: 7, 16 or 64 bits (allows non-minimal encodings). */
  lengthBits?: 7 | 16 | 64;
  /** Write this length instead of the payload's (a lie, or a huge value with no payload). */
  length?: number | bigint;
}

/** Builds a frame from its parts, byte by byte (§5.2). */
export function frame(parts: FrameParts): Uint8Array {
  const payload = parts.payload ?? new Uint8Array(0);
  const length = BigInt(parts.length ?? payload.length);
  const bits = parts.lengthBits ?? (length < 126n ? 7 : length < 0x10000n ? 16 : 64);
  const head: number[] = [
    (parts.fin ?? true ? 0x80 : 0) | (parts.rsv1 ? 0x40 : 0) | (parts.rsv2 ? 0x20 : 0) |
    (parts.rsv3 ? 0x10 : 0) | parts.opcode,
  ];
  const maskBit = parts.mask ? 0x80 : 0;
  if (bits === 7) {
    head.push(maskBit | Number(length));
  } else if (bits === 16) {
    head.push(maskBit | 126, Number(length >> 8n) & 0xff, Number(length) & 0xff);
  } else {
    head.push(maskBit | 127);
    for (let shift = 56n; shift >= 0n; shift -= 8n) head.push(Number((length >> shift) & 0xffn));
  }
  if (parts.mask) head.push(...parts.mask);
  const body = parts.mask ? naiveMask(payload, parts.mask) : payload;
  return concat(new Uint8Array(head), body);
}

/** A frame as a client sends it: masked (with {@linkcode KEY} unless given). */
export function clientFrame(parts: FrameParts): Uint8Array {
  return frame({ mask: KEY, ...parts });
}

/** A frame as a server sends it: unmasked. */
export function serverFrame(parts: FrameParts): Uint8Array {
  return frame({ ...parts, mask: null });
}

/** A frame decoded by {@linkcode decodeFrames}. */
export interface DecodedFrame {
  fin: boolean;
  rsv1: boolean;
  rsv2: boolean;
  rsv3: boolean;
  opcode: number;
  /** The masking key, or `null` if the frame was unmasked. */
  mask: Uint8Array | null;
  /** The payload, unmasked. */
  payload: Uint8Array;
}

/**
 * Decodes a complete byte sequence into frames, naively, checking only that
 * it is well formed (minimal lengths, nothing left over). Used to read what
 * the core sends.
 */
export function decodeFrames(data: Uint8Array | Uint8Array[]): DecodedFrame[] {
  const buf = Array.isArray(data) ? concat(...data) : data;
  const frames: DecodedFrame[] = [];
  let i = 0;
  while (i < buf.length) {
    if (buf.length - i < 2) throw new Error(`Truncated header at byte ${i}`);
    const b0 = buf[i], b1 = buf[i + 1];
    i += 2;
    let length = b1 & 0x7f;
    if (length === 126) {
      length = buf[i] * 256 + buf[i + 1];
      i += 2;
      if (length < 126) throw new Error("Non-minimal 16-bit length");
    } else if (length === 127) {
      length = 0;
      for (let k = 0; k < 8; k++) length = length * 256 + buf[i + k];
      i += 8;
      if (length < 0x10000) throw new Error("Non-minimal 64-bit length");
    }
    let mask: Uint8Array | null = null;
    if (b1 & 0x80) {
      mask = buf.slice(i, i + 4);
      i += 4;
    }
    if (i + length > buf.length) throw new Error(`Truncated payload at byte ${i}`);
    const raw = buf.slice(i, i + length);
    i += length;
    frames.push({
      fin: (b0 & 0x80) !== 0,
      rsv1: (b0 & 0x40) !== 0,
      rsv2: (b0 & 0x20) !== 0,
      rsv3: (b0 & 0x10) !== 0,
      opcode: b0 & 0x0f,
      mask,
      payload: mask ? naiveMask(raw, mask) : raw,
    });
  }
  return frames;
}

/** The close frame payload for `code` and `reason`, built by hand. */
export function closePayload(code: number, reason = ""): Uint8Array {
  return concat(bytes(code >> 8, code & 0xff), utf8(reason));
}

/** Reads the code of a decoded close frame's payload (1005 when empty). */
export function closeCodeOf(payload: Uint8Array): number {
  return payload.length === 0 ? 1005 : (payload[0] << 8) | payload[1];
}

/**
 * Every way to cut `data` in two, then byte by byte: the chunk lists a
 * streaming parser must treat exactly like the whole.
 */
export function* splits(data: Uint8Array): Generator<{ name: string; chunks: Uint8Array[] }> {
  for (let at = 0; at <= data.length; at++) {
    yield { name: `split at ${at}`, chunks: [data.slice(0, at), data.slice(at)] };
  }
  yield { name: "byte by byte", chunks: Array.from(data, (b) => bytes(b)) };
}

/** One event recorded by {@linkcode FrameRecorder}. */
export type FrameEvent =
  | {
    type: "start";
    fin: boolean;
    rsv1: boolean;
    opcode: number;
    mask: number[] | null;
    length: number;
  }
  | { type: "payload"; data: number[]; offset: number }
  | { type: "end" };

/** A {@linkcode FrameHandler} that records copies of what it is told. */
export class FrameRecorder implements FrameHandler {
  events: FrameEvent[] = [];

  frameStart(header: FrameHeader): void {
    this.events.push({
      type: "start",
      fin: header.fin,
      rsv1: header.rsv1,
      opcode: header.opcode,
      mask: header.mask === null ? null : Array.from(header.mask),
      length: header.length,
    });
  }

  framePayload(chunk: Uint8Array, start: number, end: number, offset: number): void {
    this.events.push({ type: "payload", data: Array.from(chunk.subarray(start, end)), offset });
  }

  frameEnd(): void {
    this.events.push({ type: "end" });
  }

  /**
   * Events with consecutive payload pieces merged, so that a frame fed in
   * pieces compares equal to the same frame fed whole.
   */
  merged(): FrameEvent[] {
    const out: FrameEvent[] = [];
    for (const event of this.events) {
      const last = out[out.length - 1];
      if (event.type === "payload" && last?.type === "payload") {
        last.data.push(...event.data);
      } else {
        out.push(event.type === "payload" ? { ...event, data: [...event.data] } : event);
      }
    }
    return out;
  }
}

/** One event recorded by {@linkcode MessageRecorder}. */
export type MessageEvent =
  | { type: "text"; data: string }
  | { type: "binary"; data: Uint8Array }
  | { type: "ping"; data: Uint8Array }
  | { type: "pong"; data: Uint8Array }
  | { type: "close"; code: number; reason: string };

/**
 * Records messages and control events; it implements both
 * {@linkcode MessageHandler} and {@linkcode ProtocolHandler}. Payloads are
 * copied, so a buffer the core reuses cannot change what was recorded.
 */
export class MessageRecorder implements MessageHandler, ProtocolHandler {
  events: MessageEvent[] = [];

  text(data: string): void {
    this.events.push({ type: "text", data });
  }

  binary(data: Uint8Array): void {
    this.events.push({ type: "binary", data: data.slice() });
  }

  ping(payload: Uint8Array): void {
    this.events.push({ type: "ping", data: payload.slice() });
  }

  pong(payload: Uint8Array): void {
    this.events.push({ type: "pong", data: payload.slice() });
  }

  close(code: number, reason: string): void {
    this.events.push({ type: "close", code, reason });
  }
}

/** A connection with a recorder attached. */
export function connection(
  role: "server" | "client",
  options: Partial<ProtocolOptions> = {},
): { ws: WebSocketProtocol; events: MessageEvent[] } {
  const recorder = new MessageRecorder();
  const ws = new WebSocketProtocol({ role, maxMessageSize: 1 << 20, ...options }, recorder);
  return { ws, events: recorder.events };
}

/** Decodes everything a connection has queued to send. */
export function sent(ws: WebSocketProtocol): DecodedFrame[] {
  return decodeFrames(ws.takeOutput());
}

/**
 * The IANA "WebSocket Close Code Number Registry" (RFC 6455 §11.7), written
 * out here independently of the code under test, with whether each code may
 * appear in a close frame on the wire.
 */
export const IANA_CLOSE_CODES: ReadonlyArray<{ code: number; name: string; onWire: boolean }> = [
  { code: 1000, name: "Normal Closure", onWire: true },
  { code: 1001, name: "Going Away", onWire: true },
  { code: 1002, name: "Protocol error", onWire: true },
  { code: 1003, name: "Unsupported Data", onWire: true },
  { code: 1004, name: "Reserved", onWire: false },
  { code: 1005, name: "No Status Rcvd", onWire: false },
  { code: 1006, name: "Abnormal Closure", onWire: false },
  { code: 1007, name: "Invalid frame payload data", onWire: true },
  { code: 1008, name: "Policy Violation", onWire: true },
  { code: 1009, name: "Message Too Big", onWire: true },
  { code: 1010, name: "Mandatory Ext.", onWire: true },
  { code: 1011, name: "Internal Error", onWire: true },
  { code: 1012, name: "Service Restart", onWire: true },
  { code: 1013, name: "Try Again Later", onWire: true },
  { code: 1014, name: "Bad Gateway", onWire: true },
  { code: 1015, name: "TLS handshake", onWire: false },
];

/**
 * Whether the registry allows `code` on the wire: the table above for
 * 1000-1015; 1016-2999 are unassigned (reserved for future RFCs); 3000-3999
 * are registered for libraries and frameworks and 4000-4999 are private use
 * (§7.4.2); 0-999 and 5000 up are not close codes.
 */
export function validOnWire(code: number): boolean {
  const entry = IANA_CLOSE_CODES.find((e) => e.code === code);
  if (entry !== undefined) return entry.onWire;
  return code >= 3000 && code <= 4999;
}
