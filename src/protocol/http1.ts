/**
 * Plain HTTP/1.1 requests (RFC 9112) with no I/O: reading a stream of
 * pipelined requests into heads and body bytes, the framing rules that keep
 * a request from being read two ways (request smuggling, §6.3 and §11.2),
 * the chunked coding (§7.1), and the bytes of a response head.
 *
 * Bytes go in ({@linkcode Http1Reader.receive}), events come out
 * ({@linkcode Http1Reader.next}): a request head, pieces of its body, the
 * body's end, then the next request. Every refusal is a
 * {@linkcode HandshakeError} carrying the HTTP status to answer with; after
 * one the connection must be closed, since where the next request starts is
 * no longer known.
 *
 * @module
 */

import { HandshakeError } from "./errors.ts";
import { isToken, parseRequestHead, type RequestHead, splitList } from "./http.ts";
import { isValidHost, isValidTarget } from "./handshake.ts";

/** How a request's body is delimited (RFC 9112 §6.3). */
export type BodyFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" };

/** A request head that passed every framing and validity check. */
export interface HttpRequestHead {
  /** The method as sent, e.g. `GET`. */
  method: string;
  /** The request target as sent, e.g. `/api/top?n=10`. */
  target: string;
  /** The full request URL, with the scheme of the transport. */
  url: URL;
  /** The HTTP version as `[major, minor]`; the major is always 1. */
  version: [number, number];
  /** The request headers. */
  headers: Headers;
  /** How the body is delimited. */
  body: BodyFraming;
  /** Whether the client is willing to send another request on this connection. */
  keepAlive: boolean;
  /** `Expect: 100-continue` on an HTTP/1.1 request with a body: the client waits for 100. */
  expectContinue: boolean;
}

/** Options for {@linkcode interpretRequest} and {@linkcode Http1Reader}. */
export interface Http1Options {
  /** The transport speaks TLS: URLs get the `https:` scheme. @default {false} */
  secure?: boolean;
  /** Authority for HTTP/1.0 requests without a Host header. @default {"localhost"} */
  defaultHost?: string;
  /** Largest request body in bytes; a larger one gets 413. @default {8388608} */
  maxBodySize?: number;
  /** Largest request head in bytes; a larger one gets 431. @default {16384} */
  maxHeadSize?: number;
}

/** The default `maxBodySize`: 8 MiB. */
export const DEFAULT_MAX_BODY_SIZE = 8 * 1024 * 1024;

// Methods a WHATWG `Request` cannot carry (Fetch §2.2.1 "forbidden method")
// and that a request/response server has no use for.
const UNSUPPORTED_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);
// 1*DIGIT and nothing else: no sign, no spaces, no list (RFC 9110 §8.6).
const DIGITS = /^[0-9]+$/;

function bad(message: string, status = 400): HandshakeError {
  return new HandshakeError(status, message);
}

/**
 * Checks a parsed request head and decides how its body is framed (RFC 9112
 * §6.3). Throws a {@linkcode HandshakeError}: 505 for an HTTP major version
 * other than 1; 400 for a bad target or Host, for both `Content-Length` and
 * `Transfer-Encoding`, for a `Content-Length` that is not one plain decimal
 * number (`"1, 1"`, `"+1"`, `"0x1"`, `"1 2"`), for a `Transfer-Encoding`
 * other than a single `chunked`, and for `Transfer-Encoding` in HTTP/1.0;
 * 413 for a `Content-Length` over `maxBodySize`; 417 for an `Expect` other
 * than `100-continue`; 501 for `CONNECT`, `TRACE` and `TRACK`.
 */
