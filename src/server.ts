/**
 * The WebSocket server: accepts TCP (or TLS) connections, runs the opening
 * handshake with its limits and hooks, and hands each upgraded connection to
 * the application.
 *
 * @module
 */

import { checkKeepalive, type KeepaliveSettings } from "./keepalive.ts";
import { readFile } from "node:fs/promises";
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import type { ChunkConsumer, Listener, NetAddress, Transport } from "./runtime/transport.ts";
import { currentRuntime } from "./runtime/mod.ts";
import {
  type AcceptedUpgrade,
  type HandshakeVerdict,
  type ParsedUpgrade,
  type PlainRequestVerdict,
  selectSubprotocol,
  ServerHandshake,
  type ServerHandshakeOptions,
} from "./protocol/server_handshake.ts";
import { HandshakeError, toError } from "./protocol/errors.ts";
import { type DeflateOptions, resolveDeflateOptions } from "./protocol/permessage_deflate.ts";
import { assertZlibSupported, PerMessageDeflate } from "./protocol/deflate_codec.ts";
import { CloseCode, isValidWireCloseCode } from "./protocol/close_codes.ts";
import {
  type BinaryType,
  type ConnectionInit,
  WebSocketConnection,
  type WebSocketHandlers,
} from "./websocket.ts";
import { type PublishOptions, PubSub, type PubSubOptions, type ServerStats } from "./pubsub.ts";
import { type FetchHandler, HttpConnection } from "./http_responder.ts";
import { DEFAULT_MAX_BODY_SIZE } from "./protocol/http1.ts";
import type { HeadFields } from "./protocol/http.ts";
import { type Broker, type BrokerHealth, BrokerLink } from "./broker.ts";

/** TLS material for {@linkcode serve}: PEM strings or PEM file paths. */
export type TlsOptions = { cert: string; key: string } | { certFile: string; keyFile: string };

async function loadTls(tls: TlsOptions): Promise<{ cert: string; key: string }> {
  const [cert, key] = "cert" in tls ? [tls.cert, tls.key] : await Promise.all([
    readFile(tls.certFile, "utf8"),
    readFile(tls.keyFile, "utf8"),
  ]);
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (error) {
    throw new TypeError(
      `Invalid TLS certificate (tls.cert or tls.certFile must be PEM): ${toError(error).message}`,
      { cause: error },
    );
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new TypeError(
      `Invalid TLS private key (tls.key or tls.keyFile must be PEM): ${toError(error).message}`,
      { cause: error },
    );
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new TypeError(
      "The TLS private key does not match the certificate: give the key the certificate was made for",
    );
  }
  return { cert, key };
}

/** What the `onUpgrade` hook sees of an upgrade request. */
export interface UpgradeRequestInfo {
  /** The request URL (`http:` or `https:` with the Host header's authority). */
  url: URL;
  /** The request headers. */
  headers: Headers;
  /** The client's address. */
  remoteAddr: NetAddress;
  /** Subprotocols the client offered, in its order of preference. */
  protocols: string[];
  /** The `Origin` header, or `null`. */
  origin: string | null;
}

/** What the `onUpgrade` hook may decide for an accepted request. */
export interface UpgradeDecision<Data> {
  /** The subprotocol to select; must be one the client offered. Overrides `protocols`. */
  protocol?: string;
  /** Extra response headers (e.g. `Set-Cookie`). */
  headers?: HeadersInit;
  /** Per-connection data, available as `ws.data`. */
  data?: Data;
}

/** Chooses a subprotocol from the client's offer, or none. */
export type ProtocolSelector = (
  offered: string[],
  request: UpgradeRequestInfo,
) => string | null | undefined;

