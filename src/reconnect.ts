/**
 * An opt-in reconnecting client for long-lived feeds (tickers, chats,
 * dashboards): {@linkcode ReconnectingWebSocket} wraps `connect()` and opens a
 * new connection, with exponential backoff and jitter, whenever one is lost.
 *
 * What it promises and what it does not:
 * - Messages are delivered at most once. `send()` while connected hands the
 *   message to the current connection; if that connection then drops, the
 *   message may be lost. Only messages sent while *disconnected* are queued.
 * - A new connection is a new session: the server sees a fresh handshake.
 *   Re-authenticate or resubscribe in an `open` listener; messages queued
 *   while disconnected are sent right after the `open` listeners ran.
 *
 * @module
 */

import { connect, type ConnectOptions, parseUrl } from "./client.ts";
import type { WebSocketConnection } from "./websocket.ts";
import { ReconnectingSocket, type ReconnectPolicyOptions } from "./reconnect_core.ts";

export {
  type ConnectionEnd,
  type DisconnectedPolicy,
  type JitterMode,
  type OpenAttempt,
  type OpenedSocket,
  type ReconnectableSocket,
  ReconnectEvent,
  ReconnectingSocket,
  type ReconnectingWebSocketEventMap,
  type ReconnectPolicyOptions,
  shouldReconnectByDefault,
  type SocketOpener,
} from "./reconnect_core.ts";

/**
 * Options for {@linkcode ReconnectingWebSocket}; every `connect()` option
 * (headers, subprotocols, timeouts, limits) applies to each attempt.
 *
 * @example A chat client
 * ```ts
 * import { type ReconnectOptions, ReconnectingWebSocket } from "@sluice/ws";
 * const options: ReconnectOptions = {
 *   protocols: ["chat.v1"],
 *   headers: { Authorization: "Bearer token" },
 *   minDelay: 1_000,
 *   maxDelay: 30_000,
 *   jitter: "full",
 *   whileDisconnected: "queue",
 *   maxQueued: 100,
 * };
 * const chat = new ReconnectingWebSocket("ws://127.0.0.1:9/chat", options);
 * chat.close();
 * ```
 */
export interface ReconnectOptions
  extends
    Omit<ConnectOptions<undefined>, "handlers" | "data" | "signal" | "binaryType">,
    ReconnectPolicyOptions {}

/**
 * A WebSocket client that reconnects. It connects at once; whenever the
 * connection is lost it fires `reconnecting` (with the attempt number and
 * delay) and tries again after an exponential backoff with jitter, until
 * `close()` is called, the signal aborts, the reconnection policy says no, or
 * `maxAttempts` consecutive attempts failed. Then `close` fires, once.
 *
 * Events: `open` for every connection that opens, `message` for every
 * message, `error` for every failure, `reconnecting` between connections,
 * `close` at the very end. `readyState` is `OPEN` while a connection is open,
 * `CONNECTING` between connections, `CLOSING` after `close()` and `CLOSED` at
 * the end.
 *
 * While disconnected, `send()` queues (`whileDisconnected: "queue"`, bounded by
 * `maxQueued` and `maxQueuedBytes`: a message over either bound makes `send()`
 * throw `RangeError`, so nothing is dropped silently) or throws
 * `InvalidStateError` (`"reject"`). After `close()`, `send()` throws
 * `InvalidStateError` and queued messages are discarded.
 *
 * @example A ticker that survives server restarts
 * ```ts
 * import { ReconnectingWebSocket, serve } from "@sluice/ws";
 * const server = await serve({ port: 0, hostname: "127.0.0.1" }, {
 *   message: (ws, data) => ws.send(`price of ${data}: 42`),
 * });
 * const ticker = new ReconnectingWebSocket(server.url, { minDelay: 250, maxDelay: 10_000 });
 * ticker.addEventListener("open", () => ticker.send("ACME")); // Resubscribe on every connection.
 * ticker.addEventListener("message", (event) => {
 *   console.log(event.data);
 *   ticker.close();
 * });
 * ticker.addEventListener("reconnecting", (event) => {
 *   console.log(`reconnecting in ${event.delay} ms (attempt ${event.attempt})`);
 * });
 * await ticker.closed;
 * await server.shutdown();
 * ```
 */
export class ReconnectingWebSocket extends ReconnectingSocket<WebSocketConnection<undefined>> {
  /**
   * Starts connecting to `url`. Throws `SyntaxError` for an invalid URL and
   * `RangeError` for invalid options.
   */
  constructor(url: string | URL, options: ReconnectOptions = {}) {
    super(parseUrl(url).href, options, async (href, init) => {
      // Callbacks, not listeners: they are in place before the first byte is parsed.
      const ws = await connect(href, {
        ...options,
        binaryType: init.binaryType,
        signal: init.signal,
        handlers: {
          message: (_ws, data) => init.onMessage(data),
          error: (_ws, error) => init.onError(error),
        },
      });
      return { socket: ws, closed: ws.closed };
    });
  }
}
