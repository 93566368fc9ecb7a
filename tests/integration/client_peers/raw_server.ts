/**
 * A raw TCP server (node:net, which works on Deno and Bun) that lets a test
 * play a misbehaving WebSocket server byte by byte: read the client's
 * request head, answer with any bytes, read and unmask the client's frames.
 *
 * @module
 */

import net from "node:net";
import { concat } from "../../_bytes.ts";
import { Waker } from "../../_watch.ts";
import { acceptKey } from "../../../src/protocol/handshake.ts";

/** A frame the client sent, with its payload unmasked. */
export interface ClientFrame {
  fin: boolean;
  /** RSV1-3 as a 3-bit number. */
  rsv: number;
  opcode: number;
  masked: boolean;
  /** The masking key (4 zero bytes if unmasked). */
  mask: Uint8Array;
  /** The payload after unmasking. */
  payload: Uint8Array;
  /** The frame exactly as it came off the wire. */
  raw: Uint8Array;
}

/** The client's request head, parsed just enough. */
export interface RawRequest {
  /** `GET /path?query`'s target. */
  target: string;
  /** Lowercased header names. */
  headers: Headers;
  /** The head as text. */
  text: string;
}

const decoder = new TextDecoder();

/** One accepted connection, driven by the test. */
export class RawPeer {
  readonly socket: net.Socket;
  #buffer: Uint8Array = new Uint8Array(0);
  #ended = false;
  readonly #waker = new Waker();
  /** Resolves once the client's side of the TCP connection is closed (EOF or reset). */
  readonly ended: Promise<void>;

  constructor(socket: net.Socket) {
    this.socket = socket;
    socket.setNoDelay(true);
    let resolveEnded!: () => void;
    this.ended = new Promise((resolve) => (resolveEnded = resolve));
    const end = () => {
      this.#ended = true;
      resolveEnded();
      this.#waker.wake();
    };
    socket.on("data", (chunk: Uint8Array) => {
      this.#buffer = concat(this.#buffer, new Uint8Array(chunk));
      this.#waker.wake();
    });
    socket.on("end", end);
    socket.on("close", end);
    socket.on("error", end);
  }

  /** Waits until `ready` returns non-null, more data, EOF, or the deadline. */
  async #waitFor<T>(ready: () => T | null, ms: number, what: string): Promise<T | null> {
    const deadline = Date.now() + ms;
    for (;;) {
      const value = ready();
      if (value !== null) return value;
      if (this.#ended) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`Raw peer: timed out after ${ms} ms waiting for ${what}`);
      await this.#waker.sleep(left);
    }
  }

  /** Reads the request head (through the blank line). */
  async readRequest(ms = 5_000): Promise<RawRequest> {
    const head = await this.#waitFor(
      () => {
        const text = decoder.decode(this.#buffer);
        const end = text.indexOf("\r\n\r\n");
        if (end < 0) return null;
        this.#buffer = this.#buffer.subarray(
          new TextEncoder().encode(text.slice(0, end + 4)).length,
        );
        return text.slice(0, end);
      },
      ms,
      "the request head",
    );
    if (head === null) throw new Error("Raw peer: the client closed before sending its request");
    const [requestLine, ...lines] = head.split("\r\n");
    const headers = new Headers();
    for (const line of lines) {
      const colon = line.indexOf(":");
      headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    }
    return { target: requestLine.split(" ")[1], headers, text: head };
  }

  /** Reads the next whole client frame, or `null` at EOF. */
  readFrame(ms = 5_000): Promise<ClientFrame | null> {
    return this.#waitFor(
      () => {
        const frame = parseClientFrame(this.#buffer);
        if (frame !== null) this.#buffer = this.#buffer.subarray(frame.raw.length);
        return frame;
      },
      ms,
      "a frame from the client",
    );
  }

  /** Bytes received and not yet consumed. */
  get unread(): Uint8Array {
    return this.#buffer;
  }

  /** Writes bytes (strings as Latin-1/ASCII). */
  write(data: string | Uint8Array): void {
    this.socket.write(typeof data === "string" ? new TextEncoder().encode(data) : data);
  }

  /** Answers the request with a valid 101 plus `extra` header lines. */
  async accept(request: RawRequest, extra = ""): Promise<void> {
    const key = request.headers.get("sec-websocket-key") ?? "";
    this.write(await upgradeResponse(key, extra));
  }

  /** Destroys the socket. */
  destroy(): void {
    this.socket.destroy();
  }
}

