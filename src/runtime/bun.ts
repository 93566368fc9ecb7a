/**
 * The Bun adapter: `Bun.listen`/`Bun.connect` callback sockets turned into
 * pull-based {@linkcode Transport}s.
 *
 * Bun pushes data at us; a transport queues it and pauses the socket once the
 * queue holds more than {@linkcode READ_HIGH_WATER_MARK} bytes, so a consumer
 * that stops reading makes the kernel's TCP window push back on the peer.
 * Writes that the kernel does not take at once wait, in order, for `drain`.
 *
 * `@types/bun` is deliberately not a dependency (the file must type-check
 * under `deno check`), so the few Bun types used are declared below, and
 * `Bun` is only reached inside functions: both adapters get imported on both
 * runtimes.
 *
 * @module
 */

import type {
  ChunkConsumer,
  ConnectOptions,
  Listener,
  ListenOptions,
  NetAddress,
  RuntimeAdapter,
  Transport,
} from "./transport.ts";

/** Queued, unread bytes above which the socket is paused. */
const READ_HIGH_WATER_MARK = 64 * 1024;

/** The part of Bun's `Socket` this adapter uses. */
interface BunSocket {
  data: BunTransport | undefined;
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** Bytes taken by the kernel (may be fewer than asked), or -1 when closed. */
  write(data: Uint8Array, byteOffset?: number, byteLength?: number): number;
  /** Flushes and closes; Bun runs the `close` handler synchronously. */
  end(): void;
  /** Half-close: FIN after what was written; reading goes on. */
  shutdown(): void;
  pause(): void;
  resume(): void;
  setNoDelay(noDelay?: boolean): boolean;
}

interface BunSocketHandler {
  /** How `data` chunks arrive: plain `Uint8Array`s rather than Buffers. */
  binaryType: "uint8array";
  open(socket: BunSocket): void;
  data(socket: BunSocket, data: Uint8Array): void;
  drain(socket: BunSocket): void;
  end(socket: BunSocket): void;
  close(socket: BunSocket, error?: Error): void;
  error(socket: BunSocket, error: Error): void;
  handshake(socket: BunSocket, success: boolean, authorizationError: Error | null): void;
  connectError(socket: BunSocket, error: Error): void;
}

interface BunListener {
  readonly hostname: string;
  readonly port: number;
  stop(closeActiveConnections?: boolean): void;
}

interface BunApi {
  listen(options: {
    hostname: string;
    port: number;
    tls?: { cert: string; key: string };
    reusePort?: boolean;
    allowHalfOpen?: boolean;
    socket: BunSocketHandler;
  }): BunListener;
  /** A Uint8Array with its own, uninitialized ArrayBuffer. */
  allocUnsafe(size: number): Uint8Array;
  connect(options: {
    hostname: string;
    port: number;
    tls?: { ca?: string[]; serverName?: string; rejectUnauthorized: boolean };
    allowHalfOpen?: boolean;
    socket: BunSocketHandler;
  }): Promise<BunSocket>;
}

function bun(): BunApi {
  return (globalThis as unknown as { Bun: BunApi }).Bun;
}

/** One write the kernel has not fully taken yet. */
interface PendingWrite {
  data: Uint8Array;
  offset: number;
  resolve: () => void;
  reject: (error: Error) => void;
}

/** The empty queues every transport starts with (never pushed to: an idle connection has no arrays of its own). */
const NO_CHUNKS: Uint8Array[] = [];
const NO_WRITES: PendingWrite[] = [];

/**
 * Called once a transport is usable (after `open`, or after the TLS
 * handshake), or with an error when a TLS handshake failed.
 */
type ReadyCallback = (transport: BunTransport, error?: Error) => void;

/** Which side a set of socket handlers serves. */
interface HandlerOptions {
  /**
   * The sockets speak TLS: a client's are handed out only after the
   * handshake, a server's at once (so that the server's handshake deadline
   * covers TLS; data only ever arrives after it).
   */
  tls: boolean;
  /** Client sockets verify the server; server sockets ask for no client certificate. */
  client: boolean;
}

/** Uninitialized memory: the caller overwrites every byte (see `Transport.allocate`). */
function allocUnsafe(size: number): Uint8Array {
  return bun().allocUnsafe(size);
}

function closedError(): Error {
  return new Error("Cannot write: the connection is closed.");
}

