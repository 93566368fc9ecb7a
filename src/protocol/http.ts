/**
 * Just enough HTTP/1.1 (RFC 9112) to carry the opening handshake: reading a
 * bounded head off a byte stream, and parsing request and response heads.
 *
 * @module
 */

import { HandshakeError } from "./errors.ts";

/** A parsed request head. */
export interface RequestHead {
  /** The method, e.g. `GET`. */
  method: string;
  /** The request target as sent, e.g. `/chat?room=1`. */
  target: string;
  /** The HTTP version as `[major, minor]`. */
  version: [number, number];
  /** Header fields; repeated fields are joined with `, ` (built on first use). */
  readonly headers: Headers;
  /** The fields as parsed, read without building {@linkcode RequestHead.headers}. */
  readonly fields: HeadFields;
}

/**
 * A head's header fields as parsed (names lower-cased), for the few lookups
 * an opening handshake makes: building a `Headers` object costs more than
 * the rest of parsing, so it is built only when someone asks for one.
 */
export class HeadFields {
  /** Name, value, name, value... */
  readonly #list: string[];
  #headers: Headers | null = null;

  /** Wraps `[name, value, name, value, ...]` with lower-case names. */
  constructor(list: string[]) {
    this.#list = list;
  }

  /** The value of field `name` (lower case), repeated fields joined with `, `; `null` if absent. */
  get(name: string): string | null {
    const list = this.#list;
    let value: string | null = null;
    for (let i = 0; i < list.length; i += 2) {
      if (list[i] !== name) continue;
      value = value === null ? list[i + 1] : `${value}, ${list[i + 1]}`;
    }
    return value;
  }

