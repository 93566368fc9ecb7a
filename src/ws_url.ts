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
  if (url.hash !== "") {
    throw new DOMException("WebSocket URL must not have a fragment", "SyntaxError");
  }
  return url;
}
