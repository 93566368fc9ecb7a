/**
 * One WebSocket connection, server or client side, as users see it: thin
 * faces over the one I/O driver in `driver.ts`.
 *
 * - The WHATWG `WebSocket` face: events, `send`, `close`, `readyState`,
 *   `bufferedAmount`, `binaryType`, `on*` handlers.
 * - The `WebSocketStream`-style face: `readable`, `writable`, `closed`.
 * - The callbacks face: `open`, `message`, `close`, `drain`, `error`, ...
 * - Pub/sub on server connections: `subscribe`, `publish`, ...
 *
 * User code (callbacks, event listeners, `on*` handlers, promises they
 * return) runs behind one guard: an exception closes the connection with
 * 1011, reaches the `error` callback and `error` listeners (or the server's
 * `onError`, or the console when nobody listens), and never escapes into the
 * event loop.
 *
 * @module
 */

import { toError } from "./protocol/errors.ts";
import type { NetAddress, Transport } from "./runtime/transport.ts";
import { type MessageCodec, ReadyState } from "./protocol/connection.ts";
import { CloseCode, isValidWireCloseCode } from "./protocol/close_codes.ts";
import { parseRequestHead } from "./protocol/http.ts";
import type { KeepaliveSettings } from "./keepalive.ts";
import type { FanOutTarget } from "./pubsub_port.ts";
import { clampCloseCode } from "./ws_url.ts";
import type { PubSub, SubscribeOptions } from "./pubsub.ts";
import {
  type CloseInfo,
  ConnectionDriver,
  type DriverEvents,
  type Message,
  OUTPUT_HIGH_WATER,
} from "./driver.ts";

export type { CloseInfo, Message };

/** The events of a {@linkcode WebSocketConnection}, by type, as in the WHATWG `WebSocket`. */
export interface WebSocketConnectionEventMap {
  /** The connection opened. */
  open: Event;
  /** A message: `data` is a string, or an `ArrayBuffer`/`Blob` by `binaryType`. */
  message: MessageEvent;
  /** The connection failed or user code threw (`error` holds the cause). */
  error: ErrorEvent;
  /** The connection closed: `code`, `reason`, `wasClean`. */
  close: CloseEvent;
}

/** What `send()` accepts, as in the WHATWG `WebSocket`. */
export type SendData = string | ArrayBufferLike | ArrayBufferView | Blob;

/** How binary messages appear in `message` events. */
export type BinaryType = "arraybuffer" | "blob";

/**
 * Callbacks for servers that do not want events or streams. Every callback
 * is guarded: one that throws (or returns a promise that rejects) closes its
 * connection with 1011 and is reported to `error`, never to the event loop.
 */
export interface WebSocketHandlers<Data = unknown> {
  /** The connection is open. */
  open?(ws: WebSocketConnection<Data>): void | Promise<void>;
  /**
   * A message arrived (binary as a `Uint8Array`, possibly a view into a
   * larger buffer: see {@linkcode Message}). Returning a promise pauses
   * reading this connection's socket until it settles (backpressure for
   * slow consumers).
   */
  message?(ws: WebSocketConnection<Data>, data: Message): void | Promise<void>;
  /** The connection closed. */
  close?(ws: WebSocketConnection<Data>, code: number, reason: string): void;
  /**
   * Everything queued was written, after a send had to wait behind an
   * unfinished write (the socket was not keeping up).
   */
  drain?(ws: WebSocketConnection<Data>): void;
  /**
   * The connection failed (protocol violation, socket error, keepalive
   * timeout, buffer overflow) or one of its callbacks threw.
   */
  error?(ws: WebSocketConnection<Data>, error: Error): void;
  /** A ping arrived (the pong is sent automatically). */
  ping?(ws: WebSocketConnection<Data>, payload: Uint8Array): void;
  /** A pong arrived. */
  pong?(ws: WebSocketConnection<Data>, payload: Uint8Array): void;
}

/** Internal construction options; users get connections from `serve()` or `connect()`. */
export interface ConnectionInit<Data> {
  role: "server" | "client";
  maxMessageSize: number;
  maxFrameSize: number;
  /** Most frames one data message may span (default in the protocol core). */
  maxFragments?: number;
  closeTimeout: number;
  maxBufferedAmount: number;
  /** Bytes of unread messages the `readable` holds before the socket is paused. */
  readableHighWaterMark?: number;
  binaryType: BinaryType;
  handlers?: WebSocketHandlers<unknown> | WebSocketHandlers<Data>;
  /** Keepalive pings and the idle timeout; all off when absent. */
  keepalive?: KeepaliveSettings;
  /** `close()` takes only 1000 and 3000-4999, as in browsers (the `WebSocket` class). */
  browserCloseCodes?: boolean;
  /**
   * A client opens in the task its handshake completed in, so that
   * `readyState` turns OPEN as `open` fires (the `WebSocket` class, whose
   * handlers are attached before it connects), not one task before it.
   */
  openInline?: boolean;
  /** Where user-code errors go when the connection has no error handler or listener. */
  onError?: (error: Error) => void;
  /**
   * The server's pub/sub layer: `subscribe()` and friends go to it, and it
   * is told when output drains and when the connection finishes.
   */
  hub?: PubSub<WebSocketConnection<Data>> | PubSub<WebSocketConnection>;
  /** Called once when the connection is fully closed. */
  onFinish?: (ws: WebSocketConnection<Data>) => void;
}

