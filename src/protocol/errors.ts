/**
 * The one small family of errors the protocol raises. Each carries a stable
 * `code` string for programs and the close code (RFC 6455 §7.4.1) the
 * connection is failed with; {@linkcode HandshakeError} carries an HTTP
 * status instead.
 *
 * @module
 */

/** Stable identifiers for every way a peer can break the protocol. */
export type WebSocketErrorCode =
  | "UNMASKED_FRAME"
  | "MASKED_FRAME"
  | "RESERVED_BITS"
  | "RESERVED_OPCODE"
  | "CONTROL_FRAME_TOO_LONG"
  | "FRAGMENTED_CONTROL_FRAME"
  | "UNEXPECTED_CONTINUATION"
  | "EXPECTED_CONTINUATION"
  | "INVALID_LENGTH"
  | "INVALID_CLOSE_CODE"
  | "INVALID_CLOSE_PAYLOAD"
  | "INVALID_UTF8"
  | "FRAME_TOO_BIG"
  | "MESSAGE_TOO_BIG"
  | "TOO_MANY_FRAGMENTS"
  | "INVALID_COMPRESSED_DATA"
  | "BUFFER_OVERFLOW"
  | "CLOSE_TIMEOUT"
  | "PING_TIMEOUT"
  | "CONNECTION_RESET";

/**
 * A violation that fails the WebSocket connection (RFC 6455 §7.1.7).
 *
 * @example Telling errors apart
 * ```ts
 * import { WebSocketError } from "@sluice/ws";
 * const err = new WebSocketError("INVALID_UTF8", 1007, "Text frame is not valid UTF-8");
 * console.log(err.code, err.closeCode); // "INVALID_UTF8" 1007
 * ```
 */
export class WebSocketError extends Error {
  /** A stable identifier for the failure. */
  readonly code: WebSocketErrorCode;
  /** The close code sent to the peer for this failure. */
  readonly closeCode: number;

  /** Creates an error with its stable code, close code and message. */
  constructor(code: WebSocketErrorCode, closeCode: number, message: string) {
    super(message);
    this.name = "WebSocketError";
    this.code = code;
    this.closeCode = closeCode;
  }
}

/** A frame or sequence of frames RFC 6455 does not allow: close code 1002. */
export function protocolError(code: WebSocketErrorCode, message: string): WebSocketError {
  return new WebSocketError(code, 1002, message);
}

/** Data inconsistent with its type, such as bad UTF-8 in text: close code 1007. */
export function invalidDataError(code: WebSocketErrorCode, message: string): WebSocketError {
  return new WebSocketError(code, 1007, message);
}

/** A frame or message over a configured limit: close code 1009. */
export function tooBigError(code: WebSocketErrorCode, message: string): WebSocketError {
  return new WebSocketError(code, 1009, message);
}

/**
 * A rejected opening handshake. On the server it becomes an HTTP response
 * with {@linkcode HandshakeError.status}; on the client it is the reason
 * `connect()` failed.
 *
 * @example Rejecting an upgrade from a hook
 * ```ts
 * import { HandshakeError } from "@sluice/ws";
 * throw new HandshakeError(401, "Missing token");
 * ```
 */
export class HandshakeError extends Error {
  /** Stable identifier. */
  readonly code = "HANDSHAKE_ERROR";
  /** HTTP status to answer with (server) or that was received (client; 0 if none). */
  readonly status: number;
  /** Extra response headers (server) or the received headers (client). */
  readonly headers: Headers;

  /** Creates a handshake error with an HTTP status and a message for the response body. */
  constructor(status: number, message: string, headers?: HeadersInit) {
    super(message);
    this.name = "HandshakeError";
    this.status = status;
    this.headers = new Headers(headers);
  }
}

/** `value` as an `Error` (a thrown non-error becomes one with its text). */
export function toError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}
