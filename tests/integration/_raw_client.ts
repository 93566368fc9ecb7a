/**
 * A raw TCP WebSocket client for the server's integration tests: it sends
 * whatever bytes a test asks for (broken handshakes, frames with any bits set,
 * lying lengths) and reads back exactly what the server put on the wire.
 *
 * It sits on `node:net`, which Deno and Bun both provide, rather than on
 * Sluice's own runtime adapters, so that a bug in the adapters cannot hide a
 * bug in the server. Frames are built and parsed here byte by byte, written
 * independently of `src/protocol/`, for the same reason.
 *
 * Every wait takes a timeout, so a test fails instead of hanging.
 *
 * @module
 */

import net from "node:net";
import { Buffer } from "node:buffer";
import { createHash, randomBytes } from "node:crypto";
import { concat, pattern, utf8 } from "../_bytes.ts";
import { delay as sleep, watchUnhandledRejections, within } from "../_watch.ts";

/** The GUID of RFC 6455 §1.3. */
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const decoder = new TextDecoder();

/** Opcodes, spelled out here rather than imported from the code under test. */
export const Op = {
  Continuation: 0x0,
  Text: 0x1,
  Binary: 0x2,
  Close: 0x8,
  Ping: 0x9,
  Pong: 0xa,
} as const;

/** The `Sec-WebSocket-Accept` a correct server answers `key` with (§4.2.2), via node:crypto. */
export function expectedAccept(key: string): string {
  return createHash("sha1").update(key + GUID).digest("base64");
}

/** A fresh `Sec-WebSocket-Key`: base64 of 16 random bytes. */
export function newKey(): string {
  return randomBytes(16).toString("base64");
}

// Byte helpers (tests/_bytes.ts), the waits and the rejection watcher
// (tests/_watch.ts) are shared; the server tests take them from here.
export { concat, pattern, sleep, utf8, watchUnhandledRejections, within };

/** Options for {@linkcode buildFrame}. */
export interface FrameSpec {
  /** The 4-bit opcode (any value, reserved ones included). */
  opcode: number;
  /** The payload, sent masked unless `mask` is false. @default empty */
  payload?: Uint8Array | string;
  /** FIN bit. @default {true} */
  fin?: boolean;
  /** RSV1, RSV2, RSV3 bits. @default false */
  rsv1?: boolean;
  rsv2?: boolean;
  rsv3?: boolean;
  /**
   * `true` masks with a random key, a 4-byte array masks with that key,
   * `false` sends the frame unmasked (a violation from a client). @default {true}
   */
  mask?: boolean | Uint8Array;
  /**
   * The payload length to announce, when it should differ from the payload
   * actually appended (a header alone, or a lie). May exceed 2^53 as a bigint.
   */
  announce?: number | bigint;
  /** Force a length encoding: 7-bit, 16-bit or 64-bit. @default the minimal one */
  lengthBits?: 7 | 16 | 64;
}

/**
 * Builds one frame with exactly the given bits (RFC 6455 §5.2). The payload
 * is copied, never changed.
 */
export function buildFrame(spec: FrameSpec): Uint8Array {
  const payload = typeof spec.payload === "string" ? utf8(spec.payload) : spec.payload ??
    new Uint8Array(0);
  const announce = BigInt(spec.announce ?? payload.length);
  const bits = spec.lengthBits ?? (announce < 126n ? 7 : announce < 0x10000n ? 16 : 64);
  const maskKey = spec.mask === false
    ? null
    : spec.mask instanceof Uint8Array
    ? spec.mask
    : new Uint8Array(randomBytes(4));
  const head: number[] = [];
  head.push(
    ((spec.fin ?? true) ? 0x80 : 0) | (spec.rsv1 ? 0x40 : 0) | (spec.rsv2 ? 0x20 : 0) |
      (spec.rsv3 ? 0x10 : 0) | (spec.opcode & 0x0f),
  );
  const maskBit = maskKey === null ? 0 : 0x80;
  if (bits === 7) {
    head.push(maskBit | Number(announce));
  } else if (bits === 16) {
    head.push(maskBit | 126, Number(announce >> 8n) & 0xff, Number(announce) & 0xff);
  } else {
    head.push(maskBit | 127);
    for (let shift = 56n; shift >= 0n; shift -= 8n) head.push(Number((announce >> shift) & 0xffn));
  }
  if (maskKey !== null) head.push(...maskKey);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head);
  for (let i = 0; i < payload.length; i++) {
    out[head.length + i] = maskKey === null ? payload[i] : payload[i] ^ maskKey[i & 3];
  }
  return out;
}