/** Options for {@linkcode serve}. */
export interface ServeOptions<Data = unknown> {
  /** Port to listen on; 0 picks a free one. @default {8080} */
  port?: number;
  /** Interface to listen on. @default {"0.0.0.0"} */
  hostname?: string;
  /** Aborting it shuts the server down (connections closed with 1001). */
  signal?: AbortSignal;
  /**
   * TLS certificate chain and private key, as PEM strings (`cert`, `key`)
   * or file paths (`certFile`, `keyFile`): the server then speaks `wss://`.
   */
  tls?: TlsOptions;
  /**
   * Origins allowed to connect (exact `Origin` values such as
   * `"https://example.com"`). Requests with another Origin get 403; requests
   * without one (non-browser clients) are allowed. @default all origins
   */
  allowedOrigins?: string[];
  /**
   * Subprotocols the server speaks, or a function choosing one from the
   * client's offer (called only when the client offers some). With a list,
   * the first offered one the server supports is selected; with none in
   * common, none is selected. A function that throws, or picks one the
   * client did not offer, fails the handshake with 500 (see `onError`).
   */
  protocols?: string[] | ProtocolSelector;
  /**
   * Sees each valid upgrade request before it is accepted: reject it by
   * throwing a `HandshakeError` (its status and message become the HTTP
   * response) or returning a `Response`; accept it by returning nothing or an
   * {@linkcode UpgradeDecision} (subprotocol, headers, per-connection data).
   * Any other exception or rejection answers 500 and reaches `onError`. The
   * `handshakeTimeout` keeps running while it works.
   */
  onUpgrade?: (
    request: UpgradeRequestInfo,
  ) =>
    | UpgradeDecision<Data>
    | Response
    | void
    | undefined
    | Promise<UpgradeDecision<Data> | Response | void | undefined>;
  /**
   * Answers plain HTTP requests (those that are not WebSocket upgrades) on
   * the same port, with web-standard `Request` and `Response`: pages, a JSON
   * API, health checks. HTTP/1.1 (and 1.0) only, with keep-alive and
   * pipelining; request bodies stream (`Content-Length` or chunked, at most
   * `maxBodySize`), response bodies stream with the socket's backpressure
   * (chunked when their length is unknown). A handler that throws or
   * rejects answers 500 (see `onError`) and the connection goes on.
   * @default none: a plain request gets `426 Upgrade Required`
   *
   * @example A page and a JSON API next to the socket
   * ```ts
   * import { serve } from "@sluice/ws";
   * const server = await serve({
   *   port: 0,
   *   fetch(request) {
   *     const url = new URL(request.url);
   *     if (url.pathname === "/api/time") return Response.json({ now: Date.now() });
   *     return new Response("<h1>Hello</h1>", { headers: { "content-type": "text/html" } });
   *   },
   * }, { message: (ws, data) => ws.send(data) });
   * await server.shutdown();
   * ```
   */
  fetch?: FetchHandler;
  /**
   * Largest plain HTTP request body in bytes: a larger `Content-Length` gets
   * 413 before the body is read; a chunked body that grows past it fails
   * its `request.body` stream and gets 413. @default {8388608}
   */
  maxBodySize?: number;
  /**
   * Milliseconds a plain HTTP keep-alive connection waits for its next
   * request before it is closed (announced as `Keep-Alive: timeout=N`).
   * Once a request has begun, `handshakeTimeout` bounds its head (408), and
   * the longest silence inside its body. @default {5000}
   */
  httpIdleTimeout?: number;
  /** Called once listening, with the bound address. */
  onListen?: (addr: NetAddress) => void;
  /**
   * Called for errors outside any one connection's handlers: failed
   * handshakes and refused plain HTTP requests (a `HandshakeError` with the
   * HTTP status answered), exceptions thrown by `onUpgrade`, a `protocols`
   * function or `fetch` (answered 500), broken response bodies, and
   * accept errors (each distinct one at most every 10 s; accepting backs off
   * from 10 ms to 1 s while they last). @default log server faults (500s,
   * accept errors) with `console.error`; ignore rejected requests
   */
  onError?: (error: Error) => void;
  /** Largest message in bytes; larger ones close the connection with 1009. @default {16777216} */
  maxMessageSize?: number;
  /** Largest single frame in bytes. @default {maxMessageSize} */
  maxFrameSize?: number;
  /**
   * Most frames one message may span; more close the connection with 1009.
   * Memory never depends on it (fragments are joined into one buffer bounded
   * by `maxMessageSize`); it bounds the work a flood of empty or 1-byte
   * fragments can cause. @default {65536}
   */
  maxFragments?: number;
  /** Largest request head in bytes (upgrade or plain HTTP); larger ones get 431. @default {16384} */
  maxHandshakeSize?: number;
  /**
   * Milliseconds a client has from TCP accept to a complete request head
   * (the TLS handshake included, for `wss://`); then it gets 408, or is just
   * closed when its TLS handshake never finished. Plain HTTP requests on a
   * keep-alive connection get as long from their first byte. @default {10000}
   */
  handshakeTimeout?: number;
  /** Milliseconds to wait for the peer's close frame or EOF after closing. @default {5000} */
  closeTimeout?: number;
  /**
   * Milliseconds without hearing from a client after which the server sends
   * a ping; 0 turns keepalive pings off. A half-open peer (a frozen laptop, a
   * pulled cable) is found this way. @default {20000}
   */
  pingInterval?: number;
  /**
   * Milliseconds to wait for any answer to a keepalive ping before the
   * connection is failed with 1011; 0 waits forever. @default {20000}
   */
  pingTimeout?: number;
  /**
   * Milliseconds a client may send no message (pings and pongs do not count)
   * before it is closed with 1001 "Idle timeout"; 0 turns it off. @default {0}
   */
  idleTimeout?: number;
  /**
   * Bytes of unsent output a connection may hold: a `send()` that finds more
   * than this already waiting fails the connection with 1008 (its peer is not
   * reading). One message of any size is always accepted, so memory per
   * connection is bounded by this plus one message. 16 MiB, as Bun's
   * built-in server, or `maxMessageSize` + 1 MiB when that is larger, so that
   * echoing a maximum-size message and a few small ones behind it always fits.
   * A server only gets near it by sending on its own (broadcasts, streams):
   * it stops reading a connection whose output is over 1 MiB, so an echo
   * cannot be used to fill it. @default {16777216}
   */
  maxBufferedAmount?: number;
  /**
   * Bytes of unread messages `ws.readable` may hold; past it the socket is
   * not read until the application catches up. @default {1048576}
   */
  readableHighWaterMark?: number;
  /** How binary messages appear in `message` events. @default {"arraybuffer"} */
  binaryType?: BinaryType;
  /**
   * permessage-deflate (RFC 7692): `true` for the defaults, or the four
   * negotiation parameters, the threshold below which messages go
   * uncompressed, and zlib's level and memory level. Off by default: with
   * context takeover each connection holds a few hundred KiB of zlib state
   * (see the README for measured costs); `serverNoContextTakeover` and
   * `clientNoContextTakeover` bring that to nearly nothing. `serve()` throws
   * at start when the runtime's `node:zlib` lacks what the codec drives.
   * @default {false}
   */
  compression?: boolean | DeflateOptions;
  /**
   * Pub/sub defaults for every `ws.subscribe()` (slow-subscriber policy,
   * `maxBuffered`, conflation `key`) and its callbacks (`onDrop`,
   * `onError`). @default {{ policy: "drop", maxBuffered: 1048576 }}
   */
  pubsub?: PubSubOptions<WebSocketConnection<Data>>;
  /**
   * Lets several processes listen on the same port (`SO_REUSEPORT`): on
   * Linux the kernel spreads incoming connections across them. Deno needs
   * its unstable net API for this (`deno run --unstable-net`); without it
   * `serve()` throws an error saying so. @default {false}
   */
  reusePort?: boolean;
  /**
   * A message bus that carries publishes to and from other processes
   * (`RedisBroker` from `@sluice/ws/redis`): `server.publish` and
   * `ws.publish` reach subscribers in every process, at most once each, in
   * order per publisher and topic. `serve()` starts it before listening
   * (and throws when it cannot reach it, unless it was built to start
   * degraded) and closes it after shutdown.
   */
  broker?: Broker;
  /**
   * Called when the broker's health changes (`"down"` with the error during
   * an outage, `"up"` once it is back and resubscribed). Local delivery goes
   * on meanwhile. @default log the change with `console.error`
   */
  onBrokerHealth?: (health: BrokerHealth, error: Error | null) => void;
}

