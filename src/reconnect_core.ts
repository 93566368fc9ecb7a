/**
 * The reconnect logic of {@linkcode ReconnectingWebSocket}, over any
 * connection a {@linkcode SocketOpener} makes: Sluice's own `connect()` in
 * Deno and Bun (`src/reconnect.ts`), the browser's `WebSocket` in
 * `browser.ts`. Backoff, jitter, the reconnection policy and the send queue
 * live here once.
 *
 * Nothing here imports a runtime, Node module or socket code (only types and
 * the error classes), so this file bundles for a browser.
 *
 * @module
 */

import type { CloseInfo, SendData } from "./websocket.ts";
import { HandshakeError, WebSocketError } from "./protocol/errors.ts";
import { clampCloseCode } from "./ws_url.ts";

/**
 * How the backoff delay is randomised, so that many clients dropped at once
 * (a server restart) do not come back at once:
 * - `"full"`: uniform between `minDelay` and the backoff ceiling;
 * - `"equal"`: uniform between half the ceiling and the ceiling (never below `minDelay`);
 * - `"none"`: exactly the ceiling.
 *
 * @example Predictable delays: 100, 200, 400, 800, 800, ... ms
 * ```ts
 * import { type JitterMode, ReconnectingWebSocket } from "@sluice/ws";
 * const jitter: JitterMode = "none";
 * const ws = new ReconnectingWebSocket("ws://127.0.0.1:9/", { minDelay: 100, maxDelay: 800, jitter });
 * ws.close();
 * ```
 */
export type JitterMode = "full" | "equal" | "none";

/**
 * What `send()` does while no connection is open.
 *
 * @example A ticker where stale orders must never go out late
 * ```ts
 * import { type DisconnectedPolicy, ReconnectingWebSocket } from "@sluice/ws";
 * const whileDisconnected: DisconnectedPolicy = "reject";
 * const ws = new ReconnectingWebSocket("ws://127.0.0.1:9/", { whileDisconnected });
 * try {
 *   ws.send("BUY 1 ACME");
 * } catch (err) {
 *   console.log((err as DOMException).name); // "InvalidStateError"
 * }
 * ws.close();
 * ```
 */
export type DisconnectedPolicy = "queue" | "reject";

/**
 * How a connection or connection attempt ended, as seen by `shouldReconnect`.
 *
 * @example Never retry a refused login
 * ```ts
 * import { type ConnectionEnd, HandshakeError, ReconnectingWebSocket } from "@sluice/ws";
 * const shouldReconnect = (end: ConnectionEnd) =>
 *   !(end.error instanceof HandshakeError && end.error.status === 401);
 * const ws = new ReconnectingWebSocket("ws://127.0.0.1:9/", { shouldReconnect });
 * ws.close();
 * ```
 */
export interface ConnectionEnd extends CloseInfo {
  /**
   * The error that ended it: a `HandshakeError` when the handshake failed,
   * a `WebSocketError` for a protocol violation, a socket error, or `null`
   * for a closing handshake.
   */
  error: Error | null;
  /** Whether this connection opened before it ended. */
  opened: boolean;
}

/**
 * The backoff, policy and queue options every reconnecting client takes:
 * {@linkcode ReconnectOptions} in Deno and Bun (with every `connect()`
 * option), `BrowserReconnectOptions` in a browser.
 *
 * @example Backoff between 1 and 30 seconds, at most 100 queued messages
 * ```ts
 * import type { ReconnectPolicyOptions } from "@sluice/ws";
 * const policy: ReconnectPolicyOptions = { minDelay: 1_000, maxDelay: 30_000, maxQueued: 100 };
 * console.log(policy.jitter ?? "full");
 * ```
 */
