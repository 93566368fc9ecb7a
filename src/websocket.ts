/**
 * One open WebSocket connection, server or client side, with both faces users
 * expect: the WHATWG `WebSocket` surface (events, `send`, `close`,
 * `readyState`, `bufferedAmount`, `binaryType`) and a `WebSocketStream`-style
 * view (`readable` of messages, `writable` for sending, `closed`).
 *
 * This is also where bytes move. The hot path reads a chunk from the
 * transport and runs the frame parser and the message assembler over it in
 * one synchronous step (no promise per frame or per message), delivers every
 * message found, then flushes all replies and sends queued during that turn
 * in one socket write.
 *
 * @module
 */

import type { NetAddress, Transport } from "./runtime/transport.ts";
import {
  type MessageCodec,
  type ProtocolHandler,
  ReadyState,
  WebSocketProtocol,
} from "./protocol/connection.ts";
import { CloseCode } from "./protocol/close_codes.ts";
import { parseRequestHead } from "./protocol/http.ts";
import { WebSocketError } from "./protocol/errors.ts";

/** A received message: text as `string`, binary as an exactly sized `Uint8Array`. */
export type Message = string | Uint8Array;

/** What `send()` accepts, as in the WHATWG `WebSocket`. */
export type SendData = string | ArrayBufferLike | ArrayBufferView | Blob;

/** How binary messages appear in `message` events. */
export type BinaryType = "arraybuffer" | "blob";

/** The result of {@linkcode WebSocketConnection.closed}. */
export interface CloseInfo {
  /** The close code: the peer's, 1005 if it sent none, 1006 if the connection dropped. */
  closeCode: number;
  /** The peer's close reason. */
  reason: string;
  /** Whether close frames were exchanged both ways. */
  wasClean: boolean;
}

/** Callbacks for servers that do not want events or streams. */
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
  /** Everything queued was written after a write had to wait. */
  drain?(ws: WebSocketConnection<Data>): void;
  /** The connection failed (protocol violation, socket error, handler exception). */
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
  closeTimeout: number;
  maxBufferedAmount: number;
  /** Bytes of unread messages the `readable` holds before the socket is paused. */
  readableHighWaterMark?: number;
  binaryType: BinaryType;
  data: Data;
  handlers?: WebSocketHandlers<Data>;
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
}

/** Chunks up to this size are copied together into one write; larger ones go as they are. */
const COALESCE_CHUNK = 16 * 1024;
/** The most bytes one coalesced write collects. */
const COALESCE_LIMIT = 64 * 1024;

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
/** The `writable` side waits for the socket once this much is buffered. */
const WRITABLE_HIGH_WATER = 1024 * 1024;
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
export class WebSocketConnection<Data = unknown> extends EventTarget {
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
  /** Bytes arrive through the transport's push path rather than read(). */
  #push = false;
  #closingEarly = false;
  #codec: MessageCodec | null = null;
  #abortConnecting: (() => void) | null = null;
  // Stored with Data erased so WebSocketConnection<Data> stays assignable to WebSocketConnection.
  #init: ConnectionInit<unknown>;
  #subprotocol = "";
  #extensions = "";
  // Raw head bytes until first asked for: a Headers object costs ~1 KiB per idle connection.
  #headers: Headers | Uint8Array | null = null;
  #role: "server" | "client";
  #handlers: WebSocketHandlers<unknown> | undefined;
  #onFinish: ((ws: WebSocketConnection) => void) | undefined;
  #closeTimeout: number;
  #maxBufferedAmount: number;
  #messageListeners = 0;
  #started = false;
  #finished = false;
  #transportClosed = false;
  #transportGone = Promise.withResolvers<void>();

  // Output.
  #flushScheduled = false;
  #writing = false;
  #inFlight = 0;
  #needDrain = false;
  #drainWaiters: (() => void)[] = [];
  #orderQueue: Promise<void> | null = null;
  #ordered = 0;
  #blobBytes = 0;