/** The function form of a handler: called for each connection as it opens. */
export type ConnectionHandler<Data> = (ws: WebSocketConnection<Data>) => void | Promise<void>;

/** Options for {@linkcode Server.shutdown}. */
export interface ShutdownOptions {
  /**
   * Close code sent to every connection: any code valid on the wire
   * (1000-1003, 1007-1014, 3000-4999), e.g. 1012 (Service Restart).
   * @default {1001}
   */
  code?: number;
  /** Close reason, at most 123 bytes of UTF-8. @default {"Server shutting down"} */
  reason?: string;
}

/** A running server. */
export interface Server {
  /** The bound address (with the real port when 0 was requested). */
  readonly addr: NetAddress;
  /** The server's base URL, e.g. `ws://127.0.0.1:8080/`. */
  readonly url: string;
  /**
   * Connections currently open: a connection joins as its `101` response
   * goes out, just before its `open` event, and leaves as it finishes, so
   * `for (const ws of server.connections) ws.send(x)` reaches only
   * connections that can send.
   */
  readonly connections: ReadonlySet<WebSocketConnection>;
  /**
   * Stops accepting, closes every connection with 1001 (or the given code),
   * and resolves once all are closed (at most `closeTimeout` later).
   * Invalid options throw at once (`TypeError` for a wrong type,
   * `RangeError` for a code that cannot be sent or a reason over 123 bytes),
   * before anything is stopped. Later calls return the first call's promise.
   */
  shutdown(options?: ShutdownOptions): Promise<void>;
  /** Resolves once the server has shut down. */
  readonly finished: Promise<void>;
  /**
   * Sends `data` to every subscriber of `topic` (strings as text, bytes as
   * binary), framed once; never waits. Callable from anywhere: a timer, an
   * HTTP handler, another connection's message. Returns how many
   * subscribers it was queued (or, under `"latest"`, held) for.
   */
  publish(
    topic: string,
    data: string | Uint8Array | ArrayBufferView | ArrayBuffer,
    options?: PublishOptions,
  ): number;
  /** How many connections are subscribed to `topic`. */
  subscriberCount(topic: string): number;
  /** Topics with at least one subscriber. */
  readonly topics: readonly string[];
  /** Counters: connections, subscriptions, published/delivered/dropped messages, closes by code. */
  stats(): ServerStats;
}

function formatHost(hostname: string): string {
  return hostname.includes(":") ? `[${hostname}]` : hostname;
}

const encoder = new TextEncoder();

/** Checks {@linkcode ShutdownOptions} before the server acts on them. */
function checkShutdownOptions(options: ShutdownOptions): Required<ShutdownOptions> {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("Shutdown options must be an object");
  }
  const { code = CloseCode.GoingAway, reason = "Server shutting down" } = options;
  if (typeof code !== "number") {
    throw new TypeError(`Shutdown close code must be a number, got ${typeof code}`);
  }
  if (!Number.isInteger(code) || !isValidWireCloseCode(code)) {
    throw new RangeError(
      `Shutdown close code ${code} cannot be sent: use 1000-1003, 1007-1014 or 3000-4999`,
    );
  }
  if (typeof reason !== "string") {
    throw new TypeError(`Shutdown close reason must be a string, got ${typeof reason}`);
  }
  const length = encoder.encode(reason).length;
  if (length > 123) {
    throw new RangeError(`Shutdown close reason is ${length} bytes of UTF-8; at most 123 fit`);
  }
  return { code, reason };
}