export interface ReconnectPolicyOptions {
  /** Milliseconds before the first reconnection attempt (> 0); no delay is shorter. @default {500} */
  minDelay?: number;
  /** Milliseconds no delay exceeds. @default {30000} */
  maxDelay?: number;
  /** Each consecutive failure multiplies the backoff ceiling by this. @default {2} */
  factor?: number;
  /** How the delay is randomised. @default {"full"} */
  jitter?: JitterMode;
  /**
   * Consecutive reconnection attempts before giving up (the `close` event
   * then fires). `0` never reconnects. @default {Infinity}
   */
  maxAttempts?: number;
  /**
   * Milliseconds a connection must stay open before the backoff starts over
   * from `minDelay`; a server that accepts and drops at once still backs off.
   * @default {5000}
   */
  stableAfter?: number;
  /** Also reconnect after a normal close (1000, or a close frame without a code). @default {false} */
  reconnectOnNormalClose?: boolean;
  /**
   * Decides whether to reconnect after a connection or attempt ended; replaces
   * the default policy (see {@linkcode shouldReconnectByDefault}).
   */
  shouldReconnect?: (end: ConnectionEnd) => boolean;
  /**
   * While disconnected, `"queue"` keeps sent messages and sends them once
   * reconnected; `"reject"` makes `send()` throw `InvalidStateError`.
   * @default {"queue"}
   */
  whileDisconnected?: DisconnectedPolicy;
  /** Most messages the queue holds; one more makes `send()` throw `RangeError`. @default {1024} */
  maxQueued?: number;
  /** Most bytes the queue holds; more makes `send()` throw `RangeError`. @default {1048576} */
  maxQueuedBytes?: number;
  /** Aborting it is `close(1000)`: stops reconnecting and closes the connection. */
  signal?: AbortSignal;
  /** How binary messages appear in `message` events. @default {"arraybuffer"} */
  binaryType?: "arraybuffer" | "blob";
}

/**
 * Fired when a connection (or attempt) ended and another attempt is scheduled.
 *
 * @example Showing the state in a UI
 * ```ts
 * import { ReconnectingWebSocket } from "@sluice/ws";
 * const ws = new ReconnectingWebSocket("ws://127.0.0.1:9/feed", { maxAttempts: 1 });
 * ws.addEventListener("reconnecting", (event) => {
 *   console.log(`Lost (${event.closeCode}); attempt ${event.attempt} in ${event.delay} ms`);
 * });
 * ws.close();
 * ```
 */
export class ReconnectEvent extends Event {
  /** The number of the upcoming attempt since the last stable connection, from 1. */
  readonly attempt: number;
  /** Milliseconds until that attempt starts. */
  readonly delay: number;
  /** How the last connection ended: its close code (1006 when it failed or never opened). */
  readonly closeCode: number;
  /** The close reason the peer gave. */
  readonly reason: string;
  /** Whether the last connection had a closing handshake. */
  readonly wasClean: boolean;
  /** The error that ended it, if any. */
  readonly error: Error | null;

  /** Creates the event for attempt `attempt` after `delay` ms. */
  constructor(attempt: number, delay: number, end: ConnectionEnd) {
    super("reconnecting");
    this.attempt = attempt;
    this.delay = delay;
    this.closeCode = end.closeCode;
    this.reason = end.reason;
    this.wasClean = end.wasClean;
    this.error = end.error;
  }
}

/**
 * The events a {@linkcode ReconnectingWebSocket} fires; `addEventListener`
 * is typed by it.
 *
 * @example Typed listeners
 * ```ts
 * import { ReconnectingWebSocket } from "@sluice/ws";
 * const ws = new ReconnectingWebSocket("ws://127.0.0.1:9/", { maxAttempts: 0 });
 * ws.addEventListener("error", (event) => console.log(event.error)); // an ErrorEvent
 * ws.addEventListener("close", (event) => console.log(event.code)); // a CloseEvent: 1006
 * await ws.closed;
 * ```
 */
export interface ReconnectingWebSocketEventMap {
  /** A connection opened (the first one or a reconnection). */
  open: Event;
  /** A message arrived on the current connection. */
  message: MessageEvent;
  /** A connection or attempt failed (handshake error, protocol error, socket error). */
  error: ErrorEvent;
  /** A connection ended and another attempt is scheduled. */
  reconnecting: ReconnectEvent;
  /** Closed for good: by `close()`, the signal, the policy, or `maxAttempts`. Fires once. */
  close: CloseEvent;
}

