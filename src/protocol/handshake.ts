/**
 * The opening handshake (RFC 6455 §4): validating a client's request and
 * building the server's response, and the client's side of the same.
 *
 * @module
 */

import { HandshakeError } from "./errors.ts";
import { hasToken, isToken, type RequestHead, type ResponseHead, splitList } from "./http.ts";

/** The GUID of §1.3, appended to the key before hashing. */
export const WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const encoder = new TextEncoder();
const KEY_PATTERN = /^[A-Za-z0-9+/]{21}[AQgw]==$/;
// uri-host [":" port] (RFC 9110 §7.2, RFC 3986 §3.2.2): no userinfo, path or spaces.
const HOST_PATTERN = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?$/;

// A request-target: visible ASCII only (RFC 9112 §3.2, RFC 3986 §2). The URL
// parser would otherwise drop a trailing control character ("/admin\x01"
// reaching the application as "/admin") and re-encode raw UTF-8 from the
// head's one-character-per-byte text as something the client never sent.
const TARGET_PATTERN = /^[\x21-\x7e]+$/;

/** Whether `target` holds only the characters a request-target may (visible ASCII). */
export function isValidTarget(target: string): boolean {
  return TARGET_PATTERN.test(target);
}

/** Whether `host` is a valid Host header value: uri-host with an optional port (RFC 9110 §7.2). */
export function isValidHost(host: string): boolean {
  return HOST_PATTERN.test(host);
}

/** `Uint8Array.prototype.toBase64` (Deno, Bun, browsers since 2025), where the runtime has it. */
const nativeBase64 = (Uint8Array.prototype as { toBase64?: (this: Uint8Array) => string })
  .toBase64;

/**
 * Base64 of `bytes` (short ones: keys and digests), as one string: every
 * handshake makes one, and building it a character at a time made twenty
 * intermediate strings (~600 bytes of garbage per handshake).
 */
export function toBase64(bytes: Uint8Array): string {
  return nativeBase64 !== undefined ? nativeBase64.call(bytes) : portableBase64(bytes);
}

/** {@linkcode toBase64} where the runtime has no `toBase64` of its own (short inputs only). */
export function portableBase64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode.apply(null, bytes as unknown as number[]));
}

/**
 * Computes `Sec-WebSocket-Accept` for a key (§4.2.2 item 5.4): base64 of the
 * SHA-1 of the key followed by the GUID.
 *
 * @example The RFC's own example (§1.3)
 * ```ts
 * import { acceptKey } from "@sluice/ws";
 * await acceptKey("dGhlIHNhbXBsZSBub25jZQ=="); // "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
 * ```
 */
export async function acceptKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", encoder.encode(key + WEBSOCKET_GUID));
  return toBase64(new Uint8Array(digest));
}

/**
 * A fresh `Sec-WebSocket-Key`: base64 of 16 random bytes (§4.1).
 *
 * @example
 * ```ts
 * import { generateKey } from "@sluice/ws";
 * console.log(generateKey().length); // 24
 * ```
 */
export function generateKey(): string {
  return toBase64(crypto.getRandomValues(new Uint8Array(16)));
}

/** What a valid upgrade request asks for. */
export interface UpgradeRequest {
  /** The `Sec-WebSocket-Key`. */
  key: string;
  /**
   * The full request URL, serialized (scheme `http:` or `https:` from the
   * transport): a `URL` object is made only where someone asks for one.
   */
  href: string;
  /** Subprotocols the client offered, in its order of preference. */
  protocols: string[];
  /** The raw `Sec-WebSocket-Extensions` value, or `null`. */
  extensions: string | null;
  /** The `Origin` header, or `null` (non-browser clients often send none). */
  origin: string | null;
}

/**
 * Validates an upgrade request (§4.2.1). Throws a {@linkcode HandshakeError}:
 * 505 for an HTTP major version other than 1, 405 for a method other than GET, 426 (with `Sec-WebSocket-Version: 13`) for
 * another protocol version, 400 for anything missing or malformed.
 */
