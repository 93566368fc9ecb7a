/**
 * Sluice for web pages: {@linkcode ReconnectingWebSocket} over the browser's
 * own `WebSocket`, with the same backoff, jitter, reconnection policy and
 * bounded send queue as the Deno and Bun client.
 *
 * This entry point imports no runtime, Node module or socket code, so any
 * bundler targeting the browser takes it as it is (`bun build browser.ts
 * --target browser`, esbuild, Vite). A test bundles it and fails if such an
 * import creeps in.
 *
 * What a browser does not tell a page: why a handshake failed (a 401 and an
 * unreachable server both look like a close with 1006 before `open`). The
 * default policy therefore retries every attempt that never opened; set
 * `maxAttempts` or `shouldReconnect` where a refused login must stop it.
 *
 * @example A chat page that rejoins its room after every reconnection
 * ```ts ignore
 * import { ReconnectingWebSocket } from "@sluice/ws/browser";
 *
 * const chat = new ReconnectingWebSocket("/chat?room=lobby", { maxDelay: 10_000 });
 * chat.addEventListener("open", () => chat.send(JSON.stringify({ type: "hello" })));
 * chat.addEventListener("message", (event) => console.log(event.data));
 * chat.addEventListener("reconnecting", (event) => console.log(`retry in ${event.delay} ms`));
 * ```
 *
 * @module
 */

import type { CloseInfo } from "./src/websocket.ts";
import { parseWebSocketUrl } from "./src/ws_url.ts";
import {
  type OpenedSocket,
  ReconnectingSocket,
  type ReconnectPolicyOptions,
} from "./src/reconnect_core.ts";

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
} from "./src/reconnect_core.ts";
export type { CloseInfo, SendData } from "./src/websocket.ts";

/**
 * Options of the browser {@linkcode ReconnectingWebSocket}: the reconnect
 * policy plus the subprotocols to offer (a browser sets every other header
 * itself).
 *
 * @example Offering a subprotocol, never giving up
 * ```ts
 * import type { BrowserReconnectOptions } from "@sluice/ws/browser";
 * const options: BrowserReconnectOptions = { protocols: ["chat.v1"], maxDelay: 10_000 };
 * console.log(options.protocols);
 * ```
 */
export interface BrowserReconnectOptions extends ReconnectPolicyOptions {
  /** Subprotocols to offer, in order of preference. */
  protocols?: string | string[];
}

/**
 * A URL as the `WebSocket` constructor takes it, resolved against the page:
 * `/chat` and `http://host/chat` become `ws://host/chat` (`wss:` for
 * `https:`). Throws `SyntaxError` for anything else, as `WebSocket` does.
 */
function resolveUrl(input: string | URL): string {
  const base = (globalThis as { location?: { href: string } }).location?.href;
  return parseWebSocketUrl(input, base).href;
}

/** The browser's `WebSocket` class; looked up when used, so that importing this module never fails. */
function nativeWebSocket(): typeof WebSocket {
  const ctor = (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
  if (typeof ctor !== "function") {
    throw new TypeError("This environment has no WebSocket class");
  }
  return ctor;
}

/** Opens one native WebSocket: resolves on `open`, rejects on a close or abort before it. */
function openNative(
  url: string,
  protocols: string | string[] | undefined,
  init: {
    signal: AbortSignal;
    onMessage(data: string | ArrayBuffer): void;
    onError(error: Error): void;
  },
): Promise<OpenedSocket<WebSocket>> {
  const Native = nativeWebSocket();
  return new Promise((resolve, reject) => {
    const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
    // ArrayBuffers are turned into Blobs by the reconnect logic when asked for.
    ws.binaryType = "arraybuffer";
    let opened = false;
    let resolveClosed!: (info: CloseInfo) => void;
    const closed = new Promise<CloseInfo>((r) => (resolveClosed = r));
    const onAbort = () => {
      if (opened) return;
      ws.close();
      reject(new DOMException("The connection attempt was aborted", "AbortError"));
    };
    init.signal.addEventListener("abort", onAbort, { once: true });
    ws.onopen = () => {
      opened = true;
      init.signal.removeEventListener("abort", onAbort);
      resolve({ socket: ws, closed });
    };
    ws.onmessage = (event: MessageEvent) => init.onMessage(event.data as string | ArrayBuffer);
    ws.onerror = () => {
      // A browser says nothing more: the close event that follows has the code.
      if (opened) init.onError(new Error(`WebSocket connection to ${url} failed`));
    };
    ws.onclose = (event: CloseEvent) => {
      init.signal.removeEventListener("abort", onAbort);
      if (!opened) {
        reject(new Error(`WebSocket connection to ${url} failed (close code ${event.code})`));
      }
      resolveClosed({ closeCode: event.code, reason: event.reason, wasClean: event.wasClean });
    };
  });
}

/**
 * A WebSocket for web pages that reconnects: the same class as Sluice's
 * `ReconnectingWebSocket` for Deno and Bun (events `open`, `message`,
 * `error`, `reconnecting`, `close`; `send()` queues while disconnected),
 * over the browser's own `WebSocket`. Relative URLs are resolved against the
 * page, and `http(s):` URLs become `ws(s):`.
 *
 * @example A live price on a page
 * ```ts ignore
 * import { ReconnectingWebSocket } from "@sluice/ws/browser";
 *
 * const prices = new ReconnectingWebSocket("/ticker", { minDelay: 250 });
 * prices.addEventListener("open", () => prices.send("subscribe ACME")); // on every connection
 * prices.addEventListener("message", (event) => {
 *   document.querySelector("#acme")!.textContent = String(event.data);
 * });
 * ```
 */
export class ReconnectingWebSocket extends ReconnectingSocket<WebSocket> {
  /**
   * Starts connecting to `url`. Throws `SyntaxError` for an invalid URL and
   * `RangeError` for invalid options.
   */
  constructor(url: string | URL, options: BrowserReconnectOptions = {}) {
    const protocols = options.protocols;
    super(resolveUrl(url), options, (href, init) => openNative(href, protocols, init));
  }
}
