/**
 * permessage-deflate (RFC 7692) negotiation: pure functions from header values
 * to agreed parameters, for both ends of the handshake.
 *
 * - Server: {@linkcode selectDeflateOffer} picks the first acceptable offer
 *   from the client's `Sec-WebSocket-Extensions` and builds the response entry.
 * - Client: {@linkcode deflateOffer} builds the offer;
 *   {@linkcode parseDeflateResponse} validates the server's answer.
 *
 * Both produce a {@linkcode NegotiatedDeflate}, from which
 * `PerMessageDeflate` (`deflate_codec.ts`) builds the per-connection codec.
 *
 * @module
 */

import { type Extension, parseExtensions, serializeExtensions } from "./extensions.ts";

/** The registered extension name (RFC 7692 §7). */
export const PERMESSAGE_DEFLATE = "permessage-deflate";

/**
 * User-facing permessage-deflate settings, used on both sides of the
 * handshake and by the codec.
 *
 * The `server*` fields describe what the server sends, the `client*` fields
 * what the client sends, whichever side you are: a client that sets
 * `serverMaxWindowBits: 10` asks the server to compress with a 1 KiB window.
 *
 * Memory: each direction that keeps its context costs one zlib stream per
 * connection (measured: ~245 KiB to compress, ~40 KiB to inflate at window
 * 15; smaller windows and `memLevel` save less on Deno and Bun than on Node).
 * Directions without context takeover share one stream per process and cost
 * no zlib memory per connection. Servers with many connections should set
 * `serverNoContextTakeover` (the big one), `clientNoContextTakeover` or
 * smaller window bits.
 */
export interface DeflateOptions {
  /**
   * Server: always ask for `server_no_context_takeover` (compress every
   * message on its own). Client: offer `server_no_context_takeover`, asking
   * the server to do so.
   *
   * @default {false}
   */
  serverNoContextTakeover?: boolean;
  /**
   * Server: answer with `client_no_context_takeover`, so the client resets its
   * compressor per message and this server keeps no inflate window for it.
   * Client: offer `client_no_context_takeover` and compress every message on
   * its own.
   *
   * @default {false}
   */
  clientNoContextTakeover?: boolean;
  /**
   * Largest LZ77 window (as a power of two, 8..15) the server compresses
   * with. Server: the cap for its own compressor. Client: offered as
   * `server_max_window_bits` when below 15.
   *
   * @default {15}
   */
  serverMaxWindowBits?: number;
  /**
   * Largest LZ77 window (as a power of two, 8..15) the client compresses
   * with. Server: answered as `client_max_window_bits` when below 15; an offer
   * without `client_max_window_bits` cannot be limited and is then declined,
   * as npm `ws` does. Client: offered as `client_max_window_bits=N` (below 15)
   * or as a bare `client_max_window_bits`.
   *
   * @default {15}
   */
  clientMaxWindowBits?: number;
  /**
   * Messages smaller than this many bytes are sent uncompressed (RSV1 = 0):
   * DEFLATE does not shrink short payloads and costs a zlib call each.
   *
   * @default {1024}
   */
  threshold?: number;
  /**
   * zlib compression level, 0..9 (or -1 for zlib's default, 6). Level 1
   * compresses 16 KiB JSON messages about 4-5x faster than 6 for ~50% more
   * bytes; 6 is what npm `ws` and zlib use.
   *
   * @default {6}
   */
  level?: number;
  /**
   * zlib memory level, 1..9: the size of the compressor's hash table
   * (`2^(memLevel+9)` bytes in classic zlib). Node's zlib saves memory with
   * lower values; the zlib builds in Deno and Bun barely do (~145 KiB per
   * compressor even at window 9, memLevel 1): there, only the
   * `*NoContextTakeover` options remove the per-connection cost.
   *
   * @default {8}
   */
  memLevel?: number;
}

/** Parameters agreed in the handshake (RFC 7692 §7.1). */
export interface NegotiatedDeflate {
  /** The server compresses each message with a fresh LZ77 window. */
  readonly serverNoContextTakeover: boolean;
  /** The client compresses each message with a fresh LZ77 window. */
  readonly clientNoContextTakeover: boolean;
  /** Window bits (8..15) of the server's compressor; the client inflates with it. */
  readonly serverMaxWindowBits: number;
  /** Window bits (8..15) of the client's compressor; the server inflates with it. */
  readonly clientMaxWindowBits: number;
}