  /** The fields as a `Headers` object (made once). */
  toHeaders(): Headers {
    if (this.#headers !== null) return this.#headers;
    const headers = new Headers();
    const list = this.#list;
    for (let i = 0; i < list.length; i += 2) headers.append(list[i], list[i + 1]);
    return (this.#headers = headers);
  }
}

/** {@linkcode RequestHead} with `headers` built on first use (a class: one shape, no closures). */
class ParsedRequestHead implements RequestHead {
  constructor(
    readonly method: string,
    readonly target: string,
    readonly version: [number, number],
    readonly fields: HeadFields,
  ) {}

  get headers(): Headers {
    return this.fields.toHeaders();
  }
}

/** A parsed response head. */
export interface ResponseHead {
  /** The status code. */
  status: number;
  /** The reason phrase. */
  statusText: string;
  /** Header fields. */
  headers: Headers;
}

/** The result of {@linkcode HeadReader.push} once the head is complete. */
export interface HeadResult {
  /**
   * The head's bytes, up to and including the blank line: a view into the
   * last chunk or the reader's buffer, so read it before the chunk is reused.
   */
  head: Uint8Array;
  /** Bytes received after the head (the first frames); a copy owned by the caller (often empty). */
  rest: Uint8Array;
}

const EMPTY = new Uint8Array(0);

/**
 * Accumulates bytes until the blank line that ends an HTTP head, refusing to
 * hold more than `maxSize` bytes (the request is answered with 431).
 */
export class HeadReader {
  #buf: Uint8Array;
  #length = 0;
  #maxSize: number;
  #strict: boolean;

  /**
   * Creates a reader that holds at most `maxSize` bytes of head. With
   * `rejectBareLf`, a line ending in LF alone is a 400 at once (RFC 9112
   * §2.2: a server may accept one, but two servers that disagree on it read
   * one request two ways) rather than a head that never ends.
   */
  constructor(maxSize: number, options: { rejectBareLf?: boolean } = {}) {
    this.#maxSize = maxSize;
    this.#strict = options.rejectBareLf ?? false;
    // Allocated when a head spans chunks: most arrive in one.
    this.#buf = EMPTY;
  }

  /**
   * Adds a chunk (read only during the call). Returns the head and the bytes
   * after it once the head is complete, else `null`. Throws a 431
   * {@linkcode HandshakeError} when the head would exceed `maxSize`.
   */
  push(chunk: Uint8Array): HeadResult | null {
    if (this.#length === 0) {
      // The whole head in the first chunk: no accumulation buffer.
      const end = findHeadEnd(chunk, 0);
      if (end !== -1 && end <= this.#maxSize) {
        if (this.#strict) rejectBareLf(chunk, 0, end);
        // No copies for the usual head alone in its chunk (each ArrayBuffer costs ~250 ns on Deno).
        if (end === chunk.length) return { head: chunk, rest: EMPTY };
        return { head: chunk.subarray(0, end), rest: chunk.slice(end) };
      }
    }
    // Search from 3 bytes back, in case the terminator straddles chunks.
    const searchFrom = Math.max(0, this.#length - 3);
    const room = this.#maxSize - this.#length;
    const take = Math.min(chunk.length, room);
    this.#ensure(this.#length + take);
    this.#buf.set(chunk.subarray(0, take), this.#length);
    this.#length += take;
    const end = findHeadEnd(this.#buf.subarray(0, this.#length), searchFrom);
    if (this.#strict) rejectBareLf(this.#buf, this.#length - take, end === -1 ? this.#length : end);
    if (end === -1) {
      if (take < chunk.length || this.#length >= this.#maxSize) {
        throw new HandshakeError(
          431,
          `Request head is over the limit of ${this.#maxSize} bytes`,
        );
      }
      return null;
    }
    // The buffer is not written again: the reader is done.
    const head = this.#buf.subarray(0, end);
    const restLength = this.#length - end + (chunk.length - take);
    if (restLength === 0) return { head, rest: EMPTY };
    const rest = new Uint8Array(restLength);
    rest.set(this.#buf.subarray(end, this.#length));
    rest.set(chunk.subarray(take), this.#length - end);
    return { head, rest };
  }

  #ensure(size: number): void {
    if (size <= this.#buf.length) return;
    const next = new Uint8Array(
      Math.min(this.#maxSize, Math.max(size, this.#buf.length * 2, 1024)),
    );
    next.set(this.#buf.subarray(0, this.#length));
    this.#buf = next;
  }
}

/** Throws a 400 for an LF without a CR before it in `buf[from..stop)`. */
function rejectBareLf(buf: Uint8Array, from: number, stop: number): void {
  for (let i = buf.indexOf(0x0a, from); i !== -1 && i < stop;) {
    if (i === 0 || buf[i - 1] !== 0x0d) {
      throw new HandshakeError(400, "Bare LF in the request head: use CRLF");
    }
    i = buf.indexOf(0x0a, i + 1);
  }
}

/** Index just past the first CRLF CRLF at or after `from`, or -1. */
export function findHeadEnd(buf: Uint8Array, from = 0): number {
  let i = buf.indexOf(0x0d, from);
  while (i !== -1 && i + 3 < buf.length) {
    if (buf[i + 1] === 0x0a && buf[i + 2] === 0x0d && buf[i + 3] === 0x0a) return i + 4;
    i = buf.indexOf(0x0d, i + 1);
  }
  return -1;
}

/**
 * A request or response head's bytes as text, one character per byte
 * (ISO-8859-1). Not `TextDecoder("latin1")` alone:
 * the Encoding Standard maps that label to windows-1252, which turns bytes
 * 0x80-0x9F (obs-text, e.g. inside UTF-8 sent in a header value) into
 * characters above U+00FF that fail the field-value check.
 */
export function headText(bytes: Uint8Array): string {
  // Fast path: windows-1252 agrees with ISO-8859-1 except where it maps
  // 0x80-0x9F above U+00FF, so a result without such a character is exact.
  const text = windows1252.decode(bytes);
  if (!ABOVE_LATIN1.test(text)) return text;
  let out = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return out;
}
const windows1252 = new TextDecoder("latin1");
const ABOVE_LATIN1 = /[\u0100-\uffff]/;

function isSpaceOrTab(code: number): boolean {
  return code === 0x20 || code === 0x09;
}

/** Token characters (RFC 9110 §5.6.2), by char code. */
const TOKEN_CHARS = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
  TOKEN_CHARS[c.charCodeAt(0)] = 1;
}

/** Whether `text[from..to)` is a non-empty token. */
function isTokenRange(text: string, from: number, to: number): boolean {
  if (from >= to) return false;
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if (c >= 128 || TOKEN_CHARS[c] === 0) return false;
  }
  return true;
}

/** Whether `text[from..to)` holds only field-value characters: tab, visible ASCII, obs-text. */
function isFieldValueRange(text: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = text.charCodeAt(i);
    if ((c < 0x20 && c !== 0x09) || c === 0x7f || c > 0xff) return false;
  }
  return true;
}

/**
 * Field names of opening handshakes (and a few every browser sends), by
 * length: a name that is one of these, in any case, is this very string
 * rather than two new ones (a slice and its lowercase) per header line.
 */
const COMMON_NAMES: (string[] | undefined)[] = [];
for (
  const name of [
    "host",
    "upgrade",
    "connection",
    "origin",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "user-agent",
    "pragma",
    "cache-control",
    "accept-encoding",
    "accept-language",
    "cookie",
    "authorization",
    "content-length",
    "content-type",
    "accept",
  ]
) {
  (COMMON_NAMES[name.length] ??= []).push(name);
}

/** The lowercase field name in `text[from..to)` (a valid token). */
function fieldName(text: string, from: number, to: number): string {
  const candidates = COMMON_NAMES[to - from];
  if (candidates !== undefined) {
    for (const name of candidates) if (equalsLowercase(text, from, name)) return name;
  }
  return text.slice(from, to).toLowerCase();
}

/**
 * Parses the field lines of a head (ending in CRLF CRLF) that start at
 * `first`, checking each. One pass by index, no regular expressions or
 * per-line strings beyond the name and value kept (handshakes parse one
 * head each, so this is on the connection-rate path).
 */
function parseFields(text: string, first: number, status: number): HeadFields {
  // The head ends with CRLF CRLF: the last field line ends 4 characters before the end.
  const end = text.length - 2;
  // Sized once: two entries per line.
  let lines = 0;
  for (let at = first; at < end; lines++) {
    // A line without its CRLF (a head cut short): the loop below rejects it.
    const eol = text.indexOf("\r\n", at);
    if (eol === -1) break;
    at = eol + 2;
  }
  const list = new Array<string>(lines * 2);
  let n = 0;
  for (let at = first, eol = 0; at < end; at = eol + 2) {
    eol = text.indexOf("\r\n", at);
    const colon = text.indexOf(":", at);
    if (colon === -1 || colon >= eol || colon === at) {
      throw new HandshakeError(
        status,
        `Malformed header line: ${JSON.stringify(text.slice(at, Math.min(eol, at + 64)))}`,
      );
    }
    if (!isTokenRange(text, at, colon)) {
      const name = text.slice(at, colon);
      throw new HandshakeError(status, `Invalid header name: ${JSON.stringify(name.slice(0, 64))}`);
    }
    let from = colon + 1;
    let to = eol;
    while (from < to && isSpaceOrTab(text.charCodeAt(from))) from++;
    while (to > from && isSpaceOrTab(text.charCodeAt(to - 1))) to--;
    if (!isFieldValueRange(text, from, to)) {
      throw new HandshakeError(status, `Invalid characters in header ${text.slice(at, colon)}`);
    }
    list[n++] = fieldName(text, at, colon);
    list[n++] = text.slice(from, to);
  }
  return new HeadFields(list);
}

/** What `\s` matches among the characters a head holds (one per byte). */
function isRegExpSpace(code: number): boolean {
  return code === 0x20 || (code >= 0x09 && code <= 0x0d) || code === 0xa0;
}

/** Whether `text[at]` is an ASCII digit. */
function isDigitAt(text: string, at: number): boolean {
  const c = text.charCodeAt(at);
  return c >= 0x30 && c <= 0x39;
}

/**
 * Parses a request head (its bytes, or their {@linkcode headText}). Throws a
 * 400 {@linkcode HandshakeError} if malformed.
 */
export function parseRequestHead(head: Uint8Array | string): RequestHead {
  const text = typeof head === "string" ? head : headText(head);
  // The request line, `method SP target SP HTTP/d.d` (RFC 9112 §3), read by
  // index: no match array or strings beyond the method and target kept.
  const eol = text.indexOf("\r\n");
  const space = text.indexOf(" ");
  let targetEnd = space + 1;
  while (targetEnd < eol && !isRegExpSpace(text.charCodeAt(targetEnd))) targetEnd++;
  if (
    space <= 0 || space >= eol || !isTokenRange(text, 0, space) || targetEnd === space + 1 ||
    targetEnd + 9 !== eol || !text.startsWith(" HTTP/", targetEnd) ||
    !isDigitAt(text, targetEnd + 6) || text.charCodeAt(targetEnd + 7) !== 0x2e ||
    !isDigitAt(text, targetEnd + 8)
  ) {
    throw new HandshakeError(
      400,
      `Malformed request line: ${JSON.stringify(text.slice(0, Math.min(eol, 64)))}`,
    );
  }
  const fields = parseFields(text, eol + 2, 400);
  return new ParsedRequestHead(
    space === 3 && text.startsWith("GET") ? "GET" : text.slice(0, space),
    text.slice(space + 1, targetEnd),
    [text.charCodeAt(targetEnd + 6) - 0x30, text.charCodeAt(targetEnd + 8) - 0x30],
    fields,
  );
}

/**
 * Parses a response head. Throws a {@linkcode HandshakeError} with status 0
 * if it is not HTTP.
 */
export function parseResponseHead(head: Uint8Array): ResponseHead {
  const text = headText(head);
  const eol = text.indexOf("\r\n");
  const start = text.slice(0, eol);
  const fields = parseFields(text, eol + 2, 0);
  const match = /^HTTP\/\d\.\d (\d{3})(?: (.*))?$/.exec(start);
  if (match === null) {
    throw new HandshakeError(0, `Malformed status line: ${JSON.stringify(start.slice(0, 64))}`);
  }
  return { status: Number(match[1]), statusText: match[2] ?? "", headers: fields.toHeaders() };
}

/** Splits a comma-separated header value into trimmed, non-empty items. */
export function splitList(value: string | null): string[] {
  if (value === null) return [];
  const out: string[] = [];
  for (const item of value.split(",")) {
    const trimmed = item.trim();
    if (trimmed !== "") out.push(trimmed);
  }
  return out;
}

/**
 * Whether the comma-separated list `value` holds `token` (lowercase ASCII),
 * compared case-insensitively with optional whitespace trimmed: what
 * `splitList(value).some((t) => t.toLowerCase() === token)` says, without
 * the array and strings.
 */
export function hasToken(value: string | null, token: string): boolean {
  if (value === null) return false;
  const length = value.length;
  for (let from = 0; from <= length;) {
    let to = value.indexOf(",", from);
    if (to === -1) to = length;
    let a = from, b = to;
    while (a < b && isListSpace(value.charCodeAt(a))) a++;
    while (b > a && isListSpace(value.charCodeAt(b - 1))) b--;
    if (b - a === token.length && equalsLowercase(value, a, token)) return true;
    from = to + 1;
  }
  return false;
}

/** What `String.prototype.trim` removes, among the characters a header value can hold. */
function isListSpace(code: number): boolean {
  return isSpaceOrTab(code) || code === 0xa0;
}

/** Whether `value[at..at + token.length)` is `token` (lowercase ASCII) in any ASCII case. */
function equalsLowercase(value: string, at: number, token: string): boolean {
  for (let i = 0; i < token.length; i++) {
    let c = value.charCodeAt(at + i);
    if (c >= 0x41 && c <= 0x5a) c += 0x20;
    if (c !== token.charCodeAt(i)) return false;
  }
  return true;
}

/** Whether `value` is an HTTP token (RFC 9110 §5.6.2). */
export function isToken(value: string): boolean {
  return isTokenRange(value, 0, value.length);
}
