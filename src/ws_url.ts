/**
 * The WebSocket URL rules of the WHATWG constructor, shared by the runtime
 * clients and the browser entry point (so this file imports nothing).
 *
 * @module
 */

/**
 * Normalises a WebSocket URL as the WHATWG constructor does: resolved
 * against `base` when given (a page's location), `http:`/`https:` become
 * `ws:`/`wss:`, no fragment. Throws `SyntaxError` otherwise.
 */
export function parseWebSocketUrl(input: string | URL, base?: string): URL {
  let url: URL;
  try {
    url = new URL(input, base);
  } catch {
    throw new DOMException(`Invalid WebSocket URL: ${input}`, "SyntaxError");
  }
  if (url.protocol === "http:") url.protocol = "ws:";
  else if (url.protocol === "https:") url.protocol = "wss:";
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new DOMException(
      `WebSocket URL must use ws: or wss:, got ${url.protocol}`,
      "SyntaxError",
    );
  }
  // An empty fragment ("ws://host/#") leaves `hash` empty but is a fragment still.
  if (url.hash !== "" || url.href.endsWith("#")) {
    throw new DOMException("WebSocket URL must not have a fragment", "SyntaxError");
  }
  return url;
}

/**
 * A close code as the WHATWG `close(code)` takes it: WebIDL `[Clamp]
 * unsigned short` (NaN is 0, clamped to 0-65535, rounded half to even), so
 * `3000.5` is 3000. `undefined` stays `undefined`.
 */
export function clampCloseCode(code: number | undefined): number | undefined {
  if (code === undefined) return undefined;
  const x = Number(code);
  if (Number.isNaN(x)) return 0;
  const clamped = Math.min(Math.max(x, 0), 65535);
  const floor = Math.floor(clamped);
  const rest = clamped - floor;
  if (rest > 0.5 || (rest === 0.5 && floor % 2 === 1)) return floor + 1;
  return floor;
}
