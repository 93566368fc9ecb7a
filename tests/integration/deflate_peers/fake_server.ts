/**
 * A fake WebSocket server on raw TCP (`node:net`) for the client-side
 * permessage-deflate tests: it answers the opening handshake with whatever
 * `Sec-WebSocket-Extensions` a test chooses (valid or not), then lets the test
 * write any bytes and read back the client's frames exactly as they were on
 * the wire (RSV bits included, unmasked for reading).
 *
 * Independent of `src/protocol/` on purpose, like `_raw_client.ts`, so a bug
 * there cannot hide itself. Every wait has a timeout.
 *
 * @module
 */

import net from "node:net";
import { Buffer } from "node:buffer";
import { Waker } from "../../_watch.ts";
import { expectedAccept } from "../_raw_client.ts";

/** A frame as the client sent it, payload unmasked. */
export interface ClientFrame {
  fin: boolean;
  rsv1: boolean;
  rsv2: boolean;
  rsv3: boolean;
  opcode: number;
  masked: boolean;
  payload: Uint8Array;
}

/**
 * What the server answers a request with: the `Sec-WebSocket-Extensions`
 * value (or `null` for none), or a whole raw response.
 */
export type Answer = { extensions: string | null } | { raw: string };

/** One accepted connection. */
export class FakeConnection {
  /** The request head as received. */
  readonly request: string;
  readonly #socket: net.Socket;
  #buffer: Buffer;
  #ended = false;
  readonly #waker = new Waker();

  constructor(socket: net.Socket, request: string, rest: Buffer) {
    this.#socket = socket;
    this.request = request;
    this.#buffer = rest;
    socket.on("data", (chunk: Buffer) => {
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#waker.wake();
    });
    const end = () => {
      this.#ended = true;
      this.#waker.wake();
    };
    socket.on("end", end);
    socket.on("close", end);
    socket.on("error", end);
  }

  /** A request header's value (case-insensitive name), or `null`. */
  header(name: string): string | null {
    const match = new RegExp(`^${name}:[ \\t]*(.*?)[ \\t]*$`, "im").exec(this.request);
    return match === null ? null : match[1];
  }

  async #waitFor(ready: () => boolean, ms: number, what: string): Promise<void> {
    const deadline = performance.now() + ms;
    while (!ready() && !this.#ended) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`Timed out after ${ms} ms: ${what}`);
      await this.#waker.sleep(left);
    }
  }

  /** Whether the client closed or reset the connection. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Writes raw bytes. */
  write(bytes: Uint8Array): void {
    if (!this.#socket.destroyed) this.#socket.write(bytes);
  }

  /** The size of the frame at the head of the buffer, or Infinity if unknown yet. */
  #frameSize(): number {
    const b = this.#buffer;
    if (b.length < 2) return Infinity;
    const len7 = b[1] & 0x7f;
    const head = (len7 < 126 ? 2 : len7 === 126 ? 4 : 10) + ((b[1] & 0x80) !== 0 ? 4 : 0);
    if (b.length < head) return Infinity;
    const length = len7 < 126
      ? len7
      : len7 === 126
      ? b.readUInt16BE(2)
      : Number(b.readBigUInt64BE(2));
    return head + length;
  }

  /** Reads the client's next frame, or `null` if the stream ended first. */
  async readFrame(ms = 5000): Promise<ClientFrame | null> {
    await this.#waitFor(() => this.#buffer.length >= this.#frameSize(), ms, "reading a frame");
    const total = this.#frameSize();
    if (this.#buffer.length < total) return null;
    const b = this.#buffer;
    const len7 = b[1] & 0x7f;
    const masked = (b[1] & 0x80) !== 0;
    const head = (len7 < 126 ? 2 : len7 === 126 ? 4 : 10) + (masked ? 4 : 0);
    const payload = new Uint8Array(b.subarray(head, total));
    if (masked) {
      const key = b.subarray(head - 4, head);
      for (let i = 0; i < payload.length; i++) payload[i] ^= key[i & 3];
    }
    this.#buffer = b.subarray(total);
    return {
      fin: (b[0] & 0x80) !== 0,
      rsv1: (b[0] & 0x40) !== 0,
      rsv2: (b[0] & 0x20) !== 0,
      rsv3: (b[0] & 0x10) !== 0,
      opcode: b[0] & 0x0f,
      masked,
      payload,
    };
  }

  /** Reads frames up to a close frame and returns its code (1005 if none) and the frames before. */
  async expectClose(ms = 5000): Promise<{ code: number; reason: string; before: ClientFrame[] }> {
    const before: ClientFrame[] = [];
    const deadline = performance.now() + ms;
    for (;;) {
      const frame = await this.readFrame(Math.max(1, deadline - performance.now()));
      if (frame === null) {
        throw new Error(`Stream ended without a close frame after ${before.length} frames`);
      }
      if (frame.opcode === 0x8) {
        const p = frame.payload;
        return {
          code: p.length < 2 ? 1005 : (p[0] << 8) | p[1],
          reason: new TextDecoder().decode(p.subarray(2)),
          before,
        };
      }
      before.push(frame);
    }
  }

  /** Waits until the client ends the connection; true if it did within `ms`. */
  async waitForEnd(ms = 5000): Promise<boolean> {
    try {
      await this.#waitFor(() => false, ms, "the end of the stream");
    } catch {
      // Timed out.
    }
    return this.#ended;
  }

  destroy(): void {
    this.#socket.destroy();
  }
}

