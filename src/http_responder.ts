/**
 * Plain HTTP/1.1 on the WebSocket port: one keep-alive connection's loop
 * that moves bytes between the transport and the sans-I/O request reader
 * (`src/protocol/http1.ts`), turns each request into a web-standard
 * `Request`, calls the application's `fetch` behind one guard, and writes
 * its `Response` with the socket's backpressure.
 *
 * Memory per connection is bounded: the transport is read only when the
 * reader asks for bytes (the next head, or body bytes the application
 * pulls), and response bodies are pulled only as fast as the socket takes
 * them.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { NetAddress, Transport } from "./runtime/transport.ts";
import type { RequestHead } from "./protocol/http.ts";
import { HandshakeError, toError } from "./protocol/errors.ts";
import { buildErrorResponse } from "./protocol/handshake.ts";
import { isUpgradeAttempt } from "./protocol/server_handshake.ts";
import {
  chunkHeader,
  CONTINUE_RESPONSE,
  CRLF,
  encodeChunk,
  encodeResponseHead,
  Http1Reader,
  type HttpRequestHead,
  interpretRequest,
  LAST_CHUNK,
  parseContentLength,
  planResponse,
  type ResponseFraming,
} from "./protocol/http1.ts";

/** What a {@linkcode FetchHandler} learns about a request besides the request itself. */
export interface FetchInfo {
  /** The client's address. */
  remoteAddr: NetAddress;
}

/**
 * Answers a plain HTTP request (one that is not a WebSocket upgrade) with a
 * web-standard `Response`.
 */
export type FetchHandler = (
  request: Request,
  info: FetchInfo,
) => Response | Promise<Response>;

/** @internal What {@linkcode HttpConnection} needs from the server. */
export interface HttpResponderConfig {
  /** The application's handler. */
  fetch: FetchHandler;
  /** The transport speaks TLS (`https:` request URLs). */
  secure: boolean;
  /** Authority for HTTP/1.0 requests without a Host header. */
  defaultHost: string;
  /** Largest request head in bytes (431). */
  maxHeadSize: number;
  /** Largest request body in bytes (413). */
  maxBodySize: number;
  /** Milliseconds from a head's first byte to its end, and longest silence inside a body (408). */
  headTimeout: number;
  /** Milliseconds an idle keep-alive connection waits for its next request. */
  idleTimeout: number;
  /** Reports an error; a `fault` is the server's or the application's, not the client's. */
  report(error: Error, fault: boolean): void;
}

/** Unread request body past which a connection is closed rather than drained. */
/** What the wait for a handler yields when its connection went away first. */
const CONNECTION_GONE = Symbol("connection gone");

const DRAIN_LIMIT = 256 * 1024;
/** Bytes of a response body gathered to send it with a Content-Length. */
const GATHER_LIMIT = 64 * 1024;
/** Chunks from this size on are written without copying them into a chunk frame. */
const COPY_LIMIT = 16 * 1024;
/** Longest an error answer may take to write before the connection is dropped. */
const ANSWER_TIMEOUT = 1000;

/** The next turn of the event loop: what "ready now" means for a body read. */
function nextTurn(): Promise<"later"> {
  return new Promise((resolve) => setImmediate(() => resolve("later")));
}

let cachedDate = "";
let cachedSecond = -1;
/** The `Date` header value (RFC 9110 §6.6.1), computed once a second. */
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== cachedSecond) {
    cachedSecond = second;
    cachedDate = new Date(now).toUTCString();
  }
  return cachedDate;
}

/** The body of one request, as the connection tracks it. */
interface BodyState {
  /** The request still has body bytes on the wire. */
  open: boolean;
  /** The client waits for `100 Continue` before sending the body. */
  awaitingContinue: boolean;
  /** Why reading the body failed (framing or limit: the connection must close). */
  error: HandshakeError | null;
  /** The client left before the body ended. */
  lost: boolean;
}

/**
 * @internal One plain HTTP connection: serves its requests in order until
 * either side closes it. Created by the server after the first head was
 * read (and found not to be an upgrade).
 */
