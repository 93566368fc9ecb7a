/**
 * One open WebSocket connection, server or client side.
 *
 * The connection has one I/O driver and three thin faces over it:
 * - the driver moves bytes: it feeds each received chunk through the
 *   sans-I/O protocol core in one synchronous step, delivers the messages
 *   found, writes every reply and send queued during that step in one socket
 *   write, pauses reading while the application or the peer is behind, and
 *   owns the one set of rules for closing (a deadline on every closing path)
 *   and finishing (exactly once, whatever ended the connection);
 * - the WHATWG `WebSocket` face (events, `send`, `close`, `readyState`,
 *   `bufferedAmount`, `binaryType`);
 * - the `WebSocketStream`-style face (`readable`, `writable`, `closed`);
 * - the callbacks face (`open`, `message`, `close`, `drain`, `error`, ...).
 *
 * User code (callbacks, event listeners, `on*` handlers, promises they
 * return) runs behind one guard: an exception closes the connection with
 * 1011, reaches the `error` callback and `error` listeners (or the server's
 * `onError`, or the console when nobody listens), and never escapes into the
 * event loop.
 *
 * @module
 */

import type { ChunkConsumer, NetAddress, Transport } from "./runtime/transport.ts";
import {
  type MessageCodec,
  type ProtocolHandler,
  ReadyState,
  WebSocketProtocol,
} from "./protocol/connection.ts";
import { CloseCode, isValidWireCloseCode } from "./protocol/close_codes.ts";
import { parseRequestHead } from "./protocol/http.ts";
import { WebSocketError } from "./protocol/errors.ts";
import { joinClock, type KeepaliveSettings, tickPeriod } from "./keepalive.ts";
import type { FanOutTarget } from "./pubsub_port.ts";
import type { PubSub, SubscribeOptions } from "./pubsub.ts";

/** A received message: text as `string`, binary as an exactly sized `Uint8Array`. */
export type Message = string | Uint8Array;

/** What `send()` accepts, as in the WHATWG `WebSocket`. */
export type SendData = string | ArrayBufferLike | ArrayBufferView | Blob;

/** How binary messages appear in `message` events. */
export type BinaryType = "arraybuffer" | "blob";

/** The result of {@linkcode WebSocketConnection.closed}. */
export interface CloseInfo {
  /**
   * The close code: the peer's; on a server, the code it failed the
   * connection with (1002, 1007, 1008, 1009, 1011, ...); 1005 if the peer's
   * close frame had none; 1006 if the connection dropped without one (and on
   * a client, after any failure, as in browsers).
   */
  closeCode: number;
  /** The peer's close reason, or the reason this side failed with. */
  reason: string;
  /** Whether close frames were exchanged both ways. */
  wasClean: boolean;
}

/**
 * Callbacks for servers that do not want events or streams. Every callback
 * is guarded: one that throws (or returns a promise that rejects) closes its
 * connection with 1011 and is reported to `error`, never to the event loop.
 */
export interface WebSocketHandlers<Data = unknown> {
  /** The connection is open. */
  open?(ws: WebSocketConnection<Data>): void | Promise<void>;
  /**
   * A message arrived. Returning a promise pauses reading this connection's
   * socket until it settles (backpressure for slow consumers).
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
  url: string;
  maxMessageSize: number;
  maxFrameSize: number;
  /** Most frames one data message may span (default in the protocol core). */
  maxFragments?: number;
  closeTimeout: number;
  maxBufferedAmount: number;
  /** Bytes of unread messages the `readable` holds before the socket is paused. */
  readableHighWaterMark?: number;
  binaryType: BinaryType;
  data: Data;
  handlers?: WebSocketHandlers<unknown> | WebSocketHandlers<Data>;
  /** Keepalive pings and the idle timeout; all off when absent. */
  keepalive?: KeepaliveSettings;
  /** `close()` takes only 1000 and 3000-4999, as in browsers (the `WebSocket` class). */
  browserCloseCodes?: boolean;
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
  /** The other side's handshake headers, or the raw request head to parse them from on demand. */
  headers: Headers | Uint8Array;
  codec: MessageCodec | null;
  /** Open in a later task even on the server side, so the caller can attach listeners first. */
  deferOpen?: boolean;
}

/** Chunks up to this size are copied together into one write; larger ones go as they are. */
const COALESCE_CHUNK = 16 * 1024;
/** The most bytes one coalesced write collects. */
const COALESCE_LIMIT = 64 * 1024;
/**
 * Unsent output above which the socket is not read (so a peer that does not
 * read cannot make the server queue without end: TCP pushes back on it), and
 * above which `writable` writes wait.
 */
const OUTPUT_HIGH_WATER = 1024 * 1024;
/** A write that leaves more than this unsent means the socket is behind: `drain` follows. */
const DRAIN_MARK = 64 * 1024;
/** The `readable` side stops reading the socket once this many message bytes wait. */
const READABLE_HIGH_WATER = 1024 * 1024;

