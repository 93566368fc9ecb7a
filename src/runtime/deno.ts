/**
 * The Deno adapter: `Deno.listen`/`Deno.listenTls`/`Deno.connect`/`Deno.startTls`
 * turned into {@linkcode Transport}s.
 *
 * Reads go straight through `conn.read(buf)` rather than `conn.readable`: the
 * stream path costs about twice as much per chunk on Deno, and a pull-based
 * read already gives backpressure for free (no pending read op, no reading).
 *
 * Nothing here touches `Deno` at module load, so the file can be imported on
 * Bun too (the adapter is then simply never used).
 *
 * @module
 */

import type {
  ConnectOptions,
  Listener,
  ListenOptions,
  NetAddress,
  RuntimeAdapter,
  Transport,
} from "./transport.ts";

/** First read buffer size: small, so that 10 000 idle connections stay cheap. */
const MIN_READ_BUFFER = 512;
/** Largest read buffer: enough to move bulk data in few reads. */
const MAX_READ_BUFFER = 256 * 1024;
/** Consecutive small reads (at most a quarter of the buffer) before shrinking. */
const SHRINK_AFTER = 4;

function toNetAddress(addr: Deno.Addr): NetAddress {
  const { hostname, port } = addr as Deno.NetAddr;
  return { hostname, port };
}

/** Smallest power of two that is at least `n`, within the buffer bounds. */
function fitBufferSize(n: number): number {
  let size = MIN_READ_BUFFER;
  while (size < n && size < MAX_READ_BUFFER) size *= 2;
  return size;
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
  readonly localAddr: NetAddress;
  readonly remoteAddr: NetAddress;
  #conn: Deno.Conn;
  #buf = new Uint8Array(MIN_READ_BUFFER);
  #smallReads = 0;
  #largestSmallRead = 0;
  #closed = false;
  #buffered = 0;
  /** Writes accepted and not yet settled; 0 means a new write can start at once. */
  #pendingWrites = 0;
  #lastWrite: Promise<void> = Promise.resolve();

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.localAddr = toNetAddress(conn.localAddr);
    this.remoteAddr = toNetAddress(conn.remoteAddr);
  }

  get bufferedAmount(): number {
    return this.#buffered;
  }

  read(): Promise<Uint8Array | null> {
    if (this.#closed) return Promise.resolve(null);
    const buf = this.#buf;
    // Plain promise callbacks rather than an async function: one less
    // suspended frame per read on the hottest path.
    return this.#conn.read(buf).then((n) => {
      if (n === null) return null;
      this.#resize(buf.length, n);
      // The next read gets a new buffer only when resized, so this view stays
      // valid until then, as the Transport contract promises.
      return buf.subarray(0, n);
    }, (error) => {
      // close() cancels a pending read (Interrupted) and later reads see a
      // dead resource (BadResource); both just mean "end of stream" here.
      if (this.#closed || isClosedError(error)) return null;
      throw error;
    });
  }

  /** Grows on full reads; shrinks once reads have stayed small for a while. */
  #resize(size: number, n: number): void {
    if (n === size) {
      this.#smallReads = 0;
      if (size < MAX_READ_BUFFER) this.#buf = new Uint8Array(size * 2);
    } else if (size > MIN_READ_BUFFER && n <= size >>> 2) {
      if (n > this.#largestSmallRead) this.#largestSmallRead = n;
      if (++this.#smallReads >= SHRINK_AFTER) {
        // Twice the largest recent read, so a steady small stream does not
        // immediately fill the new buffer and grow again.
        this.#buf = new Uint8Array(fitBufferSize(this.#largestSmallRead * 2));
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
      : this.#lastWrite.then(() => this.#writeAll(data), (error) => {
        this.#pendingWrites--;
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
      this.#pendingWrites--;
    }, (error) => {
      this.#pendingWrites--;
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
      this.#pendingWrites--;
    }
  }

  #writeError(error: unknown, unsent: number): unknown {
    this.#buffered -= unsent;
    if (this.#closed || isClosedError(error)) {
      return new Error("Cannot write: the connection was closed before all data was sent.", {
        cause: error,
      });
    }
    return error;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the runtime (e.g. after a fatal error): nothing to do.
    }
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
          error instanceof Deno.errors.ConnectionReset
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

function listen(options: ListenOptions): Promise<Listener> {
  const { hostname, port, tls } = options;
  const listener = tls === undefined
    ? Deno.listen({ hostname, port, transport: "tcp" })
    : Deno.listenTls({ hostname, port, cert: tls.cert, key: tls.key });
  // Deno's TlsConn has no setNoDelay, so only plain TCP gets TCP_NODELAY on
  // the server side.
  return Promise.resolve(new DenoListener(listener, tls === undefined));
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