export function validateUpgradeRequest(request: RequestHead, secure: boolean): UpgradeRequest {
  // The parsed fields: a Headers object is built only if the application asks.
  const headers = request.fields;
  // Indexed, not destructured: destructuring makes an iterator (~115 bytes per handshake).
  const major = request.version[0], minor = request.version[1];
  // RFC 9110 §15.6.6: another major version is answered 505 before anything
  // else, since the rest of the head cannot be read as HTTP/1.x.
  if (major !== 1) {
    throw new HandshakeError(
      505,
      `HTTP/${major}.${minor} is not supported: use HTTP/1.1`,
    );
  }
  if (request.method !== "GET") {
    throw new HandshakeError(405, `Method ${request.method} is not allowed: use GET`, {
      Allow: "GET",
    });
  }
  if (minor < 1) {
    throw new HandshakeError(400, "HTTP/1.1 or later is required");
  }
  const host = headers.get("host");
  if (host === null || host === "") throw new HandshakeError(400, "Missing Host header");
  // RFC 9112 §3.2: an invalid Host value (or two Host fields, joined with ", ") is a 400.
  if (!HOST_PATTERN.test(host)) {
    throw new HandshakeError(400, `Invalid Host header: ${JSON.stringify(host.slice(0, 64))}`);
  }
  if (!hasToken(headers.get("upgrade"), "websocket")) {
    throw new HandshakeError(400, "Missing or invalid Upgrade header: expected 'websocket'", {
      Upgrade: "websocket",
    });
  }
  if (!hasToken(headers.get("connection"), "upgrade")) {
    throw new HandshakeError(400, "Missing or invalid Connection header: expected 'Upgrade'");
  }
  const key = headers.get("sec-websocket-key");
  if (key === null) throw new HandshakeError(400, "Missing Sec-WebSocket-Key header");
  if (!KEY_PATTERN.test(key)) {
    throw new HandshakeError(400, "Invalid Sec-WebSocket-Key header: expected base64 of 16 bytes");
  }
  const version = headers.get("sec-websocket-version");
  if (version === null) throw new HandshakeError(400, "Missing Sec-WebSocket-Version header");
  if (version.trim() !== "13") {
    throw new HandshakeError(
      426,
      `Unsupported Sec-WebSocket-Version ${version}: only 13 is supported`,
      {
        "Sec-WebSocket-Version": "13",
      },
    );
  }
  const protocols = splitList(headers.get("sec-websocket-protocol"));
  for (const protocol of protocols) {
    if (!isToken(protocol)) {
      throw new HandshakeError(400, `Invalid subprotocol ${JSON.stringify(protocol.slice(0, 64))}`);
    }
  }
  const target = request.target;
  if (!isValidTarget(target)) {
    throw new HandshakeError(400, "Invalid characters in the request target");
  }
  let href: string | null;
  if (target.startsWith("/")) {
    // Origin-form is appended to the authority, not resolved against it:
    // resolving would read "//evil.example/x" (or "/\\evil.example/x") as a
    // network-path reference and take the host from the target.
    // (Origin-form is http(s) by construction, and the Host check leaves no room for userinfo.)
    href = originFormHref(secure, host, target);
  } else {
    let url: URL | null = null;
    try {
      url = new URL(target);
    } catch {
      // A 400 below.
    }
    // Absolute-form must be an http(s) URI (§4.1, RFC 9112 §3.2.2), without userinfo.
    if (
      url !== null &&
      ((url.protocol !== "http:" && url.protocol !== "https:") || url.username !== "" ||
        url.password !== "")
    ) {
      throw new HandshakeError(
        400,
        `Invalid request target ${JSON.stringify(target.slice(0, 64))}`,
      );
    }
    href = url?.href ?? null;
  }
  if (href === null) throw new HandshakeError(400, "Invalid request target or Host header");
  return {
    key,
    href,
    protocols,
    extensions: headers.get("sec-websocket-extensions"),
    origin: headers.get("origin"),
  };
}

/** Origin-form request URLs already parsed, by scheme, Host and target: their serialization, or `null`. */
const parsedUrls = [
  new Map<string, Map<string, string | null>>(),
  new Map<string, Map<string, string | null>>(),
];
let parsedCount = 0;

/**
 * The serialized URL of an origin-form request, or `null` when it does not
 * parse. A server's clients ask for the same few URLs, and a `URL` object
 * costs ~500 bytes of garbage per handshake: each distinct one is parsed
 * once, looked up by the strings the head already holds (a bounded cache of
 * short URLs; a flood of distinct ones only empties it).
 */
