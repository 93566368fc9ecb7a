/**
 * The WebSocket client: `connect()` for `ws://` and `wss://` URLs, and a
 * `WebSocket` class with the browser's constructor, on Deno and Bun.
 *
 * @module
 */

import { parseWebSocketUrl } from "./ws_url.ts";
import { checkKeepalive, type KeepaliveSettings } from "./keepalive.ts";
import type { Transport } from "./runtime/transport.ts";
import { currentRuntime } from "./runtime/mod.ts";
import { HeadReader, parseResponseHead } from "./protocol/http.ts";
import { buildClientRequest, generateKey, validateServerResponse } from "./protocol/handshake.ts";
import { HandshakeError } from "./protocol/errors.ts";
import {
  deflateOffer,
  type DeflateOptions,
  type NegotiatedDeflate,
  parseDeflateResponse,
} from "./protocol/permessage_deflate.ts";
import { assertZlibSupported, PerMessageDeflate } from "./protocol/deflate_codec.ts";
import { isToken } from "./protocol/http.ts";
import {
  type BinaryType,
  type ConnectionInit,
  WebSocketConnection,
  type WebSocketHandlers,
} from "./websocket.ts";

/** Options for {@linkcode connect} and the {@linkcode WebSocket} class. */
export interface ConnectOptions<Data = unknown> {
  /** Subprotocols to offer, in order of preference. */
  protocols?: string | string[];
  /** Extra request headers, e.g. `Authorization` or `Cookie`. */
  headers?: HeadersInit;
  /** The `Origin` header to send. @default none */
  origin?: string;
  /** Aborting it aborts the handshake, or closes the connection (1000) once open. */
  signal?: AbortSignal;
  /** Milliseconds the whole opening handshake may take (`Infinity`: no limit). @default {10000} */
  handshakeTimeout?: number;
  /** Largest message in bytes; larger ones fail the connection with 1009. @default {16777216} */
  maxMessageSize?: number;
  /** Largest single frame in bytes. @default {maxMessageSize} */
  maxFrameSize?: number;
  /** Most frames one message may span; more fail the connection (1009). @default {65536} */
  maxFragments?: number;
  /** Largest response head in bytes. @default {65536} */
  maxHandshakeSize?: number;
  /** Milliseconds to wait for the server's close frame and EOF after closing. @default {5000} */
  closeTimeout?: number;
  /** Bytes of unsent output before the connection is dropped. @default {67108864} */
  maxBufferedAmount?: number;
  /**
   * Milliseconds without hearing from the server after which a ping is sent;
   * 0 turns keepalive pings off. A silently dead link (a server host that
   * vanished, a NAT that forgot the flow) is found this way. @default {20000}
   */
  pingInterval?: number;
  /**
   * Milliseconds to wait for any answer to a keepalive ping before the
   * connection is failed with 1011; 0 waits forever. @default {20000}
   */
  pingTimeout?: number;
  /**
   * Milliseconds the server may send no message (pings and pongs do not
   * count) before the connection is closed with 1001; 0 turns it off.
   * @default {0}
   */
  idleTimeout?: number;
  /**
   * Bytes of unread messages `ws.readable` may hold; past it the socket is
   * not read until the application catches up. @default {1048576}
   */
  readableHighWaterMark?: number;
  /** Extra CA certificates (PEM) to trust for `wss://`, e.g. a private CA. */
  caCerts?: string[];
  /**
   * How many HTTP redirects (301, 302, 303, 307, 308) to follow. Never from
   * `wss:` to `ws:`. @default {0}
   */
  maxRedirects?: number;
  /** How binary messages appear in `message` events. @default {"arraybuffer"} */
  binaryType?: BinaryType;
  /** Callbacks, as on the server. */
  handlers?: WebSocketHandlers<Data>;
  /** Value for `ws.data`. */
  data?: Data;
  /**
   * Offer permessage-deflate (RFC 7692): `true` for the defaults, or the
   * four negotiation parameters, the threshold and zlib levels. A server
   * response that breaks the offer fails the handshake. @default {false}
   */
  compression?: boolean | DeflateOptions;
}

/** The keepalive settings of `options`, checked (RangeError for a bad value). */
function keepaliveOf(options: ConnectOptions<unknown>): KeepaliveSettings {
  return checkKeepalive({
    pingInterval: options.pingInterval ?? 20_000,
    pingTimeout: options.pingTimeout ?? 20_000,
    idleTimeout: options.idleTimeout ?? 0,
  });
}

