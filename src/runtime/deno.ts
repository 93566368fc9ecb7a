/**
 * The Deno adapter: `Deno.listen`/`Deno.listenTls`/`Deno.connect`/`Deno.startTls`
 * turned into {@linkcode Transport}s.
 *
 * Reads go straight through `conn.read(buf)` rather than `conn.readable`: the
 * stream path costs about twice as much per chunk on Deno, and a pull-based
 * read already gives backpressure for free (no pending read op, no reading).
 *
 * A `wss://` server is the exception: `Deno.listenTls` hands out a connection
 * whose `close()` first finishes the TLS handshake (denoland/deno#14547), so
 * a client that connects and never says hello holds its socket for as long
 * as it likes, whatever the server's deadline. TLS listeners therefore run on
 * `node:net` + `node:tls`, whose sockets close at once.
 *
 * Nothing here touches `Deno` at module load, so the file can be imported on
 * Bun too (the adapter is then simply never used).
 *
 * @module
 */

import type { Server as NetServer, Socket as NetSocket } from "node:net";
import type { SecureContext, TLSSocket } from "node:tls";
import type {
  ChunkConsumer,
  ConnectOptions,
  Listener,
  ListenOptions,
  NetAddress,
  RuntimeAdapter,
  TlsServerOptions,
  Transport,
} from "./transport.ts";

/** First read buffer size: most request heads (and 101 responses) fit. */
const FIRST_READ_BUFFER = 512;
/**
 * Smallest read buffer, and the size a connection's frames start with once
 * its handshake is over: an idle connection holds this while it waits (its
 * pings, pongs and small messages fit); reads that fill it grow it.
 */
const MIN_READ_BUFFER = 128;
/** Largest read buffer: enough to move bulk data in few reads. */
const MAX_READ_BUFFER = 256 * 1024;
/** Consecutive small reads (at most a quarter of the buffer) before shrinking. */
const SHRINK_AFTER = 4;

function toNetAddress(addr: Deno.Addr): NetAddress {
  const { hostname, port } = addr as Deno.NetAddr;
  return { hostname, port };
}

/** Bytes per slab that small read buffers are cut from. */
const SLAB_SIZE = 16 * 1024;
/** Free buffers a pool keeps for reuse; beyond that they are left to the collector. */
const POOL_LIMIT = 1024;

/**
 * Read buffers of one small size, cut from shared slabs: in Deno's V8 every
 * ArrayBuffer costs ~250 ns to make and ~200 bytes beside its data (its
 * object, extension and backing store), which at 10 000 idle connections is
 * more than the 128 bytes each waits with. A buffer is given back only when
 * no read into it is pending and no chunk of it is lent (see
 * `DenoTransport.#release`), so one connection's bytes never reach another.
 * A slab lives while any of its buffers does: what the pools hold is bounded
 * by the most connections open at once.
 */
class ReadBufferPool {
  readonly size: number;
  #free: Uint8Array[] = [];
  #slab: ArrayBuffer | null = null;
  #at = SLAB_SIZE;

  constructor(size: number) {
    this.size = size;
  }