/** The result of a successful server-side negotiation. */
export interface DeflateSelection {
  /** What was agreed. */
  readonly params: NegotiatedDeflate;
  /** The `Sec-WebSocket-Extensions` response entry to send back. */
  readonly response: string;
}

/**
 * Fills in defaults and validates a {@linkcode DeflateOptions}. Throws a
 * {@linkcode RangeError} for out-of-range values and a {@linkcode TypeError}
 * for values of the wrong type.
 *
 * @example Defaults
 * ```ts
 * import { resolveDeflateOptions } from "./permessage_deflate.ts";
 *
 * resolveDeflateOptions({ level: 1 }).threshold; // 1024
 * ```
 */
export function resolveDeflateOptions(options: DeflateOptions = {}): Required<DeflateOptions> {
  return {
    serverNoContextTakeover: bool(options.serverNoContextTakeover, "serverNoContextTakeover"),
    clientNoContextTakeover: bool(options.clientNoContextTakeover, "clientNoContextTakeover"),
    serverMaxWindowBits: int(options.serverMaxWindowBits, 15, 8, 15, "serverMaxWindowBits"),
    clientMaxWindowBits: int(options.clientMaxWindowBits, 15, 8, 15, "clientMaxWindowBits"),
    threshold: int(options.threshold, 1024, 0, Number.MAX_SAFE_INTEGER, "threshold"),
    level: int(options.level, 6, -1, 9, "level"),
    memLevel: int(options.memLevel, 8, 1, 9, "memLevel"),
  };
}

function bool(value: boolean | undefined, name: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== "boolean") throw new TypeError(`DeflateOptions.${name} must be a boolean`);
  return value;
}

function int(
  value: number | undefined,
  fallback: number,
  min: number,
  max: number,
  name: string,
): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(
      `DeflateOptions.${name} must be an integer from ${min} to ${max}, got ${String(value)}`,
    );
  }
  return value;
}

/** One permessage-deflate entry with its parameters checked (RFC 7692 §7.1). */
interface EntryParams {
  serverNoContextTakeover: boolean;
  clientNoContextTakeover: boolean;
  /** `null` when absent. */
  serverMaxWindowBits: number | null;
  /** `null` when absent, `true` when present without a value (allowed in offers only). */
  clientMaxWindowBits: number | true | null;
}

// RFC 7692 §7.1.2.1: "a decimal integer value without leading zeroes between
// 8 to 15, inclusive".
const WINDOW_BITS = /^(?:[89]|1[0-5])$/;

/** Checks one entry; returns the reason as a string when it is unusable. */
function readEntry(ext: Extension): EntryParams | string {
  const seen = new Set<string>();
  const out: EntryParams = {
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    serverMaxWindowBits: null,
    clientMaxWindowBits: null,
  };
  for (const { name, value } of ext.params) {
    // RFC 7692 §7: an offer (or response) with "multiple extension parameters
    // with the same name" is declined (or fails the connection).
    if (seen.has(name)) return `duplicate parameter "${name}"`;
    seen.add(name);
    switch (name) {
      case "server_no_context_takeover":
      case "client_no_context_takeover":
        // §7.1.1.1/§7.1.1.2: "This extension parameter has no value."
        if (value !== null) return `parameter "${name}" must not have a value, got "${value}"`;
        if (name === "server_no_context_takeover") out.serverNoContextTakeover = true;
        else out.clientNoContextTakeover = true;
        break;
      case "server_max_window_bits":
        if (value === null || !WINDOW_BITS.test(value)) {
          return `parameter "server_max_window_bits" needs a value from 8 to 15, got ${
            value === null ? "none" : `"${value}"`
          }`;
        }
        out.serverMaxWindowBits = Number(value);
        break;
      case "client_max_window_bits":
        if (value === null) out.clientMaxWindowBits = true;
        else if (WINDOW_BITS.test(value)) out.clientMaxWindowBits = Number(value);
        else return `parameter "client_max_window_bits" must be from 8 to 15, got "${value}"`;
        break;
      default:
        return `unknown parameter "${name}"`;
    }
  }
  return out;
}