/** What the handshake settled, handed to a connection as it opens. */
export interface AttachInit {
  transport: Transport;
  protocol: string;
  extensions: string;
  /** The other side's handshake headers, or the request head's text to parse them from on demand. */
  headers: Headers | string;
  codec: MessageCodec | null;
  /** Open in a later task even on the server side, so the caller can attach listeners first. */
  deferOpen?: boolean;
  /** The 101 response's write, still in flight: the driver waits for it as for its own. */
  written?: Promise<void>;
}

/** Bits of `WebSocketConnection.#listened`, by event type. */
const LISTENED = { open: 1, message: 2, error: 4, close: 8 } as const;

/** The `readable` side stops reading the socket once this many message bytes wait. */
const READABLE_HIGH_WATER = 1024 * 1024;

function toBytes(data: ArrayBufferLike | ArrayBufferView): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  return new Uint8Array(data);
}

/** An exactly sized ArrayBuffer for the bytes (no copy when they already are). */
function exactBuffer(bytes: Uint8Array): ArrayBuffer {
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength) {
    return bytes.buffer as ArrayBuffer;
  }
  return bytes.slice().buffer;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === "object" &&
    typeof (value as { then?: unknown }).then === "function";
}

const encoder = new TextEncoder();

function connecting(): DOMException {
  return new DOMException("The WebSocket is still connecting", "InvalidStateError");
}

/**
 * An open WebSocket connection. Servers receive one per client from
 * `serve()`; clients get one from `connect()`.
 *
 * Messages are delivered to the `message` callback and `message` events; once
 * {@linkcode WebSocketConnection.readable} is first accessed, they go to that
 * stream instead (and reading the socket pauses while it is full).
 *
 * @example Events, as with the browser's WebSocket
 * ```ts
 * import { serve } from "@sluice/ws";
 * const server = await serve({ port: 0 }, (ws) => {
 *   ws.addEventListener("message", (event) => ws.send(event.data));
 * });
 * await server.shutdown();
 * ```
 *
 * @example Streams, with backpressure
 * ```ts
 * import { serve } from "@sluice/ws";
 * const server = await serve({ port: 0 }, async (ws) => {
 *   const writer = ws.writable.getWriter();
 *   for await (const message of ws.readable) await writer.write(message);
 * });
 * await server.shutdown();
 * ```
 */
export class WebSocketConnection<Data = unknown> extends EventTarget implements FanOutTarget {
  /** The connection is being established. */
  static readonly CONNECTING = 0;
  /** The connection is open. */
  static readonly OPEN = 1;
  /** The closing handshake is in progress. */
  static readonly CLOSING = 2;
  /** The connection is closed. */
  static readonly CLOSED = 3;
  // The same constants on instances, from the prototype (four fields on
  // every connection otherwise).
  /** The connection is being established. */
  get CONNECTING(): 0 {
    return 0;
  }
  /** The connection is open. */
  get OPEN(): 1 {
    return 1;
  }
  /** The closing handshake is in progress. */
  get CLOSING(): 2 {
    return 2;
  }
  /** The connection is closed. */
  get CLOSED(): 3 {
    return 3;
  }

  /** What the driver reports, routed into the faces (an object, not a closure per event). */
  static #DriverEvents = class implements DriverEvents {
    readonly #ws: WebSocketConnection<unknown>;

    constructor(ws: WebSocketConnection<unknown>) {
      this.#ws = ws;
    }

    message(message: Message): void {
      this.#ws.#deliver(message);
    }

    ping(payload: Uint8Array): void {
      const ws = this.#ws;
      const ping = ws.#handlers?.ping;
      if (ping !== undefined) ws.#callUser("the ping callback", () => ping(ws, payload));
    }

    pong(payload: Uint8Array): void {
      const ws = this.#ws;
      const pong = ws.#handlers?.pong;
      if (pong !== undefined) ws.#callUser("the pong callback", () => pong(ws, payload));
    }

    applicationReady(): boolean {
      return this.#ws.#applicationReady();
    }

    failed(error: Error): void {
      this.#ws.#more().failure = error;
      this.#ws.#report(error, false);
    }

    flushed(backlogged: boolean, waited: boolean): void {
      this.#ws.#flushed(backlogged, waited);
    }