  take(): Uint8Array {
    const free = this.#free.pop();
    if (free !== undefined) return free;
    if (this.#at + this.size > SLAB_SIZE) {
      this.#slab = new ArrayBuffer(SLAB_SIZE);
      this.#at = 0;
    }
    const view = new Uint8Array(this.#slab!, this.#at, this.size);
    this.#at += this.size;
    return view;
  }

  give(view: Uint8Array): void {
    if (this.#free.length < POOL_LIMIT) this.#free.push(view);
  }
}

const firstBuffers = new ReadBufferPool(FIRST_READ_BUFFER);
const minBuffers = new ReadBufferPool(MIN_READ_BUFFER);
/** What a closed transport's read buffer is once its pooled one went back. */
const EMPTY_BUFFER = new Uint8Array(0);

/** The pool a buffer of this size comes from, if any. */
function poolFor(size: number): ReadBufferPool | null {
  return size === MIN_READ_BUFFER ? minBuffers : size === FIRST_READ_BUFFER ? firstBuffers : null;
}

/** A read buffer of `size` bytes: pooled for the small sizes. */
function readBuffer(size: number): Uint8Array {
  return poolFor(size)?.take() ?? new Uint8Array(size);
}

/** Smallest power of two that is at least `n`, within the buffer bounds. */
function fitBufferSize(n: number): number {
  let size = MIN_READ_BUFFER;
  while (size < n && size < MAX_READ_BUFFER) size *= 2;
  return size;
}

/**
 * A copy of an I/O error with the same class and message. Deno's op errors
 * keep the op's buffer reachable (measured: a reset during a 1 MiB write kept
 * 256 KiB per connection alive for as long as the application kept the
 * error), and applications do keep errors (logs, counters), so what leaves
 * the transport is a fresh error that references nothing.
 */
function detached(error: unknown): Error {
  // No captured stack either: V8 keeps the frames' receivers (this very
  // transport, with its read buffer) reachable from a captured stack trace.
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    if (!(error instanceof Error)) return new Error(String(error));
    const ErrorClass = error.constructor as new (message: string) => Error;
    try {
      const copy = new ErrorClass(error.message);
      if (copy instanceof Error) return copy;
    } catch {
      // A constructor with another signature: fall back to a plain Error.
    }
    const copy = new Error(error.message);
    copy.name = error.name;
    return copy;
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** Errors that mean "the socket went away", as opposed to a broken stream. */
function isClosedError(error: unknown): boolean {
  return error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.Interrupted;
}

/**
 * A Deno connection with one reused, adaptively sized read buffer and
 * serialized writes.
 */
class DenoTransport implements Transport {
  #conn: Deno.Conn;
  #localAddr: NetAddress | undefined;
  #remoteAddr: NetAddress | undefined;
  #buf = firstBuffers.take();
  /** A pooled buffer just replaced, whose last chunk may still be lent: given back before the next read. */
  #retired: Uint8Array | null = null;
  /** Pull mode: a `read()` is pending. */
  #pulling = false;
  #smallReads = 0;
  #largestSmallRead = 0;
  #closed = false;
  #buffered = 0;
  /** Writes accepted and not yet settled; 0 means a new write can start at once. */
  #pendingWrites = 0;
  /** The last write while any is pending (cleared after, so no settled promise is kept). */
  #lastWrite: Promise<void> | undefined;
  /** Push mode: where chunks go (see `setConsumer`). */
  #consumer: ChunkConsumer | undefined;
  /** Push mode: a read is pending. */
  #pumping = false;
  /** Push mode: the pending read goes into the consumer's target, not the read buffer. */
  #direct = false;
  /**
   * Inside `consumer.data()`: no read may start and no pooled buffer go back
   * until it returns, as `conn.read(buf)` copies bytes already waiting into
   * `buf` during the call, which would overwrite the chunk still lent.
   */
  #lending = false;
  /**
   * Push mode: the pending read's one callback, made once, for both outcomes
   * (a count or `null`, else the error object): one bound function per
   * connection.
   */
  #onRead: ((result: unknown) => void) | undefined;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Made on first use (Deno keeps the addresses, closed or not): most are never asked for. */
  get localAddr(): NetAddress {
    return this.#localAddr ??= toNetAddress(this.#conn.localAddr);
  }

  get remoteAddr(): NetAddress {
    return this.#remoteAddr ??= toNetAddress(this.#conn.remoteAddr);
  }

  get bufferedAmount(): number {
    return this.#buffered;
  }

  read(): Promise<Uint8Array | null> {
    if (this.#closed) return Promise.resolve(null);
    // The previous chunk is no longer in use (the Transport contract).
    this.#giveRetired();
    const buf = this.#buf;
    this.#pulling = true;
    // Plain promise callbacks rather than an async function: one less
    // suspended frame per read on the hottest path.
    return this.#conn.read(buf).then((n) => {
      this.#pulling = false;
      if (this.#closed) {
        this.#release();
        return null;
      }
      if (n === null) return null;
      this.#resize(buf.length, n);
      // The next read gets a new buffer only when resized, and a pooled one
      // goes back only at the next read, so this view stays valid until then,
      // as the Transport contract promises.
      return buf.subarray(0, n);
    }, (error) => {
      this.#pulling = false;
      // close() cancels a pending read (Interrupted) and later reads see a
      // dead resource (BadResource); both just mean "end of stream" here.
      if (this.#closed) {
        this.#release();
        return null;
      }
      if (isClosedError(error)) return null;
      throw detached(error);
    });
  }

  /** Chunks pushed to the consumer are this transport's read buffer: valid during `data()` only. */
  get lendsChunks(): boolean {
    return true;
  }

  /** Every ArrayBuffer costs ~250 ns in Deno's V8 (a view ~10 ns): small messages share one. */
  get slabSmallMessages(): boolean {
    return true;
  }

  /**
   * Push mode: one read at a time straight into `consumer.data()` (or into
   * `consumer.target()`), with no read loop suspended in between: an idle
   * connection holds one pending read op and its two callbacks, and a busy
   * one saves a promise hop per chunk.
   */
  setConsumer(consumer: ChunkConsumer): void {
    if (this.#onRead !== undefined && !this.#pumping && this.#buf.length > MIN_READ_BUFFER) {
      // A consumer after the first (frames after a request head): it starts
      // small, not with what the head grew the buffer to.
      this.#replaceBuffer(MIN_READ_BUFFER);
      this.#smallReads = 0;
      this.#largestSmallRead = 0;
    }
    this.#consumer = consumer;
    // Bound, not a closure: no context object of its own to keep.
    this.#onRead ??= this.#readSettled.bind(this);
    this.resumeConsumer();
  }

  resumeConsumer(): void {
    if (this.#consumer === undefined || this.#closed || this.#pumping) return;
    // A hand-over from within data(): #pushed reads on once it returns.
    if (this.#lending) return;
    // The last chunk was lent during data() only: it is done with.
    this.#giveRetired();
    this.#pumping = true;
    const target = this.#consumer.target?.() ?? null;
    this.#direct = target !== null;
    this.#conn.read(target ?? this.#buf).then(this.#onRead, this.#onRead);
  }

  dropConsumer(): void {
    // No read is pending (see the contract): read() takes over.
    this.#consumer = undefined;
  }

  #readSettled(result: unknown): void {
    if (typeof result === "number" || result === null) this.#pushed(result);
    else this.#pushFailed(result);
  }

  #pushed(n: number | null): void {
    this.#pumping = false;
    // Closed by its owner: the consumer expects nothing more.
    if (this.#closed) return this.#release();
    const consumer = this.#consumer!;
    let more: boolean;
    try {
      if (n === null) return consumer.end(null);
      if (this.#direct) {
        more = consumer.dataInPlace!(n);
      } else {
        const buf = this.#buf;
        this.#resize(buf.length, n);
        this.#lending = true;
        try {
          more = consumer.data(buf.subarray(0, n));
        } finally {
          this.#lending = false;
        }
        // Closed from within data(): its buffers go back now that it returned.
        if (this.#closed) return this.#release();
        // Handed over to another consumer from within data(): it reads on.
        if (this.#consumer !== consumer) more = true;
      }
    } catch (error) {
      // A consumer bug must not become an unhandled rejection (a crash on
      // Deno): it fails this connection, not the process.
      try {
        consumer.end(error instanceof Error ? error : new Error(String(error)));
      } catch (again) {
        this.close();
        console.error("Sluice: a connection's reader failed:", again);
      }
      if (this.#closed && !this.#pumping) this.#release();
      return;
    }
    if (more) this.resumeConsumer();
  }

  #pushFailed(error: unknown): void {
    this.#pumping = false;
    if (this.#closed) return this.#release();
    this.#consumer!.end(isClosedError(error) ? null : detached(error));
  }

  /** Grows on full reads; shrinks once reads have stayed small for a while. */
  #resize(size: number, n: number): void {
    if (n === size) {
      this.#smallReads = 0;
      if (size < MAX_READ_BUFFER) this.#replaceBuffer(size * 2);
    } else if (size > MIN_READ_BUFFER && n <= size >>> 2) {
      if (n > this.#largestSmallRead) this.#largestSmallRead = n;
      if (++this.#smallReads >= SHRINK_AFTER) {
        // Twice the largest recent read, so a steady small stream does not
        // immediately fill the new buffer and grow again.
        this.#replaceBuffer(fitBufferSize(this.#largestSmallRead * 2));
        this.#smallReads = 0;
        this.#largestSmallRead = 0;
      }
    } else {
      this.#smallReads = 0;
      this.#largestSmallRead = 0;
    }
  }

  write(data: Uint8Array): Promise<void> | undefined {
    if (this.#closed) throw new Error("Cannot write: the connection is closed.");
    if (data.byteLength === 0) return undefined;
    this.#buffered += data.byteLength;
    // conn.write may write partially, so two overlapping writeAll loops could
    // interleave their bytes: a write that arrives while another is pending
    // waits for it.
    const write = this.#pendingWrites++ === 0
      ? this.#writeAll(data)
      : this.#lastWrite!.then(() => this.#writeAll(data), (error) => {
        this.#writeSettled();
        this.#buffered -= data.byteLength;
        throw error;
      });
    this.#lastWrite = write;
    return write;
  }

  /** Writes all of `data`: one `conn.write` in the common case, a loop after a partial write. */
  #writeAll(data: Uint8Array): Promise<void> {
    let first: Promise<number>;
    try {
      first = this.#conn.write(data);
    } catch (error) {
      first = Promise.reject(error);
    }
    return first.then((n) => {
      this.#buffered -= n;
      if (n < data.byteLength) return this.#writeRest(data, n);
      this.#writeSettled();
    }, (error) => {
      this.#writeSettled();
      throw this.#writeError(error, data.byteLength);
    });
  }

  async #writeRest(data: Uint8Array, offset: number): Promise<void> {
    try {
      while (offset < data.byteLength) {
        const n = await this.#conn.write(data.subarray(offset));
        offset += n;
        this.#buffered -= n;
      }
    } catch (error) {
      throw this.#writeError(error, data.byteLength - offset);
    } finally {
      this.#writeSettled();
    }
  }

  /** One write settled: the last one lets go of its promise. */
  #writeSettled(): void {
    if (--this.#pendingWrites === 0) this.#lastWrite = undefined;
  }

  #writeError(error: unknown, unsent: number): unknown {
    this.#buffered -= unsent;
    if (this.#closed || isClosedError(error)) {
      return new Error("Cannot write: the connection was closed before all data was sent.");
    }
    return detached(error);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the runtime (e.g. after a fatal error): nothing to do.
    }
    // Pooled buffers go back once no read into them is pending (a pending
    // one settles, cancelled, and lets go of them then) and no chunk of them
    // is lent: in push mode a chunk is lent during data() only, and a close
    // from within data() gives them back once it returns (#pushed). A chunk
    // from read() may be in use until a next read() that will not come: those
    // buffers are left to the garbage collector instead.
    if (!this.#pumping && !this.#pulling && !this.#lending && this.#consumer !== undefined) {
      this.#release();
    }
  }

  /**
   * Switches to a buffer of `size`; a pooled one being left waits in
   * `#retired` (its chunk may be lent). One replaced again while data() runs
   * is left to the garbage collector.
   */
  #replaceBuffer(size: number): void {
    this.#giveRetired();
    const old = this.#buf;
    if (poolFor(old.length) !== null) this.#retired = old;
    this.#buf = readBuffer(size);
  }