/**
 * Server side of RFC 7692 §7.1: picks the first acceptable
 * `permessage-deflate` offer in the client's `Sec-WebSocket-Extensions`
 * value(s) and returns the agreed parameters with the response entry, or
 * `null` when no offer is acceptable (then the connection simply goes on
 * without compression).
 *
 * An offer with an unknown, duplicated or invalid parameter is declined and
 * the next one is tried, never an error (RFC 7692 §7: the server "MUST
 * decline" such an offer). An offer without `client_max_window_bits` is also
 * declined when `options.clientMaxWindowBits` is below 15, since the server
 * could not limit the client's window. Other extensions in the value are
 * ignored.
 *
 * The response honours everything the offer asks for: it echoes
 * `server_no_context_takeover` and caps `server_max_window_bits` at the
 * offered value. It adds `server_no_context_takeover` /
 * `client_no_context_takeover` when the options ask for them, and echoes the
 * client's `client_no_context_takeover` hint so that no inflate window is
 * kept for a client that will not use it (§7.1.1.2).
 *
 * Throws a {@linkcode SyntaxError} only when the header value is malformed.
 * Sluice's server catches it and declines compression (a 101 without the
 * extension), in the spirit of RFC 7692 §5: a bad offer is declined rather
 * than failing the handshake.
 *
 * @example Accept Chrome's offer
 * ```ts
 * import { selectDeflateOffer } from "./permessage_deflate.ts";
 *
 * const selected = selectDeflateOffer(
 *   "permessage-deflate; client_max_window_bits",
 *   { serverNoContextTakeover: true },
 * );
 * selected?.response; // "permessage-deflate; server_no_context_takeover"
 * ```
 */
export function selectDeflateOffer(
  header: string | readonly string[],
  options: DeflateOptions = {},
): DeflateSelection | null {
  const opts = resolveDeflateOptions(options);
  for (const ext of parseExtensions(header)) {
    if (ext.name !== PERMESSAGE_DEFLATE) continue;
    const offer = readEntry(ext);
    if (typeof offer === "string") continue;
    if (opts.clientMaxWindowBits < 15 && offer.clientMaxWindowBits === null) continue;

    const serverNoContextTakeover = opts.serverNoContextTakeover || offer.serverNoContextTakeover;
    const clientNoContextTakeover = opts.clientNoContextTakeover || offer.clientNoContextTakeover;
    const serverMaxWindowBits = Math.min(opts.serverMaxWindowBits, offer.serverMaxWindowBits ?? 15);
    const clientMaxWindowBits = offer.clientMaxWindowBits === null ? 15 : Math.min(
      opts.clientMaxWindowBits,
      offer.clientMaxWindowBits === true ? 15 : offer.clientMaxWindowBits,
    );

    const params: { name: string; value: string | null }[] = [];
    if (serverNoContextTakeover) params.push({ name: "server_no_context_takeover", value: null });
    if (clientNoContextTakeover) params.push({ name: "client_no_context_takeover", value: null });
    // §7.1.2.1: echo the offered value (or a smaller one); a server may also
    // announce a smaller window unasked.
    if (offer.serverMaxWindowBits !== null || serverMaxWindowBits < 15) {
      params.push({ name: "server_max_window_bits", value: String(serverMaxWindowBits) });
    }
    // §7.1.2.2: only allowed when offered, which the check above guarantees.
    if (clientMaxWindowBits < 15) {
      params.push({ name: "client_max_window_bits", value: String(clientMaxWindowBits) });
    }
    return {
      params: {
        serverNoContextTakeover,
        clientNoContextTakeover,
        serverMaxWindowBits,
        clientMaxWindowBits,
      },
      response: serializeExtensions([{ name: PERMESSAGE_DEFLATE, params }]),
    };
  }
  return null;
}

/**
 * Client side: the `Sec-WebSocket-Extensions` value offering
 * permessage-deflate with the given options. `client_max_window_bits` is
 * always included (with a value when `clientMaxWindowBits` is below 15) so
 * that servers may limit our window instead of declining.
 *
 * @example Default and constrained offers
 * ```ts
 * import { deflateOffer } from "./permessage_deflate.ts";
 *
 * deflateOffer(); // "permessage-deflate; client_max_window_bits"
 * deflateOffer({ serverNoContextTakeover: true, serverMaxWindowBits: 10 });
 * // "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits"
 * ```
 */