    finished(info: CloseInfo): void {
      this.#ws.#finish(info);
    }
  };

  /** The URL of the connection (`ws:` or `wss:`). */
  readonly url: string;
  /** Per-connection data attached by the server's `onUpgrade` hook. */
  data: Data;
  #binaryType: BinaryType;

  /** How binary messages appear in `message` events; other values are ignored, as in browsers. */
  get binaryType(): BinaryType {
    return this.#binaryType;
  }
  set binaryType(value: BinaryType) {
    if (value === "blob" || value === "arraybuffer") this.#binaryType = value;
  }

  /** The I/O driver, once the opening handshake completed. */
  #driver: ConnectionDriver | null = null;
  #finished = false;
  /** What few connections use, made on first use (see {@linkcode FaceRare}). */
  #rare: FaceRare | null = null;
  // Stored with Data erased so WebSocketConnection<Data> stays assignable to WebSocketConnection.
  #init: ConnectionInit<unknown>;
  #subprotocol = "";
  #extensions = "";
  #compressed = false;
  // The request head as text until first asked for: a Headers object costs ~1 KiB per idle connection.
  #headers: Headers | string | null = null;
  #handlers: WebSocketHandlers<unknown> | undefined;
  /**
   * Event types that ever had a listener (`LISTENED` bits): events nobody
   * listens to (no listener, no `on*` handler) are not even created.
   */
  #listened = 0;
  /** What the driver was last told about delivering views (see `#deliver`). */
  #views = false;

  // The application's side of input backpressure.
  /** Promises returned by `message` callbacks that have not settled. */
  #pendingHandlers = 0;
  #readableController: ReadableStreamDefaultController<Message> | null = null;

  /**
   * @internal Connections are made by `serve()` and `connect()`. `init` may
   * be shared by many connections (a server's are): it is never changed.
   */
  constructor(init: ConnectionInit<Data>, url: string, data: Data) {
    super();
    this.#init = init as ConnectionInit<unknown>;
    this.url = url;
    this.data = data;
    this.#binaryType = init.binaryType;
    this.#handlers = init.handlers as WebSocketHandlers<unknown> | undefined;
  }

  #more(): FaceRare {
    return this.#rare ??= new FaceRare();
  }

  // The `on*` handlers are accessors, as in browsers, kept with the rarely
  // used state: a server's connections seldom have one, and four fewer
  // fields keep Bun's connection object in a smaller size class.

  /** Called on `open` events. */
  get onopen(): ((ev: Event) => unknown) | null {
    return this.#rare?.onopen ?? null;
  }
  set onopen(handler: ((ev: Event) => unknown) | null) {
    this.#more().onopen = handler;
    this.#setHandler("open", handler);
  }

  /** Called on `message` events. */
  get onmessage(): ((ev: MessageEvent) => unknown) | null {
    return this.#rare?.onmessage ?? null;
  }
  set onmessage(handler: ((ev: MessageEvent) => unknown) | null) {
    this.#more().onmessage = handler;
    this.#setHandler("message", handler);
  }

  /** Called on `error` events. */
  get onerror(): ((ev: Event) => unknown) | null {
    return this.#rare?.onerror ?? null;
  }
  set onerror(handler: ((ev: Event) => unknown) | null) {
    this.#more().onerror = handler;
    this.#setHandler("error", handler);
  }

  /** Called on `close` events. */
  get onclose(): ((ev: CloseEvent) => unknown) | null {
    return this.#rare?.onclose ?? null;
  }
  set onclose(handler: ((ev: CloseEvent) => unknown) | null) {
    this.#more().onclose = handler;
    this.#setHandler("close", handler);
  }

  /** The negotiated subprotocol, or `""`. */
  get protocol(): string {
    return this.#subprotocol;
  }

  /** The negotiated extensions, or `""`. */
  get extensions(): string {
    return this.#extensions;
  }

  /**
   * The handshake's headers from the other side: on a server, the client's
   * request headers; on a client, the server's response headers.
   */
  get handshakeHeaders(): Headers {
    const headers = this.#headers;
    if (headers === null) return (this.#headers = new Headers());
    if (typeof headers === "string") return (this.#headers = parseRequestHead(headers).headers);
    return headers;
  }

  /** The WHATWG ready state: 0 connecting, 1 open, 2 closing, 3 closed. */
  get readyState(): number {
    if (this.#finished) return ReadyState.CLOSED;
    const driver = this.#driver;
    if (driver === null) {
      return this.#rare?.closingEarly ? ReadyState.CLOSING : ReadyState.CONNECTING;
    }
    const state = driver.state;
    // CLOSED in the protocol means "close frames exchanged": the socket may still be open.
    return state === ReadyState.CLOSED ? ReadyState.CLOSING : state;
  }

  /**
   * Bytes queued by `send()` and not yet handed to the kernel: frames not
   * yet written, the unwritten rest of a write in progress, and Blobs still
   * being read. Each byte is counted once.
   */
  get bufferedAmount(): number {
    return this.#driver?.bufferedAmount ?? 0;
  }

  /** The peer's address. */
  get remoteAddr(): NetAddress | null {
    return this.#driver?.remoteAddr ?? null;
  }

  /** Resolves once the connection is closed, with the close code and reason. Never rejects. */
  get closed(): Promise<CloseInfo> {
    const rare = this.#more();
    if (rare.closed === null) {
      const info = rare.closeInfo;
      rare.closed = info !== null
        ? Promise.resolve(info)
        : new Promise((resolve) => (rare.resolveClosed = resolve));
    }
    return rare.closed;
  }

  /**
   * Received messages as a stream. Reading it switches delivery from
   * `message` events and callbacks to this stream; while it holds more than
   * `readableHighWaterMark` bytes (1 MiB by default) of unread messages, the
   * socket is not read, so a slow reader pushes back on the peer. The stream
   * closes when the connection closes, or errors if it fails.
   */
  get readable(): ReadableStream<Message> {
    const rare = this.#more();
    if (rare.readable === null) {
      rare.readable = new ReadableStream<Message>({
        start: (controller) => {
          this.#readableController = controller;
        },
        pull: () => this.#driver?.resume(),
        cancel: () => {
          this.#readableController = null;
          this.close(CloseCode.Normal);
        },
      }, {
        highWaterMark: this.#init.readableHighWaterMark ?? READABLE_HIGH_WATER,
        size: (message) => typeof message === "string" ? message.length : message.byteLength,
      });
      if (this.#finished) this.#endReadable();
    }
    return rare.readable;
  }

  /**
   * Bytes of received messages waiting unread in {@linkcode readable}. It
   * stays near `readableHighWaterMark` (1 MiB by default) however fast the
   * peer sends, because the socket is not read while the stream is full.
   */
  get readableBufferedAmount(): number {
    const controller = this.#readableController;
    if (controller === null) return 0;
    const hwm = this.#init.readableHighWaterMark ?? READABLE_HIGH_WATER;
    return Math.max(0, hwm - (controller.desiredSize ?? hwm));
  }

  /**
   * A stream for sending: each chunk is sent as one message (strings as text,
   * bytes as binary). A write resolves at once while at most 1 MiB is
   * buffered, and otherwise once everything queued was written. Closing it
   * starts the closing handshake with 1000.
   */
  get writable(): WritableStream<SendData> {
    const rare = this.#more();
    if (rare.writable === null) {
      rare.writable = new WritableStream<SendData>({
        write: (chunk) => {
          if (this.readyState !== ReadyState.OPEN) {
            throw new TypeError("The WebSocket is closing or closed");
          }
          this.send(chunk);
          const driver = this.#driver;
          if (driver !== null && driver.bufferedAmount > OUTPUT_HIGH_WATER) {
            return driver.waitForDrain();
          }
        },
        close: () => this.close(CloseCode.Normal),
        abort: () => this.close(CloseCode.Normal),
      });
    }
    return rare.writable;
  }

  /**
   * Sends a message: strings as text, bytes and Blobs as binary, in order.
   * Silently discarded once the connection is closing, as in the WHATWG API.
   *
   * Binary payloads up to 16 KiB are copied at once; larger ones are written
   * from your buffer without a copy (a 1 MiB echo would otherwise copy 1 MiB
   * per message), so do not modify such a buffer until it has been written:
   * until `bufferedAmount` is 0 or the `drain` callback. Strings and Blobs
   * are always safe.
   *
   * A send that finds the connection's buffered output (Blobs still being
   * read included) already over `maxBufferedAmount` fails the connection
   * (one message of any size is always accepted, so the limit bounds memory
   * at the limit plus one message): a close frame with 1008 goes after what
   * is already queued, the `error` callback and event report a
   * `WebSocketError` with code `BUFFER_OVERFLOW`, and the socket is closed
   * once that is written or `closeTimeout` passes; `closed` reports 1008.
   */
  send(data: SendData): void {
    const driver = this.#driver;
    if (driver === null) throw connecting();
    driver.send(typeof data === "string" || data instanceof Blob ? data : toBytes(data));
  }

  /** Sends a ping (payload at most 125 bytes). */
  ping(payload: string | Uint8Array = new Uint8Array(0)): void {
    const driver = this.#driver;
    if (driver === null) throw connecting();
    driver.ping(typeof payload === "string" ? encoder.encode(payload) : payload);
  }

  /** Sends an unsolicited pong, a one-way heartbeat (payload at most 125 bytes). */
  pong(payload: Uint8Array = new Uint8Array(0)): void {
    const driver = this.#driver;
    if (driver === null) throw connecting();
    driver.pong(payload);
  }

  /**
   * Starts the closing handshake. Messages sent before stay ahead of the
   * close frame; the socket is closed once the peer answers, or after
   * `closeTimeout`.
   *
   * Codes: a server connection may close with any code registered for use on
   * the wire (1000-1003, 1007-1014, e.g. 1001 going away, 1008 policy
   * violation, 1011 internal error, 1013 try again later) or 3000-4999; the
   * browser-compatible `WebSocket` class takes only 1000 and 3000-4999, as
   * browsers do. Another code throws `InvalidAccessError`, a reason over 123
   * bytes of UTF-8 `SyntaxError`, before anything is sent.
   */
  close(code?: number, reason?: string): void {
    const browser = this.#init.browserCloseCodes === true;
    // The WHATWG close() takes `[Clamp] unsigned short`: 3000.5 is 3000.
    if (browser) code = clampCloseCode(code);
    if (code !== undefined) {
      const allowed = browser
        ? code === 1000 || (code >= 3000 && code <= 4999)
        : Number.isInteger(code) && isValidWireCloseCode(code);
      if (!allowed) {
        throw new DOMException(
          browser
            ? `Close code ${code} is not allowed: use 1000 or 3000-4999`
            : `Close code ${code} is not allowed: use 1000-1003, 1007-1014 or 3000-4999`,
          "InvalidAccessError",
        );
      }
    }
    if (reason !== undefined && encoder.encode(reason).length > 123) {
      throw new DOMException("Close reason is over 123 bytes of UTF-8", "SyntaxError");
    }
    this.#close(code ?? (reason ? CloseCode.Normal : undefined), reason ?? "");
  }

  /** @internal Closes with any code valid on the wire (shutdown, pub/sub policies). */
  _closeWith(code: number, reason: string): void {
    this.#close(code, reason);
  }

  /** Closes the socket at once, without a closing handshake. */
  terminate(): void {
    const driver = this.#driver;
    if (driver !== null) driver.terminate();
    else this.#close(undefined, "");
  }

  #close(code: number | undefined, reason: string): void {
    const driver = this.#driver;
    if (driver !== null) return driver.close(code, reason);
    // Closing before the handshake completed aborts it (WHATWG: fail the connection).
    if (this.#finished) return;
    const rare = this.#more();
    const abort = rare.abortConnecting;
    rare.abortConnecting = null;
    abort?.();
    // As in browsers: CLOSING now, error and close events in a later task.
    rare.closingEarly = true;
    setTimeout(
      () =>
        this._failConnecting(
          new Error("WebSocket was closed before the connection was established"),
        ),
      0,
    );
  }

  // --- Pub/sub (server side) ---

  /**
   * Subscribes this connection to `topic`: every `server.publish(topic, …)`
   * and every other connection's `publish(topic, …)` reaches it, encoded
   * once for all subscribers. `options` override the server's slow-subscriber
   * defaults for this subscription (`policy`, `key`, `maxBuffered`).
   * Subscribing again updates the options. Unsubscribed automatically on
   * close. Throws `TypeError` for a topic that is not a string, and on a
   * client connection (pub/sub is a server feature).
   *
   * @example A chat room
   * ```ts
   * import { serve } from "@sluice/ws";
   * const server = await serve({ port: 0 }, {
   *   open(ws) {
   *     ws.subscribe("room:lobby");
   *   },
   *   message(ws, data) {
   *     ws.publish("room:lobby", data); // to everyone else in the room
   *   },
   * });
   * await server.shutdown();
   * ```
   */
  subscribe(topic: string, options?: SubscribeOptions): void {
    this.#pubsub("subscribe").subscribe(this, topic, options);
  }

  /** Unsubscribes from `topic`; returns `false` if this connection was not subscribed. */
  unsubscribe(topic: string): boolean {
    return this.#pubsub("unsubscribe").unsubscribe(this, topic);
  }

  /** Whether this connection is subscribed to `topic`. */
  isSubscribed(topic: string): boolean {
    return this.#pubsub("isSubscribed").isSubscribed(this, topic);
  }

  /** The topics this connection is subscribed to, in subscription order. */
  get topics(): readonly string[] {
    const hub = this.#init.hub as PubSub<WebSocketConnection> | undefined;
    return hub === undefined ? [] : hub.topicsOf(this);
  }

  /**
   * Publishes to every subscriber of `topic` except this connection (as
   * Bun's `ws.publish` does). Strings go as text, bytes as binary. Returns
   * how many subscribers it was queued for; never waits for any of them.
   */
  publish(topic: string, data: string | ArrayBuffer | ArrayBufferView): number {
    return this.#pubsub("publish").publish(topic, data, { exclude: this });
  }

  #pubsub(method: string): PubSub<WebSocketConnection> {
    const hub = this.#init.hub as PubSub<WebSocketConnection> | undefined;
    if (hub === undefined) {
      throw new TypeError(`${method}() is only available on server connections`);
    }
    return hub;
  }

  // --- The pub/sub seam (FanOutTarget) ---

  /** @internal Queues a complete, already encoded frame (see `FanOutTarget`). */
  _writeFrame(frame: Uint8Array): boolean {
    return this.#driver?.writeFrame(frame) ?? false;
  }

  /** @internal Encodes a message with this connection's own codec (see `FanOutTarget`). */
  _writeMessage(data: string | Uint8Array): boolean {
    return this.#driver?.writeMessage(data) ?? false;
  }

  /** @internal How frames for this connection may be shared (see `FanOutTarget`). */
  get _compressionKey(): string | null {
    if (!this.#compressed) return null;
    const extensions = this.#extensions;
    if (this.#init.role !== "server" || !/\bserver_no_context_takeover\b/.test(extensions)) {
      return "context-takeover";
    }
    const bits = /\bserver_max_window_bits\s*=\s*"?(\d+)/.exec(extensions)?.[1] ?? "15";
    return `no-context-takeover:${bits}`;
  }

  /** @internal Registers how to abort a handshake in progress (client side). */
  _onAbort(abort: () => void): void {
    this.#more().abortConnecting = abort;
  }

  /** @internal The opening handshake failed: error, then close with 1006. */
  _failConnecting(error: Error): void {
    if (this.#finished || this.#driver !== null) return;
    this.#more().failure = error;
    this.#report(error, false);
    this.#finished = true;
    this.#announceClose({ closeCode: CloseCode.Abnormal, reason: "", wasClean: false });
  }

  // --- Events, with every listener behind the guard ---

  /**
   * Adds a listener. It runs behind the connection's guard: if it throws (or
   * its promise rejects), the connection closes with 1011 and the error is
   * reported, instead of reaching the event loop. Listeners for `open`,
   * `message`, `error` and `close` get their event's type (`e.data` on a
   * `message` event type-checks).
   */
  override addEventListener<K extends keyof WebSocketConnectionEventMap>(
    type: K,
    listener: (this: this, event: WebSocketConnectionEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Adds a listener for any event type, behind the same guard. */
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  override addEventListener(
    type: string,
    listenerOrNull: EventListenerOrEventListenerObject | ((event: never) => unknown) | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    if (listenerOrNull === null) return super.addEventListener(type, null, options);
    const listener = listenerOrNull as EventListenerOrEventListenerObject;
    // Never cleared (a listener removed later only costs an unneeded event object).
    this.#listened |= LISTENED[type as keyof typeof LISTENED] ?? 0;
    super.addEventListener(type, this.#guardedListener(type, listener, options), options);
  }

  /** Removes a listener added with {@linkcode WebSocketConnection.addEventListener}. */
  override removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void {
    const capture = typeof options === "boolean" ? options : options?.capture === true;
    const wrapped = listener === null
      ? undefined
      : this.#rare?.wrapped?.get(listener)?.get(`${type}:${capture}`);
    super.removeEventListener(type, wrapped ?? listener, options);
  }

  /**
   * Sets an `on<type>` handler as browsers do: the first non-null value
   * registers one listener, in that position among the others; null removes it.
   */
  #setHandler(type: "open" | "message" | "error" | "close", handler: unknown): void {
    const rare = this.#more();
    const value = typeof handler === "function" ? handler : null;
    rare.handlers ??= new Map();
    let listener = rare.handlers.get(type);
    if (value !== null && listener === undefined) {
      // Made once per handler type, not per event.
      const property = `on${type}` as const;
      const what = `the ${property} handler`;
      const isError = type === "error";
      listener = (event: Event) => {
        const current = this.#rare?.[property] as ((ev: Event) => unknown) | null | undefined;
        if (typeof current === "function") {
          this.#callUser(what, () => current.call(this, event), isError);
        }
      };
      rare.handlers.set(type, listener);
      super.addEventListener(type, listener);
    } else if (value === null && listener !== undefined) {
      rare.handlers.delete(type);
      super.removeEventListener(type, listener);
    }
  }

  /** The same wrapper for the same listener, type and phase, so duplicates stay ignored. */
  #guardedListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): EventListener {
    const capture = typeof options === "boolean" ? options : options?.capture === true;
    const key = `${type}:${capture}`;
    const table = this.#more().wrapped ??= new WeakMap();
    let byType = table.get(listener);
    if (byType === undefined) table.set(listener, byType = new Map());
    let wrapped = byType.get(key);
    if (wrapped === undefined) {
      wrapped = (event: Event) => {
        this.#callUser(
          `a "${type}" listener`,
          () =>
            typeof listener === "function"
              ? listener.call(this, event)
              : listener.handleEvent(event),
          type === "error",
        );
      };
      byType.set(key, wrapped);
    }
    return wrapped;
  }

  // --- The guard around user code ---

  /** Runs user code; a throw or a rejected returned promise goes to #userFailed. */
  #callUser(what: string, fn: () => unknown, errorHandler = false): unknown {
    let result: unknown;
    try {
      result = fn();
    } catch (err) {
      this.#callFailed(what, err, errorHandler);
      return undefined;
    }
    if (isThenable(result)) {
      result.then(undefined, (err: unknown) => this.#callFailed(what, err, errorHandler));
    }
    return result;
  }

  /**
   * User code threw or rejected. An error listener or `onerror` that fails is
   * reported elsewhere: as a new failure it would dispatch `error` again (a
   * loop, when it is async).
   */
  #callFailed(what: string, err: unknown, errorHandler: boolean): void {
    if (errorHandler) this.#reportElsewhere(toError(err), what);
    else this.#userFailed(what, err);
  }

  /** User code failed: report it, and close the connection with 1011. */
  #userFailed(what: string, err: unknown): void {
    const error = toError(err);
    if (this.#rare?.reporting || this.#finished) {
      // An error handler that throws, or a close listener: nobody left to tell
      // on this connection.
      this.#reportElsewhere(error, what);
      return;
    }
    this.#report(error, true, what);
    this.#driver?.close(CloseCode.InternalError, "Internal error");
  }

  /**
   * Tells the application about an error: the `error` callback, `error`
   * listeners and `onerror`; when none exists and the error came from user
   * code, the server's `onError`, or else the console.
   */
  #report(error: Error, fromUser: boolean, what = "user code"): void {
    let heard = false;
    const rare = this.#more();
    rare.reporting = true;
    try {
      const onError = this.#handlers?.error;
      if (onError !== undefined) {
        heard = true;
        try {
          // Typed to return nothing, but an async one returns a promise: its
          // rejection must not become an unhandled one (a crash on Deno).
          const result: unknown = onError(this, error);
          if (isThenable(result)) {
            result.then(undefined, (err: unknown) => {
              this.#reportElsewhere(toError(err), "the error callback");
            });
          }
        } catch (err) {
          this.#reportElsewhere(toError(err), "the error callback");
        }
      }
      if (this.#listens(LISTENED.error, this.onerror)) {
        heard = true;
        this.dispatchEvent(new ErrorEvent("error", { error, message: error.message }));
      }
    } finally {
      rare.reporting = false;
    }
    if (!heard && fromUser) this.#reportElsewhere(error, what);
  }

  #reportElsewhere(error: Error, what: string): void {
    const onError = this.#init.onError;
    if (onError !== undefined) {
      try {
        const result: unknown = onError(error);
        if (isThenable(result)) {
          result.then(undefined, (err: unknown) => {
            console.error(`Sluice: onError rejected while reporting ${what}:`, err, error);
          });
        }
        return;
      } catch {
        // Fall through to the console.
      }
    }
    console.error(`Sluice: ${what} threw on the connection to ${this.url}:`, error);
  }

  // --- Starting, and what the driver reports ---

  /**
   * @internal Starts the connection: creates its driver over the transport,
   * fires `open`, feeds bytes that arrived with the handshake, and starts
   * reading.
   */
  _start(attach: AttachInit, initial: Uint8Array | null): void {
    if (this.#driver !== null || this.#finished || this.#rare?.closingEarly) {
      attach.transport.close();
      return;
    }
    const init = this.#init;
    this.#subprotocol = attach.protocol;
    this.#extensions = attach.extensions;
    this.#headers = attach.headers;
    this.#compressed = attach.codec !== null;
    if (this.#rare !== null) this.#rare.abortConnecting = null;
    const driver = new ConnectionDriver(
      attach.transport,
      attach.codec,
      init,
      new WebSocketConnection.#DriverEvents(this),
    );
    this.#driver = driver;
    if (attach.written !== undefined) driver.adoptWrite(attach.written);
    if (init.role === "server" ? attach.deferOpen !== true : init.openInline === true) {
      return this.#open(driver, initial);
    }
    // A client's caller gets the connection only after this returns (when
    // `await connect()` resumes): open it, and deliver bytes that came with
    // the 101, in a later task, once the caller could attach its handlers.
    setTimeout(() => this.#open(driver, initial), 0);
  }

  #open(driver: ConnectionDriver, initial: Uint8Array | null): void {
    if (driver.state === ReadyState.OPEN) {
      const open = this.#handlers?.open;
      if (open !== undefined) this.#callUser("the open callback", () => open(this));
      if (this.#listens(LISTENED.open, this.onopen)) {
        this.dispatchEvent(new Event("open"));
      }
    }
    driver.start(initial);
  }

  /** Whether the application takes more: no `message` promise pending, `readable` not full. */
  #applicationReady(): boolean {
    if (this.#pendingHandlers > 0) return false;
    const controller = this.#readableController;
    return controller === null || (controller.desiredSize ?? 1) > 0;
  }

  /** Whether an event of this type has anyone to hear it: a listener (`LISTENED` bit) or its `on*`. */
  #listens(bit: number, handler: unknown): boolean {
    return (this.#listened & bit) !== 0 || handler !== null;
  }

  #deliver(message: Message): void {
    // Binary messages may come as views (no copy or allocation) unless an
    // event listener wants them as whole ArrayBuffers; from the next message.
    const views = this.binaryType !== "arraybuffer" ||
      !this.#listens(LISTENED.message, this.onmessage);
    if (views !== this.#views) {
      this.#views = views;
      if (this.#driver !== null) this.#driver.deliverViews = views;
    }
    const controller = this.#readableController;
    if (controller !== null) {
      controller.enqueue(message);
      return;
    }
    const onMessage = this.#handlers?.message;
    if (onMessage !== undefined) {
      let result: unknown;
      try {
        result = onMessage(this, message);
      } catch (err) {
        this.#userFailed("the message callback", err);
      }
      if (isThenable(result)) {
        // Reading pauses until the promise settles. One that never settles
        // stops reading, not finishing: closing does not wait for it.
        this.#pendingHandlers++;
        result.then(() => {
          this.#pendingHandlers--;
          this.#driver?.resume();
        }, (err: unknown) => {
          this.#pendingHandlers--;
          this.#userFailed("the message callback", err);
          this.#driver?.resume();
        });
      }
    }
    if (this.#listens(LISTENED.message, this.onmessage)) {
      let data: string | ArrayBuffer | Blob;
      if (typeof message === "string") data = message;
      else if (this.binaryType === "arraybuffer") data = exactBuffer(message);
      else data = new Blob([message as Uint8Array<ArrayBuffer>]);
      const rare = this.#more();
      rare.origin ??= URL.canParse(this.url) ? new URL(this.url).origin : "";
      this.dispatchEvent(new MessageEvent("message", { data, origin: rare.origin }));
    }
  }

  /** Everything queued was written: `drain` after a real backlog, the hub after any wait. */
  #flushed(backlogged: boolean, waited: boolean): void {
    if (backlogged) {
      const drain = this.#handlers?.drain;
      if (drain !== undefined) this.#callUser("the drain callback", () => drain(this));
    }
    const hub = this.#init.hub;
    if (waited && hub !== undefined) {
      try {
        hub.drained(this);
      } catch (err) {
        this.#reportElsewhere(toError(err), "the pub/sub layer");
      }
    }
  }

  #endReadable(): void {
    const controller = this.#readableController;
    if (controller === null) return;
    this.#readableController = null;
    try {
      const failure = this.#rare?.failure ?? null;
      if (failure !== null) controller.error(failure);
      else controller.close();
    } catch {
      // Already closed or errored by the consumer.
    }
  }

  #finish(info: CloseInfo): void {
    if (this.#finished) return;
    this.#finished = true;
    try {
      this.#init.hub?.finished(this);
    } catch (err) {
      this.#reportElsewhere(toError(err), "the pub/sub layer");
    }
    this.#announceClose(info);
  }

  /** The close, told every way: `closed`, `readable`, the callback, the event, the server. */
  #announceClose(info: CloseInfo): void {
    this.#endReadable();
    // Kept for a `closed` asked for later (the one time every connection makes the rare part).
    const rare = this.#more();
    rare.closeInfo = info;
    rare.resolveClosed?.(info);
    rare.resolveClosed = null;
    const onClose = this.#handlers?.close;
    if (onClose !== undefined) {
      this.#callUser("the close callback", () => onClose(this, info.closeCode, info.reason));
    }
    if (this.#listens(LISTENED.close, this.onclose)) {
      this.dispatchEvent(
        new CloseEvent("close", {
          code: info.closeCode,
          reason: info.reason,
          wasClean: info.wasClean,
        }),
      );
    }
    this.#init.onFinish?.(this);
  }
}