function originFormHref(secure: boolean, host: string, target: string): string | null {
  const scheme = secure ? "https://" : "http://";
  if (host.length + target.length > 512) return parseHref(scheme + host + target);
  const byHost = parsedUrls[secure ? 1 : 0];
  let byTarget = byHost.get(host);
  let href = byTarget?.get(target);
  if (href === undefined) {
    href = parseHref(scheme + host + target);
    if (parsedCount >= 256) {
      parsedUrls[0].clear();
      parsedUrls[1].clear();
      parsedCount = 0;
      byTarget = undefined;
    }
    if (byTarget === undefined) byHost.set(host, byTarget = new Map());
    byTarget.set(target, href);
    parsedCount++;
  }
  return href;
}

function parseHref(text: string): string | null {
  try {
    return new URL(text).href;
  } catch {
    return null;
  }
}

// A header value with no CR, LF or other control character (RFC 9110 §5.5).
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** Refuses a value that would break the head (a CR LF would inject headers). */
function checkValue(name: string, value: string): string {
  if (!FIELD_VALUE.test(value)) {
    throw new TypeError(`Invalid ${name} value ${JSON.stringify(value.slice(0, 64))}`);
  }
  return value;
}

/** Refuses a subprotocol that is not a token (§4.1: a comma or space would split the list). */
function checkProtocol(protocol: string): string {
  if (!isToken(protocol)) {
    throw new TypeError(`Invalid subprotocol ${JSON.stringify(protocol.slice(0, 64))}`);
  }
  return protocol;
}

const STATUS_TEXT: Record<number, string> = {
  101: "Switching Protocols",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  417: "Expectation Failed",
  426: "Upgrade Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};

function headerLines(headers: Headers | undefined): string {
  let out = "";
  headers?.forEach((value, name) => {
    out += `${name}: ${value}\r\n`;
  });
  return out;
}

/** Options for {@linkcode buildUpgradeResponse}. */
export interface UpgradeResponseOptions {
  /** The chosen subprotocol, if any. */
  protocol?: string;
  /** The `Sec-WebSocket-Extensions` response value, if any. */
  extensions?: string;
  /** Extra headers (e.g. `Set-Cookie`). */
  headers?: Headers;
}

/**
 * Builds the `101 Switching Protocols` response bytes (§4.2.2 item 5).
 * Throws `TypeError` for a subprotocol that is not a token or an extensions
 * value with CR, LF or control characters.
 */
export function buildUpgradeResponse(
  accept: string,
  options: UpgradeResponseOptions = {},
): Uint8Array {
  if (!options.protocol && !options.extensions && options.headers === undefined) {
    return plainUpgradeResponse(accept);
  }
  let head = UPGRADE_HEAD + `Sec-WebSocket-Accept: ${accept}\r\n`;
  if (options.protocol) head += `Sec-WebSocket-Protocol: ${checkProtocol(options.protocol)}\r\n`;
  if (options.extensions) {
    head += `Sec-WebSocket-Extensions: ${
      checkValue("Sec-WebSocket-Extensions", options.extensions)
    }\r\n`;
  }
  options.headers?.forEach((_value, name) => {
    if (RESERVED_RESPONSE_HEADERS.includes(name)) {
      throw new TypeError(
        `Header ${name} is set by the WebSocket handshake and cannot be overridden`,
      );
    }
  });
  head += headerLines(options.headers) + "\r\n";
  return encoder.encode(head);
}

const RESERVED_RESPONSE_HEADERS = [
  "upgrade",
  "connection",
  "sec-websocket-accept",
  "sec-websocket-protocol",
  "sec-websocket-extensions",
  "content-length",
  "transfer-encoding",
];

const UPGRADE_HEAD =
  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
const ACCEPT_PREFIX = encoder.encode(UPGRADE_HEAD + "Sec-WebSocket-Accept: ");

/**
 * The usual 101 (no subprotocol, extension or extra header) written straight
 * into its bytes: the one allocation is the buffer the write needs.
 */
function plainUpgradeResponse(accept: string): Uint8Array {
  const at = ACCEPT_PREFIX.length;
  const out = new Uint8Array(at + accept.length + 4);
  out.set(ACCEPT_PREFIX);
  // Base64: ASCII only.
  for (let i = 0; i < accept.length; i++) out[at + i] = accept.charCodeAt(i);
  out.set(CRLF_CRLF, at + accept.length);
  return out;
}
const CRLF_CRLF = new Uint8Array([0x0d, 0x0a, 0x0d, 0x0a]);

/** Builds an error response with a short plain-text body, closing the connection. */
export function buildErrorResponse(status: number, message: string, headers?: Headers): Uint8Array {
  const body = encoder.encode(message + "\n");
  const extra = new Headers(headers);
  extra.delete("content-length");
  extra.delete("connection");
  extra.delete("transfer-encoding");
  if (!extra.has("content-type")) extra.set("content-type", "text/plain; charset=utf-8");
  const head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? "Error"}\r\n` + headerLines(extra) +
    `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
  const head8 = encoder.encode(head);
  const out = new Uint8Array(head8.length + body.length);
  out.set(head8);
  out.set(body, head8.length);
  return out;
}