function deflateOptionsOf(option: boolean | DeflateOptions | undefined): DeflateOptions | null {
  return option === true ? {} : option ? option : null;
}

/** With compression asked for, fails at once if this runtime's node:zlib cannot run the codec. */
function checkCompression(option: boolean | DeflateOptions | undefined): void {
  if (deflateOptionsOf(option) === null) return;
  try {
    assertZlibSupported();
  } catch (error) {
    throw new Error(
      `Cannot offer compression: ${(error as Error).message}. Connect without \`compression\`.`,
      { cause: error },
    );
  }
}

const REDIRECTS = [301, 302, 303, 307, 308];

/**
 * Normalises a WebSocket URL as the WHATWG constructor does (http→ws, no
 * fragment), throwing `SyntaxError` otherwise.
 *
 * @internal Shared with the reconnecting client.
 */
export function parseUrl(input: string | URL): URL {
  return parseWebSocketUrl(input);
}

function normaliseProtocols(protocols: string | string[] | undefined): string[] {
  const list = protocols === undefined
    ? []
    : typeof protocols === "string"
    ? [protocols]
    : protocols;
  const seen = new Set<string>();
  for (const protocol of list) {
    if (!isToken(protocol)) {
      throw new DOMException(`Invalid subprotocol ${JSON.stringify(protocol)}`, "SyntaxError");
    }
    if (seen.has(protocol)) {
      throw new DOMException(`Subprotocol ${protocol} is listed twice`, "SyntaxError");
    }
    seen.add(protocol);
  }
  return list;
}

interface Handshaken {
  transport: Transport;
  protocol: string;
  extensions: string;
  deflate: NegotiatedDeflate | null;
  headers: Headers;
  rest: Uint8Array;
}

const textDecoder = new TextDecoder();

/** Runs the opening handshake over a fresh transport, following redirects if asked. */
async function openHandshake<Data>(
  url: URL,
  protocols: string[],
  options: ConnectOptions<Data>,
  registerTransport: (t: Transport | null) => void,
  guard: <T>(promise: Promise<T>) => Promise<T>,
): Promise<Handshaken> {
  let redirects = options.maxRedirects ?? 0;
  const deflate = deflateOptionsOf(options.compression);
  const offer = deflate === null ? undefined : deflateOffer(deflate);
  let extraHeaders = new Headers(options.headers);
  for (;;) {
    const secure = url.protocol === "wss:";
    const hostname = url.hostname.replace(/^\[|\]$/g, "");
    const port = url.port !== "" ? Number(url.port) : secure ? 443 : 80;
    const connecting = currentRuntime().connect({
      hostname,
      port,
      tls: secure ? { serverName: hostname, caCerts: options.caCerts } : undefined,
    });
    // The timeout and the abort signal must also cut a TCP connect short; a
    // connection that completes after that is closed at once.
    connecting.then((t) => registerTransport(t), () => {});
    const transport = await guard(connecting);
    registerTransport(transport);
    try {
      const key = generateKey();
      await transport.write(buildClientRequest(url, {
        key,
        protocols,
        extensions: offer,
        origin: options.origin,
        headers: extraHeaders,
      }));
      const maxHead = options.maxHandshakeSize ?? 64 * 1024;
      const reader = new HeadReader(maxHead);
      let result = null;
      while (result === null) {
        const chunk = await transport.read();
        if (chunk === null) {
          throw new HandshakeError(0, "Server closed the connection during the opening handshake");
        }
        try {
          result = reader.push(chunk);
        } catch {
          throw new HandshakeError(0, `Response head is over maxHandshakeSize (${maxHead} bytes)`);
        }
      }
      const response = parseResponseHead(result.head);
      const location = response.headers.get("location");
      if (REDIRECTS.includes(response.status) && location !== null && redirects > 0) {
        redirects--;
        const next = new URL(location, url.href.replace(/^ws/, "http"));
        const target = parseUrl(next);
        if (secure && target.protocol === "ws:") {
          throw new HandshakeError(
            response.status,
            "Refusing to follow a redirect from wss: to ws:",
          );
        }
        transport.close();
        if (target.origin !== url.origin) {
          // Credentials are for the origin they were given to (as fetch does).
          extraHeaders = new Headers(extraHeaders);
          for (const name of ["authorization", "cookie", "proxy-authorization"]) {
            extraHeaders.delete(name);
          }
        }
        url = target;
        continue;
      }
      const body = response.status === 101 ? "" : textDecoder.decode(result.rest.subarray(0, 512));
      const agreed = await validateServerResponse(response, { key, protocols, body });
      let negotiated: NegotiatedDeflate | null = null;
      if (agreed.extensions !== "") {
        if (deflate === null) {
          throw new HandshakeError(
            101,
            `Server accepted extensions the client did not offer: ${agreed.extensions}`,
            response.headers,
          );
        }
        try {
          negotiated = parseDeflateResponse(agreed.extensions, deflate);
        } catch (err) {
          throw new HandshakeError(101, (err as Error).message, response.headers);
        }
      }
      return {
        transport,
        protocol: agreed.protocol,
        extensions: agreed.extensions,
        deflate: negotiated,
        headers: response.headers,
        rest: result.rest,
      };
    } catch (err) {
      transport.close();
      throw err;
    }
  }
}