/** Close codes after which the server is expected back (RFC 6455 §7.4.1, IANA registry). */
const TRANSIENT_CLOSE_CODES = new Set([
  1001, // Going away: server restart, deploy.
  1006, // Dropped without a close frame.
  1011, // Internal error (also a keepalive ping timeout).
  1012, // Service restart.
  1013, // Try again later.
  1014, // Bad gateway.
]);

/**
 * The default reconnection policy:
 * - a failed handshake: retry on a network error, a timeout, 408, 429 and
 *   5xx; not on other statuses (wrong URL, refused credentials, a response
 *   that is not a WebSocket one), nor on `TypeError`/`SyntaxError` (bad
 *   options);
 * - a connection we failed because the server broke the protocol: retry
 *   (the backoff bounds the cost), except for a message over
 *   `maxMessageSize` (1009), which would only come again;
 * - a connection the server closed: retry on 1001, 1006, 1011, 1012, 1013
 *   and 1014; on 1000 and 1005 only with `reconnectOnNormalClose`; not on
 *   other codes (1002, 1003, 1007, 1008 policy violation, 1009, 1010,
 *   application codes 3000-4999).
 *
 * @example Keeping the default and adding an application code
 * ```ts
 * import { ReconnectingWebSocket, shouldReconnectByDefault } from "@sluice/ws";
 * const ws = new ReconnectingWebSocket("ws://127.0.0.1:9/", {
 *   shouldReconnect: (end) => end.closeCode === 4000 || shouldReconnectByDefault(end, false),
 * });
 * ws.close();
 * ```
 */
export function shouldReconnectByDefault(
  end: ConnectionEnd,
  reconnectOnNormalClose: boolean,
): boolean {
  const error = end.error;
  if (error instanceof HandshakeError) {
    const status = error.status;
    return status === 0 || status === 408 || status === 429 || status >= 500;
  }
  if (error instanceof TypeError) return false;
  if (error instanceof DOMException && error.name === "SyntaxError") return false;
  if (error instanceof WebSocketError) return error.closeCode !== 1009;
  if (!end.opened) return true; // Refused, reset or unreachable: the server may come back.
  if (end.closeCode === 1000 || end.closeCode === 1005) return reconnectOnNormalClose;
  return TRANSIENT_CLOSE_CODES.has(end.closeCode);
}

const encoder = new TextEncoder();
const OPEN = 1;
/** The longest delay `setTimeout` takes (2^31-1 ms); longer ones fire at once. */
const MAX_TIMER_DELAY = 2 ** 31 - 1;

function sendSize(data: SendData): number {
  if (typeof data === "string") return encoder.encode(data).length;
  if (data instanceof Blob) return data.size;
  return data.byteLength;
}

/** A copy of a byte view, since the caller may reuse its buffer after send(). */
function snapshot(data: SendData): SendData {
  if (typeof data === "string" || data instanceof Blob) return data;
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice();
  }
  return new Uint8Array(data).slice();
}

function nonNegative(name: string, value: number): number {
  if (!(typeof value === "number" && value >= 0)) {
    throw new RangeError(`Option ${name} must be a number >= 0, got ${value}`);
  }
  return value;
}

const ABNORMAL: CloseInfo = { closeCode: 1006, reason: "", wasClean: false };

/**
 * What the reconnect logic needs of a connection: the part of the WHATWG
 * `WebSocket` surface both Sluice's connections and the browser's have.
 *
 * @example The browser's WebSocket fits
 * ```ts
 * import type { ReconnectableSocket } from "@sluice/ws";
 * const fits = (ws: WebSocket): ReconnectableSocket => ws;
 * console.log(typeof fits);
 * ```
 */
export interface ReconnectableSocket {
  /** 1 while open, as `WebSocket.OPEN`. */
  readonly readyState: number;
  /** The agreed subprotocol, or `""`. */
  readonly protocol: string;
  /** Bytes sent but not yet written out. */
  readonly bufferedAmount: number;
  /** Sends a message. */
  send(data: SendData): void;
  /** Starts the closing handshake. */
  close(code?: number, reason?: string): void;
}

