/**
 * The WebSocket server: accepts TCP (or TLS) connections, runs the opening
 * handshake with its limits and hooks, and hands each upgraded connection to
 * the application.
 *
 * @module
 */

import { readFile } from "node:fs/promises";
import type { Listener, NetAddress, Transport } from "./runtime/transport.ts";
import { currentRuntime } from "./runtime/mod.ts";
import { HeadReader, parseRequestHead, type RequestHead } from "./protocol/http.ts";
import {
  acceptKey,
  buildErrorResponse,
  buildUpgradeResponse,
  validateUpgradeRequest,
} from "./protocol/handshake.ts";
import { HandshakeError } from "./protocol/errors.ts";
import {
  type DeflateOptions,
  resolveDeflateOptions,
  selectDeflateOffer,
} from "./protocol/permessage_deflate.ts";
import { PerMessageDeflate } from "./protocol/deflate_codec.ts";
import { CloseCode } from "./protocol/close_codes.ts";
import { type BinaryType, WebSocketConnection, type WebSocketHandlers } from "./websocket.ts";

/** TLS material for {@linkcode serve}: PEM strings or PEM file paths. */
export type TlsOptions = { cert: string; key: string } | { certFile: string; keyFile: string };

async function loadTls(tls: TlsOptions): Promise<{ cert: string; key: string }> {
  if ("cert" in tls) return tls;
  const [cert, key] = await Promise.all([
    readFile(tls.certFile, "utf8"),
    readFile(tls.keyFile, "utf8"),
  ]);
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
   * Subprotocols the server speaks, in order of preference, or a function
   * choosing one from the client's offer. The first offered one the server
   * supports is selected; with none in common, none is selected.
   */
  protocols?: string[] | ProtocolSelector;
  /**
   * Sees each valid upgrade request before it is accepted: reject it by
   * throwing a `HandshakeError` (its status and message become the HTTP
   * response) or returning a `Response`; accept it by returning nothing or an
   * {@linkcode UpgradeDecision} (subprotocol, headers, per-connection data).
   */
  onUpgrade?: (
    request: UpgradeRequestInfo,
  ) =>
    | UpgradeDecision<Data>
    | Response
    | void
    | undefined
    | Promise<UpgradeDecision<Data> | Response | void | undefined>;
  /** Called once listening, with the bound address. */
  onListen?: (addr: NetAddress) => void;
  /**
   * Called for errors outside any one connection's handlers: failed
   * handshakes (with their HTTP status) and accept errors. @default ignore
   */
  onError?: (error: Error) => void;
  /** Largest message in bytes; larger ones close the connection with 1009. @default {16777216} */
  maxMessageSize?: number;
  /** Largest single frame in bytes. @default {maxMessageSize} */
  maxFrameSize?: number;
  /** Largest request head in bytes; larger ones get 431. @default {16384} */
  maxHandshakeSize?: number;
  /** Milliseconds a client has to complete its handshake. @default {10000} */
  handshakeTimeout?: number;
  /** Milliseconds to wait for the peer's close frame or EOF after closing. @default {5000} */
  closeTimeout?: number;
  /**
   * Bytes of unsent output a connection may hold; past it the connection is
   * dropped (its peer is not reading). @default {67108864}
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
   * `clientNoContextTakeover` bring that to nearly nothing. @default {false}
   */
  compression?: boolean | DeflateOptions;
}

/** The function form of a handler: called for each connection as it opens. */
export type ConnectionHandler<Data> = (ws: WebSocketConnection<Data>) => void | Promise<void>;

/** A running server. */
export interface Server {
  /** The bound address (with the real port when 0 was requested). */
  readonly addr: NetAddress;
  /** The server's base URL, e.g. `ws://127.0.0.1:8080/`. */
  readonly url: string;
  /** Connections currently open. */
  readonly connections: ReadonlySet<WebSocketConnection>;
  /**
   * Stops accepting, closes every connection with 1001 (or the given code),
   * and resolves once all are closed (at most `closeTimeout` later).
   */
  shutdown(options?: { code?: number; reason?: string }): Promise<void>;
  /** Resolves once the server has shut down. */
  readonly finished: Promise<void>;
}

function selectProtocol(
  option: string[] | ProtocolSelector | undefined,
  request: UpgradeRequestInfo,
): string {
  if (option === undefined || request.protocols.length === 0) return "";
  if (typeof option === "function") return option(request.protocols, request) ?? "";
  return request.protocols.find((p) => option.includes(p)) ?? "";
}