/** A valid `101 Switching Protocols` for `key`, with extra header lines (each ending CRLF). */
export async function upgradeResponse(key: string, extra = ""): Promise<string> {
  return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    `Sec-WebSocket-Accept: ${await acceptKey(key)}\r\n${extra}\r\n`;
}

/** Parses one frame at the start of `bytes`, or returns `null` if incomplete. */
export function parseClientFrame(bytes: Uint8Array): ClientFrame | null {
  if (bytes.length < 2) return null;
  const masked = (bytes[1] & 0x80) !== 0;
  let length = bytes[1] & 0x7f;
  let at = 2;
  if (length === 126) {
    if (bytes.length < 4) return null;
    length = (bytes[2] << 8) | bytes[3];
    at = 4;
  } else if (length === 127) {
    if (bytes.length < 10) return null;
    length = Number(new DataView(bytes.buffer, bytes.byteOffset + 2, 8).getBigUint64(0));
    at = 10;
  }
  const mask = new Uint8Array(4);
  if (masked) {
    if (bytes.length < at + 4) return null;
    mask.set(bytes.subarray(at, at + 4));
    at += 4;
  }
  if (bytes.length < at + length) return null;
  const payload = bytes.slice(at, at + length);
  for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
  return {
    fin: (bytes[0] & 0x80) !== 0,
    rsv: (bytes[0] >> 4) & 0x7,
    opcode: bytes[0] & 0x0f,
    masked,
    mask,
    payload,
    raw: bytes.slice(0, at + length),
  };
}

/** Options for {@linkcode serverFrame}. */
export interface ServerFrameOptions {
  fin?: boolean;
  /** RSV1-3 as a 3-bit number. */
  rsv?: number;
  /** Masks the frame with this key (servers must not). */
  mask?: Uint8Array;
  /** Declares this payload length instead of the real one. */
  declaredLength?: number;
}

/** Builds a server frame, including invalid ones, byte by byte. */
export function serverFrame(
  opcode: number,
  payload: Uint8Array | string = new Uint8Array(0),
  options: ServerFrameOptions = {},
): Uint8Array {
  const body = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  const length = options.declaredLength ?? body.length;
  const head: number[] = [((options.fin ?? true) ? 0x80 : 0) | ((options.rsv ?? 0) << 4) | opcode];
  const maskBit = options.mask ? 0x80 : 0;
  if (length < 126) {
    head.push(maskBit | length);
  } else if (length < 0x10000) {
    head.push(maskBit | 126, length >> 8, length & 0xff);
  } else {
    const big = new Uint8Array(8);
    new DataView(big.buffer).setBigUint64(0, BigInt(length));
    head.push(maskBit | 127, ...big);
  }
  const masked = body.slice();
  if (options.mask) {
    head.push(...options.mask);
    for (let i = 0; i < masked.length; i++) masked[i] ^= options.mask[i & 3];
  }
  return concat(new Uint8Array(head), masked);
}

/** A listening raw server; connections queue up for {@linkcode RawServer.accept}. */
export interface RawServer {
  /** The port on 127.0.0.1. */
  readonly port: number;
  /** `ws://127.0.0.1:<port>`. */
  readonly url: string;
  /** Every connection accepted so far. */
  readonly peers: RawPeer[];
  /** Waits for the next connection. */
  accept(ms?: number): Promise<RawPeer>;
  /** Closes the listener and every connection. */
  close(): Promise<void>;
}

/** Starts a raw TCP server on 127.0.0.1 with a free port. */
export function rawServer(): Promise<RawServer> {
  const peers: RawPeer[] = [];
  const waiting: RawPeer[] = [];
  let wake: (() => void) | null = null;
  const server = net.createServer((socket) => {
    const peer = new RawPeer(socket);
    peers.push(peer);
    waiting.push(peer);
    const w = wake;
    wake = null;
    w?.();
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      resolve({
        port,
        url: `ws://127.0.0.1:${port}`,
        peers,
        async accept(ms = 5_000) {
          const deadline = Date.now() + ms;
          while (waiting.length === 0) {
            const left = deadline - Date.now();
            if (left <= 0) throw new Error(`Raw server: no connection within ${ms} ms`);
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, left);
              wake = () => {
                clearTimeout(timer);
                resolve();
              };
            });
          }
          return waiting.shift()!;
        },
        close() {
          for (const peer of peers) peer.destroy();
          return new Promise<void>((resolve) => server.close(() => resolve()));
        },
      });
    });
  });
}