/** A masked close frame carrying `code` (if given) and `reason`. */
export function closeFrame(code?: number, reason: string | Uint8Array = ""): Uint8Array {
  if (code === undefined) return buildFrame({ opcode: Op.Close });
  const why = typeof reason === "string" ? utf8(reason) : reason;
  const payload = new Uint8Array(2 + why.length);
  payload[0] = code >> 8;
  payload[1] = code & 0xff;
  payload.set(why, 2);
  return buildFrame({ opcode: Op.Close, payload });
}

/** A frame as the server sent it. */
export interface ServerFrame {
  fin: boolean;
  rsv1: boolean;
  rsv2: boolean;
  rsv3: boolean;
  opcode: number;
  masked: boolean;
  payload: Uint8Array;
}

/** The code and reason of a close frame's payload (1005 when empty). */
export function parseClose(frame: ServerFrame): { code: number; reason: string } {
  const p = frame.payload;
  if (p.length < 2) return { code: 1005, reason: "" };
  return { code: (p[0] << 8) | p[1], reason: decoder.decode(p.subarray(2)) };
}

/** A parsed HTTP response (head and, when it declares a length, body). */
export interface HttpResponse {
  status: number;
  statusText: string;
  headers: Headers;
  body: string;
  /** The head as received, for error messages. */
  head: string;
}

/** Options for {@linkcode upgradeRequest}. */
export interface UpgradeRequestOptions {
  /** The request line's method. @default {"GET"} */
  method?: string;
  /** The request target. @default {"/"} */
  path?: string;
  /** The request line's version. @default {"HTTP/1.1"} */
  version?: string;
  /** The key. @default a fresh one */
  key?: string;
  /**
   * Header overrides: a string replaces the default value, `null` removes
   * the header; names not among the defaults are appended.
   */
  headers?: Record<string, string | null>;
}

/** A valid upgrade request (§4.1), altered as asked. */
export function upgradeRequest(host: string, options: UpgradeRequestOptions = {}): string {
  const fields: Record<string, string | null> = {
    Host: host,
    Upgrade: "websocket",
    Connection: "Upgrade",
    "Sec-WebSocket-Key": options.key ?? newKey(),
    "Sec-WebSocket-Version": "13",
    ...options.headers,
  };
  let head = `${options.method ?? "GET"} ${options.path ?? "/"} ${
    options.version ?? "HTTP/1.1"
  }\r\n`;
  for (const [name, value] of Object.entries(fields)) {
    if (value !== null) head += `${name}: ${value}\r\n`;
  }
  return head + "\r\n";
}