/**
 * Joins runs of small chunks (frames of small messages, headers) into single
 * buffers so that a burst of sends costs one socket write, while large
 * payloads are written from where they are instead of being copied.
 */
function coalesce(chunks: Uint8Array[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let run: Uint8Array[] = [];
  let runBytes = 0;
  const endRun = () => {
    if (run.length === 1) out.push(run[0]);
    else if (run.length > 1) {
      const joined = new Uint8Array(runBytes);
      let at = 0;
      for (const chunk of run) {
        joined.set(chunk, at);
        at += chunk.length;
      }
      out.push(joined);
    }
    run = [];
    runBytes = 0;
  };
  for (const chunk of chunks) {
    if (chunk.length > COALESCE_CHUNK) {
      endRun();
      out.push(chunk);
      continue;
    }
    if (runBytes + chunk.length > COALESCE_LIMIT) endRun();
    run.push(chunk);
    runBytes += chunk.length;
  }
  endRun();
  return out;
}

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

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof value === "object" &&
    typeof (value as { then?: unknown }).then === "function";
}

const encoder = new TextEncoder();

/**
 * Reads `transport` and hands each chunk to `consumer`, pausing while
 * `consumer.data()` returns `false`. Push transports (Bun) do this in their
 * own data callback; pull transports (Deno) get a read loop here. Returns the
 * function that restarts delivery after a pause.
 */