export function deflateOffer(options: DeflateOptions = {}): string {
  const opts = resolveDeflateOptions(options);
  const params: { name: string; value: string | null }[] = [];
  if (opts.serverNoContextTakeover) {
    params.push({ name: "server_no_context_takeover", value: null });
  }
  if (opts.clientNoContextTakeover) {
    params.push({ name: "client_no_context_takeover", value: null });
  }
  if (opts.serverMaxWindowBits < 15) {
    params.push({ name: "server_max_window_bits", value: String(opts.serverMaxWindowBits) });
  }
  params.push({
    name: "client_max_window_bits",
    value: opts.clientMaxWindowBits < 15 ? String(opts.clientMaxWindowBits) : null,
  });
  return serializeExtensions([{ name: PERMESSAGE_DEFLATE, params }]);
}

/**
 * Client side: validates the server's `Sec-WebSocket-Extensions` response to
 * an offer made by {@linkcode deflateOffer} with the same `options`, and
 * returns what was agreed.
 *
 * Throws an {@linkcode Error} (the client must then fail the connection,
 * RFC 6455 §4.1 and RFC 7692 §7) when the response names an extension that
 * was not offered, holds more than one permessage-deflate entry, repeats a
 * parameter, has an unknown parameter or an invalid value, or grants a window
 * larger than the one offered. Throws a {@linkcode SyntaxError} when the
 * value is malformed.
 *
 * A response that omits `server_max_window_bits` although we offered one is
 * taken as agreeing to the offered value (as npm `ws` does); a response that
 * omits `server_no_context_takeover` is taken as keeping the context, which
 * is always safe for our decompressor.
 *
 * @example Read a response
 * ```ts
 * import { parseDeflateResponse } from "./permessage_deflate.ts";
 *
 * parseDeflateResponse("permessage-deflate; client_max_window_bits=10");
 * // { serverNoContextTakeover: false, clientNoContextTakeover: false,
 * //   serverMaxWindowBits: 15, clientMaxWindowBits: 10 }
 * ```
 */
export function parseDeflateResponse(
  header: string | readonly string[],
  options: DeflateOptions = {},
): NegotiatedDeflate {
  const opts = resolveDeflateOptions(options);
  const extensions = parseExtensions(header);
  for (const ext of extensions) {
    if (ext.name !== PERMESSAGE_DEFLATE) {
      throw new Error(
        `Invalid Sec-WebSocket-Extensions response: extension "${ext.name}" was not offered`,
      );
    }
  }
  if (extensions.length > 1) {
    throw new Error(
      `Invalid Sec-WebSocket-Extensions response: ${extensions.length} permessage-deflate ` +
        "entries, the server must accept at most one",
    );
  }
  const entry = readEntry(extensions[0]);
  if (typeof entry === "string") {
    throw new Error(`Invalid permessage-deflate response: ${entry}`);
  }
  if (entry.serverMaxWindowBits !== null && entry.serverMaxWindowBits > opts.serverMaxWindowBits) {
    throw new Error(
      `Invalid permessage-deflate response: server_max_window_bits=${entry.serverMaxWindowBits} ` +
        `exceeds the offered ${opts.serverMaxWindowBits}`,
    );
  }
  if (entry.clientMaxWindowBits === true) {
    throw new Error(
      'Invalid permessage-deflate response: parameter "client_max_window_bits" needs a value ' +
        "from 8 to 15 in a response",
    );
  }
  if (entry.clientMaxWindowBits !== null && entry.clientMaxWindowBits > opts.clientMaxWindowBits) {
    throw new Error(
      `Invalid permessage-deflate response: client_max_window_bits=${entry.clientMaxWindowBits} ` +
        `exceeds the offered ${opts.clientMaxWindowBits}`,
    );
  }
  return {
    serverNoContextTakeover: entry.serverNoContextTakeover,
    clientNoContextTakeover: entry.clientNoContextTakeover || opts.clientNoContextTakeover,
    serverMaxWindowBits: entry.serverMaxWindowBits ?? opts.serverMaxWindowBits,
    clientMaxWindowBits: entry.clientMaxWindowBits ?? opts.clientMaxWindowBits,
  };
}