  #giveRetired(): void {
    const retired = this.#retired;
    // While data() runs, the retired buffer may hold the chunk lent to it.
    if (retired === null || this.#lending) return;
    this.#retired = null;
    poolFor(retired.length)!.give(retired);
  }

  /** Closed, with no read pending: pooled buffers go back (no chunk is lent any more). */
  #release(): void {
    this.#giveRetired();
    const buf = this.#buf;
    this.#buf = EMPTY_BUFFER;
    poolFor(buf.length)?.give(buf);
  }

  closeWrite(): void {
    if (this.#closed || this.#pendingWrites > 0) return;
    this.#conn.closeWrite().catch(() => {
      // The peer is gone already: the read side sees it.
    });
  }
}

/** A Deno listener whose `accept()` resolves `null` once closed. */
class DenoListener implements Listener {
  readonly addr: NetAddress;
  #listener: Deno.Listener;
  #tcp: boolean;
  #closed = false;

  constructor(listener: Deno.Listener, tcp: boolean) {
    this.#listener = listener;
    this.#tcp = tcp;
    this.addr = toNetAddress(listener.addr);
  }

  async accept(): Promise<Transport | null> {
    // Bounded: transient per-connection failures are rare and each retry
    // consumes one failed handshake from the backlog.
    for (let attempt = 0; attempt < 1000; attempt++) {
      if (this.#closed) return null;
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closed || isClosedError(error)) return null;
        // A client that reset before we accepted it is its problem, not the server's.
        if (
          error instanceof Deno.errors.ConnectionAborted ||
          error instanceof Deno.errors.ConnectionReset ||
          error instanceof Deno.errors.NotConnected
        ) continue;
        throw error;
      }
      if (this.#closed) {
        conn.close();
        return null;
      }
      if (this.#tcp) (conn as Deno.TcpConn).setNoDelay(true);
      return new DenoTransport(conn);
    }
    throw new Error("Cannot accept: too many connections failed before they were accepted.");
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
  }
}