function startReading(transport: Transport, consumer: ChunkConsumer): () => void {
  if (transport.setConsumer !== undefined) {
    transport.setConsumer(consumer);
    return () => transport.resumeConsumer!();
  }
  let paused = false;
  let wake: (() => void) | null = null;
  (async () => {
    for (;;) {
      if (paused) {
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      let chunk: Uint8Array | null;
      try {
        chunk = await transport.read();
      } catch (err) {
        consumer.end(toError(err));
        return;
      }
      if (chunk === null) {
        consumer.end(null);
        return;
      }
      if (!consumer.data(chunk)) paused = true;
    }
  })();
  return () => {
    if (!paused) return;
    paused = false;
    const resume = wake;
    wake = null;
    resume?.();
  };
}

/**
 * An open WebSocket connection. Servers receive one per client from
 * `serve()`; clients get one from `connect()`.
 *
 * Messages are delivered to the `message` callback and `message` events; once
 * {@linkcode WebSocketConnection.readable} is first read, they go to that
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
  /** The connection is being established. */
  readonly CONNECTING = 0;
  /** The connection is open. */
  readonly OPEN = 1;
  /** The closing handshake is in progress. */
  readonly CLOSING = 2;
  /** The connection is closed. */
  readonly CLOSED = 3;

  /** The URL of the connection (`ws:` or `wss:`). */
  readonly url: string;
  /** Per-connection data attached by the server's `onUpgrade` hook. */
  data: Data;
  /** How binary messages appear in `message` events. */
  binaryType: BinaryType;

  /** Called on `open` events. */
  onopen: ((ev: Event) => unknown) | null = null;
  /** Called on `message` events. */
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  /** Called on `error` events. */
  onerror: ((ev: Event) => unknown) | null = null;
  /** Called on `close` events. */
  onclose: ((ev: CloseEvent) => unknown) | null = null;

  #transport!: Transport;
  #protocol!: WebSocketProtocol;
  #attached = false;
  #closingEarly = false;
  #codec: MessageCodec | null = null;
  #abortConnecting: (() => void) | null = null;
  // Stored with Data erased so WebSocketConnection<Data> stays assignable to WebSocketConnection.
  #init: ConnectionInit<unknown>;
  #subprotocol = "";
  #extensions = "";
  // Raw head bytes until first asked for: a Headers object costs ~1 KiB per idle connection.
  #headers: Headers | Uint8Array | null = null;
  #handlers: WebSocketHandlers<unknown> | undefined;
  #messageListeners = 0;
  #errorListeners = 0;
  /** Guarded wrappers of event listeners, so removeEventListener finds them. */
  #wrapped: WeakMap<object, Map<string, EventListener>> | null = null;
  #reporting = false;
  #started = false;
  #finished = false;
  #transportClosed = false;

  // Input.
  #resumeReading: (() => void) | null = null;
  #readPaused = false;
  /** Promises returned by `message` callbacks that have not settled. */
  #pendingHandlers = 0;
  #readable: ReadableStream<Message> | null = null;
  #readableController: ReadableStreamDefaultController<Message> | null = null;
  #writable: WritableStream<SendData> | null = null;

  // Output.
  #flushScheduled = false;
  #writing = false;
  /** Bytes taken from the protocol and not yet handed to `transport.write()`. */
  #inFlight = 0;
  /** A write had to wait since the last time everything was flushed. */
  #waited = false;
  #needDrain = false;
  #closeWhenFlushed = false;
  #drainWaiters: (() => void)[] = [];
  #orderQueue: Promise<void> | null = null;
  #ordered = 0;
  #blobBytes = 0;

  // Keepalive.
  #leaveClock: (() => void) | null = null;
  /** Bytes arrived since the last tick. */
  #heard = false;
  /** A message arrived since the last tick. */
  #heardMessage = false;
  #lastHeard = 0;
  #lastMessage = 0;
  #pingSentAt = 0;

  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #closed: Promise<CloseInfo>;
  #resolveClosed!: (info: CloseInfo) => void;
  /** Why this side ended the connection, when it did so because of an error. */
  #failure: Error | null = null;
  #origin: string;

  /** @internal Connections are made by `serve()` and `connect()`. */
  constructor(init: ConnectionInit<Data>) {
    super();
    this.#init = init as ConnectionInit<unknown>;
    this.url = init.url;
    this.data = init.data;
    this.binaryType = init.binaryType;
    this.#handlers = init.handlers as WebSocketHandlers<unknown> | undefined;
    this.#closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    this.#origin = URL.canParse(init.url) ? new URL(init.url).origin : "";
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
    if (headers instanceof Uint8Array) return (this.#headers = parseRequestHead(headers).headers);
    return headers;
  }

  /** The WHATWG ready state: 0 connecting, 1 open, 2 closing, 3 closed. */
  get readyState(): number {
    if (this.#finished) return ReadyState.CLOSED;
    if (!this.#attached) return this.#closingEarly ? ReadyState.CLOSING : ReadyState.CONNECTING;
    const state = this.#protocol.state;
    // CLOSED in the protocol means "close frames exchanged": the socket may still be open.
    return state === ReadyState.CLOSED ? ReadyState.CLOSING : state;
  }

  /**
   * Bytes queued by `send()` and not yet handed to the kernel: frames not
   * yet written, the unwritten rest of a write in progress, and Blobs still
   * being read. Each byte is counted once.
   */
  get bufferedAmount(): number {
    if (!this.#attached) return this.#blobBytes;
    return this.#outputBacklog() + this.#blobBytes;
  }

  /** The peer's address. */
  get remoteAddr(): NetAddress | null {
    return this.#attached ? this.#transport.remoteAddr : null;
  }

  /** Resolves once the connection is closed, with the close code and reason. Never rejects. */
  get closed(): Promise<CloseInfo> {
    return this.#closed;
  }

  /**
   * Received messages as a stream. Reading it switches delivery from
   * `message` events and callbacks to this stream; while it holds more than
   * `readableHighWaterMark` bytes (1 MiB by default) of unread messages, the
   * socket is not read, so a slow reader pushes back on the peer. The stream
   * closes when the connection closes, or errors if it fails.
   */
  get readable(): ReadableStream<Message> {
    if (this.#readable === null) {
      this.#readable = new ReadableStream<Message>({
        start: (controller) => {
          this.#readableController = controller;
        },
        pull: () => this.#maybeResume(),
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
    return this.#readable;
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
    if (this.#writable === null) {
      this.#writable = new WritableStream<SendData>({
        write: (chunk) => {
          if (this.readyState !== ReadyState.OPEN) {
            throw new TypeError("The WebSocket is closing or closed");
          }
          this.send(chunk);
          if (this.bufferedAmount > OUTPUT_HIGH_WATER) return this.#waitForDrain();
        },
        close: () => this.close(CloseCode.Normal),
        abort: () => this.close(CloseCode.Normal),
      });
    }
    return this.#writable;
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
   * at the limit plus one message): a close frame with 1008 goes after
   * what is already queued, the `error` callback and event report a
   * `WebSocketError` with code `BUFFER_OVERFLOW`, and the socket is closed
   * once that is written or `closeTimeout` passes; `closed` reports 1008.
   */
  send(data: SendData): void {
    if (!this.#attached) {
      throw new DOMException("The WebSocket is still connecting", "InvalidStateError");
    }
    if (this.#ordered > 0 || data instanceof Blob) {
      this.#sendInOrder(data);
      return;
    }
    // The limit applies to what was waiting before this message, so one
    // message of any size may always be queued (a maximum-size echo fits).
    const before = this.#outputBacklog() + this.#blobBytes;
    // Binary payloads over 16 KiB go to the socket from the caller's buffer,
    // without a copy (as npm ws does): see the doc comment.
    const sent = typeof data === "string"
      ? this.#protocol.sendText(data)
      : this.#protocol.sendBinary(toBytes(data));
    if (!sent) return;
    if (before > this.#init.maxBufferedAmount) return this.#overflow();
    this.#queued();
  }

  /** Sends a ping (payload at most 125 bytes). */
  ping(payload: string | Uint8Array = new Uint8Array(0)): void {
    if (!this.#attached) {
      throw new DOMException("The WebSocket is still connecting", "InvalidStateError");
    }
    const bytes = typeof payload === "string" ? encoder.encode(payload) : payload;
    if (this.#protocol.ping(bytes)) this.#afterSend();
  }

  /** Sends an unsolicited pong, a one-way heartbeat (payload at most 125 bytes). */
  pong(payload: Uint8Array = new Uint8Array(0)): void {
    if (!this.#attached) {
      throw new DOMException("The WebSocket is still connecting", "InvalidStateError");
    }
    if (this.#protocol.pong(payload)) this.#afterSend();
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
    if (code !== undefined) {
      const allowed = this.#init.browserCloseCodes === true
        ? code === 1000 || (code >= 3000 && code <= 4999)
        : Number.isInteger(code) && isValidWireCloseCode(code);
      if (!allowed) {
        throw new DOMException(
          this.#init.browserCloseCodes === true
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
    if (this.#attached) this.#closeTransport();
    else this.#close(undefined, "");
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
    if (!this.#attached || this.#ordered > 0 || !this.#protocol.sendRaw(frame)) return false;
    this.#queued();
    return true;
  }

  /** @internal Encodes a message with this connection's own codec (see `FanOutTarget`). */
  _writeMessage(data: string | Uint8Array): boolean {
    if (!this.#attached || this.#ordered > 0) return false;
    const sent = typeof data === "string"
      ? this.#protocol.sendText(data)
      : this.#protocol.sendBinary(data);
    if (sent) this.#queued();
    return sent;
  }

  /** @internal How frames for this connection may be shared (see `FanOutTarget`). */
  get _compressionKey(): string | null {
    if (this.#codec === null) return null;
    const extensions = this.#extensions;
    if (this.#init.role !== "server" || !/\bserver_no_context_takeover\b/.test(extensions)) {
      return "context-takeover";
    }
    const bits = /\bserver_max_window_bits\s*=\s*"?(\d+)/.exec(extensions)?.[1] ?? "15";
    return `no-context-takeover:${bits}`;
  }

  /** @internal Registers how to abort a handshake in progress (client side). */
  _onAbort(abort: () => void): void {
    this.#abortConnecting = abort;
  }

  /** @internal The opening handshake failed: error, then close with 1006. */
  _failConnecting(error: Error): void {
    if (this.#finished || this.#attached) return;
    this.#failure = error;
    this.#report(error, false);
    this.#finish();
  }

  // --- Events, with every listener behind the guard ---

  /**
   * Adds a listener. It runs behind the connection's guard: if it throws (or
   * its promise rejects), the connection closes with 1011 and the error is
   * reported, instead of reaching the event loop.
   */
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    if (listener === null) return super.addEventListener(type, listener, options);
    // Over-counting (a listener added twice, or removed later) only costs an
    // unneeded event object; never under-count.
    if (type === "message") this.#messageListeners++;
    else if (type === "error") this.#errorListeners++;
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
      : this.#wrapped?.get(listener)?.get(`${type}:${capture}`);
    super.removeEventListener(type, wrapped ?? listener, options);
  }

  /** Dispatches `event` to its listeners, then to its `on<type>` property, as browsers do. */
  override dispatchEvent(event: Event): boolean {
    const result = super.dispatchEvent(event);
    const handler = (this as unknown as Record<string, unknown>)[`on${event.type}`];
    if (typeof handler === "function") {
      this.#callUser(`the on${event.type} handler`, () => handler.call(this, event));
    }
    return result;
  }

  /** The same wrapper for the same listener, type and phase, so duplicates stay ignored. */
  #guardedListener(
    type: string,
    listener: EventListenerOrEventListenerObject,
    options?: boolean | AddEventListenerOptions,
  ): EventListener {
    const capture = typeof options === "boolean" ? options : options?.capture === true;
    const key = `${type}:${capture}`;
    const table = this.#wrapped ??= new WeakMap();
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
        );
      };
      byType.set(key, wrapped);
    }
    return wrapped;
  }

  // --- The guard around user code ---

  /** Runs user code; a throw or a rejected returned promise goes to #userFailed. */
  #callUser(what: string, fn: () => unknown): unknown {
    let result: unknown;
    try {
      result = fn();
    } catch (err) {
      this.#userFailed(what, err);
      return undefined;
    }
    if (isThenable(result)) {
      result.then(undefined, (err: unknown) => this.#userFailed(what, err));
    }
    return result;
  }

  /** User code failed: report it, and close the connection with 1011. */
  #userFailed(what: string, err: unknown): void {
    const error = toError(err);
    if (this.#reporting || this.#finished) {
      // An error handler that throws, or a close listener: nobody left to tell
      // on this connection.
      this.#reportElsewhere(error, what);
      return;
    }
    this.#report(error, true, what);
    if (this.#attached) this.#close(CloseCode.InternalError, "Internal error");
  }

  /**
   * Tells the application about an error: the `error` callback, `error`
   * listeners and `onerror`; when none exists and the error came from user
   * code, the server's `onError`, or else the console.
   */
  #report(error: Error, fromUser: boolean, what = "user code"): void {
    let heard = false;
    this.#reporting = true;
    try {
      const onError = this.#handlers?.error;
      if (onError !== undefined) {
        heard = true;
        try {
          onError(this, error);
        } catch (err) {
          this.#reportElsewhere(toError(err), "the error callback");
        }
      }
      if (this.#errorListeners > 0 || this.onerror !== null) heard = true;
      this.dispatchEvent(new ErrorEvent("error", { error, message: error.message }));
    } finally {
      this.#reporting = false;
    }
    if (!heard && fromUser) this.#reportElsewhere(error, what);
  }

  #reportElsewhere(error: Error, what: string): void {
    const onError = this.#init.onError;
    if (onError !== undefined) {
      try {
        onError(error);
        return;
      } catch {
        // Fall through to the console.
      }
    }
    console.error(`Sluice: ${what} threw on the connection to ${this.url}:`, error);
  }

  // --- Starting ---

  /**
   * @internal Starts the connection: fires `open`, feeds bytes that arrived
   * with the handshake, and starts reading.
   */
  _start(attach: AttachInit, initial: Uint8Array | null): void {
    if (this.#started || this.#finished || this.#closingEarly) {
      attach.transport.close();
      return;
    }
    this.#started = true;
    const init = this.#init;
    this.#transport = attach.transport;
    this.#subprotocol = attach.protocol;
    this.#extensions = attach.extensions;
    this.#headers = attach.headers;
    this.#codec = attach.codec;
    this.#attached = true;
    this.#abortConnecting = null;
    this.#protocol = new WebSocketProtocol(
      {
        role: init.role,
        maxMessageSize: init.maxMessageSize,
        maxFragments: init.maxFragments,
        maxFrameSize: init.maxFrameSize,
        codec: attach.codec,
      },
      {
        text: (data) => this.#deliver(data),
        binary: (data) => this.#deliver(data),
        ping: (payload) => {
          const ping = this.#handlers?.ping;
          if (ping !== undefined) this.#callUser("the ping callback", () => ping(this, payload));
        },
        pong: (payload) => {
          const pong = this.#handlers?.pong;
          if (pong !== undefined) this.#callUser("the pong callback", () => pong(this, payload));
        },
      } satisfies ProtocolHandler,
    );
    if (init.role === "server" && attach.deferOpen !== true) return this.#open(initial);
    // A client's caller gets the connection only after this returns (when
    // `await connect()` resumes): open it, and deliver bytes that came with
    // the 101, in a later task, once the caller could attach its handlers.
    setTimeout(() => this.#open(initial), 0);
  }

  #open(initial: Uint8Array | null): void {
    if (this.#transportClosed) return this.#finish();
    const open = this.#handlers?.open;
    if (open !== undefined) this.#callUser("the open callback", () => open(this));
    this.dispatchEvent(new Event("open"));
    this.#startKeepalive();
    if (initial !== null && initial.length > 0 && !this.#onData(initial)) {
      this.#readPaused = true;
    }
    if (this.#transportClosed) return;
    this.#resumeReading = startReading(this.#transport, {
      data: (chunk) => this.#onData(chunk),
      end: (error) => this.#onEnd(error),
    });
    if (this.#readPaused) {
      // The bytes that came with the handshake already filled a buffer.
      this.#readPaused = false;
      this.#pauseReading();
    }
  }

  // --- Reading ---

  /** One received chunk: parse, deliver, answer. Returns whether to keep reading. */
  #onData(chunk: Uint8Array): boolean {
    if (this.#transportClosed) return false;
    this.#heard = true;
    this.#protocol.receive(chunk);
    this.#afterReceive();
    if (this.#canRead()) return true;
    this.#readPaused = true;
    return false;
  }

  /** Used when the pause starts outside `#onData` (bytes that came with the handshake). */
  #pauseReading(): void {
    if (this.#canRead()) return;
    this.#readPaused = true;
    // Deliver nothing until resumed: the consumer returns false on the next
    // chunk anyway; a pull loop is not running yet for the first chunk.
  }

  #onEnd(error: Error | null): void {
    if (this.#transportClosed) return;
    if (error !== null) return this.#fail(error);
    this.#protocol.receiveEnd();
    this.#closeTransport();
  }

  /**
   * Whether to read more: the application keeps up (no `message` promise
   * pending, `readable` not full) and, on a server, so does the peer (our
   * unsent output to it is under the high-water mark; otherwise TCP pushes
   * back on it, and a client that never reads cannot make an echo server
   * queue without end). Clients keep reading whatever their backlog: if both
   * ends paused on output, two peers sending bulk to each other would wait
   * for each other forever.
   */
  #canRead(): boolean {
    if (this.#pendingHandlers > 0) return false;
    const controller = this.#readableController;
    if (controller !== null && (controller.desiredSize ?? 1) <= 0) return false;
    return this.#init.role === "client" || this.#outputBacklog() <= OUTPUT_HIGH_WATER;
  }

  /** Called whenever something that paused reading may have cleared. */
  #maybeResume(): void {
    if (!this.#readPaused || this.#transportClosed || !this.#canRead()) return;
    this.#readPaused = false;
    // Deadlines do not run against a peer we were not reading.
    this.#heard = true;
    this.#resumeReading?.();
  }

  /** After each received chunk: flush replies, act on state changes. */
  #afterReceive(): void {
    const protocol = this.#protocol;
    // Everything this chunk produced (replies, handler sends) is queued now:
    // write it before the next read is issued rather than in a microtask.
    if (protocol.outputBytes > 0 && !this.#writing) this.#flush();
    this.#afterStateChange();
  }

  /**
   * The one place that acts on the protocol leaving OPEN: every closing path
   * gets the `closeTimeout` deadline, a failure is reported, and the side
   * that should close TCP first does so once its close frame is written.
   */
  #afterStateChange(): void {
    const protocol = this.#protocol;
    const state = protocol.state;
    if (state === ReadyState.OPEN) return;
    this.#startCloseTimer();
    if (state !== ReadyState.CLOSED) return;
    const error = protocol.error;
    if (error !== null && this.#failure === null) {
      this.#failure = error;
      this.#report(error, false);
    }
    // The server closes TCP first (§7.1.1); a client, and any side that
    // failed the connection, as soon as its close frame is out.
    if (this.#init.role === "server" || error !== null) this.#closeAfterFlush();
  }

  #deliver(message: Message): void {
    this.#heardMessage = true;
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
          this.#maybeResume();
        }, (err: unknown) => {
          this.#pendingHandlers--;
          this.#userFailed("the message callback", err);
          this.#maybeResume();
        });
      }
    }
    if (this.#messageListeners > 0 || this.onmessage !== null) {
      let data: string | ArrayBuffer | Blob;
      if (typeof message === "string") data = message;
      else if (this.binaryType === "arraybuffer") data = exactBuffer(message);
      else data = new Blob([message as Uint8Array<ArrayBuffer>]);
      this.dispatchEvent(new MessageEvent("message", { data, origin: this.#origin }));
    }
  }

  // --- Closing ---

  #close(code: number | undefined, reason: string): void {
    if (!this.#attached) {
      // Closing before the handshake completed aborts it (WHATWG: fail the connection).
      if (this.#finished) return;
      const abort = this.#abortConnecting;
      this.#abortConnecting = null;
      abort?.();
      // As in browsers: CLOSING now, error and close events in a later task.
      this.#closingEarly = true;
      setTimeout(
        () =>
          this._failConnecting(
            new Error("WebSocket was closed before the connection was established"),
          ),
        0,
      );
      return;
    }
    if (this.#protocol.state !== ReadyState.OPEN) return;
    if (this.#ordered > 0) {
      // Let Blobs queued before close() go first.
      this.#enqueueOrdered(() => this.#closeNow(code, reason));
      return;
    }
    this.#closeNow(code, reason);
  }

  #closeNow(code: number | undefined, reason: string): void {
    const protocol = this.#protocol;
    if (protocol.state !== ReadyState.OPEN) return;
    protocol.close(code, reason);
    this.#scheduleFlush();
    this.#afterStateChange();
  }

  /** Fails the connection from this side with a close code (overflow, keepalive). */
  #failWith(error: WebSocketError): void {
    const protocol = this.#protocol;
    if (protocol.state === ReadyState.CLOSED) return;
    this.#failure = error;
    protocol.fail(error);
    this.#report(error, false);
    this.#scheduleFlush();
    this.#afterStateChange();
  }

  #startCloseTimer(): void {
    if (this.#closeTimer !== undefined || this.#transportClosed) return;
    this.#closeTimer = setTimeout(() => {
      this.#closeTimer = undefined;
      this.#closeTransport();
    }, this.#init.closeTimeout);
  }

  #closeAfterFlush(): void {
    this.#closeWhenFlushed = true;
    if (!this.#writing && !this.#flushScheduled && this.#protocol.outputBytes === 0) {
      this.#closeTransport();
    }
  }

  /** The transport failed (socket error): nothing more can be sent. */
  #fail(error: Error): void {
    if (this.#failure === null && !this.#finished) {
      this.#failure = error;
      this.#report(error, false);
    }
    this.#closeTransport();
  }

  #closeTransport(): void {
    if (this.#transportClosed || !this.#attached) return;
    this.#transportClosed = true;
    if (this.#closeTimer !== undefined) {
      clearTimeout(this.#closeTimer);
      this.#closeTimer = undefined;
    }
    this.#leaveClock?.();
    this.#leaveClock = null;
    this.#transport.close();
    this.#protocol.receiveEnd();
    const waiters = this.#drainWaiters;
    this.#drainWaiters = [];
    for (const resolve of waiters) resolve();
    // A paused pull loop wakes, reads the end of stream and stops.
    this.#readPaused = false;
    this.#resumeReading?.();
    if (this.#started) queueMicrotask(() => this.#finish());
    else this.#finish();
  }

  #endReadable(): void {
    const controller = this.#readableController;
    if (controller === null) return;
    this.#readableController = null;
    try {
      if (this.#failure !== null) controller.error(this.#failure);
      else controller.close();
    } catch {
      // Already closed or errored by the consumer.
    }
  }

  /**
   * What `closed` reports. On a server, a failure this side declared (and
   * sent a close frame for) is reported with its code, so `close` callbacks
   * and stats see 1008 for an overflow or 1011 for a dead peer; a client
   * reports 1006 for any failure, as browsers do.
   */
  #closeInfo(): CloseInfo {
    const protocol = this.#attached ? this.#protocol : null;
    const failure = this.#failure;
    if (
      this.#init.role === "server" && failure instanceof WebSocketError &&
      isValidWireCloseCode(failure.closeCode) && protocol !== null && protocol.closeSent
    ) {
      return { closeCode: failure.closeCode, reason: failure.message, wasClean: false };
    }
    return {
      closeCode: protocol?.closeCode ?? CloseCode.Abnormal,
      reason: protocol?.closeReason ?? "",
      wasClean: protocol?.wasClean ?? false,
    };
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#leaveClock?.();
    this.#leaveClock = null;
    try {
      this.#codec?.close?.();
    } catch {
      // Freeing zlib memory must not stop the close from being reported.
    }
    const info = this.#closeInfo();
    this.#endReadable();
    this.#resolveClosed(info);
    try {
      this.#init.hub?.finished(this);
    } catch (err) {
      this.#reportElsewhere(toError(err), "the pub/sub layer");
    }
    const onClose = this.#handlers?.close;
    if (onClose !== undefined) {
      this.#callUser("the close callback", () => onClose(this, info.closeCode, info.reason));
    }
    this.dispatchEvent(
      new CloseEvent("close", {
        code: info.closeCode,
        reason: info.reason,
        wasClean: info.wasClean,
      }),
    );
    this.#init.onFinish?.(this);
  }

  // --- Writing ---

  /**
   * Sends behind Blobs still being read, so messages keep the order of the
   * send() calls. Bytes are copied now: the caller may reuse its buffer.
   */
  #sendInOrder(data: SendData): void {
    if (this.#protocol.state !== ReadyState.OPEN) return;
    const snapshot = data instanceof Blob || typeof data === "string"
      ? data
      : toBytes(data).slice();
    const size = snapshot instanceof Blob
      ? snapshot.size
      : typeof snapshot === "string"
      ? snapshot.length
      : snapshot.byteLength;
    // Blobs count against the limit from the moment they are queued.
    if (this.bufferedAmount > this.#init.maxBufferedAmount) return this.#overflow();
    this.#blobBytes += size;
    this.#enqueueOrdered(async () => {
      const bytes = snapshot instanceof Blob
        ? new Uint8Array(await snapshot.arrayBuffer())
        : snapshot;
      this.#blobBytes -= size;
      const sent = typeof bytes === "string"
        ? this.#protocol.sendText(bytes)
        : this.#protocol.sendBinary(bytes);
      if (sent) this.#queued();
    });
  }

  /** Runs `task` after every task queued before it. */
  #enqueueOrdered(task: () => void | Promise<void>): void {
    this.#ordered++;
    const run = (this.#orderQueue ?? Promise.resolve())
      .then(task)
      .catch((err) => this.#fail(toError(err)))
      .finally(() => {
        if (--this.#ordered === 0) this.#orderQueue = null;
      });
    this.#orderQueue = run;
  }

  /** Bytes queued by the protocol, taken but not yet written, and held by the transport. */
  #outputBacklog(): number {
    return this.#protocol.outputBytes + this.#inFlight + this.#transport.bufferedAmount;
  }

  /** A control frame was queued by this side's own `ping()`/`pong()`. */
  #afterSend(): void {
    if (this.bufferedAmount > this.#init.maxBufferedAmount) return this.#overflow();
    this.#queued();
  }

  /** Schedules the write; notes that the sender had to wait behind a write in progress. */
  #queued(): void {
    if (this.#writing) this.#needDrain = true;
    this.#scheduleFlush();
  }

  #overflow(): void {
    const limit = this.#init.maxBufferedAmount;
    this.#failWith(
      new WebSocketError(
        "BUFFER_OVERFLOW",
        CloseCode.PolicyViolation,
        `Send buffer is over maxBufferedAmount (${limit} bytes): the peer is not reading`,
      ),
    );
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#writing) return;
    this.#flushScheduled = true;
    queueMicrotask(() => this.#flush());
  }

  /** Writes everything queued, coalescing small frames into one write. */
  #flush(): void {
    this.#flushScheduled = false;
    if (this.#writing || this.#transportClosed) return;
    const chunks = this.#protocol.takeOutput();
    if (chunks.length === 0) return this.#flushed();
    const batch = chunks.length === 1 ? chunks : coalesce(chunks);
    let total = 0;
    for (const chunk of batch) total += chunk.length;
    this.#inFlight = total;
    this.#writeChunks(batch, 0);
  }

  #writeChunks(chunks: Uint8Array[], index: number): void {
    for (let i = index; i < chunks.length; i++) {
      const chunk = chunks[i];
      // From here on the transport counts these bytes.
      this.#inFlight -= chunk.length;
      let pending: Promise<void> | undefined;
      try {
        pending = this.#transport.write(chunk);
      } catch (err) {
        return this.#writeFailed(err);
      }
      if (pending !== undefined) {
        this.#writing = true;
        this.#waited = true;
        // Deno settles every write later, even one the kernel takes at once:
        // only a sizeable backlog counts as the socket not keeping up.
        if (this.#outputBacklog() > DRAIN_MARK) this.#needDrain = true;
        pending.then(() => {
          this.#writing = false;
          this.#writeChunks(chunks, i + 1);
        }, (err) => {
          this.#writing = false;
          this.#writeFailed(err);
        });
        return;
      }
    }
    this.#inFlight = 0;
    if (this.#protocol.outputBytes > 0) return this.#flush();
    this.#flushed();
  }

  #writeFailed(err: unknown): void {
    this.#inFlight = 0;
    if (!this.#transportClosed) this.#fail(toError(err));
  }

  /** Everything queued is written. */
  #flushed(): void {
    if (this.#drainWaiters.length > 0) {
      const waiters = this.#drainWaiters;
      this.#drainWaiters = [];
      for (const resolve of waiters) resolve();
    }
    if (this.#needDrain) {
      this.#needDrain = false;
      const drain = this.#handlers?.drain;
      if (drain !== undefined) this.#callUser("the drain callback", () => drain(this));
    }
    if (this.#waited) {
      this.#waited = false;
      const hub = this.#init.hub;
      if (hub !== undefined) {
        try {
          hub.drained(this);
        } catch (err) {
          this.#reportElsewhere(toError(err), "the pub/sub layer");
        }
      }
    }
    if (this.#closeWhenFlushed) return this.#closeTransport();
    this.#maybeResume();
  }

  #waitForDrain(): Promise<void> {
    if (this.bufferedAmount === 0 || this.#transportClosed) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  // --- Keepalive ---

  #startKeepalive(): void {
    const settings = this.#init.keepalive;
    if (settings === undefined || this.#transportClosed) return;
    const period = tickPeriod(settings);
    if (period === 0) return;
    const now = performance.now();
    this.#lastHeard = this.#lastMessage = now;
    this.#leaveClock = joinClock({ tick: (at) => this.#tick(at, settings) }, period);
  }

  /**
   * One keepalive check. Deadlines run only while the socket is being read:
   * a peer whose bytes we are not reading (the application is behind) is not
   * blamed for silence.
   */
  #tick(now: number, settings: KeepaliveSettings): void {
    if (this.#transportClosed) return;
    if (this.#heard || this.#readPaused) {
      this.#heard = false;
      this.#lastHeard = now;
      this.#pingSentAt = 0;
    }
    if (this.#heardMessage || this.#readPaused) {
      this.#heardMessage = false;
      this.#lastMessage = now;
    }
    if (this.#protocol.state !== ReadyState.OPEN) return;
    const { pingInterval, pingTimeout, idleTimeout } = settings;
    if (idleTimeout > 0 && now - this.#lastMessage >= idleTimeout) {
      this.#close(CloseCode.GoingAway, "Idle timeout");
      return;
    }
    if (pingInterval <= 0) return;
    if (this.#pingSentAt === 0) {
      if (now - this.#lastHeard >= pingInterval && this.#protocol.ping()) {
        this.#pingSentAt = now;
        this.#queued();
      }
    } else if (pingTimeout > 0 && now - this.#pingSentAt >= pingTimeout) {
      this.#failWith(
        new WebSocketError(
          "PING_TIMEOUT",
          CloseCode.InternalError,
          `Keepalive ping timeout: no answer within ${pingTimeout} ms`,
        ),
      );
    }
  }
}
