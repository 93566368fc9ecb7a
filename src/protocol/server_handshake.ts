/**
 * The server's side of the opening handshake (RFC 6455 §4.2) with no I/O:
 * request bytes go in, a verdict comes out, then the response bytes once the
 * application decided. The server's I/O layer only moves bytes, keeps time
 * and calls the user's hooks; every decision the protocol makes (limits,
 * HTTP version, request validation, origin check, subprotocol rule,
 * permessage-deflate selection, the response itself) is taken here.
 *
 * The flow, as python-websockets' `ServerProtocol`:
 * 1. {@linkcode ServerHandshake.receive} with each chunk until it returns a
 *    verdict: `"reject"` (write `response`, close) or `"upgrade"` (a valid
 *    request: show it to the application).
 * 2. {@linkcode ServerHandshake.accept} with the application's choices
 *    returns the `101 Switching Protocols` bytes and what was agreed, or
 *    {@linkcode ServerHandshake.reject} builds an error response.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { fastAccept } from "./accept_key.ts";
import { HandshakeError } from "./errors.ts";
import {
  type HeadFields,
  HeadReader,
  headText,
  parseRequestHead,
  type RequestHead,
} from "./http.ts";
import {
  buildErrorResponse,
  buildUpgradeResponse,
  type UpgradeRequest,
  validateUpgradeRequest,
  WEBSOCKET_GUID,
} from "./handshake.ts";
import {
  type DeflateOptions,
  type NegotiatedDeflate,
  selectDeflateOffer,
} from "./permessage_deflate.ts";

/** Options for {@linkcode ServerHandshake}. */
export interface ServerHandshakeOptions {
  /** The transport speaks TLS: request URLs get the `https:` scheme. @default {false} */
  secure?: boolean;
  /** Largest request head in bytes; a larger one gets 431. @default {16384} */
  maxHandshakeSize?: number;
  /**
   * Exact `Origin` values allowed; a request with another Origin gets 403, a
   * request without one (non-browser clients) is allowed. @default all origins
   */
  allowedOrigins?: readonly string[];
  /** permessage-deflate settings to accept offers with; `null` declines them. @default {null} */
  compression?: DeflateOptions | null;
  /**
   * What to do with a request that is not a WebSocket upgrade (no
   * `websocket` in its `Upgrade` header): `true` hands it over as a
   * `"request"` verdict (the server answers it as plain HTTP); `false`
   * rejects it with `426 Upgrade Required` and `Upgrade: websocket`.
   * @default {false}
   */
  plainRequests?: boolean;
}

/** A valid upgrade request, with the head it came in (as text) and the bytes after it. */
export interface ParsedUpgrade extends UpgradeRequest {
  /** The request's header fields (`fields.toHeaders()` builds a `Headers` object, once). */
  fields: HeadFields;
  /** The request head as text (up to and including the blank line), one character per byte. */
  headText: string;
  /** Bytes received after the head (the client's first frames), owned by the caller. */
  rest: Uint8Array;
}

/** The verdict on a request the protocol refuses: write `response`, then close. */
export interface RejectVerdict {
  /** Discriminant. */
  kind: "reject";
  /** Why, with the HTTP status; what the server reports to its error callback. */
  error: HandshakeError;
  /** The complete HTTP response. */
  response: Uint8Array;
}

/** The verdict on a valid request: the application decides next. */
export interface UpgradeVerdict {
  /** Discriminant. */
  kind: "upgrade";
  /** What the client asked for. */
  request: ParsedUpgrade;
}

/**
 * The verdict on a request that is not a WebSocket upgrade, with
 * `plainRequests` on: the server answers it as plain HTTP.
 */
export interface PlainRequestVerdict {
  /** Discriminant. */
  kind: "request";
  /** The parsed request head (not yet checked beyond its syntax). */
  head: RequestHead;
  /** Bytes received after the head (its body, or further requests), owned by the caller. */
  rest: Uint8Array;
}

/** What {@linkcode ServerHandshake.receive} decides once the head is complete. */
export type HandshakeVerdict = RejectVerdict | UpgradeVerdict | PlainRequestVerdict;

/** The application's choices for an accepted request. */
export interface AcceptOptions {
  /** The subprotocol to select (`""` or absent for none); must be one the client offered. */
  protocol?: string;
  /** Extra response headers (e.g. `Set-Cookie`). */
  headers?: Headers;
}

/** What an accepted handshake agreed, and the response that says so. */
export interface AcceptedUpgrade {
  /** The `101 Switching Protocols` response bytes. */
  response: Uint8Array;
  /** The selected subprotocol, or `""`. */
  protocol: string;
  /** The `Sec-WebSocket-Extensions` response value, or `""`. */
  extensions: string;
  /** The permessage-deflate parameters agreed, or `null`. */
  deflate: NegotiatedDeflate | null;
}

/**
 * Computes `Sec-WebSocket-Accept` synchronously (§4.2.2 item 5.4): base64 of
 * the SHA-1 of the key followed by the GUID.
 */
export function computeAccept(key: string): string {
  return fastAccept(key) ?? createHash("sha1").update(key + WEBSOCKET_GUID).digest("base64");
}

/**
 * The subprotocol rule for a server list (§4.2.2 item 5.4, "/subprotocol/"):
 * the first protocol in the client's order of preference that the server
 * supports, or `""` when there is none in common.
 */
export function selectSubprotocol(
  offered: readonly string[],
  supported: readonly string[],
): string {
  return offered.find((protocol) => supported.includes(protocol)) ?? "";
}

/**
 * Whether a request asks for WebSocket at all: `websocket` among its
 * `Upgrade` tokens (another upgrade, e.g. `h2c`, may be ignored, RFC 9110
 * §7.8). Requests that do are held to every rule of RFC 6455 §4.2.1; the
 * others are plain HTTP.
 */