  // Input backpressure.
  #pending: Promise<void>[] = [];
  #readable: ReadableStream<Message> | null = null;
  #readableController: ReadableStreamDefaultController<Message> | null = null;
  #resume: (() => void) | null = null;
  #writable: WritableStream<SendData> | null = null;

  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #closed: Promise<CloseInfo>;
  #resolveClosed!: (info: CloseInfo) => void;
  #failure: Error | null = null;
  #origin: string;

  /** @internal Connections are made by `serve()` and `connect()`. */
  constructor(init: ConnectionInit<Data>) {
    super();
    this.#init = init as ConnectionInit<unknown>;
    this.#role = init.role;
    this.url = init.url;
    this.data = init.data;
    this.binaryType = init.binaryType;
    this.#handlers = init.handlers as WebSocketHandlers<unknown> | undefined;
    this.#onFinish = init.onFinish as ((ws: WebSocketConnection) => void) | undefined;
    this.#closeTimeout = init.closeTimeout;
    this.#maxBufferedAmount = init.maxBufferedAmount;
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

  /** Bytes queued by `send()` and not yet handed to the kernel. */
  get bufferedAmount(): number {
    if (!this.#attached) return this.#blobBytes;
    return this.#protocol.outputBytes + this.#inFlight + this.#transport.bufferedAmount +
      this.#blobBytes;
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
        pull: () => {
          const resume = this.#resume;
          this.#resume = null;
          resume?.();
        },
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
   * bytes as binary). Writes wait while more than 1 MiB is buffered. Closing
   * it starts the closing handshake with 1000.
   */
  get writable(): WritableStream<SendData> {
    if (this.#writable === null) {
      this.#writable = new WritableStream<SendData>({
        write: (chunk) => {
          if (this.readyState !== ReadyState.OPEN) {
            throw new TypeError("The WebSocket is closing or closed");
          }
          this.send(chunk);
          if (this.bufferedAmount > WRITABLE_HIGH_WATER) return this.#waitForDrain();
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
   * A connection whose buffered output passes `maxBufferedAmount` is closed
   * with 1008 instead of growing without bound.
   */
  send(data: SendData): void {
    if (!this.#attached) {
      throw new DOMException("The WebSocket is still connecting", "InvalidStateError");
    }
    if (this.#ordered > 0 || data instanceof Blob) {
      this.#sendInOrder(data);
      return;
    }
    // Binary payloads over 16 KiB go to the socket from the caller's buffer,
    // without a copy (as npm ws does): see the doc comment.
    const sent = typeof data === "string"
      ? this.#protocol.sendText(data)
      : this.#protocol.sendBinary(toBytes(data));
    if (sent) this.#afterSend();
  }

  /** Sends a ping (payload at most 125 bytes). */
  ping(payload: string | Uint8Array = new Uint8Array(0)): void {
    if (!this.#attached) {
      throw new DOMException("The WebSocket is still connecting", "InvalidStateError");
    }
    const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
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
   * close frame. Throws `InvalidAccessError` for a code other than 1000 or
   * 3000-4999 and `SyntaxError` for a reason over 123 bytes, as the WHATWG
   * API does.
   */
  close(code?: number, reason?: string): void {
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new DOMException(
        `Close code ${code} is not allowed: use 1000 or 3000-4999`,
        "InvalidAccessError",
      );
    }
    if (reason !== undefined && new TextEncoder().encode(reason).length > 123) {
      throw new DOMException("Close reason is over 123 bytes of UTF-8", "SyntaxError");
    }
    this.#close(code ?? (reason ? CloseCode.Normal : undefined), reason ?? "");
  }

  /** @internal Closes with any sendable code (1001 on shutdown, 1011 on errors). */
  _closeWith(code: number, reason: string): void {
    this.#close(code, reason);
  }

  /** Closes the socket at once, without a closing handshake. */
  terminate(): void {
    if (this.#attached) this.#closeTransport();
    else this.#close(undefined, "");
  }

  /** @internal Registers how to abort a handshake in progress (client side). */
  _onAbort(abort: () => void): void {
    this.#abortConnecting = abort;
  }

  /** @internal The opening handshake failed: error, then close with 1006. */
  _failConnecting(error: Error): void {
    if (this.#finished || this.#attached) return;
    this.#failure = error;
    this.#emitError(error);
    this.#finish();
  }

  /** Adds a listener (counting `message` ones: with none, no event object is built). */
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    if (type === "message" && listener !== null) this.#messageListeners++;
    super.addEventListener(type, listener, options);
  }

  /** Removes a listener added with {@linkcode WebSocketConnection.addEventListener}. */
  override removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void {
    // Over-counting only costs an unneeded event object; never under-count.
    super.removeEventListener(type, listener, options);
  }

  /** Dispatches `event` to its listeners, then to its `on<type>` property, as browsers do. */
  override dispatchEvent(event: Event): boolean {
    const result = super.dispatchEvent(event);
    const handler = (this as unknown as Record<string, unknown>)[`on${event.type}`];
    if (typeof handler === "function") handler.call(this, event);
    return result;
  }

  /**
   * @internal Starts the connection: fires `open`, feeds bytes that arrived
   * with the handshake, and runs the read loop.
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
        maxFrameSize: init.maxFrameSize,
        codec: attach.codec,
      },
      {
        text: (data) => this.#deliver(data),
        binary: (data) => this.#deliver(data),
        ping: (payload) => this.#handlers?.ping?.(this, payload),
        pong: (payload) => this.#handlers?.pong?.(this, payload),
      } satisfies ProtocolHandler,
    );
    if (this.#role === "server") return this.#open(initial);
    // A client's caller gets the connection only after this returns (when
    // `await connect()` resumes): open it, and deliver bytes that came with
    // the 101, in a later task, once the caller could attach its handlers.
    setTimeout(() => this.#open(initial), 0);
  }

  #open(initial: Uint8Array | null): void {
    if (this.#transportClosed) return this.#finish();
    try {
      const opened = this.#handlers?.open?.(this);
      if (opened instanceof Promise) opened.catch((err) => this.#handlerFailed(err));
    } catch (err) {
      this.#handlerFailed(err);
    }
    this.dispatchEvent(new Event("open"));
    if (this.#transport.setConsumer !== undefined) this.#startPush(initial);
    else this.#readLoop(initial).catch((err) => this.#fail(err));
  }

  /**
   * Push mode (Bun): each chunk is parsed, delivered and answered inside the
   * socket's own data callback, where the runtime batches our writes.
   */
  #startPush(initial: Uint8Array | null): void {
    const protocol = this.#protocol;
    this.#push = true;
    if (initial !== null && initial.length > 0) {
      protocol.receive(initial);
      this.#afterReceive();
    }
    if (this.#transportClosed) return this.#finishSoon();
    this.#transport.setConsumer!({
      data: (chunk) => {
        if (this.#transportClosed) return false;
        protocol.receive(chunk);
        this.#afterReceive();
        if (this.#canRead()) return true;
        this.#resumeWhenReady().catch((err) => this.#fail(err));
        return false;
      },
      end: (error) => {
        if (error !== null) this.#fail(error);
        else protocol.receiveEnd();
        this.#closeTransport();
      },
    });
  }

  /** Whether the application keeps up: no handler promise pending, readable not full. */
  #canRead(): boolean {
    if (this.#pending.length > 0) return false;
    const controller = this.#readableController;
    return controller === null || (controller.desiredSize ?? 1) > 0;
  }

  async #resumeWhenReady(): Promise<void> {
    await this.#untilCanRead();
    if (!this.#transportClosed) this.#transport.resumeConsumer!();
  }

  /**
   * Waits while the application is behind: for the promises its `message`
   * callbacks returned, and for `readable` to be pulled below its high-water
   * mark. Returns early once the transport closes.
   */
  async #untilCanRead(): Promise<void> {
    while (!this.#transportClosed && !this.#canRead()) {
      if (this.#pending.length > 0) {
        const pending = this.#pending;
        this.#pending = [];
        // A handler promise that never settles must not keep a closed
        // connection from finishing.
        await Promise.race([Promise.all(pending), this.#transportGone.promise]);
      } else {
        await new Promise<void>((resolve) => (this.#resume = resolve));
      }
    }
  }

  /** Finishes in a microtask, so close events never fire inside the call that closed. */
  #finishSoon(): void {
    queueMicrotask(() => this.#finish());
  }

  async #readLoop(initial: Uint8Array | null): Promise<void> {
    const protocol = this.#protocol;
    if (initial !== null && initial.length > 0) {
      protocol.receive(initial);
      this.#afterReceive();
    }
    // Runs until the socket closes. After the closing handshake it keeps
    // reading only to see the peer's EOF (bounded by closeTimeout).
    while (!this.#transportClosed) {
      if (!this.#canRead()) {
        await this.#untilCanRead();
        continue;
      }
      let chunk: Uint8Array | null;
      try {
        chunk = await this.#transport.read();
      } catch (err) {
        this.#fail(err instanceof Error ? err : new Error(String(err)));
        break;
      }
      if (chunk === null) {
        protocol.receiveEnd();
        break;
      }
      protocol.receive(chunk);
      this.#afterReceive();
    }
    this.#closeTransport();
    this.#finish();
  }

  /** After each received chunk: flush replies, act on state changes. */
  #afterReceive(): void {
    const protocol = this.#protocol;
    // Everything this chunk produced (replies, handler sends) is queued now:
    // write it before the next read is issued rather than in a microtask.
    if (protocol.outputBytes > 0 && !this.#writing) this.#flush();
    const state = protocol.state;
    if (state === ReadyState.CLOSING) {
      this.#startCloseTimer();
    } else if (state === ReadyState.CLOSED) {
      const error = protocol.error;
      if (error !== null && this.#failure === null) {
        this.#failure = error;
        this.#emitError(error);
      }
      // The server closes TCP first (§7.1.1); a client, and any side that
      // failed the connection, as soon as its close frame is out.
      if (this.#role === "server" || error !== null) this.#closeAfterFlush();
      else this.#startCloseTimer();
    }
  }

  #deliver(message: Message): void {
    const controller = this.#readableController;
    if (controller !== null) {
      controller.enqueue(message);
      return;
    }
    const handlers = this.#handlers;
    if (handlers?.message !== undefined) {
      try {
        const result = handlers.message(this, message);
        if (result instanceof Promise) {
          this.#pending.push(result.catch((err) => this.#handlerFailed(err)));
        }
      } catch (err) {
        this.#handlerFailed(err);
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

  #handlerFailed(err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    this.#emitError(error);
    this.#close(CloseCode.InternalError, "Internal error");
  }

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
    const protocol = this.#protocol;
    if (protocol.state !== ReadyState.OPEN) return;
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
    this.#startCloseTimer();
  }

  /**
   * Sends behind Blobs still being read, so messages keep the order of the
   * send() calls. Bytes are copied now: the caller may reuse its buffer.
   */
  #sendInOrder(data: SendData): void {
    const snapshot = data instanceof Blob || typeof data === "string"
      ? data
      : toBytes(data).slice();
    const size = snapshot instanceof Blob
      ? snapshot.size
      : typeof snapshot === "string"
      ? snapshot.length
      : snapshot.byteLength;
    this.#blobBytes += size;
    this.#enqueueOrdered(async () => {
      const bytes = snapshot instanceof Blob
        ? new Uint8Array(await snapshot.arrayBuffer())
        : snapshot;
      this.#blobBytes -= size;
      const sent = typeof bytes === "string"
        ? this.#protocol.sendText(bytes)
        : this.#protocol.sendBinary(bytes);
      if (sent) this.#afterSend();
    });
  }

  /** Runs `task` after every task queued before it. */
  #enqueueOrdered(task: () => void | Promise<void>): void {
    this.#ordered++;
    const run = (this.#orderQueue ?? Promise.resolve())
      .then(task)
      .catch((err) => this.#fail(err instanceof Error ? err : new Error(String(err))))
      .finally(() => {
        if (--this.#ordered === 0) this.#orderQueue = null;
      });
    this.#orderQueue = run;
  }

  #afterSend(): void {
    if (this.bufferedAmount > this.#maxBufferedAmount) {
      const error = new WebSocketError(
        "BUFFER_OVERFLOW",
        CloseCode.PolicyViolation,
        `Send buffer is over maxBufferedAmount (${this.#maxBufferedAmount} bytes): the peer is not reading`,
      );
      this.#failure = error;
      this.#emitError(error);
      this.#closeTransport();
      return;
    }
    this.#scheduleFlush();
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
    let total = 0;
    for (const chunk of chunks) total += chunk.length;
    this.#inFlight = total;
    this.#writeChunks(chunks.length === 1 ? chunks : coalesce(chunks), 0);
  }

  #writeChunks(chunks: Uint8Array[], index: number): void {
    for (let i = index; i < chunks.length; i++) {
      let pending: Promise<void> | undefined;
      try {
        pending = this.#transport.write(chunks[i]);
      } catch (err) {
        return this.#writeFailed(err);
      }
      if (pending !== undefined) {
        this.#writing = true;
        this.#needDrain = true;
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
    if (!this.#transportClosed) {
      this.#fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /** Everything queued is written. */
  #flushed(): void {
    if (this.#needDrain) {
      this.#needDrain = false;
      const waiters = this.#drainWaiters;
      this.#drainWaiters = [];
      for (const resolve of waiters) resolve();
      this.#handlers?.drain?.(this);
    }
    if (this.#closeWhenFlushed) this.#closeTransport();
  }

  #closeWhenFlushed = false;

  #closeAfterFlush(): void {
    this.#closeWhenFlushed = true;
    if (!this.#writing && !this.#flushScheduled && this.#protocol.outputBytes === 0) {
      this.#closeTransport();
    }
  }

  #waitForDrain(): Promise<void> {
    if (this.bufferedAmount === 0 || this.#transportClosed) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  #startCloseTimer(): void {
    if (this.#closeTimer !== undefined || this.#transportClosed) return;
    this.#closeTimer = setTimeout(() => {
      this.#closeTimer = undefined;
      this.#closeTransport();
    }, this.#closeTimeout);
  }

  #fail(error: Error): void {
    if (this.#failure === null && !this.#finished) {
      this.#failure = error;
      this.#emitError(error);
    }
    this.#closeTransport();
  }

  #emitError(error: Error): void {
    try {
      this.#handlers?.error?.(this, error);
    } catch {
      // A failing error handler must not take the server down.
    }
    this.dispatchEvent(new ErrorEvent("error", { error, message: error.message }));
  }

  #closeTransport(): void {
    if (this.#transportClosed || !this.#attached) return;
    this.#transportClosed = true;
    this.#transportGone.resolve();
    if (this.#closeTimer !== undefined) {
      clearTimeout(this.#closeTimer);
      this.#closeTimer = undefined;
    }
    this.#transport.close();
    this.#protocol.receiveEnd();
    for (const resolve of this.#drainWaiters) resolve();
    this.#drainWaiters = [];
    const resume = this.#resume;
    this.#resume = null;
    resume?.();
    // The read loop sees the closed transport and calls #finish(); in push
    // mode there is no loop to see it.
    if (!this.#started) this.#finish();
    else if (this.#push) this.#finishSoon();
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

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    try {
      this.#codec?.close?.();
    } catch {
      // Freeing zlib memory must not stop the close from being reported.
    }
    const protocol = this.#attached ? this.#protocol : null;
    const info: CloseInfo = {
      closeCode: protocol?.closeCode ?? CloseCode.Abnormal,
      reason: protocol?.closeReason ?? "",
      wasClean: protocol?.wasClean ?? false,
    };
    this.#endReadable();
    this.#resolveClosed(info);
    try {
      this.#handlers?.close?.(this, info.closeCode, info.reason);
    } catch (err) {
      this.#emitError(err instanceof Error ? err : new Error(String(err)));
    }
    this.dispatchEvent(
      new CloseEvent("close", {
        code: info.closeCode,
        reason: info.reason,
        wasClean: info.wasClean,
      }),
    );
    this.#onFinish?.(this);
  }
}