/**
 * The part of a connection's state that few connections ever use (streams,
 * the `closed` promise, `on*` handlers, listener wrappers, a client's
 * handshake abort, failures): one object made on first use instead of fifteen
 * fields on every connection (V8: 8 bytes each; Bun: the connection object
 * drops from its 290-byte size class to the 194-byte one).
 */
class FaceRare {
  closingEarly = false;
  abortConnecting: (() => void) | null = null;
  /** The failure reported to the application (this side's, or the handshake's). */
  failure: Error | null = null;
  /** Guarded wrappers of event listeners, so removeEventListener finds them. */
  wrapped: WeakMap<object, Map<string, EventListener>> | null = null;
  reporting = false;
  readable: ReadableStream<Message> | null = null;
  writable: WritableStream<SendData> | null = null;
  closed: Promise<CloseInfo> | null = null;
  resolveClosed: ((info: CloseInfo) => void) | null = null;
  closeInfo: CloseInfo | null = null;
  /** The URL's origin for `message` events. */
  origin: string | null = null;
  onopen: ((ev: Event) => unknown) | null = null;
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  onerror: ((ev: Event) => unknown) | null = null;
  onclose: ((ev: CloseEvent) => unknown) | null = null;
  /** The listeners behind the `on*` handlers, by type. */
  handlers: Map<string, EventListener> | null = null;
}