/** A Bun socket behind a bounded read queue and an ordered write queue. */
class BunTransport implements Transport {
  /**
   * Socket handlers shared by every socket of one listener or connect call.
   * They live in the class so they can reach the transport's private state.
   */
  static handlers(onReady: ReadyCallback, options: HandlerOptions): BunSocketHandler {
    const { tls, client } = options;
    return {
      // Plain Uint8Array chunks: a Buffer's slice() is a view, and wrapping
      // one through its `.buffer` getter cost ~10% of a small-message echo.
      binaryType: "uint8array",
      open(socket) {
        // A client's TLS socket is only handed out after its handshake: before
        // it, Bun silently takes nothing (write returns 0).
        const waitForTls = tls && client;
        const transport = new BunTransport(socket, waitForTls ? onReady : undefined);
        transport.#tlsHandshaking = tls;
        socket.data = transport;
        socket.setNoDelay(true);
        if (!waitForTls) onReady(transport);
      },
      handshake(socket, success, authorizationError) {
        const transport = socket.data;
        if (transport === undefined) return;
        transport.#tlsHandshaking = false;
        // On a server, authorizationError only says that the client sent no
        // certificate, which we never ask for.
        const error = success ? (client ? authorizationError : null) : authorizationError;
        if (success && error === null) {
          transport.#ready(undefined);
          return;
        }
        transport.#ready(
          new Error(`TLS handshake failed: ${error?.message ?? "unknown error"}`, { cause: error }),
        );
        transport.close();
      },
      // data and drain only ever follow open, which sets socket.data.
      data(socket, data) {
        socket.data!.#push(data);
      },
      drain(socket) {
        socket.data!.#flush();
      },
      end(socket) {
        const transport = socket.data;
        if (transport !== undefined) transport.#onEnd();
      },
      close(socket, error) {
        const transport = socket.data;
        if (transport !== undefined) transport.#onClose(error);
      },
      error(socket, error) {
        const transport = socket.data;
        if (transport !== undefined) transport.#onError(error);
      },
      connectError() {
        // Bun.connect() rejects with the same error.
      },
    };
  }

  readonly remoteAddr: NetAddress;
  readonly allocate = allocUnsafe;
  /**
   * One write per frame up to 64 KiB (a copy of the payload next to its
   * header): Bun's allocator takes a fresh 64 KiB buffer per message well,
   * and a second `write()` for the payload costs more than the copy.
   */
  get frameCopyLimit(): number {
    return 64 * 1024;
  }
  #localAddr: NetAddress | undefined;
  #socket: BunSocket;
  /** Chunks not yet taken (`NO_CHUNKS`, shared and always empty, until the first is queued). */
  #chunks: Uint8Array[] = NO_CHUNKS;
  #queued = 0;
  #paused = false;
  /** The peer ended its side, or the socket closed. */
  #eof = false;
  #error: Error | undefined;
  #closed = false;
  #waiter: PromiseWithResolvers<Uint8Array | null> | undefined;
  /** Writes waiting for `drain` (`NO_WRITES`, shared and always empty, until one waits). */
  #writes: PendingWrite[] = NO_WRITES;
  #buffered = 0;
  /** Set while a client's TLS handshake is in progress. */
  #onReady: ReadyCallback | undefined;
  #tlsHandshaking = false;
  /** Push mode: where chunks go, and whether it currently takes them. */
  #consumer: ChunkConsumer | undefined;
  #consumerReady = false;

  constructor(socket: BunSocket, onReady: ReadyCallback | undefined) {
    this.#socket = socket;
    this.#onReady = onReady;
    this.remoteAddr = { hostname: socket.remoteAddress, port: socket.remotePort };
  }

  /** Read on first use: Bun builds these strings per call, and few ever ask. */
  get localAddr(): NetAddress {
    return this.#localAddr ??= {
      hostname: this.#socket.localAddress ?? "",
      port: this.#socket.localPort ?? 0,
    };
  }

  get bufferedAmount(): number {
    return this.#buffered;
  }

  get tlsHandshaking(): boolean {
    return this.#tlsHandshaking;
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

  /** Reports the end of the TLS handshake, once. */
  #ready(error: Error | undefined): void {
    const onReady = this.#onReady;
    if (onReady === undefined) return;
    this.#onReady = undefined;
    onReady(this, error);
  }

  #push(chunk: Uint8Array): void {
    if (this.#closed) return;
    const consumer = this.#consumer;
    if (consumer !== undefined) {
      if (this.#consumerReady && this.#chunks.length === 0) {
        this.#deliver(consumer, chunk);
        return;
      }
      this.#enqueue(chunk);
      return;
    }
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      // The queue is empty whenever a read waits: hand the chunk over directly.
      this.#waiter = undefined;
      waiter.resolve(chunk);
      return;
    }
    // Bun hands out a fresh buffer per callback, so queueing it is safe.
    this.#enqueue(chunk);
    if (!this.#paused && this.#queued > READ_HIGH_WATER_MARK) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  /** Queues a chunk nobody takes yet. */
  #enqueue(chunk: Uint8Array): void {
    if (this.#chunks === NO_CHUNKS) this.#chunks = [];
    this.#chunks.push(chunk);
    this.#queued += chunk.byteLength;
  }

  setConsumer(consumer: ChunkConsumer): void {
    this.#consumer = consumer;
    this.resumeConsumer();
  }

  resumeConsumer(): void {
    if (this.#consumer === undefined || this.#closed) return;
    this.#consumerReady = true;
    while (this.#consumerReady && this.#chunks.length > 0) {
      const chunk = this.#chunks.shift()!;
      this.#queued -= chunk.byteLength;
      // The consumer may have handed over to another (or dropped push mode) in data().
      const consumer = this.#consumer;
      if (consumer === undefined) {
        this.#chunks.unshift(chunk);
        this.#queued += chunk.byteLength;
        return;
      }
      this.#deliver(consumer, chunk);
      if (this.#closed) return;
    }
    if (!this.#consumerReady) return;
    if (this.#eof || this.#error !== undefined) {
      this.#endConsumer();
    } else if (this.#paused) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  dropConsumer(): void {
    this.#consumer = undefined;
    this.#consumerReady = false;
    if (this.#paused && this.#queued < READ_HIGH_WATER_MARK) {
      this.#paused = false;
      this.#socket.resume();
    }
  }

  #deliver(consumer: ChunkConsumer, chunk: Uint8Array): void {
    // Handed over to another consumer, or back to read(), during data(): its answer counts no more.
    if (consumer.data(chunk) || this.#closed || this.#consumer !== consumer) return;
    this.#consumerReady = false;
    if (!this.#paused) {
      this.#paused = true;
      this.#socket.pause();
    }
  }

  /** Reports end of stream or the error to a ready consumer, once. */
  #endConsumer(): void {
    const consumer = this.#consumer;
    if (consumer === undefined || !this.#consumerReady || this.#chunks.length > 0) return;
    this.#consumer = undefined;
    consumer.end(this.#closed ? null : this.#error ?? null);
  }

  #settleWaiter(): void {
    this.#endConsumer();
    const waiter = this.#waiter;
    if (waiter === undefined) return;
    this.#waiter = undefined;
    if (this.#error !== undefined && !this.#closed) waiter.reject(this.#error);
    else waiter.resolve(null);
  }

  #onEnd(): void {
    this.#eof = true;
    this.#settleWaiter();
  }

  #onError(error: Error): void {
    this.#error ??= error;
    this.#failWrites(error);
    this.#settleWaiter();
  }

  #onClose(error?: Error): void {
    if (this.#onReady !== undefined) {
      this.#ready(new Error("Connection closed during the TLS handshake.", { cause: error }));
    }
    if (error !== undefined) this.#error ??= error;
    this.#eof = true;
    this.#failWrites(error ?? closedError());
    this.#settleWaiter();
  }

  write(data: Uint8Array): Promise<void> | undefined {
    if (this.#closed) throw closedError();
    let offset = 0;
    // Queued writes go first, so a new one must wait behind them.
    if (this.#writes.length === 0) {
      offset = this.#socket.write(data);
      if (offset === data.byteLength) return undefined;
      if (offset < 0) throw closedError();
    }
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    if (this.#writes === NO_WRITES) this.#writes = [];
    this.#writes.push({ data, offset, resolve, reject });
    this.#buffered += data.byteLength - offset;
    return promise;
  }

  /** Writes queued data in order until the kernel stops taking it. */
  #flush(): void {
    const writes = this.#writes;
    while (writes.length > 0) {
      const pending = writes[0];
      const rest = pending.data.byteLength - pending.offset;
      const n = this.#socket.write(pending.data, pending.offset, rest);
      if (n < 0) {
        this.#failWrites(closedError());
        return;
      }
      this.#buffered -= n;
      if (n < rest) {
        pending.offset += n;
        return; // Wait for the next drain.
      }
      writes.shift();
      pending.resolve();
    }
  }

  #failWrites(error: Error): void {
    const writes = this.#writes;
    if (writes.length === 0) return;
    this.#writes = NO_WRITES;
    this.#buffered = 0;
    for (const pending of writes) pending.reject(error);
  }

  closeWrite(): void {
    if (this.#closed || this.#writes.length > 0) return;
    try {
      this.#socket.shutdown();
    } catch {
      // Already closed: the read side sees it.
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#consumer = undefined;
    this.#chunks = NO_CHUNKS;
    this.#queued = 0;
    this.#failWrites(closedError());
    this.#settleWaiter();
    try {
      // end() hands whatever the kernel already holds to the peer, then
      // closes: the same as close(2) on Deno.
      this.#socket.end();
    } catch {
      // Already closed.
    }
  }
}

/** A Bun listener with an accept queue fed by the socket handlers. */
class BunListenerImpl implements Listener {
  readonly addr: NetAddress;
  #listener: BunListener | undefined;
  #ready: BunTransport[] = [];
  #waiters: ((transport: BunTransport | null) => void)[] = [];
  #closed = false;

  constructor(options: ListenOptions) {
    const { hostname, port, tls, reusePort } = options;
    // Server sockets are handed out at TCP accept, TLS or not; a failed TLS
    // handshake closes the transport, whose reads then end.
    const handlers = BunTransport.handlers((transport, error) => {
      if (error !== undefined) return;
      if (this.#closed) {
        transport.close();
        return;
      }
      const waiter = this.#waiters.shift();
      if (waiter !== undefined) waiter(transport);
      else this.#ready.push(transport);
    }, { tls: tls !== undefined, client: false });
    this.#listener = bun().listen({
      hostname,
      port,
      tls: tls === undefined ? undefined : { cert: tls.cert, key: tls.key },
      reusePort: reusePort === true,
      // The peer's FIN ends our reads only, as on Deno: we may still answer.
      allowHalfOpen: true,
      socket: handlers,
    });
    this.addr = { hostname: this.#listener.hostname, port: this.#listener.port };
  }

  accept(): Promise<Transport | null> {
    const transport = this.#ready.shift();
    if (transport !== undefined) return Promise.resolve(transport);
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    // Stop listening but keep accepted connections open.
    this.#listener?.stop(false);
    this.#listener = undefined;
    for (const transport of this.#ready) transport.close();
    this.#ready = [];
    for (const waiter of this.#waiters) waiter(null);
    this.#waiters = [];
  }
}

function listen(options: ListenOptions): Promise<Listener> {
  return Promise.resolve(new BunListenerImpl(options));
}

/** Bun's `ca` replaces the default roots; ours adds to them, as on Deno. */
async function trustedCas(caCerts: string[] | undefined): Promise<string[] | undefined> {
  if (caCerts === undefined || caCerts.length === 0) return undefined;
  const { rootCertificates } = await import("node:tls");
  return [...rootCertificates, ...caCerts];
}

async function connect(options: ConnectOptions): Promise<Transport> {
  const { hostname, port, tls } = options;
  const ready = Promise.withResolvers<BunTransport>();
  // Settled by the handlers, possibly before Bun.connect() itself settles.
  ready.promise.catch(() => {});
  const handlers = BunTransport.handlers((transport, error) => {
    if (error !== undefined) ready.reject(error);
    else ready.resolve(transport);
  }, { tls: tls !== undefined, client: true });
  await bun().connect({
    hostname,
    port,
    tls: tls === undefined ? undefined : {
      ca: await trustedCas(tls.caCerts),
      serverName: tls.serverName,
      rejectUnauthorized: true,
    },
    allowHalfOpen: true,
    socket: handlers,
  });
  // Bun.connect() resolves before the TLS handshake is done; wait for it so
  // that an untrusted certificate fails here rather than on the first read.
  return await ready.promise;
}

/**
 * The Bun runtime adapter.
 *
 * @example Echo one connection
 * ```ts ignore
 * import { bunAdapter } from "./bun.ts";
 *
 * const listener = await bunAdapter.listen({ hostname: "127.0.0.1", port: 0 });
 * const conn = await listener.accept();
 * for (let chunk; conn && (chunk = await conn.read()) !== null;) {
 *   const pending = conn.write(chunk);
 *   if (pending) await pending;
 * }
 * ```
 */
export const bunAdapter: RuntimeAdapter = { name: "bun", listen, connect };
