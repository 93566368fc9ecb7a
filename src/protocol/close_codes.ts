/**
 * Close codes and the close frame payload (RFC 6455 §5.5.1, §7.4).
 *
 * @module
 */

import { invalidDataError, protocolError } from "./errors.ts";

/** Close codes with a defined meaning (§7.4.1). */
export const CloseCode = {
  /** Normal closure. */
  Normal: 1000,
  /** The endpoint is going away (server shutdown, page navigation). */
  GoingAway: 1001,
  /** The peer broke the protocol. */
  ProtocolError: 1002,
  /** The endpoint cannot accept this data type. */
  UnsupportedData: 1003,
  /** No status code was present (never sent on the wire). */
  NoStatus: 1005,
  /** The connection closed without a close frame (never sent on the wire). */
  Abnormal: 1006,
  /** Data inconsistent with the message type (e.g. bad UTF-8). */
  InvalidPayload: 1007,
  /** A policy was violated. */
  PolicyViolation: 1008,
  /** A message was too big to process. */
  MessageTooBig: 1009,
  /** The client expected an extension the server did not negotiate. */
  MandatoryExtension: 1010,
  /** The server hit an unexpected condition. */
  InternalError: 1011,
  /** The service is restarting; a client may reconnect after a randomized delay (IANA registry). */
  ServiceRestart: 1012,
  /** Temporary overload; try again later (IANA registry). */
  TryAgainLater: 1013,
  /** A gateway or proxy got an invalid response from upstream (IANA registry). */
  BadGateway: 1014,
  /** TLS handshake failure (never sent on the wire). */
  TlsHandshake: 1015,
} as const;

/**
 * Whether `code` may appear in a close frame: 1000-1003 and 1007-1011
 * (§7.4.1), 1012-1014 (registered with IANA under §11.7: Service Restart, Try
 * Again Later, Bad Gateway; `ws`, python-websockets and browsers send them)
 * and 3000-4999 (§7.4.2). 1004 is reserved and 1005, 1006 and 1015 are never
 * sent (§7.4.1); 1016-2999 are unassigned. Anything else received fails the
 * connection (1002).
 *
 * @example
 * ```ts
 * import { isValidWireCloseCode } from "@sluice/ws";
 * console.log(isValidWireCloseCode(1001), isValidWireCloseCode(1005)); // true false
 * ```
 */
export function isValidWireCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999);
}

/** A close frame's parsed payload. */
export interface ClosePayload {
  /** The status code, or 1005 when the frame had no payload. */
  code: number;
  /** The UTF-8 reason, possibly empty. */
  reason: string;
}

const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * Parses a received close frame payload (§5.5.1): empty, or a 2-byte code
 * followed by a UTF-8 reason. Throws a {@linkcode WebSocketError} (1002 or
 * 1007) for a 1-byte payload, a code that may not be sent, or a bad reason.
 *
 * @example
 * ```ts
 * import { parseClosePayload } from "@sluice/ws";
 * const payload = new Uint8Array([0x03, 0xe9, 0x62, 0x79, 0x65]); // 1001 "bye"
 * console.log(parseClosePayload(payload)); // { code: 1001, reason: "bye" }
 * ```
 */
export function parseClosePayload(payload: Uint8Array): ClosePayload {
  if (payload.length === 0) return { code: CloseCode.NoStatus, reason: "" };
  if (payload.length === 1) {
    throw protocolError(
      "INVALID_CLOSE_PAYLOAD",
      "Close frame payload of 1 byte has no room for a code",
    );
  }
  const code = (payload[0] << 8) | payload[1];
  if (!isValidWireCloseCode(code)) {
    throw protocolError("INVALID_CLOSE_CODE", `Close code ${code} is not allowed on the wire`);
  }
  let reason = "";
  if (payload.length > 2) {
    try {
      reason = strictDecoder.decode(payload.subarray(2));
    } catch {
      throw invalidDataError("INVALID_UTF8", "Close reason is not valid UTF-8");
    }
  }
  return { code, reason };
}

const encoder = new TextEncoder();

/**
 * Encodes a close frame payload. Code 1005 (or `undefined`) yields an empty
 * payload. Throws `RangeError` if the code cannot be sent or the reason is
 * over 123 bytes of UTF-8 (§5.5: control payloads are at most 125 bytes).
 *
 * @example
 * ```ts
 * import { encodeClosePayload } from "@sluice/ws";
 * console.log(encodeClosePayload(1000, "done")); // Uint8Array(6) [3, 232, 100, 111, 110, 101]
 * ```
 */
export function encodeClosePayload(code?: number, reason = ""): Uint8Array {
  if (code === undefined || code === CloseCode.NoStatus) {
    if (reason !== "") throw new RangeError("A close reason needs a close code");
    return new Uint8Array(0);
  }
  if (!Number.isInteger(code) || !isValidWireCloseCode(code)) {
    throw new RangeError(
      `Close code ${code} cannot be sent: use 1000-1003, 1007-1014 or 3000-4999`,
    );
  }
  const out = new Uint8Array(2 + reason.length * 3);
  out[0] = code >> 8;
  out[1] = code & 0xff;
  const { written } = encoder.encodeInto(reason, out.subarray(2));
  if (written > 123) {
    throw new RangeError(`Close reason is ${written} bytes of UTF-8; at most 123 are allowed`);
  }
  return out.subarray(0, 2 + written);
}