/** A connection to a server, over `node:net`. */
export class RawClient {
  /** The underlying socket, for tests that watch its write buffer. */
  readonly socket: net.Socket;
  #buffer: Buffer = Buffer.alloc(0);
  #ended = false;
  #closed = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  #closedPromise: Promise<void>;
  /** When the peer's EOF (or a reset) was seen, in `performance.now()` time. */
  endedAt: number | null = null;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => {
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#notify();
    });
    socket.on("end", () => {
      this.#markEnded();
    });
    socket.on("error", (error: Error) => {
      this.#error ??= error;
      this.#markEnded();
    });
    this.#closedPromise = new Promise((resolve) => {
      socket.on("close", () => {
        this.#closed = true;
        this.#markEnded();
        resolve();
      });
    });
  }

  /** Connects to `port` on `host`. */
  static connect(port: number, host = "127.0.0.1"): Promise<RawClient> {
    return within(
      new Promise((resolve, reject) => {
        const socket = net.connect({ port, host });
        socket.setNoDelay(true);
        const onError = (error: Error) => reject(error);
        socket.once("error", onError);
        socket.once("connect", () => {
          socket.off("error", onError);
          resolve(new RawClient(socket));
        });
      }),
      5000,
      `connecting to ${host}:${port}`,
    );
  }

  /**
   * Connects and completes a valid opening handshake, asserting a 101.
   * Bytes after the response stay buffered for {@linkcode readFrame}.
   */
  static async open(
    port: number,
    options: UpgradeRequestOptions & { host?: string } = {},
  ): Promise<RawClient> {
    const client = await RawClient.connect(port, options.host);
    client.write(upgradeRequest(`127.0.0.1:${port}`, options));
    const response = await client.readResponse();
    if (response.status !== 101) {
      client.destroy();
      throw new Error(`Expected 101, got ${response.status}: ${response.head}${response.body}`);
    }
    return client;
  }

  #markEnded(): void {
    if (!this.#ended) {
      this.#ended = true;
      this.endedAt = performance.now();
    }
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** Waits until `ready()` holds or the stream ended, for at most `ms`. */
  async #waitFor(ready: () => boolean, ms: number, what: string): Promise<void> {
    const deadline = performance.now() + ms;
    while (!ready() && !this.#ended) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`Timed out after ${ms} ms: ${what}`);
      await within(new Promise<void>((resolve) => (this.#wake = resolve)), left, what);
    }
  }

  /** Whether the peer ended the stream (EOF, reset or error). */
  get ended(): boolean {
    return this.#ended;
  }

  /** The socket error seen, if any (e.g. ECONNRESET). */
  get error(): Error | null {
    return this.#error;
  }

  /** Bytes received and not yet consumed. */
  get buffered(): number {
    return this.#buffer.length;
  }

  /** Writes bytes (or a string as latin1-safe UTF-8); returns `socket.write()`'s verdict. */
  write(data: Uint8Array | string): boolean {
    if (this.socket.destroyed) return false;
    return this.socket.write(typeof data === "string" ? utf8(data) : data);
  }

  /** Writes and waits until the bytes were handed to the kernel. */
  writeAndFlush(data: Uint8Array | string, ms = 5000): Promise<void> {
    return within(
      new Promise<void>((resolve, reject) => {
        this.socket.write(typeof data === "string" ? utf8(data) : data, (error) => {
          if (error) reject(error);
          else resolve();
        });
      }),
      ms,
      "flushing a write",
    );
  }

  /** Reads exactly `n` bytes, or fails if the stream ends first. */
  async readBytes(n: number, ms = 5000): Promise<Uint8Array> {
    await this.#waitFor(() => this.#buffer.length >= n, ms, `reading ${n} bytes`);
    if (this.#buffer.length < n) {
      throw new Error(`Stream ended after ${this.#buffer.length} of ${n} bytes`);
    }
    const out = new Uint8Array(this.#buffer.subarray(0, n));
    this.#buffer = this.#buffer.subarray(n);
    return out;
  }

  /** Reads an HTTP response head and its `Content-Length` body. */
  async readResponse(ms = 5000): Promise<HttpResponse> {
    await this.#waitFor(() => this.#buffer.indexOf("\r\n\r\n") !== -1, ms, "reading a response");
    const end = this.#buffer.indexOf("\r\n\r\n");
    if (end === -1) {
      throw new Error(
        `Stream ended before a full response head; got ${
          JSON.stringify(this.#buffer.toString("latin1"))
        }`,
      );
    }
    const head = this.#buffer.subarray(0, end + 4).toString("latin1");
    this.#buffer = this.#buffer.subarray(end + 4);
    const lines = head.split("\r\n").slice(0, -2);
    const match = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(lines[0]);
    if (match === null) throw new Error(`Malformed status line: ${JSON.stringify(lines[0])}`);
    const headers = new Headers();
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      headers.append(line.slice(0, colon), line.slice(colon + 1).trim());
    }
    let body = "";
    const length = headers.get("content-length");
    if (length !== null) body = decoder.decode(await this.readBytes(Number(length), ms));
    return { status: Number(match[1]), statusText: match[2], headers, body, head };
  }

  /** Reads the next frame, or `null` if the stream ends cleanly between frames. */
  async readFrame(ms = 5000): Promise<ServerFrame | null> {
    const headerSize = (): number => {
      const b = this.#buffer;
      if (b.length < 2) return Infinity;
      const len7 = b[1] & 0x7f;
      return (len7 < 126 ? 2 : len7 === 126 ? 4 : 10) + ((b[1] & 0x80) !== 0 ? 4 : 0);
    };
    const frameSize = (): number => {
      const size = headerSize();
      const b = this.#buffer;
      if (b.length < size) return Infinity;
      const len7 = b[1] & 0x7f;
      const length = len7 < 126
        ? len7
        : len7 === 126
        ? b.readUInt16BE(2)
        : Number(b.readBigUInt64BE(2));
      return size + length;
    };
    await this.#waitFor(() => this.#buffer.length >= frameSize(), ms, "reading a frame");
    if (this.#buffer.length === 0) return null;
    const total = frameSize();
    if (this.#buffer.length < total) {
      throw new Error(
        `Stream ended inside a frame: ${this.#buffer.length} bytes of ${total} received`,
      );
    }
    const b = this.#buffer;
    const size = headerSize();
    const masked = (b[1] & 0x80) !== 0;
    const payload = new Uint8Array(b.subarray(size, total));
    if (masked) {
      const key = b.subarray(size - 4, size);
      for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
    }
    const frame: ServerFrame = {
      fin: (b[0] & 0x80) !== 0,
      rsv1: (b[0] & 0x40) !== 0,
      rsv2: (b[0] & 0x20) !== 0,
      rsv3: (b[0] & 0x10) !== 0,
      opcode: b[0] & 0x0f,
      masked,
      payload,
    };
    this.#buffer = b.subarray(total);
    return frame;
  }

  /** Reads the next frame and fails if there is none. */
  async expectFrame(ms = 5000): Promise<ServerFrame> {
    const frame = await this.readFrame(ms);
    if (frame === null) throw new Error("Expected a frame, but the stream ended");
    return frame;
  }

  /**
   * Reads frames up to and including a close frame; returns its code and
   * reason, and the frames before it.
   */
  async expectClose(ms = 5000): Promise<{ code: number; reason: string; before: ServerFrame[] }> {
    const before: ServerFrame[] = [];
    const deadline = performance.now() + ms;
    for (;;) {
      const frame = await this.readFrame(Math.max(1, deadline - performance.now()));
      if (frame === null) {
        throw new Error(`Stream ended without a close frame after ${before.length} frames`);
      }
      if (frame.opcode === Op.Close) return { ...parseClose(frame), before };
      before.push(frame);
    }
  }

  /**
   * Waits for the peer to end the stream (EOF or reset) and returns whether
   * it did within `ms`. Data received before stays readable.
   */
  async waitForEnd(ms = 5000): Promise<boolean> {
    try {
      await this.#waitFor(() => false, ms, "waiting for the end of the stream");
      return true;
    } catch {
      return this.#ended;
    }
  }

  /** Resolves once the socket is fully closed. */
  get closed(): Promise<void> {
    return this.#closedPromise;
  }

  /** Ends our side gracefully (FIN) after pending writes. */
  end(): void {
    this.socket.end();
  }

  /** Closes the socket at once. Idempotent. */
  destroy(): void {
    if (!this.#closed) this.socket.destroy();
  }
}