export function interpretRequest(head: RequestHead, options: Http1Options = {}): HttpRequestHead {
  const { method, target, headers } = head;
  const major = head.version[0], minor = head.version[1];
  if (major !== 1) {
    throw bad(`HTTP/${major}.${minor} is not supported: use HTTP/1.1`, 505);
  }
  const http11 = minor >= 1;
  if (!isValidTarget(target)) throw bad("Invalid characters in the request target");
  if (UNSUPPORTED_METHODS.has(method.toUpperCase())) {
    throw bad(`Method ${method} is not supported`, 501);
  }

  // RFC 9112 §3.2: exactly one valid Host in HTTP/1.1 (two are joined with ", ").
  let host = headers.get("host");
  if (host === null) {
    if (http11) throw bad("Missing Host header");
    host = options.defaultHost ?? "localhost";
  } else if (!isValidHost(host)) {
    throw bad(`Invalid Host header: ${JSON.stringify(host.slice(0, 64))}`);
  }
  let url: URL;
  try {
    // Origin-form is appended to the authority, never resolved against it:
    // "//evil.example/x" would otherwise take the host from the target.
    url = target.startsWith("/")
      ? new URL(`${options.secure ? "https" : "http"}://${host}${target}`)
      : new URL(target);
  } catch {
    throw bad(`Invalid request target ${JSON.stringify(target.slice(0, 64))}`);
  }
  if (
    (url.protocol !== "http:" && url.protocol !== "https:") || url.username !== "" ||
    url.password !== ""
  ) {
    throw bad(`Invalid request target ${JSON.stringify(target.slice(0, 64))}`);
  }

  const body = framing(headers, http11, options.maxBodySize ?? DEFAULT_MAX_BODY_SIZE);

  const connection = splitList(headers.get("connection")).map((token) => token.toLowerCase());
  const keepAlive = http11 ? !connection.includes("close") : connection.includes("keep-alive");

  // RFC 9110 §10.1.1: 100-continue is the only expectation; HTTP/1.0 ones are ignored.
  let expectContinue = false;
  const expect = headers.get("expect");
  if (expect !== null && http11) {
    if (expect.trim().toLowerCase() !== "100-continue") {
      throw bad(`Unsupported expectation ${JSON.stringify(expect.slice(0, 64))}`, 417);
    }
    expectContinue = body.kind !== "none" && !(body.kind === "length" && body.length === 0);
  }
  return {
    method,
    target,
    url,
    version: [major, minor],
    headers,
    body,
    keepAlive,
    expectContinue,
  };
}

/** The body framing rules of RFC 9112 §6.3, refusing every ambiguous case. */
function framing(headers: Headers, http11: boolean, maxBodySize: number): BodyFraming {
  const transferEncoding = headers.get("transfer-encoding");
  const contentLength = headers.get("content-length");
  if (transferEncoding !== null) {
    // §6.3 item 3: both present is how smuggling starts; refuse rather than pick one.
    if (contentLength !== null) {
      throw bad("Both Content-Length and Transfer-Encoding are present");
    }
    // §6.1: HTTP/1.0 has no transfer codings, so its framing is faulty.
    if (!http11) throw bad("Transfer-Encoding is not allowed in HTTP/1.0");
    const codings = transferEncoding.split(",").map((coding) => coding.trim().toLowerCase());
    if (codings.length !== 1 || codings[0] !== "chunked") {
      throw bad(
        `Unsupported Transfer-Encoding ${
          JSON.stringify(transferEncoding.slice(0, 64))
        }: only a single "chunked" is accepted`,
      );
    }
    return { kind: "chunked" };
  }
  if (contentLength !== null) {
    // Repeated fields arrive joined ("5, 5"), which fails too: one value only.
    if (!DIGITS.test(contentLength)) {
      throw bad(`Invalid Content-Length ${JSON.stringify(contentLength.slice(0, 64))}`);
    }
    const digits = contentLength.replace(/^0+(?=.)/, "");
    const length = digits.length > 15 ? Infinity : Number(digits);
    if (length > maxBodySize) {
      throw bad(`Request body of ${contentLength} bytes is over the limit of ${maxBodySize}`, 413);
    }
    return length === 0 ? { kind: "none" } : { kind: "length", length };
  }
  return { kind: "none" };
}

/** What {@linkcode Http1Reader.next} produces. */
export type Http1Event =
  /** A request head; `head` holds its bytes (a view the caller may keep). */
  | { kind: "request"; request: HttpRequestHead; head: Uint8Array }
  | { kind: "data"; data: Uint8Array }
  | { kind: "end" };

const CR = 0x0d;
const LF = 0x0a;