/** A fake server on 127.0.0.1 with a free port. */
export class FakeServer {
  readonly #server: net.Server;
  readonly #answer: (request: string) => Answer;
  readonly #accepted: FakeConnection[] = [];
  readonly #sockets = new Set<net.Socket>();
  readonly #waker = new Waker();
  port = 0;

  private constructor(answer: (request: string) => Answer) {
    this.#answer = answer;
    this.#server = net.createServer((socket) => this.#onSocket(socket));
  }

  /** Starts a server answering every handshake with `answer(requestHead)`. */
  static async start(answer: (request: string) => Answer): Promise<FakeServer> {
    const fake = new FakeServer(answer);
    await new Promise<void>((resolve, reject) => {
      fake.#server.once("error", reject);
      fake.#server.listen(0, "127.0.0.1", () => resolve());
    });
    fake.port = (fake.#server.address() as net.AddressInfo).port;
    return fake;
  }

  /** `ws://127.0.0.1:<port>/`. */
  get url(): string {
    return `ws://127.0.0.1:${this.port}/`;
  }

  #onSocket(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.on("close", () => this.#sockets.delete(socket));
    socket.on("error", () => {});
    socket.setNoDelay(true);
    let buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf("\r\n\r\n");
      if (end === -1) return;
      socket.off("data", onData);
      const request = buffer.subarray(0, end + 4).toString("latin1");
      const rest = buffer.subarray(end + 4);
      const key = /^sec-websocket-key:[ \t]*(\S+)/im.exec(request)?.[1] ?? "";
      const answer = this.#answer(request);
      const response = "raw" in answer ? answer.raw : "HTTP/1.1 101 Switching Protocols\r\n" +
        "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${expectedAccept(key)}\r\n` +
        (answer.extensions === null ? "" : `Sec-WebSocket-Extensions: ${answer.extensions}\r\n`) +
        "\r\n";
      socket.write(response);
      this.#accepted.push(new FakeConnection(socket, request, rest));
      this.#waker.wake();
    };
    socket.on("data", onData);
  }

  /** The next accepted connection (in order), waiting at most `ms`. */
  async accept(ms = 5000): Promise<FakeConnection> {
    const deadline = performance.now() + ms;
    while (this.#accepted.length === 0) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`No connection within ${ms} ms`);
      await this.#waker.sleep(left);
    }
    return this.#accepted.shift()!;
  }

  /** Stops listening and drops every connection. */
  close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}