/** Queued, unread bytes above which a node:tls socket is paused. */
const READ_HIGH_WATER_MARK = 64 * 1024;

/**
 * A server-side node:tls socket, handed out at TCP accept (before its TLS
 * handshake, see {@linkcode Transport.tlsHandshaking}), with a bounded read
 * queue and writes that settle once flushed.
 */
class NodeTlsTransport implements Transport {
  readonly localAddr: NetAddress;
  readonly remoteAddr: NetAddress;
  #socket: TLSSocket;
  #chunks: Uint8Array[] = [];
  #queued = 0;
  #paused = false;
  #eof = false;
  #error: Error | undefined;
  #closed = false;
  #tlsHandshaking = true;
  #waiter: PromiseWithResolvers<Uint8Array | null> | undefined;

  constructor(socket: TLSSocket, raw: NetSocket) {
    this.#socket = socket;
    this.localAddr = { hostname: raw.localAddress ?? "", port: raw.localPort ?? 0 };
    this.remoteAddr = { hostname: raw.remoteAddress ?? "", port: raw.remotePort ?? 0 };
    socket.on("secure", () => {
      this.#tlsHandshaking = false;
    });
    socket.on("data", (chunk: Uint8Array) => this.#push(chunk));
    socket.on("end", () => this.#end(undefined));
    socket.on("error", (error: Error) => this.#end(error));
    socket.on("close", () => this.#end(undefined));
  }

  get tlsHandshaking(): boolean {
    return this.#tlsHandshaking;
  }

  get bufferedAmount(): number {
    return this.#closed ? 0 : this.#socket.writableLength;
  }

  read(): Promise<Uint8Array | null> {
    const chunk = this.#chunks.shift();
    if (chunk !== undefined) {
      this.#queued -= chunk.byteLength;
      if (this.#paused && this.#queued < READ_HIGH_WATER_MARK) {
        this.#paused = false;
        this.#socket.resume();
      }
      return Promise.resolve(chunk);
    }
    if (this.#closed) return Promise.resolve(null);
    if (this.#error !== undefined) return Promise.reject(this.#error);
    if (this.#eof) return Promise.resolve(null);
    this.#waiter = Promise.withResolvers();
    return this.#waiter.promise;
  }

  #push(chunk: Uint8Array): void {
    if (this.#closed) return;
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      this.#waiter = undefined;
      waiter.resolve(chunk);
      return;
    }
    this.#chunks.push(chunk);
    this.#queued += chunk.byteLength;
    if (!this.#paused && this.#queued > READ_HIGH_WATER_MARK) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  #end(error: Error | undefined): void {
    if (error !== undefined) this.#error ??= error;
    this.#eof = true;
    const waiter = this.#waiter;
    if (waiter === undefined) return;
    this.#waiter = undefined;
    if (this.#error !== undefined && !this.#closed) waiter.reject(this.#error);
    else waiter.resolve(null);
  }

  write(data: Uint8Array): Promise<void> | undefined {
    if (this.#closed || this.#socket.destroyed) {
      throw new Error("Cannot write: the connection is closed.");
    }
    if (data.byteLength === 0) return undefined;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#socket.write(data, (error?: Error | null) => {
      if (error) {
        reject(
          new Error("Cannot write: the connection was closed before all data was sent.", {
            cause: error,
          }),
        );
      } else resolve();
    });
    return promise;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#chunks = [];
    this.#queued = 0;
    this.#end(undefined);
    const socket = this.#socket;
    if (this.#tlsHandshaking || socket.writableLength === 0) {
      socket.destroy();
      return;
    }
    // Let what is already written reach the peer, briefly, as close(2) would.
    socket.end();
    const timer = setTimeout(() => socket.destroy(), 2000);
    socket.once("close", () => clearTimeout(timer));
  }
}

/** A TLS listener on node:net + node:tls that yields connections at TCP accept. */
class NodeTlsListener implements Listener {
  readonly addr: NetAddress;
  #server: NetServer;
  #ready: Transport[] = [];
  #waiters: PromiseWithResolvers<Transport | null>[] = [];
  #failure: Error | undefined;
  #closed = false;

  constructor(server: NetServer, wrap: (raw: NetSocket) => TLSSocket) {
    this.#server = server;
    const address = server.address();
    this.addr = typeof address === "object" && address !== null
      ? { hostname: address.address, port: address.port }
      : { hostname: "", port: 0 };
    server.on("connection", (raw: NetSocket) => {
      if (this.#closed) return void raw.destroy();
      raw.setNoDelay(true);
      const transport = new NodeTlsTransport(wrap(raw), raw);
      const waiter = this.#waiters.shift();
      if (waiter !== undefined) waiter.resolve(transport);
      else this.#ready.push(transport);
    });
    // Accept failures (EMFILE...) go to the next accept() call.
    server.on("error", (error: Error) => {
      const waiter = this.#waiters.shift();
      if (waiter !== undefined) waiter.reject(error);
      else this.#failure = error;
    });
  }

  accept(): Promise<Transport | null> {
    const transport = this.#ready.shift();
    if (transport !== undefined) return Promise.resolve(transport);
    if (this.#closed) return Promise.resolve(null);
    const failure = this.#failure;
    if (failure !== undefined) {
      this.#failure = undefined;
      return Promise.reject(failure);
    }
    const waiter = Promise.withResolvers<Transport | null>();
    this.#waiters.push(waiter);
    return waiter.promise;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.close();
    for (const transport of this.#ready) transport.close();
    this.#ready = [];
    for (const waiter of this.#waiters) waiter.resolve(null);
    this.#waiters = [];
  }
}

async function listenTls(options: ListenOptions & { tls: TlsServerOptions }): Promise<Listener> {
  const { createServer } = await import("node:net");
  const { createSecureContext, TLSSocket } = await import("node:tls");
  const context: SecureContext = createSecureContext({
    cert: options.tls.cert,
    key: options.tls.key,
  });
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.hostname, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return new NodeTlsListener(
    server,
    (raw) => new TLSSocket(raw, { isServer: true, secureContext: context }),
  );
}

function listen(options: ListenOptions): Promise<Listener> {
  const { hostname, port, tls, reusePort = false } = options;
  if (tls !== undefined) {
    if (reusePort) {
      return Promise.reject(
        new Error(
          "reusePort is not supported with tls on Deno: terminate TLS in front of the " +
            "workers, or run them on Bun",
        ),
      );
    }
    return listenTls({ ...options, tls });
  }
  // Deno exits the process (it does not throw) when an unstable option is
  // used without its flag; `listenDatagram` exists only with --unstable-net.
  if (reusePort && typeof (Deno as { listenDatagram?: unknown }).listenDatagram !== "function") {
    return Promise.reject(
      new Error(
        "reusePort needs Deno's unstable net API: run with `deno run --unstable-net` " +
          '(or add "unstable": ["net"] to deno.json)',
      ),
    );
  }
  const listener = reusePort
    ? Deno.listen({ hostname, port, transport: "tcp", reusePort } as Deno.TcpListenOptions)
    : Deno.listen({ hostname, port, transport: "tcp" });
  return Promise.resolve(new DenoListener(listener, true));
}

async function connect(options: ConnectOptions): Promise<Transport> {
  const { hostname, port, tls } = options;
  const tcp = await Deno.connect({ hostname, port, transport: "tcp" });
  tcp.setNoDelay(true);
  if (tls === undefined) return new DenoTransport(tcp);
  // connect + startTls (instead of connectTls) sets TCP_NODELAY on the TLS
  // connection and lets the certificate name differ from the dialed host.
  let conn: Deno.TlsConn | undefined;
  try {
    conn = await Deno.startTls(tcp, {
      hostname: tls.serverName ?? hostname,
      caCerts: tls.caCerts,
    });
    // Fail here, not on the first read, when the certificate is not trusted.
    await conn.handshake();
  } catch (error) {
    try {
      (conn ?? tcp).close();
    } catch {
      // Already closed by the failed handshake.
    }
    throw error;
  }
  return new DenoTransport(conn);
}

/**
 * The Deno runtime adapter.
 *
 * @example Echo one connection
 * ```ts ignore
 * import { denoAdapter } from "./deno.ts";
 *
 * const listener = await denoAdapter.listen({ hostname: "127.0.0.1", port: 0 });
 * const conn = await listener.accept();
 * for (let chunk; conn && (chunk = await conn.read()) !== null;) await conn.write(chunk);
 * ```
 */
export const denoAdapter: RuntimeAdapter = { name: "deno", listen, connect };