/** What a client connection is made with, from its options (shared by `connect()` and `WebSocket`). */
function clientInit<Data>(
  options: ConnectOptions<Data>,
  binaryType: BinaryType,
  whatwgClass = false,
): ConnectionInit<Data> {
  const maxMessageSize = options.maxMessageSize ?? 16 * 1024 * 1024;
  const handshakeTimeout = options.handshakeTimeout;
  if (handshakeTimeout !== undefined && !(handshakeTimeout > 0)) {
    throw new RangeError(
      `handshakeTimeout must be a positive number of milliseconds (Infinity: no limit), got ${
        String(handshakeTimeout)
      }`,
    );
  }
  return {
    role: "client",
    maxMessageSize,
    maxFrameSize: options.maxFrameSize ?? maxMessageSize,
    maxFragments: options.maxFragments,
    closeTimeout: options.closeTimeout ?? 5_000,
    maxBufferedAmount: options.maxBufferedAmount ?? 64 * 1024 * 1024,
    readableHighWaterMark: options.readableHighWaterMark,
    binaryType,
    handlers: options.handlers,
    keepalive: keepaliveOf(options),
    browserCloseCodes: whatwgClass,
    openInline: whatwgClass,
  };
}

function makeConnection<Data>(
  url: URL,
  options: ConnectOptions<Data>,
  binaryType: BinaryType,
): WebSocketConnection<Data> {
  return new WebSocketConnection<Data>(
    clientInit(options, binaryType),
    url.href,
    options.data as Data,
  );
}

/**
 * Runs the handshake for `ws` and starts it; on failure, fails it with the
 * error and rethrows. Handles the timeout and abort signal. `requireProtocol`:
 * the WHATWG class, for which a response selecting none of the offered
 * subprotocols fails.
 */