/** Options for {@linkcode acceptLoop}. */
export interface AcceptLoopOptions {
  /** Receives each accepted transport; must not throw. */
  onTransport(transport: Transport): void;
  /** Receives accept failures: each distinct one at most every `reportInterval`. */
  onError(error: Error): void;
  /** Ends the loop, also during a back-off pause. */
  signal?: AbortSignal;
  /** First pause after a failure, in milliseconds; doubles per failure. @default {10} */
  minDelay?: number;
  /** Longest pause, in milliseconds. @default {1000} */
  maxDelay?: number;
  /** Milliseconds before the same failure is reported again. @default {10000} */
  reportInterval?: number;
  /** How to pause (tests pass a recorder). @default a timer that the signal cuts short */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * @internal Accepts connections until the listener closes (or `signal`
 * aborts). A failing `accept()` (EMFILE: out of file descriptors) would
 * otherwise fail again at once and spin a core, so each failure pauses the
 * loop, from `minDelay` doubling to `maxDelay`, back to none after a success;
 * failures are reported, each distinct message at most every
 * `reportInterval`, so a long outage does not flood the error callback.
 */
export async function acceptLoop(listener: Listener, options: AcceptLoopOptions): Promise<void> {
  const { signal, minDelay = 10, maxDelay = 1000, reportInterval = 10_000 } = options;
  const pause = options.sleep ?? sleep;
  const reported = new Map<string, number>();
  let delay = 0;
  while (!signal?.aborted) {
    let transport: Transport | null;
    try {
      transport = await listener.accept();
    } catch (err) {
      if (signal?.aborted) break;
      const error = toError(err);
      const key = `${error.name}: ${error.message}`;
      const now = Date.now();
      const last = reported.get(key);
      if (last === undefined || now - last >= reportInterval) {
        if (reported.size >= 100) reported.clear(); // Bounded, whatever the messages.
        reported.set(key, now);
        options.onError(error);
      }
      delay = delay === 0 ? minDelay : Math.min(delay * 2, maxDelay);
      await pause(delay, signal);
      continue;
    }
    if (transport === null) break;
    delay = 0;
    if (signal?.aborted) {
      transport.close();
      break;
    }
    options.onTransport(transport);
  }
}

/**
 * Writes a response and closes, all within one second: an error answer is
 * never worth more. With `drain`, input is read (and dropped) until the
 * client closes, so that closing with unread input does not make the kernel
 * send RST, which can destroy the response before the client reads it.
 */
async function answerAndClose(transport: Transport, bytes: Uint8Array, drain: boolean) {
  const timer = setTimeout(() => transport.close(), 1000);
  try {
    await transport.write(bytes);
    let drained = 0;
    while (drain && drained < 1024 * 1024) {
      const chunk = await transport.read();
      if (chunk === null) break;
      drained += chunk.length;
    }
  } catch {
    // The client is gone; nothing to tell it.
  } finally {
    clearTimeout(timer);
    transport.close();
  }
}

/** The options {@linkcode serve} works with: defaults filled in, all checked. */
interface ServerConfig<Data> {
  options: ServeOptions<Data>;
  handlers: WebSocketHandlers<Data>;
  maxMessageSize: number;
  maxFrameSize: number;
  handshakeTimeout: number;
  closeTimeout: number;
  maxBufferedAmount: number;
  keepalive: KeepaliveSettings;
  compression: DeflateOptions | null;
  handshake: ServerHandshakeOptions;
  maxHandshakeSize: number;
  maxBodySize: number;
  httpIdleTimeout: number;
}

function resolveConfig<Data>(
  options: ServeOptions<Data>,
  handler: ConnectionHandler<Data> | WebSocketHandlers<Data>,
): ServerConfig<Data> {
  const maxMessageSize = options.maxMessageSize ?? 16 * 1024 * 1024;
  const maxFrameSize = options.maxFrameSize ?? maxMessageSize;
  const maxHandshakeSize = options.maxHandshakeSize ?? 16 * 1024;
  const handshakeTimeout = options.handshakeTimeout ?? 10_000;
  const closeTimeout = options.closeTimeout ?? 5_000;
  const maxBufferedAmount = options.maxBufferedAmount ??
    Math.max(16 * 1024 * 1024, maxMessageSize + 1024 * 1024);
  const maxBodySize = options.maxBodySize ?? DEFAULT_MAX_BODY_SIZE;
  const httpIdleTimeout = options.httpIdleTimeout ?? 5_000;
  if (options.fetch !== undefined && typeof options.fetch !== "function") {
    throw new TypeError(`Option fetch must be a function, got ${typeof options.fetch}`);
  }
  for (
    const [name, value] of Object.entries({
      maxMessageSize,
      maxFrameSize,
      maxHandshakeSize,
      handshakeTimeout,
      closeTimeout,
      maxBufferedAmount,
      maxBodySize,
      httpIdleTimeout,
    })
  ) {
    if (!(typeof value === "number" && value > 0)) {
      throw new RangeError(`Option ${name} must be a positive number, got ${value}`);
    }
  }
  // A string ("80") would reach the runtime's listen() as it is.
  const port = options.port;
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new RangeError(`Option port must be an integer from 0 to 65535, got ${String(port)}`);
  }
  const keepalive = checkKeepalive({
    pingInterval: options.pingInterval ?? 20_000,
    pingTimeout: options.pingTimeout ?? 20_000,
    idleTimeout: options.idleTimeout ?? 0,
  });
  const compression: DeflateOptions | null = options.compression === true
    ? {}
    : options.compression
    ? options.compression
    : null;
  if (compression !== null) {
    // Validate now rather than on the first connection, and find out now
    // whether this runtime's node:zlib can run the codec at all.
    resolveDeflateOptions(compression);
    try {
      assertZlibSupported();
    } catch (error) {
      throw new Error(
        `Cannot enable compression: ${toError(error).message}. Serve without \`compression\`.`,
        { cause: error },
      );
    }
  }
  return {
    options,
    handlers: typeof handler === "function" ? { open: handler } : handler,
    maxMessageSize,
    maxFrameSize,
    handshakeTimeout,
    closeTimeout,
    maxBufferedAmount,
    keepalive,
    compression,
    handshake: {
      secure: options.tls !== undefined,
      maxHandshakeSize,
      allowedOrigins: options.allowedOrigins,
      compression,
      plainRequests: options.fetch !== undefined,
    },
    maxHandshakeSize,
    maxBodySize,
    httpIdleTimeout,
  };
}

/** What the application decided for a valid request. */
type Decision<Data> =
  | { accepted: AcceptedUpgrade; codec: PerMessageDeflate | null; data: Data }
  | { response: Uint8Array };