export function isUpgradeAttempt(upgrade: string | null): boolean {
  return upgrade !== null && /(?:^|[\s,])websocket(?:$|[\s,])/i.test(upgrade);
}

/** How a server reads request heads (one object, not one per handshake). */
const STRICT_HEAD = { rejectBareLf: true } as const;

/**
 * One server-side opening handshake, bytes in and bytes out.
 *
 * @example Accept a request fed in one chunk
 * ```ts
 * import { ServerHandshake } from "./server_handshake.ts";
 *
 * const handshake = new ServerHandshake({ allowedOrigins: ["https://app.example"] });
 * const verdict = handshake.receive(new TextEncoder().encode(
 *   "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n" +
 *     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
 *     "Sec-WebSocket-Version: 13\r\n\r\n",
 * ));
 * if (verdict?.kind === "upgrade") {
 *   const { response } = handshake.accept({ protocol: "" });
 *   // write `response`, then speak WebSocket with verdict.request.rest first
 * }
 * ```
 */
export class ServerHandshake {
  readonly #secure: boolean;
  readonly #allowedOrigins: readonly string[] | undefined;
  readonly #compression: DeflateOptions | null;
  readonly #plainRequests: boolean;
  #reader: HeadReader | null;
  #request: ParsedUpgrade | null = null;
  #decided = false;

  /** Creates the handshake of one connection. */
  constructor(options: ServerHandshakeOptions = {}) {
    this.#secure = options.secure ?? false;
    this.#allowedOrigins = options.allowedOrigins;
    this.#compression = options.compression ?? null;
    this.#plainRequests = options.plainRequests ?? false;
    this.#reader = new HeadReader(options.maxHandshakeSize ?? 16 * 1024, STRICT_HEAD);
  }

  /**
   * Adds received bytes (read only during the call). Returns `null` while the
   * head is incomplete, then the verdict, once; call it no more afterwards.
   * A `"reject"` verdict carries the response: 431 for a head over the limit,
   * 400 for a malformed one, 505 for an HTTP major version other than 1, 405
   * for another method, 426 for another WebSocket version or for a request
   * that is no upgrade at all (unless `plainRequests` hands it over as a
   * `"request"` verdict), 403 for an Origin that is not allowed.
   */
  receive(chunk: Uint8Array): HandshakeVerdict | null {
    const reader = this.#reader;
    if (reader === null) throw new TypeError("The handshake already has its verdict");
    try {
      const result = reader.push(chunk);
      if (result === null) return null;
      this.#reader = null;
      const text = headText(result.head);
      const head = parseRequestHead(text);
      if (!isUpgradeAttempt(head.fields.get("upgrade"))) {
        if (this.#plainRequests) {
          this.#decided = true;
          return { kind: "request", head, rest: result.rest };
        }
        if (head.version[0] === 1) {
          throw new HandshakeError(426, "This is a WebSocket endpoint: upgrade to websocket", {
            Upgrade: "websocket",
          });
        }
      }
      const upgrade = validateUpgradeRequest(head, this.#secure);
      const allowed = this.#allowedOrigins;
      if (allowed !== undefined && upgrade.origin !== null && !allowed.includes(upgrade.origin)) {
        throw new HandshakeError(403, `Origin ${upgrade.origin} is not allowed`);
      }
      this.#request = {
        ...upgrade,
        fields: head.fields,
        headText: text,
        rest: result.rest,
      };
      return { kind: "upgrade", request: this.#request };
    } catch (error) {
      if (!(error instanceof HandshakeError)) throw error;
      this.#reader = null;
      this.#decided = true;
      return {
        kind: "reject",
        error,
        response: this.reject(error.status, error.message, error.headers),
      };
    }
  }

  /**
   * Accepts the request with the application's choices: selects the first
   * acceptable permessage-deflate offer (a malformed offer is declined, RFC
   * 7692 §5) and builds the `101` response. Throws `TypeError` when `protocol`
   * was not offered by the client (§4.2.2: the server must select one of the
   * client's values) or a header value would break the response, and when
   * there is no valid request to accept.
   */
  accept(options: AcceptOptions = {}): AcceptedUpgrade {
    const request = this.#request;
    if (request === null || this.#decided) {
      throw new TypeError("There is no valid upgrade request to accept");
    }
    const protocol = options.protocol ?? "";
    if (protocol !== "" && !request.protocols.includes(protocol)) {
      throw new TypeError(
        `Subprotocol ${JSON.stringify(protocol)} was selected, but the client offered ` +
          (request.protocols.length === 0
            ? "none"
            : `only ${request.protocols.map((p) => JSON.stringify(p)).join(", ")}`),
      );
    }
    let extensions = "";
    let deflate: NegotiatedDeflate | null = null;
    if (this.#compression !== null && request.extensions !== null) {
      let selection = null;
      try {
        selection = selectDeflateOffer(request.extensions, this.#compression);
      } catch {
        // A malformed offer is declined, not fatal (RFC 7692 §5).
      }
      if (selection !== null) {
        extensions = selection.response;
        deflate = selection.params;
      }
    }
    const response = buildUpgradeResponse(computeAccept(request.key), {
      protocol,
      extensions,
      headers: options.headers,
    });
    this.#decided = true;
    return { response, protocol, extensions, deflate };
  }

  /**
   * Builds an error response (e.g. 401 from the application, 408 on a
   * timeout, 503 during shutdown): a short plain-text body and
   * `Connection: close`.
   */
  reject(status: number, message: string, headers?: Headers): Uint8Array {
    this.#reader = null;
    this.#decided = true;
    return buildErrorResponse(status, message, headers);
  }
}