/**
 * What a {@linkcode SocketOpener} is given for one attempt.
 *
 * @example An opener that only logs what it is given
 * ```ts
 * import type { OpenAttempt } from "@sluice/ws";
 * const show = (init: OpenAttempt) => console.log(init.binaryType, init.signal.aborted);
 * console.log(typeof show);
 * ```
 */
export interface OpenAttempt {
  /** Aborted when `close()` gives up the attempt: the opener rejects and drops the connection. */
  signal: AbortSignal;
  /** The binary type asked for. */
  binaryType: "arraybuffer" | "blob";
  /** Call for every message, from the first one (even before the opener resolves). */
  onMessage(data: string | Uint8Array | ArrayBuffer): void;
  /** Call when the connection fails (before it closes). */
  onError(error: Error): void;
}

/**
 * An open connection and the promise of its end.
 *
 * @example Wrapping a connection that has its own `closed` promise
 * ```ts
 * import { connect, type OpenedSocket, type WebSocketConnection } from "@sluice/ws";
 * const wrap = (ws: WebSocketConnection<undefined>): OpenedSocket<typeof ws> => ({
 *   socket: ws,
 *   closed: ws.closed,
 * });
 * console.log(typeof wrap, typeof connect);
 * ```
 */
export interface OpenedSocket<S> {
  /** The open connection. */
  socket: S;
  /** Resolves (never rejects) once it closed, with its close info. */
  closed: Promise<CloseInfo>;
}

/**
 * Opens one connection to `url`: resolves once it is open, rejects if the
 * attempt fails or `init.signal` aborts it.
 *
 * @example The shape of an opener
 * ```ts
 * import type { ReconnectableSocket, SocketOpener } from "@sluice/ws";
 * const never: SocketOpener<ReconnectableSocket> = (url) =>
 *   Promise.reject(new Error(`Not connecting to ${url}`));
 * console.log(typeof never);
 * ```
 */
export type SocketOpener<S extends ReconnectableSocket> = (
  url: string,
  init: OpenAttempt,
) => Promise<OpenedSocket<S>>;

/**
 * The reconnecting client over any {@linkcode SocketOpener}; what
 * {@linkcode ReconnectingWebSocket} (Deno, Bun) and the browser entry
 * point's `ReconnectingWebSocket` extend. See the former for the behaviour.
 *
 * @example A reconnecting client over the runtime's own WebSocket class
 * ```ts
 * import { ReconnectingSocket } from "@sluice/ws";
 * const ws = new ReconnectingSocket<WebSocket>("ws://127.0.0.1:9/", { maxAttempts: 0 }, (url) =>
 *   Promise.reject(new Error(`Not connecting to ${url}`)));
 * await ws.closed;
 * ```
 */
export class ReconnectingSocket<S extends ReconnectableSocket> extends EventTarget {
  /** Between connections. */
  static readonly CONNECTING = 0;
  /** A connection is open. */
  static readonly OPEN = 1;
  /** `close()` was called; the current connection is closing. */
  static readonly CLOSING = 2;
  /** Closed for good. */
  static readonly CLOSED = 3;

  /** The URL connected to (`ws:` or `wss:`). */
  readonly url: string;

  #options: ReconnectPolicyOptions;
  #open: SocketOpener<S>;
  #minDelay: number;
  #maxDelay: number;
  #factor: number;
  #maxAttempts: number;
  #stableAfter: number;
  #jitter: JitterMode;
  #policy: DisconnectedPolicy;
  #maxQueued: number;
  #maxQueuedBytes: number;
  #binaryType: "arraybuffer" | "blob";

  #ws: S | null = null;
  #attempt: AbortController | null = null;
  #wake: (() => void) | null = null;
  #stop: { code?: number; reason?: string } | null = null;
  #finished = false;
  #inOpen = false;
  #queue: { data: SendData; size: number }[] = [];
  #queuedBytes = 0;
  #closed: Promise<CloseInfo>;
  #resolveClosed!: (info: CloseInfo) => void;
  #onAbort = () => this.close(1000); // As connect() does with its signal.