/** A running server: the handshake I/O, the connection set, shutdown. */
class WebSocketServer<Data> implements Server {
  readonly addr: NetAddress;
  readonly url: string;
  readonly finished: Promise<void>;
  readonly #config: ServerConfig<Data>;
  readonly #listener: Listener;
  readonly #connections = new Set<WebSocketConnection<Data>>();
  /**
   * Handshakes in progress (or their error answer), oldest first: every
   * deadline is the same time after its start, so insertion order is
   * deadline order and one timer serves them all. Shutdown closes them.
   */
  readonly #handshaking = new Map<Transport, Handshake>();
  #deadlineTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #onDeadlines = (): void => this.#expireHandshakes();
  /** How every handshake calls back (one object per server). */
  readonly #handshakeHost: HandshakeHost = {
    verdict: (h, verdict) => this.#onVerdict(h, verdict),
    left: (h) => this.#onLeft(h),
  };
  /** Plain HTTP connections (with a `fetch` option). */
  readonly #http = new Set<HttpConnection>();
  readonly #stopAccepting = new AbortController();
  #acceptDone = false;
  #closing: Required<ShutdownOptions> | null = null;
  #shutdown: Promise<void> | null = null;
  #resolveFinished!: () => void;
  readonly #hub: PubSub<WebSocketConnection<Data>>;
  #connectionInit: ConnectionInit<Data> | null = null;

  readonly #broker: BrokerLink | null;

  constructor(listener: Listener, config: ServerConfig<Data>, broker: BrokerLink | null = null) {
    this.#listener = listener;
    this.#config = config;
    this.#hub = new PubSub(config.options.pubsub, config.compression);
    this.#broker = broker;
    broker?.attach(this.#hub);
    this.addr = listener.addr;
    const scheme = config.handshake.secure ? "wss" : "ws";
    this.url = `${scheme}://${formatHost(this.addr.hostname)}:${this.addr.port}/`;
    this.finished = new Promise<void>((resolve) => (this.#resolveFinished = resolve));
    acceptLoop(listener, {
      signal: this.#stopAccepting.signal,
      onTransport: (transport) => this.#handshake(transport),
      onError: (error) => this.#report(error, true),
    }).catch((error) => this.#report(toError(error), true)).finally(() => {
      this.#acceptDone = true;
      this.#maybeFinished();
    });
  }

  get connections(): ReadonlySet<WebSocketConnection> {
    return this.#connections as ReadonlySet<WebSocketConnection>;
  }

  publish(
    topic: string,
    data: string | Uint8Array | ArrayBufferView | ArrayBuffer,
    options?: PublishOptions,
  ): number {
    return this.#hub.publish(
      topic,
      data,
      options as PublishOptions<WebSocketConnection<Data>> | undefined,
    );
  }

  subscriberCount(topic: string): number {
    return this.#hub.subscriberCount(topic);
  }

  get topics(): readonly string[] {
    return this.#hub.topics;
  }

  stats(): ServerStats {
    const stats = this.#hub.stats(this.#connections.size);
    if (this.#broker !== null) stats.broker = this.#broker.stats();
    return stats;
  }

  shutdown(options: ShutdownOptions = {}): Promise<void> {
    const { code, reason } = checkShutdownOptions(options);
    if (this.#shutdown !== null) return this.#shutdown;
    this.#closing = { code, reason };
    this.#stopAccepting.abort();
    this.#listener.close();
    for (const transport of this.#handshaking.keys()) transport.close();
    this.#handshaking.clear();
    clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
    // Idle HTTP connections close now; busy ones after their current response.
    for (const http of this.#http) http.close();
    for (const ws of this.#connections) {
      try {
        ws._closeWith(code, reason);
      } catch (error) {
        this.#report(toError(error), true);
        ws.terminate();
      }
    }
    // Connections that do not finish their closing handshake in time are dropped.
    const timer = setTimeout(() => {
      for (const ws of this.#connections) ws.terminate();
      for (const http of this.#http) http.terminate();
    }, this.#config.closeTimeout + 100);
    this.#maybeFinished();
    this.#shutdown = this.finished.then(() => {
      clearTimeout(timer);
      return this.#broker?.close();
    });
    return this.#shutdown;
  }

  #maybeFinished(): void {
    if (
      this.#closing !== null && this.#acceptDone && this.#connections.size === 0 &&
      this.#handshaking.size === 0 && this.#http.size === 0
    ) {
      this.#resolveFinished();
    }
  }

  /**
   * Reports to `onError`. A `fault` (the server's or the application's
   * fault, not the client's) is logged when nobody listens.
   */
  #report(error: Error, fault: boolean): void {
    const onError = this.#config.options.onError;
    if (onError === undefined) {
      if (fault) console.error("Sluice server:", error);
      return;
    }
    // An error reporter must not take the server down, whether it throws or,
    // being async, rejects.
    try {
      const result: unknown = onError(error);
      if (result instanceof Promise) {
        result.catch((thrown: unknown) => {
          console.error("Sluice server: onError rejected", thrown, "while reporting", error);
        });
      }
    } catch (thrown) {
      console.error("Sluice server: onError threw", thrown, "while reporting", error);
    }
  }

  /**
   * Starts one connection's opening handshake: its bytes go to the sans-I/O
   * core (pushed by the transport where it can, else read here) until there
   * is a verdict, within the deadline (from TCP accept, TLS included).
   * `initial`: bytes already read (a kept HTTP connection asking to upgrade).
   */
  #handshake(transport: Transport, initial?: Uint8Array): void {
    const h = new Handshake(
      transport,
      new ServerHandshake(this.#config.handshake),
      performance.now() + this.#config.handshakeTimeout,
      this.#handshakeHost,
    );
    this.#handshaking.set(transport, h);
    this.#armDeadlines();
    if (initial !== undefined && (!h.data(initial) || !h.reading)) return;
    if (transport.setConsumer !== undefined) {
      transport.setConsumer(h);
      return;
    }
    (async () => {
      while (h.reading) {
        let chunk: Uint8Array | null;
        try {
          chunk = await transport.read();
        } catch (error) {
          return h.end(toError(error));
        }
        if (chunk === null) return h.end(null);
        if (!h.data(chunk)) return;
      }
    })().catch((error) => this.#handshakeFailed(h, error));
  }

  /** A bug in the handshake's own code: reported, and that connection (only) closed. */
  #handshakeFailed(h: Handshake, error: unknown): void {
    this.#report(toError(error), true);
    h.reading = false;
    if (this.#handshaking.get(h.transport) === h) this.#handshaking.delete(h.transport);
    h.transport.close();
    this.#maybeFinished();
  }

  /** Arms the one deadline timer for the oldest handshake, if any and not armed. */
  #armDeadlines(): void {
    if (this.#deadlineTimer !== undefined) return;
    const oldest = this.#handshaking.values().next();
    if (oldest.done) return;
    const delay = Math.max(0, oldest.value.deadline - performance.now());
    this.#deadlineTimer = setTimeout(this.#onDeadlines, delay);
  }

  /** Ends the handshakes past their deadline: 408 to a client that can read it. */
  #expireHandshakes(): void {
    this.#deadlineTimer = undefined;
    const now = performance.now();
    for (const h of this.#handshaking.values()) {
      if (h.deadline > now) break;
      h.expired = true;
      h.reading = false;
      this.#handshaking.delete(h.transport);
      // Only a client that can read HTTP, and is not being answered, is told why.
      if (h.answering || h.transport.tlsHandshaking) {
        h.transport.close();
      } else {
        const response = h.core.reject(408, "Handshake not completed in time");
        answerAndClose(h.transport, response, false);
      }
    }
    this.#maybeFinished();
    this.#armDeadlines();
  }

  /** The client left (or its socket failed) before the head was complete. */
  #onLeft(h: Handshake): void {
    if (h.expired || this.#handshaking.get(h.transport) !== h) return;
    this.#handshaking.delete(h.transport);
    h.transport.close();
    this.#maybeFinished();
  }

  /**
   * The core's verdict on a complete head. An upgrade that needs nothing
   * waited for (no `onUpgrade`) opens here, in the transport's data callback:
   * `true`, the connection's bytes now go to its driver. A 101 still in
   * flight (Deno settles every write later) does not hold it back: transports
   * keep writes in order, and the driver waits for that write as for its own,
   * failing the connection if it fails. Anything else continues in
   * `#settle`: `false`, `h` takes no more bytes.
   */
  #onVerdict(h: Handshake, verdict: HandshakeVerdict): boolean {
    h.reading = false;
    let decision: Decision<Data> | Promise<Decision<Data>> | null = null;
    if (verdict.kind === "upgrade" && this.#closing === null) {
      decision = this.#decide(h.core, verdict.request, h.transport);
      if (!(decision instanceof Promise) && !("response" in decision)) {
        const transport = h.transport;
        this.#handshaking.delete(transport);
        let written: Promise<void> | undefined;
        try {
          written = transport.write(decision.accepted.response);
        } catch {
          // The client left during the handshake: it leaves no trace.
          decision.codec?.close();
          transport.close();
          this.#maybeFinished();
          return false;
        }
        this.#open(transport, verdict.request, decision, written);
        return true;
      }
    }
    this.#settle(h, verdict, decision).catch((error) => this.#handshakeFailed(h, error));
    return false;
  }

  /**
   * The rest of a handshake whose verdict needs waiting for: the
   * application's `onUpgrade`, an error answer (and reading the client's
   * input until it leaves), or a plain HTTP request (with a `fetch` option).
   * Rejects only on a bug of its own, which the caller reports.
   */
  async #settle(
    h: Handshake,
    verdict: HandshakeVerdict,
    decision: Decision<Data> | Promise<Decision<Data>> | null,
  ): Promise<void> {
    const transport = h.transport;
    // From here on its bytes are read, not pushed.
    transport.dropConsumer?.();
    let opened: boolean | PlainRequestVerdict = false;
    let http: HttpConnection | null = null;
    try {
      opened = await this.#negotiate(h, verdict, decision);
    } catch {
      // A write failed: the client is gone.
    } finally {
      if (!h.expired) {
        if (typeof opened === "object") {
          // Listed before leaving the handshaking set: shutdown must see it.
          http = this.#httpConnection(transport);
        }
        this.#handshaking.delete(transport);
        if (!opened) transport.close();
        this.#maybeFinished();
      }
    }
    if (http !== null && typeof opened === "object") {
      try {
        const upgrade = await http.serve(opened.head, opened.rest);
        // A later request on the kept connection asked for a WebSocket: its
        // opening handshake runs as on a new connection (listed before the
        // HTTP connection is unlisted, for shutdown).
        if (upgrade !== null) this.#handshake(transport, upgrade);
      } catch (error) {
        this.#report(toError(error), true);
        transport.close();
      }
      this.#http.delete(http);
      this.#maybeFinished();
    }
  }

  /** A plain HTTP connection for a transport whose first request is not an upgrade. */
  #httpConnection(transport: Transport): HttpConnection {
    const config = this.#config;
    const http = new HttpConnection(transport, {
      fetch: config.options.fetch!,
      secure: config.handshake.secure ?? false,
      defaultHost: `${formatHost(this.addr.hostname)}:${this.addr.port}`,
      maxHeadSize: config.maxHandshakeSize,
      maxBodySize: config.maxBodySize,
      headTimeout: config.handshakeTimeout,
      idleTimeout: config.httpIdleTimeout,
      report: (error, fault) => this.#report(error, fault),
    });
    this.#http.add(http);
    return http;
  }

  /**
   * Answers the verdict and opens the connection when accepted (returning
   * `true`), going on from where `#onVerdict` stopped: `decision` when it
   * got that far. Stops as soon as the deadline expired:
   * the timer then owns the transport.
   */
  async #negotiate(
    h: Handshake,
    verdict: HandshakeVerdict,
    pending: Decision<Data> | Promise<Decision<Data>> | null,
  ): Promise<boolean | PlainRequestVerdict> {
    const { transport, core } = h;
    if (h.expired) return false;
    // Not an upgrade, and there is a `fetch` option: plain HTTP from here on.
    if (verdict.kind === "request") {
      if (this.#closing === null) return verdict;
      h.answering = true;
      await answerAndClose(transport, core.reject(503, "Server is shutting down"), true);
      return false;
    }
    let decision: Decision<Data>;
    if (verdict.kind === "reject") {
      this.#report(verdict.error, false);
      decision = { response: verdict.response };
    } else if (pending === null) {
      decision = { response: core.reject(503, "Server is shutting down") };
    } else {
      decision = await pending;
      if (!("response" in decision) && (h.expired || this.#closing !== null)) {
        decision.codec?.close();
        decision = { response: core.reject(503, "Server is shutting down") };
      }
    }
    if (h.expired) return false;
    h.answering = true;
    if ("response" in decision) {
      await answerAndClose(transport, decision.response, true);
      return false;
    }
    let ok = false;
    try {
      await transport.write(decision.accepted.response);
      ok = true;
    } catch {
      // The client left during the handshake: it leaves no trace.
    }
    // Shutdown closes handshaking transports; the timer may have closed it too.
    if (!ok || h.expired || this.#closing !== null || verdict.kind !== "upgrade") {
      decision.codec?.close();
      return false;
    }
    this.#open(transport, verdict.request, decision);
    return true;
  }

  /**
   * Runs the application's part of a valid request (the `protocols` function,
   * `onUpgrade`) and the core's acceptance: at once without an `onUpgrade`,
   * else as a promise. The one guard around that user code: a
   * `HandshakeError` answers with its status, anything else with 500, and
   * both reach `onError`. Never throws or rejects.
   */
  #decide(
    core: ServerHandshake,
    request: ParsedUpgrade,
    transport: Transport,
  ): Decision<Data> | Promise<Decision<Data>> {
    const { protocols: supported, onUpgrade } = this.#config.options;
    // Made only for the application's hooks.
    const info = onUpgrade !== undefined || typeof supported === "function"
      ? new UpgradeInfo(request, transport)
      : null;
    try {
      let protocol = "";
      if (typeof supported === "function") {
        if (request.protocols.length > 0) protocol = supported(request.protocols, info!) ?? "";
      } else if (supported !== undefined) {
        protocol = selectSubprotocol(request.protocols, supported);
      }
      if (onUpgrade === undefined) {
        return this.#accept(core, protocol, undefined, undefined as Data);
      }
      return this.#decideWith(core, protocol, onUpgrade(info!));
    } catch (error) {
      return this.#refuse(core, error);
    }
  }

  /** `#decide` once `onUpgrade` answered. */
  async #decideWith(
    core: ServerHandshake,
    protocol: string,
    answer: ReturnType<NonNullable<ServeOptions<Data>["onUpgrade"]>>,
  ): Promise<Decision<Data>> {
    try {
      const decision = await answer;
      if (decision instanceof Response) return { response: await responseBytes(core, decision) };
      if (decision === undefined || decision === null) {
        return this.#accept(core, protocol, undefined, undefined as Data);
      }
      if (typeof decision !== "object") {
        throw new TypeError(
          `onUpgrade must return nothing, an UpgradeDecision or a Response, got ${typeof decision}`,
        );
      }
      return this.#accept(
        core,
        decision.protocol ?? protocol,
        decision.headers === undefined ? undefined : new Headers(decision.headers),
        decision.data as Data,
      );
    } catch (error) {
      return this.#refuse(core, error);
    }
  }

  /** The core's acceptance with the application's choices (throws as `core.accept`). */
  #accept(
    core: ServerHandshake,
    protocol: string,
    headers: Headers | undefined,
    data: Data,
  ): Decision<Data> {
    const accepted = core.accept({ protocol, headers });
    const codec = accepted.deflate === null
      ? null
      : new PerMessageDeflate(accepted.deflate, "server", this.#config.compression ?? {});
    return { accepted, codec, data };
  }

  /** The answer to an application hook that threw (or a choice `core.accept` refused). */
  #refuse(core: ServerHandshake, error: unknown): Decision<Data> {
    if (
      error instanceof HandshakeError && Number.isInteger(error.status) &&
      error.status >= 400 && error.status <= 599
    ) {
      this.#report(error, false);
      return { response: core.reject(error.status, error.message, error.headers) };
    }
    this.#report(toError(error), true);
    return { response: core.reject(500, "Internal server error") };
  }

  // Shared by every connection (not two closures per connection).
  readonly #onConnectionError = (error: Error): void => this.#report(error, true);
  readonly #onConnectionFinish = (conn: WebSocketConnection<Data>): void => {
    conn.closed.then((info) => this.#hub.recordClose(info.closeCode));
    this.#connections.delete(conn);
    this.#maybeFinished();
  };

  /** What every connection of this server shares (one object, not one per connection). */
  #makeConnectionInit(): ConnectionInit<Data> {
    const config = this.#config;
    return {
      role: "server",
      maxMessageSize: config.maxMessageSize,
      maxFragments: config.options.maxFragments,
      maxFrameSize: config.maxFrameSize,
      closeTimeout: config.closeTimeout,
      maxBufferedAmount: config.maxBufferedAmount,
      readableHighWaterMark: config.options.readableHighWaterMark,
      binaryType: config.options.binaryType ?? "arraybuffer",
      handlers: config.handlers,
      keepalive: config.keepalive,
      onError: this.#onConnectionError,
      hub: this.#hub,
      onFinish: this.#onConnectionFinish,
    };
  }

  /**
   * The `ws:`/`wss:` URL for a request URL, one string per distinct URL:
   * most clients of a server ask for the same few, and each connection would
   * otherwise keep its own (about 100 bytes on V8: the rewritten string
   * holds on to the original).
   */
  #wsUrl(href: string): string {
    const urls = this.#urls;
    let url = urls.get(href);
    if (url === undefined) {
      if (urls.size >= 256) urls.clear();
      // http://… → ws://…, https://… → wss://…
      url = "ws" + href.slice(4);
      urls.set(href, url);
    }
    return url;
  }
  readonly #urls = new Map<string, string>();

  /** Starts an upgraded connection and lists it as open. */
  #open(
    transport: Transport,
    request: ParsedUpgrade,
    decision: { accepted: AcceptedUpgrade; codec: PerMessageDeflate | null; data: Data },
    written?: Promise<void>,
  ): void {
    const { protocol, extensions } = decision.accepted;
    const ws = new WebSocketConnection<Data>(
      this.#connectionInit ??= this.#makeConnectionInit(),
      this.#wsUrl(request.href),
      decision.data,
    );
    // Listed right before _start() opens it (synchronously, `open` handlers
    // included), so the set never holds a connection that cannot send yet; a
    // connection that finishes during _start() is removed by onFinish.
    this.#connections.add(ws);
    ws._start(
      {
        transport,
        protocol,
        extensions,
        headers: request.headText,
        codec: decision.codec,
        written,
      },
      request.rest,
    );
  }
}