/**
 * Reads a connection's requests, one after another (pipelined ones
 * included), with no I/O. Feed bytes with {@linkcode receive}; take events
 * with {@linkcode next} until it returns `null` (more bytes needed).
 *
 * Each request yields `request`, then its body as `data` events (views the
 * caller may keep; never changed afterwards), then `end` (also for a request
 * without a body). The reader holds at most one head (`maxHeadSize`) plus
 * what was received and not taken yet: the caller bounds that by reading
 * from the network only when `next()` asks for more.
 *
 * @example Two pipelined requests
 * ```ts
 * import { Http1Reader } from "./http1.ts";
 *
 * const reader = new Http1Reader();
 * reader.receive(new TextEncoder().encode(
 *   "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi" +
 *     "GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
 * ));
 * for (let event; (event = reader.next()) !== null;) console.log(event.kind);
 * // request, data, end, request, end
 * ```
 */
export class Http1Reader {
  readonly #options: Http1Options;
  readonly #maxHeadSize: number;
  readonly #maxBodySize: number;
  // Received bytes: [#start, #end) not yet taken. Bytes before #start may be
  // held by the caller as body views, so they are never written over.
  #buf = new Uint8Array(0);
  #start = 0;
  #end = 0;
  /** Where the search for the end of the head resumes. */
  #scanned = 0;
  #state: "head" | "length" | "chunked" | "end" | "failed" = "head";
  #remaining = 0;
  #chunked: ChunkedDecoder | null = null;
  #failure: HandshakeError | null = null;

  /** Creates a reader for one connection. */
  constructor(options: Http1Options = {}) {
    this.#options = options;
    this.#maxHeadSize = options.maxHeadSize ?? 16 * 1024;
    this.#maxBodySize = options.maxBodySize ?? DEFAULT_MAX_BODY_SIZE;
  }