export class HttpConnection {
  readonly #transport: Transport;
  readonly #config: HttpResponderConfig;
  readonly #reader: Http1Reader;
  /** The read in progress, shared by whoever waits for input. */
  #filling: Promise<boolean> | null = null;
  /** The client's side ended (or failed): no more input. */
  #eof = false;
  #bodyQueue: Promise<unknown> = Promise.resolve();
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Set by the server's shutdown: finish the current response, then close. */
  #closing = false;
  /** Waiting for the next request with none of it received: shutdown closes at once. */
  #idle = false;
  #closed = false;
  #abort: AbortController | null = null;
  /** A later request asked for a WebSocket upgrade: its bytes, for the server's handshake. */
  #handoff: Uint8Array | null = null;
  /** The current response's head went out (an error can no longer change its status). */
  #headWritten = false;
  /** The last request's body was not read to its end. */
  #unreadBody = false;

  constructor(transport: Transport, config: HttpResponderConfig) {
    this.#transport = transport;
    this.#config = config;
    this.#reader = new Http1Reader({
      secure: config.secure,
      defaultHost: config.defaultHost,
      maxBodySize: config.maxBodySize,
      maxHeadSize: config.maxHeadSize,
    });
  }

  /**
   * Serves the connection, starting with a head already read, and closes
   * the transport at the end. Never rejects. When a later request on the
   * connection asks for a WebSocket upgrade, stops and resolves with that
   * request's bytes (and any after it) instead, leaving the transport open
   * for the server's opening handshake.
   */
  async serve(head: RequestHead, rest: Uint8Array): Promise<Uint8Array | null> {
    try {
      let request: HttpRequestHead | null;
      try {
        request = interpretRequest(head, this.#readerOptions());
        this.#reader.begin(request);
        this.#reader.receive(rest);
      } catch (error) {
        await this.#refuse(error);
        return null;
      }
      while (request !== null && !this.#closed) {
        const keepAlive = await this.#exchange(request);
        if (!keepAlive || this.#closing) {
          // Unread input (a body nobody read) would make closing send RST,
          // which can destroy the response before the client reads it.
          if (!this.#closed && this.#reader.buffered + (this.#unreadBody ? 1 : 0) > 0) {
            await this.#answerAndClose(null);
          }
          break;
        }
        request = await this.#nextHead();
      }
    } catch (error) {
      // Only a bug gets here: every expected failure is handled where it happens.
      this.#config.report(toError(error), true);
    }
    if (this.#handoff !== null && !this.#closed) {
      this.#clearTimer();
      return this.#handoff;
    }
    this.#finish();
    return null;
  }

  /** Graceful close (server shutdown): at once when idle, else after the current response. */
  close(): void {
    this.#closing = true;
    if (this.#idle) this.#finish();
  }

  /** Drops the connection now. */
  terminate(): void {
    this.#finish();
  }

  #readerOptions() {
    const { secure, defaultHost, maxBodySize } = this.#config;
    return { secure, defaultHost, maxBodySize };
  }

  #finish(): void {
    this.#clearTimer();
    if (this.#closed) return;
    this.#closed = true;
    this.#abort?.abort(new Error("The connection closed"));
    this.#transport.close();
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #setTimer(ms: number, onExpire: () => void): void {
    this.#clearTimer();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      onExpire();
    }, ms);
  }

  /**
   * Reads one chunk into the request reader; `false` at the end of input.
   * Callers share the read in progress (a body pull, the watch for a client
   * that leaves, the wait for the next head), so each chunk is taken once.
   */
  #fill(): Promise<boolean> {
    if (this.#eof) return Promise.resolve(false);
    if (this.#filling === null) {
      const filling: Promise<boolean> = this.#transport.read().then((chunk) => {
        if (chunk === null) {
          this.#eof = true;
          return false;
        }
        this.#reader.receive(chunk);
        return true;
      }, () => {
        this.#eof = true;
        return false;
      }).finally(() => {
        if (this.#filling === filling) this.#filling = null;
      });
      this.#filling = filling;
    }
    return this.#filling;
  }

  /**
   * While a handler works with the request body read (or none), one read
   * watches the socket: at its end `request.signal` aborts, so a handler
   * waiting on something else (a long poll) learns the client left. Bytes
   * that arrive instead (a pipelined request) wait in the reader.
   */
  #watch(abort: AbortController): void {
    // With input already waiting (pipelined requests) there is nothing to
    // watch for, and no read may be left pending for a WebSocket handoff.
    if (this.#reader.buffered > 0) return;
    this.#fill().then((alive) => {
      if (!alive && this.#abort === abort) {
        abort.abort(new Error("The client closed the connection"));
      }
    });
  }

  /**
   * Waits for the next request's head. The idle timeout runs until its
   * first byte, then the head timeout; `null` when the connection ends.
   */
  async #nextHead(): Promise<HttpRequestHead | null> {
    const reader = this.#reader;
    let started = false;
    const startHeadTimer = () => {
      started = true;
      this.#setTimer(this.#config.headTimeout, () => {
        this.#timedOut(buildErrorResponse(408, "Request head not completed in time"));
      });
    };
    try {
      for (;;) {
        const event = reader.next();
        if (event !== null) {
          if (event.kind !== "request") continue; // The previous request's "end".
          if (isUpgradeAttempt(event.request.headers.get("upgrade"))) {
            // The opening handshake is the server's: give it the bytes back.
            const rest = reader.takeBuffered();
            const bytes = new Uint8Array(event.head.length + rest.length);
            bytes.set(event.head);
            bytes.set(rest, event.head.length);
            this.#handoff = bytes;
            return null;
          }
          return event.request;
        }
        if (!started) {
          if (reader.buffered > 0) startHeadTimer();
          else {
            this.#idle = true;
            if (this.#closing) return null;
            this.#setTimer(this.#config.idleTimeout, () => this.#finish());
          }
        }
        const alive = await this.#fill();
        this.#idle = false;
        if (!alive || this.#closed) return null;
        if (!started) startHeadTimer();
      }
    } catch (error) {
      if (!(error instanceof HandshakeError)) throw error;
      await this.#refuse(error);
      return null;
    } finally {
      this.#idle = false;
      this.#clearTimer();
    }
  }

  /** A timer expired while a read waits: answer (when given) and close. */
  #timedOut(answer: Uint8Array | null): void {
    if (this.#closed) return;
    if (answer === null) return this.#finish();
    let sent: Promise<void> | undefined;
    try {
      sent = this.#transport.write(answer);
    } catch {
      // Gone already.
    }
    const done = () => this.#finish();
    if (sent === undefined) done();
    else sent.then(done, done);
  }

  /**
   * Answers a request the protocol refuses (its status from the error) and
   * closes: drains input briefly first, since closing with unread input makes
   * the kernel send RST, which can destroy the answer before it is read.
   */
  async #refuse(error: unknown): Promise<void> {
    if (!(error instanceof HandshakeError)) throw error;
    this.#config.report(error, false);
    await this.#answerAndClose(buildErrorResponse(error.status, error.message, error.headers));
  }

  async #answerAndClose(bytes: Uint8Array | null): Promise<void> {
    this.#setTimer(ANSWER_TIMEOUT, () => this.#finish());
    try {
      if (bytes !== null) await this.#transport.write(bytes);
      let drained = 0;
      while (!this.#closed && drained < 1024 * 1024) {
        if (!(await this.#fill())) break;
        drained += this.#reader.takeBuffered().length;
      }
    } catch {
      // The client is gone.
    } finally {
      this.#finish();
    }
  }

  /**
   * One request and its response. Returns whether the connection may carry
   * another request.
   */
  async #exchange(head: HttpRequestHead): Promise<boolean> {
    const body: BodyState = {
      open: head.body.kind !== "none",
      awaitingContinue: head.expectContinue,
      error: null,
      lost: false,
    };
    const abort = new AbortController();
    this.#abort = abort;
    this.#headWritten = false;
    if (!body.open) this.#watch(abort);
    let response: Response;
    try {
      const request = this.#makeRequest(head, body, abort.signal);
      response = await this.#callFetch(request, body);
    } catch (error) {
      // The request could not be built (a method or header `Request` refuses).
      this.#config.report(toError(error), false);
      response = new Response(`Bad request: ${toError(error).message}\n`, { status: 400 });
      body.error ??= new HandshakeError(400, toError(error).message);
    }
    if (body.error !== null) {
      // The body was malformed or too large: that is the answer, whatever fetch said.
      await response.body?.cancel().catch(() => {});
      this.#config.report(body.error, false);
      const { status, message, headers } = body.error;
      await this.#answerAndClose(buildErrorResponse(status, message, headers));
      return false;
    }
    if (body.lost || this.#closed) return false;
    // A client still waiting for 100 Continue never got it: it may or may
    // not send the body now, so only closing leaves no doubt (RFC 9110 §10.1.1).
    let keepAlive = head.keepAlive && !this.#closing && !body.awaitingContinue;
    if (response.headers.get("connection")?.toLowerCase().includes("close")) keepAlive = false;
    const completed = await this.#writeResponse(head, response, keepAlive, body);
    this.#abort = null;
    // The response did not go out whole (the client left, the body broke):
    // whatever still works for this request may stop.
    if (!completed) abort.abort(new Error("The response was not completed"));
    this.#unreadBody = body.open;
    if (!completed || !keepAlive || this.#closed) return false;
    const drained = await this.#discardBody(body);
    this.#unreadBody = body.open;
    return drained;
  }

  /** The web-standard request: its body streams from the socket as it is read. */
  #makeRequest(head: HttpRequestHead, body: BodyState, signal: AbortSignal): Request {
    const method = head.method;
    const upper = method.toUpperCase();
    // A `Request` cannot carry a body for GET and HEAD: one sent is read and dropped.
    const withBody = body.open && upper !== "GET" && upper !== "HEAD";
    const stream = withBody
      ? new ReadableStream<Uint8Array>({
        pull: async (controller) => {
          try {
            const event = await this.#nextBodyEvent(body);
            if (event === null) controller.close();
            else controller.enqueue(event);
          } catch (error) {
            controller.error(error);
          }
        },
      }, { highWaterMark: 0 })
      : null;
    return new Request(head.url, {
      method,
      headers: head.headers,
      body: stream,
      signal,
      // Required by the Fetch standard for a stream body.
      duplex: "half",
    } as RequestInit);
  }

  /** The next piece of the current request's body (`null` at its end), in order. */
  #nextBodyEvent(body: BodyState): Promise<Uint8Array | null> {
    const next = this.#bodyQueue.then(() => this.#pullBody(body));
    this.#bodyQueue = next.catch(() => {});
    return next;
  }

  async #pullBody(body: BodyState): Promise<Uint8Array | null> {
    if (!body.open) return null;
    if (body.error !== null) throw body.error;
    const reader = this.#reader;
    try {
      for (;;) {
        const event = reader.next();
        if (event !== null) {
          if (event.kind === "data") return event.data;
          body.open = false;
          if (this.#abort !== null) this.#watch(this.#abort);
          return null;
        }
        if (body.awaitingContinue) {
          body.awaitingContinue = false;
          // A 1xx goes before the final response only (RFC 9110 §15.2): a
          // response already under way that reads the request body (one
          // that echoes it) must not get "HTTP/1.1 100" inside its body.
          if (!this.#headWritten) await this.#transport.write(CONTINUE_RESPONSE);
        }
        this.#setTimer(this.#config.headTimeout, () => {
          this.#timedOut(null);
        });
        const alive = await this.#fill();
        this.#clearTimer();
        if (!alive || this.#closed) {
          body.lost = true;
          throw new Error("The client closed the connection before the request body ended");
        }
      }
    } catch (error) {
      if (error instanceof HandshakeError) body.error = error;
      else {
        body.lost = true;
        this.#abort?.abort(error);
      }
      throw error;
    }
  }

  /**
   * Reads what is left of a request body the application did not read, so
   * that the next request can be found; too much of it closes instead.
   */
  async #discardBody(body: BodyState): Promise<boolean> {
    let discarded = 0;
    try {
      for (;;) {
        const data = await this.#nextBodyEvent(body);
        if (data === null) return true;
        discarded += data.length;
        if (discarded > DRAIN_LIMIT) return false;
      }
    } catch (error) {
      if (error instanceof HandshakeError) this.#config.report(error, false);
      return false;
    }
  }

  /**
   * The one guard around the application's `fetch`: a throw, a rejection or
   * a value that is not a `Response` answers 500, reaches `onError` (logged
   * when nobody listens), and the connection goes on.
   */
  async #callFetch(request: Request, body: BodyState): Promise<Response> {
    // A handler that never settles must not hold the connection (or the
    // server's shutdown) once the connection is gone: stop waiting when the
    // request's signal aborts (the client left, the body failed, shutdown
    // dropped the connection).
    const signal = request.signal;
    let stopWaiting: (() => void) | undefined;
    const gone = new Promise<typeof CONNECTION_GONE>((resolve) => {
      if (signal.aborted) return resolve(CONNECTION_GONE);
      stopWaiting = () => resolve(CONNECTION_GONE);
      signal.addEventListener("abort", stopWaiting, { once: true });
    });
    try {
      const response = await Promise.race([
        this.#config.fetch(request, { remoteAddr: this.#transport.remoteAddr }),
        gone,
      ]);
      if (response === CONNECTION_GONE) {
        // The body's own error (if that was the cause) stays the answer.
        if (body.error === null) body.lost = true;
        return internalError();
      }
      if (!(response instanceof Response)) {
        throw new TypeError(
          `The fetch handler must return a Response, got ${
            response === null ? "null" : typeof response
          }`,
        );
      }
      return response;
    } catch (error) {
      // A handler that failed because the request body did is not at fault:
      // the body's own error (400 or 413) is the answer and the report.
      if (body.error === null && !body.lost) this.#config.report(toError(error), true);
      return internalError();
    } finally {
      if (stopWaiting !== undefined) signal.removeEventListener("abort", stopWaiting);
    }
  }

  /**
   * Writes the response: the head, then the body with the socket's
   * backpressure (every write awaited, the body pulled only after). Returns
   * `false` when the connection cannot go on (the client left, the body
   * failed or broke its declared length).
   */
  async #writeResponse(
    head: HttpRequestHead,
    response: Response,
    keepAlive: boolean,
    body: BodyState,
  ): Promise<boolean> {
    const isHead = head.method.toUpperCase() === "HEAD";
    const declared = parseContentLength(response.headers.get("content-length"));
    let reader: ReadableStreamDefaultReader<Uint8Array> | null;
    try {
      reader = response.body?.getReader() ?? null;
    } catch (error) {
      // A body already used or locked: the application's mistake, told as 500.
      this.#config.report(toError(error), true);
      return await this.#writeResponse(head, internalError(), keepAlive, body);
    }
    // What the body holds right now: gathered to send small bodies with a length.
    const gathered: Uint8Array[] = [];
    let gatheredBytes = 0;
    let ended = reader === null;
    let pending: Promise<ReadableStreamReadResult<Uint8Array>> | null = null;
    try {
      const noBody = response.status === 204 || response.status === 304;
      if (reader !== null && declared === null && !noBody) {
        // Read what is ready without waiting for the application: a body that
        // ends so goes out with a Content-Length. Bounded: past the limit, one
        // more ready chunk is taken (a single large chunk then still gets a
        // length), then the body is streamed.
        for (let over = false;;) {
          pending = reader.read();
          const result = await Promise.race([pending, nextTurn()]);
          if (result === "later") break;
          pending = null;
          if (result.done) {
            ended = true;
            break;
          }
          const chunk = toBytes(result.value);
          gathered.push(chunk);
          gatheredBytes += chunk.length;
          if (gatheredBytes > GATHER_LIMIT) {
            if (over) break;
            over = true;
          }
        }
      }
      const framing = planResponse({
        method: isHead ? "HEAD" : head.method,
        version: head.version,
        status: response.status,
        declaredLength: declared,
        knownLength: ended ? gatheredBytes : null,
        hasBody: reader !== null,
      });
      const headBytes = encodeResponseHead(response.status, response.headers, {
        statusText: response.statusText,
        framing,
        keepAlive,
        version: head.version,
        date: httpDate(),
        idleSeconds: keepAlive
          ? Math.max(1, Math.floor(this.#config.idleTimeout / 1000))
          : undefined,
      });
      if (framing.kind === "none") {
        this.#headWritten = true;
        await this.#write(headBytes);
        if (reader !== null && !ended) {
          pending?.catch(() => {});
          await reader.cancel().catch(() => {});
        }
        return true;
      }
      return await this.#writeBody(headBytes, framing, reader, gathered, ended, pending);
    } catch (error) {
      pending?.catch(() => {});
      reader?.cancel(error).catch(() => {});
      // The client left: nobody's fault, nothing to report.
      if (this.#closed || isSocketError(error)) return false;
      if (body.error !== null) {
        // The response streamed the request body, and that was malformed or too large.
        this.#config.report(body.error, false);
        if (!this.#headWritten) {
          const { status, message, headers } = body.error;
          await this.#answerAndClose(buildErrorResponse(status, message, headers));
        }
        return false;
      }
      // The application's body stream failed: a 500 while nothing went out yet.
      this.#config.report(toError(error), true);
      if (!this.#headWritten && !body.lost) {
        return await this.#writeResponse(head, internalError(), keepAlive, body);
      }
      return false;
    }
  }

  async #writeBody(
    headBytes: Uint8Array,
    framing: Exclude<ResponseFraming, { kind: "none" }>,
    reader: ReadableStreamDefaultReader<Uint8Array> | null,
    gathered: Uint8Array[],
    ended: boolean,
    pending: Promise<ReadableStreamReadResult<Uint8Array>> | null,
  ): Promise<boolean> {
    const chunked = framing.kind === "chunked";
    let left = framing.kind === "length" ? framing.length : Infinity;
    // The head and the gathered body: small pieces in one write.
    const first: Uint8Array[] = [headBytes];
    for (const chunk of gathered) {
      const piece = chunk.length > left ? chunk.subarray(0, left) : chunk;
      left -= piece.length;
      if (!chunked) first.push(piece);
      else if (piece.length < COPY_LIMIT) first.push(encodeChunk(piece));
      else first.push(chunkHeader(piece.length), piece, CRLF);
    }
    if (ended && chunked) first.push(LAST_CHUNK);
    this.#headWritten = true;
    await this.#writeParts(first);
    if (ended) return framing.kind !== "length" || left === 0 || this.#lengthMismatch(left);
    while (reader !== null) {
      const result = await (pending ?? reader.read());
      pending = null;
      if (result.done) break;
      const chunk = toBytes(result.value);
      if (chunk.length === 0) continue;
      if (chunk.length > left) {
        // The application sent more than its Content-Length: the extra would
        // be read as the next response, so it is cut and the connection closed.
        if (left > 0) await this.#write(chunk.subarray(0, left));
        await reader.cancel().catch(() => {});
        this.#config.report(
          new Error(`Response body is longer than its Content-Length; the connection is closed`),
          true,
        );
        return false;
      }
      if (framing.kind === "length") left -= chunk.length;
      if (!chunked) await this.#write(chunk);
      else if (chunk.length < COPY_LIMIT) await this.#write(encodeChunk(chunk));
      else {
        await this.#write(chunkHeader(chunk.length));
        await this.#write(chunk);
        await this.#write(CRLF);
      }
    }
    if (chunked) await this.#write(LAST_CHUNK);
    if (framing.kind === "length" && left !== 0) return this.#lengthMismatch(left);
    return framing.kind !== "close";
  }

  #lengthMismatch(left: number): boolean {
    // Fewer bytes than promised: only closing tells the client the body was cut.
    this.#config.report(
      new Error(
        `Response body ended ${left} bytes short of its Content-Length; the connection is closed`,
      ),
      true,
    );
    return false;
  }

  /** Writes pieces in order, joining runs of small ones into one write. */
  async #writeParts(parts: Uint8Array[]): Promise<void> {
    let run: Uint8Array[] = [];
    for (const part of parts) {
      if (part.length < COPY_LIMIT) {
        run.push(part);
        continue;
      }
      if (run.length > 0) await this.#write(concat(run));
      run = [];
      await this.#write(part);
    }
    if (run.length > 0) await this.#write(concat(run));
  }

  async #write(bytes: Uint8Array): Promise<void> {
    if (this.#closed) throw new SocketGone();
    let stall: ReturnType<typeof setTimeout> | undefined;
    try {
      const pending = this.#transport.write(bytes);
      if (pending === undefined) return;
      // A client that takes none of a response for as long as a request body
      // may stay silent is cut, as a silent body is: else one that never
      // reads would hold its connection (and an open file) forever.
      await new Promise<void>((resolve, reject) => {
        stall = setTimeout(() => {
          reject(new Error(`The client took no response bytes for ${this.#config.headTimeout} ms`));
          this.#finish();
        }, this.#config.headTimeout);
        pending.then(resolve, reject);
      });
    } catch (error) {
      throw new SocketGone(error);
    } finally {
      if (stall !== undefined) clearTimeout(stall);
    }
  }
}

/** The client left while a response was written: nobody's fault. */
class SocketGone extends Error {
  constructor(cause?: unknown) {
    super("The client closed the connection", { cause });
  }
}

function isSocketError(error: unknown): boolean {
  return error instanceof SocketGone;
}

/** A response body chunk as bytes (a stream may yield any `ArrayBufferView`). */
function toBytes(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return value;
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  throw new TypeError("A response body stream must yield Uint8Array chunks");
}

/** The answer to an application mistake found while answering. */
function internalError(): Response {
  return new Response("Internal server error\n", {
    status: 500,
    headers: { "content-type": "text/plain; charset=utf-8" },
  });
}

/** Joins pieces into one buffer (one piece is returned as it is). */
function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  let total = 0;
  for (const part of parts) total += part.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