/** What the application's handshake hooks see; `headers` is built on first use. */
class UpgradeInfo implements UpgradeRequestInfo {
  readonly #href: string;
  #url: URL | null = null;
  readonly protocols: string[];
  readonly origin: string | null;
  readonly #fields: HeadFields;
  readonly #transport: Transport;

  constructor(request: ParsedUpgrade, transport: Transport) {
    this.#href = request.href;
    this.protocols = request.protocols;
    this.origin = request.origin;
    this.#fields = request.fields;
    this.#transport = transport;
  }

  /** Made on first use (one object, so that changes the hook makes to it stay). */
  get url(): URL {
    return this.#url ??= new URL(this.#href);
  }

  get remoteAddr(): NetAddress {
    return this.#transport.remoteAddr;
  }

  get headers(): Headers {
    return this.#fields.toHeaders();
  }
}

/** How a {@linkcode Handshake} reports back to its server. */
interface HandshakeHost {
  /** The core's verdict; returns what `ChunkConsumer.data()` should. */
  verdict(h: Handshake, verdict: HandshakeVerdict): boolean;
  /** The client left before the verdict. */
  left(h: Handshake): void;
}

/**
 * One connection's opening handshake while its head arrives: the consumer
 * its bytes are pushed to (or fed by a read loop), and its deadline. One
 * object per handshake, no timer or closures of its own.
 */