  /**
   * Starts connecting to `url` (already checked) with `open`. Throws
   * `RangeError` for invalid options.
   */
  constructor(url: string, options: ReconnectPolicyOptions, open: SocketOpener<S>) {
    super();
    this.url = url;
    this.#options = options;
    this.#open = open;
    this.#minDelay = options.minDelay ?? 500;
    if (!(typeof this.#minDelay === "number" && this.#minDelay > 0)) {
      // Zero would retry in a tight loop against a server that is down.
      throw new RangeError(`Option minDelay must be a number > 0, got ${this.#minDelay}`);
    }
    this.#maxDelay = nonNegative("maxDelay", options.maxDelay ?? 30_000);
    if (this.#maxDelay < this.#minDelay) {
      throw new RangeError(
        `Option maxDelay (${this.#maxDelay}) must not be below minDelay (${this.#minDelay})`,
      );
    }
    this.#factor = options.factor ?? 2;
    if (!(this.#factor >= 1)) {
      throw new RangeError(`Option factor must be >= 1, got ${this.#factor}`);
    }
    this.#maxAttempts = nonNegative("maxAttempts", options.maxAttempts ?? Infinity);
    this.#stableAfter = nonNegative("stableAfter", options.stableAfter ?? 5_000);
    this.#jitter = options.jitter ?? "full";
    if (!["full", "equal", "none"].includes(this.#jitter)) {
      throw new RangeError(`Option jitter must be "full", "equal" or "none", got ${this.#jitter}`);
    }
    this.#policy = options.whileDisconnected ?? "queue";
    if (this.#policy !== "queue" && this.#policy !== "reject") {
      throw new RangeError(
        `Option whileDisconnected must be "queue" or "reject", got ${this.#policy}`,
      );
    }
    this.#maxQueued = nonNegative("maxQueued", options.maxQueued ?? 1024);
    this.#maxQueuedBytes = nonNegative("maxQueuedBytes", options.maxQueuedBytes ?? 1024 * 1024);
    this.#binaryType = options.binaryType ?? "arraybuffer";
    this.#closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    if (options.signal?.aborted) {
      this.#stop = {};
      queueMicrotask(() => this.#finish(ABNORMAL));
      return;
    }
    options.signal?.addEventListener("abort", this.#onAbort, { once: true });
    this.#run().catch((err) => {
      // Only a bug in a listener-independent path gets here; never leave it unhandled.
      this.#emitError(err instanceof Error ? err : new Error(String(err)));
      this.#finish(ABNORMAL);
    });
  }

  /** 0 between connections, 1 open, 2 closing after `close()`, 3 closed for good. */
  get readyState(): number {
    if (this.#finished) return ReconnectingSocket.CLOSED;
    if (this.#stop !== null) return ReconnectingSocket.CLOSING;
    return this.#ws?.readyState === OPEN ? ReconnectingSocket.OPEN : ReconnectingSocket.CONNECTING;
  }

  /** The current connection, or `null` between connections. */
  get socket(): S | null {
    return this.#ws;
  }

  /** The current connection's subprotocol, or `""`. */
  get protocol(): string {
    return this.#ws?.protocol ?? "";
  }

  /** Queued bytes plus the current connection's unsent bytes. */
  get bufferedAmount(): number {
    return this.#queuedBytes + (this.#ws?.bufferedAmount ?? 0);
  }

  /** Messages waiting in the queue for a connection. */
  get queuedMessages(): number {
    return this.#queue.length;
  }

  /** How binary messages appear in `message` events; applies to the current connection too. */
  get binaryType(): "arraybuffer" | "blob" {
    return this.#binaryType;
  }

  set binaryType(value: "arraybuffer" | "blob") {
    this.#binaryType = value;
  }

  /** Resolves once closed for good, with the last connection's close info. Never rejects. */
  get closed(): Promise<CloseInfo> {
    return this.#closed;
  }

  /**
   * Sends on the open connection, or applies the `whileDisconnected` policy.
   * Throws `InvalidStateError` after `close()` or (policy `"reject"`) while
   * disconnected, and `RangeError` when the queue is full.
   */
  send(data: SendData): void {
    if (this.#finished || this.#stop !== null) {
      throw new DOMException("The ReconnectingWebSocket is closed", "InvalidStateError");
    }
    const ws = this.#ws;
    if (
      ws !== null && ws.readyState === OPEN &&
      (this.#queue.length === 0 || this.#inOpen)
    ) {
      ws.send(data);
      return;
    }
    if (this.#policy === "reject") {
      throw new DOMException(
        'Not connected: the message was not sent (whileDisconnected is "reject")',
        "InvalidStateError",
      );
    }
    const size = sendSize(data);
    if (this.#queue.length + 1 > this.#maxQueued) {
      throw new RangeError(
        `Send queue is full (${this.#maxQueued} messages, option maxQueued): not connected`,
      );
    }
    if (this.#queuedBytes + size > this.#maxQueuedBytes) {
      throw new RangeError(
        `Send queue is full (${this.#queuedBytes} + ${size} bytes is over maxQueuedBytes ` +
          `${this.#maxQueuedBytes}): not connected`,
      );
    }
    this.#queue.push({ data: snapshot(data), size });
    this.#queuedBytes += size;
  }

  /**
   * Stops reconnecting and closes the current connection with `code` and
   * `reason` (validated as `WebSocket.close()` does), or abandons the attempt
   * or wait in progress. Queued messages are discarded. Idempotent.
   */
  close(code?: number, reason?: string): void {
    // As the WHATWG close(): [Clamp] first, so that the inner socket never
    // refuses a code let through here (it would stay open, CLOSING forever).
    code = clampCloseCode(code);
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new DOMException(
        `Close code ${code} is not allowed: use 1000 or 3000-4999`,
        "InvalidAccessError",
      );
    }
    if (reason !== undefined && encoder.encode(reason).length > 123) {
      throw new DOMException("Close reason is over 123 bytes of UTF-8", "SyntaxError");
    }
    if (this.#finished || this.#stop !== null) return;
    this.#stop = { code, reason };
    this.#queue = [];
    this.#queuedBytes = 0;
    const ws = this.#ws;
    if (ws !== null) ws.close(code, reason);
    this.#attempt?.abort();
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** The delay before attempt `attempt` (1-based), as documented on {@linkcode JitterMode}. */
  #delayFor(attempt: number): number {
    // Past the cap the power may overflow to Infinity, which min() absorbs.
    const ceiling = Math.min(this.#maxDelay, this.#minDelay * this.#factor ** (attempt - 1));
    let delay: number;
    switch (this.#jitter) {
      case "none":
        delay = ceiling;
        break;
      case "equal":
        delay = Math.max(this.#minDelay, ceiling / 2 + Math.random() * (ceiling / 2));
        break;
      default:
        delay = this.#minDelay + Math.random() * (ceiling - this.#minDelay);
    }
    // setTimeout takes at most 2^31-1 ms: a longer delay would fire at once.
    return Math.min(Math.round(delay), MAX_TIMER_DELAY);
  }

  async #run(): Promise<void> {
    let failures = 0;
    for (;;) {
      const openedAt = { time: 0 };
      const end = await this.#connectOnce(openedAt);
      if (this.#stop !== null) return this.#finish(end);
      if (end.opened && Date.now() - openedAt.time >= this.#stableAfter) failures = 0;
      failures++;
      const decide = this.#options.shouldReconnect ??
        ((e: ConnectionEnd) =>
          shouldReconnectByDefault(e, this.#options.reconnectOnNormalClose ?? false));
      if (failures > this.#maxAttempts || !decide(end)) return this.#finish(end);
      const delay = this.#delayFor(failures);
      this.dispatchEvent(new ReconnectEvent(failures, delay, end));
      if (this.#stop !== null) return this.#finish(ABNORMAL);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.#wake = null;
          resolve();
        }, delay);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      if (this.#stop !== null) return this.#finish(ABNORMAL);
    }
  }

  /** One connection attempt and, if it opens, the connection's lifetime. */
  async #connectOnce(openedAt: { time: number }): Promise<ConnectionEnd> {
    const attempt = new AbortController();
    this.#attempt = attempt;
    let lastError: Error | null = null;
    let open = false;
    // Messages that arrive before the opener resolves (with the 101) wait for `open`.
    const early: (string | Uint8Array | ArrayBuffer)[] = [];
    let opened: OpenedSocket<S>;
    try {
      opened = await this.#open(this.url, {
        signal: attempt.signal,
        binaryType: this.#binaryType,
        onMessage: (data) => {
          if (open) this.#deliver(data);
          else early.push(data);
        },
        onError: (error) => {
          lastError ??= error;
          if (open) this.#emitError(error);
        },
      });
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.#attempt = null;
      if (this.#stop === null) this.#emitError(error);
      return { ...ABNORMAL, error, opened: false };
    }
    const ws = opened.socket;
    this.#attempt = null;
    if (this.#stop !== null) {
      // close() raced with the end of the handshake.
      ws.close(this.#stop.code, this.#stop.reason);
      const info = await opened.closed;
      return { ...info, error: null, opened: true };
    }
    this.#ws = ws;
    openedAt.time = Date.now();
    open = true;
    // Sends from open listeners (authentication, resubscription) go before the queue.
    this.#inOpen = true;
    try {
      this.dispatchEvent(new Event("open"));
    } finally {
      this.#inOpen = false;
    }
    this.#flushQueue(ws);
    for (const data of early) this.#deliver(data);
    early.length = 0;
    // A failure found in the bytes that came with the 101 is reported after them.
    if (lastError !== null) this.#emitError(lastError);
    const info = await opened.closed;
    this.#ws = null;
    return { ...info, error: lastError, opened: true };
  }

  #flushQueue(ws: S): void {
    while (this.#queue.length > 0 && ws.readyState === OPEN) {
      const { data, size } = this.#queue.shift()!;
      this.#queuedBytes -= size;
      ws.send(data);
    }
  }

  #deliver(message: string | Uint8Array | ArrayBuffer): void {
    let data: string | ArrayBuffer | Blob;
    if (typeof message === "string") data = message;
    else if (message instanceof ArrayBuffer) {
      data = this.#binaryType === "blob" ? new Blob([message]) : message;
    } else if (this.#binaryType === "blob") data = new Blob([message as Uint8Array<ArrayBuffer>]);
    else if (message.byteOffset === 0 && message.byteLength === message.buffer.byteLength) {
      data = message.buffer as ArrayBuffer;
    } else data = message.slice().buffer;
    this.dispatchEvent(new MessageEvent("message", { data, origin: new URL(this.url).origin }));
  }

  #emitError(error: Error): void {
    this.dispatchEvent(new ErrorEvent("error", { error, message: error.message }));
  }

  #finish(info: CloseInfo): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#ws = null;
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#options.signal?.removeEventListener("abort", this.#onAbort);
    const result: CloseInfo = {
      closeCode: info.closeCode,
      reason: info.reason,
      wasClean: info.wasClean,
    };
    this.#resolveClosed(result);
    this.dispatchEvent(
      new CloseEvent("close", {
        code: result.closeCode,
        reason: result.reason,
        wasClean: result.wasClean,
      }),
    );
  }

  /** Adds a listener; typed for the events in {@linkcode ReconnectingWebSocketEventMap}. */
  override addEventListener<K extends keyof ReconnectingWebSocketEventMap>(
    type: K,
    listener:
      | ((this: this, event: ReconnectingWebSocketEventMap[K]) => void)
      | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Adds a listener for any event type. */
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    super.addEventListener(type, listener, options);
  }

  /** Removes a listener added with `addEventListener`. */
  override removeEventListener<K extends keyof ReconnectingWebSocketEventMap>(
    type: K,
    listener:
      | ((this: this, event: ReconnectingWebSocketEventMap[K]) => void)
      | null,
    options?: boolean | EventListenerOptions,
  ): void;
  /** Removes a listener for any event type. */
  override removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
  override removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void {
    super.removeEventListener(type, listener, options);
  }
}