async function establish<Data>(
  ws: WebSocketConnection<Data>,
  url: URL,
  protocols: string[],
  options: ConnectOptions<Data>,
  requireProtocol = false,
): Promise<void> {
  let transport: Transport | null = null;
  let abortedWith: Error | null = null;
  let rejectAborted!: (error: Error) => void;
  const aborted = new Promise<never>((_, reject) => (rejectAborted = reject));
  aborted.catch(() => {});
  const abort = (error: Error) => {
    abortedWith ??= error;
    transport?.close();
    rejectAborted(abortedWith);
  };
  const guard = <T>(promise: Promise<T>) => Promise.race([promise, aborted]);
  const timeout = options.handshakeTimeout ?? 10_000;
  // Infinity (or anything past setTimeout's 2^31-1 ms, which would fire at
  // once) means no limit.
  const timer = timeout < 2 ** 31
    ? setTimeout(
      () => abort(new HandshakeError(0, `Opening handshake timed out after ${timeout} ms`)),
      timeout,
    )
    : undefined;
  const onAbort = () => abort(new DOMException("The connection was aborted", "AbortError"));
  options.signal?.addEventListener("abort", onAbort, { once: true });
  ws._onAbort(() => abort(new Error("WebSocket was closed before the connection was established")));
  try {
    if (options.signal?.aborted) throw new DOMException("The connection was aborted", "AbortError");
    const done = await openHandshake(url, protocols, options, (t) => {
      transport = t;
      if (abortedWith !== null) t?.close();
    }, guard);
    if (abortedWith !== null) {
      done.transport.close();
      throw abortedWith;
    }
    if (requireProtocol && protocols.length > 0 && done.protocol === "") {
      // WHATWG "establish a WebSocket connection": with subprotocols offered,
      // a response that selects none fails (RFC 6455 lets connect() accept it).
      done.transport.close();
      throw new HandshakeError(
        101,
        "Server did not select any of the offered subprotocols",
        done.headers,
      );
    }
    const codec = done.deflate === null
      ? null
      : new PerMessageDeflate(done.deflate, "client", deflateOptionsOf(options.compression) ?? {});
    ws._start({
      transport: done.transport,
      protocol: done.protocol,
      extensions: done.extensions,
      headers: done.headers,
      codec,
    }, done.rest);
    const signal = options.signal;
    if (signal !== undefined) {
      // Removed once closed, so one long-lived signal does not keep every
      // closed connection alive.
      const closeOnAbort = () => ws.close(1000);
      signal.addEventListener("abort", closeOnAbort, { once: true });
      ws.closed.then(() => signal.removeEventListener("abort", closeOnAbort));
    }
  } catch (err) {
    const error = abortedWith ?? (err instanceof Error ? err : new Error(String(err)));
    ws._failConnecting(error);
    throw error;
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * Opens a client connection to a `ws://` or `wss://` URL. Resolves once the
 * opening handshake succeeded; rejects with a {@linkcode HandshakeError}
 * naming the problem otherwise (status other than 101, wrong accept key,
 * unoffered subprotocol, timeout), or with the socket's error.
 *
 * @example Custom headers and the server's response headers
 * ```ts
 * import { connect, serve } from "@sluice/ws";
 * const server = await serve({ port: 0, hostname: "127.0.0.1" }, (ws) => ws.send("hi"));
 * const ws = await connect(server.url, { headers: { Authorization: "Bearer token" } });
 * console.log(ws.handshakeHeaders.get("sec-websocket-accept"));
 * for await (const message of ws.readable) {
 *   console.log(message); // "hi"
 *   break;
 * }
 * await server.shutdown();
 * ```
 */
export async function connect<Data = undefined>(
  url: string | URL,
  options: ConnectOptions<Data> = {},
): Promise<WebSocketConnection<Data>> {
  const target = parseUrl(url);
  const protocols = normaliseProtocols(options.protocols);
  checkCompression(options.compression);
  const ws = makeConnection(target, options, options.binaryType ?? "arraybuffer");
  // The caller learns of failure through the rejection, not error events.
  await establish(ws, target, protocols, options);
  return ws;
}

/**
 * A drop-in for the browser's `WebSocket`: `new WebSocket(url, protocols)`
 * connects in the background and fires `open`, `message`, `error` and `close`
 * events. It also has Sluice's extras: `readable`/`writable`/`closed`,
 * `ping()`, and options as a third argument.
 *
 * @example Browser-style code, unchanged
 * ```ts
 * import { serve, WebSocket } from "@sluice/ws";
 * const server = await serve({ port: 0, hostname: "127.0.0.1" }, {
 *   message: (ws, data) => ws.send(data),
 * });
 * const ws = new WebSocket(server.url, "chat");
 * ws.onopen = () => ws.send("hello");
 * ws.onmessage = (event) => {
 *   console.log(event.data);
 *   ws.close();
 * };
 * await ws.closed;
 * await server.shutdown();
 * ```
 */
export class WebSocket extends WebSocketConnection<undefined> {
  /**
   * Connects to `url`, offering `protocols`. Throws `SyntaxError` for an
   * invalid URL or subprotocol list, as browsers do.
   */
  constructor(url: string | URL, protocols?: string | string[], options: ConnectOptions = {}) {
    const target = parseUrl(url);
    const list = normaliseProtocols(protocols ?? options.protocols);
    checkCompression(options.compression);
    super(
      clientInit(options as ConnectOptions<undefined>, options.binaryType ?? "blob", true),
      target.href,
      undefined,
    );
    // Failures surface as error and close events, as in browsers.
    establish(this, target, list, options as ConnectOptions<undefined>, true).catch(() => {});
  }
}