class Handshake implements ChunkConsumer {
  /** Still taking bytes: no verdict yet, not expired. */
  reading = true;
  expired = false;
  /** A response is being written: on expiry the socket is only closed. */
  answering = false;

  constructor(
    readonly transport: Transport,
    readonly core: ServerHandshake,
    /** `performance.now()` time by which the connection must be open. */
    readonly deadline: number,
    readonly host: HandshakeHost,
  ) {}

  data(chunk: Uint8Array): boolean {
    if (!this.reading) return false;
    const verdict = this.core.receive(chunk);
    return verdict === null || this.host.verdict(this, verdict);
  }

  end(_error: Error | null): void {
    if (!this.reading) return;
    this.reading = false;
    this.host.left(this);
  }
}

/** An application's `Response` as an HTTP answer (body cut at 4 KiB). */
async function responseBytes(core: ServerHandshake, response: Response): Promise<Uint8Array> {
  let body = "";
  try {
    body = (await response.text()).slice(0, 4096);
  } catch {
    // An unreadable body is sent empty.
  }
  return core.reject(response.status, body.replace(/\n$/, ""), new Headers(response.headers));
}

/** Connects `options.broker`, if any, before the server listens. */
async function startBroker<Data>(options: ServeOptions<Data>): Promise<BrokerLink | null> {
  const { broker, onBrokerHealth, onError } = options;
  if (broker === undefined) return null;
  const report = (error: Error) => {
    if (onError !== undefined) onError(error);
    else console.error("Sluice broker:", error);
  };
  const link = new BrokerLink(broker, {
    onHealth: onBrokerHealth ?? ((health, error) => {
      if (health === "down") console.error(`Sluice broker down: ${error?.message ?? "unknown"}`);
      else if (health === "up") console.error("Sluice broker up");
    }),
    onError: (error) => {
      try {
        report(error);
      } catch (thrown) {
        console.error("Sluice server: onError threw", thrown, "while reporting", error);
      }
    },
  });
  await link.start();
  return link;
}