/** Options for {@linkcode buildClientRequest}. */
export interface ClientRequestOptions {
  /** The `Sec-WebSocket-Key` to send. */
  key: string;
  /** Subprotocols to offer. */
  protocols?: string[];
  /** The `Sec-WebSocket-Extensions` offer. */
  extensions?: string;
  /** The `Origin` header. */
  origin?: string;
  /** Extra headers (e.g. `Authorization`, `Cookie`). */
  headers?: Headers;
}

const RESERVED_REQUEST_HEADERS = [
  "host",
  "upgrade",
  "connection",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-accept",
  "sec-websocket-protocol",
  "sec-websocket-extensions",
];

/**
 * Builds a client's upgrade request (§4.1) for a `ws:` or `wss:` URL.
 * Throws `TypeError` if extra headers try to set a handshake header, a
 * subprotocol is not a token, or a value holds CR, LF or control characters.
 */
export function buildClientRequest(url: URL, options: ClientRequestOptions): Uint8Array {
  const path = (url.pathname || "/") + url.search;
  let head = `GET ${path} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${options.key}\r\nSec-WebSocket-Version: 13\r\n`;
  if (options.protocols && options.protocols.length > 0) {
    head += `Sec-WebSocket-Protocol: ${options.protocols.map(checkProtocol).join(", ")}\r\n`;
  }
  if (options.extensions) {
    head += `Sec-WebSocket-Extensions: ${
      checkValue("Sec-WebSocket-Extensions", options.extensions)
    }\r\n`;
  }
  if (options.origin) head += `Origin: ${checkValue("Origin", options.origin)}\r\n`;
  options.headers?.forEach((value, name) => {
    if (RESERVED_REQUEST_HEADERS.includes(name)) {
      throw new TypeError(
        `Header ${name} is set by the WebSocket handshake and cannot be overridden`,
      );
    }
    head += `${name}: ${value}\r\n`;
  });
  return encoder.encode(head + "\r\n");
}

/** What a valid server response agreed to. */
export interface HandshakeResult {
  /** The selected subprotocol, or `""`. */
  protocol: string;
  /** The `Sec-WebSocket-Extensions` response value, or `""`. */
  extensions: string;
}

/**
 * Validates the server's response (§4.1, the client's checks 1-6). Throws a
 * {@linkcode HandshakeError} naming the problem; for a status other than 101
 * the message includes the status and the start of `body`.
 */
export async function validateServerResponse(
  response: ResponseHead,
  options: { key: string; protocols: string[]; body?: string },
): Promise<HandshakeResult> {
  const { headers, status } = response;
  if (status !== 101) {
    const snippet = options.body ? `: ${options.body.slice(0, 200).trim()}` : "";
    throw new HandshakeError(
      status,
      `Server answered ${status} ${response.statusText} instead of 101 Switching Protocols${snippet}`,
      headers,
    );
  }
  if (headers.get("upgrade")?.toLowerCase() !== "websocket") {
    throw new HandshakeError(
      status,
      "Server response has a missing or wrong Upgrade header",
      headers,
    );
  }
  if (!splitList(headers.get("connection")).some((t) => t.toLowerCase() === "upgrade")) {
    throw new HandshakeError(
      status,
      "Server response has a missing or wrong Connection header",
      headers,
    );
  }
  const accept = headers.get("sec-websocket-accept");
  if (accept === null) {
    throw new HandshakeError(status, "Server response has no Sec-WebSocket-Accept header", headers);
  }
  if (accept !== await acceptKey(options.key)) {
    throw new HandshakeError(
      status,
      "Server response has a wrong Sec-WebSocket-Accept value",
      headers,
    );
  }
  const protocol = headers.get("sec-websocket-protocol") ?? "";
  if (protocol !== "" && !options.protocols.includes(protocol)) {
    throw new HandshakeError(
      status,
      `Server selected subprotocol ${JSON.stringify(protocol)}, which the client did not offer`,
      headers,
    );
  }
  return { protocol, extensions: headers.get("sec-websocket-extensions") ?? "" };
}