function formatHost(hostname: string): string {
  return hostname.includes(":") ? `[${hostname}]` : hostname;
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
  const maxMessageSize = options.maxMessageSize ?? 16 * 1024 * 1024;
  const maxFrameSize = options.maxFrameSize ?? maxMessageSize;
  const maxHandshakeSize = options.maxHandshakeSize ?? 16 * 1024;
  const handshakeTimeout = options.handshakeTimeout ?? 10_000;
  const closeTimeout = options.closeTimeout ?? 5_000;
  const maxBufferedAmount = options.maxBufferedAmount ?? 64 * 1024 * 1024;
  for (
    const [name, value] of Object.entries({
      maxMessageSize,
      maxFrameSize,
      maxHandshakeSize,
      handshakeTimeout,
      closeTimeout,
      maxBufferedAmount,
    })
  ) {
    if (!(typeof value === "number" && value > 0)) {
      throw new RangeError(`Option ${name} must be a positive number, got ${value}`);
    }
  }
  const handlers: WebSocketHandlers<Data> = typeof handler === "function"
    ? { open: handler }
    : handler;
  const secure = options.tls !== undefined;
  const deflateOptions: DeflateOptions | null = options.compression === true
    ? {}
    : options.compression
    ? options.compression
    : null;
  // Validate the compression options now rather than on the first connection.
  if (deflateOptions !== null) resolveDeflateOptions(deflateOptions);
  const listener: Listener = await currentRuntime().listen({
    hostname: options.hostname ?? "0.0.0.0",
    port: options.port ?? 8080,
    tls: options.tls === undefined ? undefined : await loadTls(options.tls),
  });
  const addr = listener.addr;
  const url = `${secure ? "wss" : "ws"}://${formatHost(addr.hostname)}:${addr.port}/`;
  const connections = new Set<WebSocketConnection<Data>>();
  const handshaking = new Set<Transport>();
  let shuttingDown = false;
  let resolveFinished!: () => void;
  const finished = new Promise<void>((resolve) => (resolveFinished = resolve));
  const reportError = (error: Error) => {
    try {
      options.onError?.(error);
    } catch {
      // An error reporter must not take the server down.
    }
  };

  /** Writes an HTTP error response, then lets the client read it before closing. */
  async function reject(transport: Transport, bytes: Uint8Array, drain = true): Promise<void> {
    try {
      await transport.write(bytes);
      if (!drain) return;
      // Closing with unread input makes the kernel send RST, which can destroy
      // the response before the client reads it: drain briefly first.
      const deadline = Date.now() + 1000;
      let drained = 0;
      const timer = setTimeout(() => transport.close(), 1000);
      try {
        while (Date.now() < deadline && drained < 1024 * 1024) {
          const chunk = await transport.read();
          if (chunk === null) break;
          drained += chunk.length;
        }
      } finally {
        clearTimeout(timer);
      }
    } catch {
      // The client is gone; nothing to tell it.
    } finally {
      transport.close();
    }
  }

  async function rejectWithResponse(transport: Transport, response: Response): Promise<void> {
    let body = "";
    try {
      body = (await response.text()).slice(0, 4096);
    } catch {
      // An unreadable body is sent empty.
    }
    const headers = new Headers(response.headers);
    await reject(
      transport,
      buildErrorResponse(response.status, body.replace(/\n$/, ""), headers),
    );
  }

  async function handshake(transport: Transport): Promise<void> {
    handshaking.add(transport);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      handshaking.delete(transport);
      // A read is still pending in handshake(), so no draining here (one reader at a time).
      reject(transport, buildErrorResponse(408, "Handshake not completed in time"), false);
    }, handshakeTimeout);
    let request: RequestHead;
    let head: Uint8Array;
    let rest: Uint8Array;
    try {
      const reader = new HeadReader(maxHandshakeSize);
      for (;;) {
        const chunk = await transport.read();
        if (chunk === null || timedOut) {
          clearTimeout(timer);
          handshaking.delete(transport);
          transport.close();
          return;
        }
        const result = reader.push(chunk);
        if (result !== null) {
          head = result.head;
          request = parseRequestHead(head);
          rest = result.rest;
          break;
        }
      }
      const upgrade = validateUpgradeRequest(request, secure);
      const info: UpgradeRequestInfo = {
        url: upgrade.url,
        headers: request.headers,
        remoteAddr: transport.remoteAddr,
        protocols: upgrade.protocols,
        origin: upgrade.origin,
      };
      if (
        options.allowedOrigins !== undefined && upgrade.origin !== null &&
        !options.allowedOrigins.includes(upgrade.origin)
      ) {
        throw new HandshakeError(403, `Origin ${upgrade.origin} is not allowed`);
      }
      let protocol = selectProtocol(options.protocols, info);
      let extraHeaders: Headers | undefined;
      let data = undefined as Data;
      if (options.onUpgrade !== undefined) {
        const decision = await options.onUpgrade(info);
        if (decision instanceof Response) {
          clearTimeout(timer);
          handshaking.delete(transport);
          if (!timedOut) await rejectWithResponse(transport, decision);
          return;
        }
        if (decision) {
          if (decision.protocol !== undefined) {
            if (decision.protocol !== "" && !upgrade.protocols.includes(decision.protocol)) {
              throw new Error(
                `onUpgrade selected subprotocol ${decision.protocol}, which the client did not offer`,
              );
            }
            protocol = decision.protocol;
          }
          if (decision.headers !== undefined) extraHeaders = new Headers(decision.headers);
          data = decision.data as Data;
        }
      }
      if (protocol !== "" && !upgrade.protocols.includes(protocol)) {
        throw new Error(`Subprotocol selector chose ${protocol}, which the client did not offer`);
      }
      let extensions = "";
      let codec: PerMessageDeflate | null = null;
      if (deflateOptions !== null && upgrade.extensions !== null) {
        let selection = null;
        try {
          selection = selectDeflateOffer(upgrade.extensions, deflateOptions);
        } catch {
          // A malformed offer is declined, not fatal (RFC 7692 §5).
        }
        if (selection !== null) {
          extensions = selection.response;
          codec = new PerMessageDeflate(selection.params, "server", deflateOptions);
        }
      }
      const accept = await acceptKey(upgrade.key);
      clearTimeout(timer);
      handshaking.delete(transport);
      if (timedOut) return;
      if (shuttingDown) {
        await reject(transport, buildErrorResponse(503, "Server is shutting down"));
        return;
      }
      const response = buildUpgradeResponse(accept, {
        protocol,
        extensions,
        headers: extraHeaders,
      });
      const ws = new WebSocketConnection<Data>({
        role: "server",
        url: upgrade.url.href.replace(/^http/, "ws"),
        maxMessageSize,
        maxFrameSize,
        closeTimeout,
        maxBufferedAmount,
        readableHighWaterMark: options.readableHighWaterMark,
        binaryType: options.binaryType ?? "arraybuffer",
        data,
        handlers,
        onFinish: (conn) => {
          connections.delete(conn);
          maybeFinished();
        },
      });
      connections.add(ws);
      await transport.write(response);
      ws._start(
        { transport, protocol, extensions, headers: head, codec },
        rest,
      );
    } catch (err) {
      clearTimeout(timer);
      handshaking.delete(transport);
      if (timedOut) return;
      if (err instanceof HandshakeError) {
        reportError(err);
        await reject(transport, buildErrorResponse(err.status, err.message, err.headers));
      } else {
        const error = err instanceof Error ? err : new Error(String(err));
        reportError(error);
        await reject(transport, buildErrorResponse(500, "Internal server error"));
      }
    }
  }

  let acceptDone = false;
  function maybeFinished(): void {
    if (acceptDone && shuttingDown && connections.size === 0 && handshaking.size === 0) {
      resolveFinished();
    }
  }

  (async () => {
    for (;;) {
      let transport: Transport | null;
      try {
        transport = await listener.accept();
      } catch (err) {
        if (shuttingDown) break;
        reportError(err instanceof Error ? err : new Error(String(err)));
        continue;
      }
      if (transport === null) break;
      if (shuttingDown) {
        transport.close();
        continue;
      }
      handshake(transport).catch((err) => reportError(err));
    }
    acceptDone = true;
    maybeFinished();
  })();

  let shutdownPromise: Promise<void> | null = null;
  const server: Server = {
    addr,
    url,
    connections: connections as ReadonlySet<WebSocketConnection>,
    finished,
    shutdown(shutdownOptions = {}) {
      if (shutdownPromise !== null) return shutdownPromise;
      shuttingDown = true;
      listener.close();
      for (const transport of handshaking) transport.close();
      handshaking.clear();
      const code = shutdownOptions.code ?? CloseCode.GoingAway;
      const reason = shutdownOptions.reason ?? "Server shutting down";
      for (const ws of connections) ws._closeWith(code, reason);
      // Connections that do not finish their closing handshake in time are dropped.
      const timer = setTimeout(() => {
        for (const ws of connections) ws.terminate();
      }, closeTimeout + 100);
      maybeFinished();
      shutdownPromise = finished.then(() => clearTimeout(timer));
      return shutdownPromise;
    },
  };
  if (options.signal !== undefined) {
    if (options.signal.aborted) server.shutdown();
    else options.signal.addEventListener("abort", () => server.shutdown(), { once: true });
  }
  options.onListen?.(addr);
  return server;
}