/**
 * Starts a WebSocket server on Deno or Bun.
 *
 * `handler` is either a function called with each new connection (attach
 * event listeners or read its streams there) or an object of callbacks.
 *
 * @example An echo server with callbacks
 * ```ts
 * import { serve } from "@sluice/ws";
 * const server = await serve({ port: 0 }, {
 *   message(ws, data) {
 *     ws.send(data);
 *   },
 * });
 * console.log(`Listening on ${server.url}`);
 * await server.shutdown();
 * ```
 *
 * @example Authentication in onUpgrade
 * ```ts
 * import { HandshakeError, serve } from "@sluice/ws";
 * const server = await serve<{ user: string }>({
 *   port: 0,
 *   onUpgrade(request) {
 *     const token = request.url.searchParams.get("token");
 *     if (token !== "secret") throw new HandshakeError(401, "Invalid token");
 *     return { data: { user: "alice" } };
 *   },
 * }, (ws) => ws.send(`hello ${ws.data.user}`));
 * await server.shutdown();
 * ```
 */
export async function serve<Data = undefined>(
  options: ServeOptions<Data>,
  handler: ConnectionHandler<Data> | WebSocketHandlers<Data>,
): Promise<Server> {
  const config = resolveConfig(options, handler);
  const broker = await startBroker(options);
  let listener: Listener;
  try {
    listener = await currentRuntime().listen({
      hostname: options.hostname ?? "0.0.0.0",
      port: options.port ?? 8080,
      tls: options.tls === undefined ? undefined : await loadTls(options.tls),
      reusePort: options.reusePort,
    });
  } catch (error) {
    await broker?.close();
    throw error;
  }
  const server = new WebSocketServer<Data>(listener, config, broker);
  const { signal } = options;
  if (signal !== undefined) {
    if (signal.aborted) server.shutdown();
    else signal.addEventListener("abort", () => server.shutdown(), { once: true });
  }
  try {
    options.onListen?.(server.addr);
  } catch (error) {
    // The caller never gets the server, so nobody else could stop it.
    server.shutdown();
    throw error;
  }
  return server;
}