  /**
   * Starts with a request whose head was read elsewhere (the server's
   * upgrade check reads the first head): its body comes next.
   */
  begin(request: HttpRequestHead): void {
    if (this.#state !== "head") throw new TypeError("The reader is inside a request");
    this.#startBody(request.body);
  }

  /** Bytes received and not taken yet. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /**
   * Hands over the bytes received and not taken (a copy), leaving none:
   * for a connection that stops speaking HTTP/1.1 (a WebSocket upgrade).
   */
  takeBuffered(): Uint8Array {
    const rest = this.#buf.slice(this.#start, this.#end);
    this.#start = this.#end;
    return rest;
  }

  /** Whether the reader waits for a new request's head (not inside a body). */
  get betweenRequests(): boolean {
    return this.#state === "head";
  }

  /** Adds received bytes (read only during the call: they are copied). */
  receive(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    const unread = this.#end - this.#start;
    if (unread === 0) {
      this.#buf = chunk.slice();
      this.#start = 0;
      this.#end = chunk.length;
      this.#scanned = 0;
      return;
    }
    if (this.#end + chunk.length > this.#buf.length) {
      // A new buffer: the old one may be held by body views.
      const next = new Uint8Array(Math.max(unread + chunk.length, unread * 2));
      next.set(this.#buf.subarray(this.#start, this.#end));
      this.#scanned -= this.#start;
      this.#buf = next;
      this.#start = 0;
      this.#end = unread;
    }
    this.#buf.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /**
   * The next event, or `null` when more bytes are needed. Throws a
   * {@linkcode HandshakeError} (400, 413, 417, 431, 501 or 505) when the
   * bytes cannot be a valid request, and again on every later call.
   */
  next(): Http1Event | null {
    if (this.#failure !== null) throw this.#failure;
    try {
      return this.#next();
    } catch (error) {
      if (error instanceof HandshakeError) {
        this.#state = "failed";
        this.#failure = error;
      }
      throw error;
    }
  }

  #next(): Http1Event | null {
    switch (this.#state) {
      case "head":
        return this.#head();
      case "length": {
        const available = this.#end - this.#start;
        if (available === 0) return null;
        const take = Math.min(available, this.#remaining);
        const data = this.#buf.subarray(this.#start, this.#start + take);
        this.#start += take;
        this.#remaining -= take;
        if (this.#remaining === 0) this.#state = "end";
        return { kind: "data", data };
      }
      case "chunked": {
        const decoder = this.#chunked!;
        for (;;) {
          if (decoder.done) {
            this.#state = "end";
            return this.#next();
          }
          if (this.#start === this.#end) return null;
          const { consumed, data } = decoder.decode(this.#buf.subarray(this.#start, this.#end));
          this.#start += consumed;
          if (data !== null) return { kind: "data", data };
        }
      }
      case "end":
        this.#state = "head";
        this.#chunked = null;
        this.#scanned = this.#start;
        return { kind: "end" };
      case "failed":
        throw this.#failure;
    }
  }

  #head(): Http1Event | null {
    const buf = this.#buf;
    // RFC 9112 §2.2: empty lines before a request-line are ignored (some
    // clients send a CRLF after a POST body).
    while (this.#end - this.#start >= 2 && buf[this.#start] === CR && buf[this.#start + 1] === LF) {
      this.#start += 2;
    }
    if (this.#scanned < this.#start) this.#scanned = this.#start;
    const end = findStrictHeadEnd(buf, this.#start, this.#scanned, this.#end);
    if (end === -1) {
      if (this.#end - this.#start >= this.#maxHeadSize) {
        throw bad(`Request head is over the limit of ${this.#maxHeadSize} bytes`, 431);
      }
      this.#scanned = Math.max(this.#start, this.#end - 3);
      return null;
    }
    if (end - this.#start > this.#maxHeadSize) {
      throw bad(`Request head is over the limit of ${this.#maxHeadSize} bytes`, 431);
    }
    const bytes = buf.subarray(this.#start, end);
    const head = parseRequestHead(bytes);
    this.#start = end;
    this.#scanned = end;
    const request = interpretRequest(head, this.#options);
    this.#startBody(request.body);
    return { kind: "request", request, head: bytes };
  }

  #startBody(body: BodyFraming): void {
    if (body.kind === "length") {
      this.#state = "length";
      this.#remaining = body.length;
    } else if (body.kind === "chunked") {
      this.#state = "chunked";
      this.#chunked = new ChunkedDecoder({
        maxBodySize: this.#maxBodySize,
        maxTrailerSize: this.#maxHeadSize,
      });
    } else {
      this.#state = "end";
    }
  }
}

/**
 * Index just past the CRLF CRLF that ends a head starting at `start`, or -1;
 * the search resumes at `from`. Throws 400 on a bare LF (RFC 9112 §2.2 lets
 * a server accept one; accepting it is how one request is read two ways by
 * two servers in a chain).
 */
function findStrictHeadEnd(buf: Uint8Array, start: number, from: number, end: number): number {
  let i = buf.indexOf(LF, Math.max(start, from));
  while (i !== -1 && i < end) {
    if (i === start || buf[i - 1] !== CR) throw bad("Bare LF in the request head: use CRLF");
    // The line just ended is empty: CR LF CR LF.
    if (i - 3 >= start && buf[i - 2] === LF && buf[i - 3] === CR) return i + 1;
    i = buf.indexOf(LF, i + 1);
  }
  return -1;
}

/** Options for {@linkcode ChunkedDecoder}. */
export interface ChunkedDecoderOptions {
  /** Largest decoded body in bytes; more is a 413. @default {8388608} */
  maxBodySize?: number;
  /** Longest chunk-size line (size and extensions) in bytes; longer is a 400. @default {4096} */
  maxLineSize?: number;
  /** Largest trailer section in bytes; larger is a 431. @default {16384} */
  maxTrailerSize?: number;
}

// chunk-size [ chunk-ext ] (RFC 9112 §7.1.1): hex digits, then extensions
// `BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ]`.
const TOKEN_SRC = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
const QUOTED_SRC =
  '"(?:[\\t \\x21\\x23-\\x5b\\x5d-\\x7e\\x80-\\xff]|\\\\[\\t \\x21-\\x7e\\x80-\\xff])*"';
const CHUNK_LINE = new RegExp(
  `^([0-9A-Fa-f]+)((?:[ \\t]*;[ \\t]*${TOKEN_SRC}(?:[ \\t]*=[ \\t]*(?:${TOKEN_SRC}|${QUOTED_SRC}))?)*)$`,
);
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

function latin1(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return out;
}

/**
 * The chunked transfer coding (RFC 9112 §7.1), decoded strictly: hex sizes
 * only, extensions that follow the grammar, CRLF after every line and every
 * chunk's data, trailer fields that are valid field lines (then dropped:
 * a `Request` has no trailers). Anything else is a 400.
 */
export class ChunkedDecoder {
  readonly #maxBodySize: number;
  readonly #maxLineSize: number;
  readonly #maxTrailerSize: number;
  #state: "size" | "data" | "data-cr" | "data-lf" | "trailer" | "done" = "size";
  #line: number[] = [];
  #remaining = 0;
  #total = 0;
  #trailerBytes = 0;

  /** Creates a decoder for one body. */
  constructor(options: ChunkedDecoderOptions = {}) {
    this.#maxBodySize = options.maxBodySize ?? DEFAULT_MAX_BODY_SIZE;
    this.#maxLineSize = options.maxLineSize ?? 4096;
    this.#maxTrailerSize = options.maxTrailerSize ?? 16 * 1024;
  }

  /** Whether the last chunk and the trailer section were read. */
  get done(): boolean {
    return this.#state === "done";
  }

  /** Decoded body bytes so far. */
  get total(): number {
    return this.#total;
  }

  /**
   * Decodes from the start of `input`: returns how many bytes were used and
   * the chunk data found (a view of `input`), at most one piece per call;
   * `data` is `null` when the bytes used held no data. Stops at the end of
   * the body. Throws a {@linkcode HandshakeError} (400, 413 or 431).
   */
  decode(input: Uint8Array): { consumed: number; data: Uint8Array | null } {
    let i = 0;
    while (i < input.length && this.#state !== "done") {
      switch (this.#state) {
        case "size":
        case "trailer": {
          const lf = input.indexOf(LF, i);
          const stop = lf === -1 ? input.length : lf + 1;
          const limit = this.#state === "size" ? this.#maxLineSize : this.#maxTrailerSize;
          const used = this.#state === "size" ? this.#line.length : this.#trailerBytes;
          if (used + (stop - i) > limit) {
            throw this.#state === "size"
              ? bad(`Chunk size line is over the limit of ${limit} bytes`)
              : bad(`Chunked trailer section is over the limit of ${limit} bytes`, 431);
          }
          for (let j = i; j < stop; j++) this.#line.push(input[j]);
          if (this.#state === "trailer") this.#trailerBytes += stop - i;
          i = stop;
          if (lf !== -1) this.#line = this.#endLine(this.#line);
          break;
        }
        case "data": {
          const take = Math.min(this.#remaining, input.length - i);
          const data = input.subarray(i, i + take);
          this.#remaining -= take;
          if (this.#remaining === 0) this.#state = "data-cr";
          return { consumed: i + take, data };
        }
        case "data-cr":
          if (input[i] !== CR) throw bad("Chunk data is not followed by CRLF");
          this.#state = "data-lf";
          i++;
          break;
        case "data-lf":
          if (input[i] !== LF) throw bad("Chunk data is not followed by CRLF");
          this.#state = "size";
          i++;
          break;
      }
    }
    return { consumed: i, data: null };
  }

  /** Handles one complete line (ending in LF); returns the emptied line buffer. */
  #endLine(line: number[]): number[] {
    const n = line.length;
    if (n < 2 || line[n - 2] !== CR) throw bad("Bare LF in chunked framing: use CRLF");
    const text = latin1(Uint8Array.from(line.slice(0, n - 2)));
    if (text.includes("\r")) throw bad("Stray CR in chunked framing");
    if (this.#state === "size") {
      const match = CHUNK_LINE.exec(text);
      if (match === null) {
        throw bad(`Invalid chunk size line ${JSON.stringify(text.slice(0, 64))}`);
      }
      const digits = match[1].replace(/^0+(?=.)/, "");
      const size = digits.length > 13 ? Infinity : parseInt(digits, 16);
      if (this.#total + size > this.#maxBodySize) {
        throw bad(`Request body is over the limit of ${this.#maxBodySize} bytes`, 413);
      }
      if (size === 0) {
        this.#state = "trailer";
      } else {
        this.#total += size;
        this.#remaining = size;
        this.#state = "data";
      }
      return [];
    }
    // A trailer field line, or the empty line that ends the body.
    if (text === "") {
      this.#state = "done";
      return [];
    }
    const colon = text.indexOf(":");
    const name = colon <= 0 ? "" : text.slice(0, colon);
    if (!isToken(name)) {
      throw bad(`Invalid trailer field line ${JSON.stringify(text.slice(0, 64))}`);
    }
    if (!FIELD_VALUE.test(text.slice(colon + 1))) {
      throw bad(`Invalid characters in trailer field ${name}`);
    }
    return [];
  }
}

/** How a response's body goes on the wire. */
export type ResponseFraming =
  /** No body at all: HEAD, 204, 304 (`Content-Length` as the application set it, if at all). */
  | { kind: "none"; contentLength: number | null }
  /** Exactly `length` bytes. */
  | { kind: "length"; length: number }
  /** Chunked: the length is not known in advance (HTTP/1.1 only). */
  | { kind: "chunked" }
  /** Until the connection closes: the length is not known and the client speaks HTTP/1.0. */
  | { kind: "close" };

/** What {@linkcode planResponse} needs to know. */
export interface ResponsePlanInput {
  /** The request method (`HEAD` responses have no body). */
  method: string;
  /** The request's HTTP version. */
  version: [number, number];
  /** The response status. */
  status: number;
  /** A valid `Content-Length` the application set, else `null`. */
  declaredLength: number | null;
  /** The body's length when known (a body read to its end), else `null`. */
  knownLength: number | null;
  /** Whether the response has a body at all. */
  hasBody: boolean;
}

/**
 * Chooses the framing of a response (RFC 9112 §6.1-6.3): no body for HEAD,
 * 1xx, 204 and 304; the declared or known length; else chunked for HTTP/1.1
 * and close-delimited for HTTP/1.0, which cannot read chunks.
 */
export function planResponse(input: ResponsePlanInput): ResponseFraming {
  const { status } = input;
  if (status === 204 || status === 304 || status < 200) {
    return { kind: "none", contentLength: status === 304 ? input.declaredLength : null };
  }
  const length = input.declaredLength ?? input.knownLength ?? (input.hasBody ? null : 0);
  if (input.method === "HEAD") return { kind: "none", contentLength: length };
  if (length !== null) return { kind: "length", length };
  return input.version[1] >= 1 ? { kind: "chunked" } : { kind: "close" };
}

/**
 * Reads a `Content-Length` an application set on a response: one plain
 * decimal number, else `null` (it is then ignored).
 */
export function parseContentLength(value: string | null): number | null {
  if (value === null || !DIGITS.test(value) || value.length > 15) return null;
  return Number(value);
}

const STATUS_TEXT: Record<number, string> = {
  100: "Continue",
  101: "Switching Protocols",
  200: "OK",
  201: "Created",
  202: "Accepted",
  203: "Non-Authoritative Information",
  204: "No Content",
  205: "Reset Content",
  206: "Partial Content",
  300: "Multiple Choices",
  301: "Moved Permanently",
  302: "Found",
  303: "See Other",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  402: "Payment Required",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  407: "Proxy Authentication Required",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  411: "Length Required",
  412: "Precondition Failed",
  413: "Content Too Large",
  414: "URI Too Long",
  415: "Unsupported Media Type",
  416: "Range Not Satisfiable",
  417: "Expectation Failed",
  418: "I'm a teapot",
  421: "Misdirected Request",
  422: "Unprocessable Content",
  425: "Too Early",
  426: "Upgrade Required",
  428: "Precondition Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  451: "Unavailable For Legal Reasons",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** The standard reason phrase of a status code, or `""`. */
export function statusText(status: number): string {
  return STATUS_TEXT[status] ?? "";
}

// Framing and connection management belong to the server, not the application.
const HOP_BY_HOP = new Set([
  "connection",
  "content-length",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
  "te",
  "trailer",
]);

const REASON = /^[\t\x20-\x7e\x80-\xff]*$/;
const encoder = new TextEncoder();

/** Options for {@linkcode encodeResponseHead}. */
export interface ResponseHeadOptions {
  /** The reason phrase; the standard one when empty or invalid. */
  statusText?: string;
  /** How the body is framed. */
  framing: ResponseFraming;
  /** Whether the connection stays open after this response. */
  keepAlive: boolean;
  /** The request's HTTP version (an HTTP/1.0 keep-alive is announced). */
  version: [number, number];
  /** The `Date` value to send when the application set none (RFC 9110 §6.6.1). */
  date?: string;
  /** Seconds an idle connection stays open, announced in `Keep-Alive: timeout=N`. */
  idleSeconds?: number;
}

/**
 * The bytes of a response head: status line, the application's headers
 * without hop-by-hop ones (the server frames the body and manages the
 * connection), then `Content-Length` or `Transfer-Encoding: chunked` and
 * `Connection` as `options` say.
 */
export function encodeResponseHead(
  status: number,
  headers: Headers,
  options: ResponseHeadOptions,
): Uint8Array {
  let reason = options.statusText ?? "";
  if (reason === "" || !REASON.test(reason)) reason = statusText(status);
  let out = `HTTP/1.1 ${status} ${reason}\r\n`;
  let hasDate = false;
  for (const [name, value] of headers) {
    if (HOP_BY_HOP.has(name)) continue;
    if (name === "set-cookie") continue; // Below, one field per cookie.
    if (name === "date") hasDate = true;
    out += `${name}: ${value}\r\n`;
  }
  for (const cookie of headers.getSetCookie()) out += `set-cookie: ${cookie}\r\n`;
  if (!hasDate && options.date !== undefined) out += `date: ${options.date}\r\n`;
  const { framing } = options;
  if (framing.kind === "length") out += `content-length: ${framing.length}\r\n`;
  else if (framing.kind === "chunked") out += "transfer-encoding: chunked\r\n";
  else if (framing.kind === "none" && framing.contentLength !== null) {
    out += `content-length: ${framing.contentLength}\r\n`;
  }
  const keepAlive = options.keepAlive && framing.kind !== "close";
  if (!keepAlive) out += "connection: close\r\n";
  else {
    if (options.version[1] === 0) out += "connection: keep-alive\r\n";
    if (options.idleSeconds !== undefined) out += `keep-alive: timeout=${options.idleSeconds}\r\n`;
  }
  return headBytes(out + "\r\n");
}

const NON_ASCII = /[\u0080-\uffff]/;

/**
 * A head's bytes: one byte per character up to U+00FF, as field values are
 * byte strings (RFC 9110 §5.5) and requests are read the same way, so a
 * value echoed from a request goes back as the bytes that came. A character
 * above U+00FF (which a `Headers` object should not hold) goes out as UTF-8.
 */
function headBytes(text: string): Uint8Array {
  if (!NON_ASCII.test(text)) return encoder.encode(text);
  const bytes: number[] = [];
  for (const char of text) {
    const code = char.codePointAt(0)!;
    if (code <= 0xff) bytes.push(code);
    else bytes.push(...encoder.encode(char));
  }
  return Uint8Array.from(bytes);
}

/** The interim response that tells a client to send its body (RFC 9110 §15.2.1). */
export const CONTINUE_RESPONSE: Uint8Array = encoder.encode("HTTP/1.1 100 Continue\r\n\r\n");

/** The last chunk and an empty trailer section, which end a chunked body. */
export const LAST_CHUNK: Uint8Array = encoder.encode("0\r\n\r\n");

/**
 * One chunk of a chunked body (RFC 9112 §7.1): size line, data, CRLF, in
 * one new buffer. Empty data makes no chunk (it would end the body).
 */
export function encodeChunk(data: Uint8Array): Uint8Array {
  if (data.length === 0) return new Uint8Array(0);
  const size = encoder.encode(data.length.toString(16) + "\r\n");
  const out = new Uint8Array(size.length + data.length + 2);
  out.set(size);
  out.set(data, size.length);
  out[out.length - 2] = CR;
  out[out.length - 1] = LF;
  return out;
}

/** The size line alone, for a large chunk whose data is written without a copy. */
export function chunkHeader(length: number): Uint8Array {
  return encoder.encode(length.toString(16) + "\r\n");
}

/** The CRLF that follows a chunk's data. */
export const CRLF: Uint8Array = Uint8Array.of(CR, LF);
