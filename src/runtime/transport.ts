/**
 * The one transport shape every runtime adapter produces: a connected byte
 * stream (TCP or TLS) with a fast pull-based read, a drain-aware write, and
 * lazily built WHATWG streams for composition.
 *
 * Only files in `src/runtime/` touch `Deno.*` or `Bun.*`; everything above
 * this layer sees a {@linkcode Transport} and nothing else.
 *
 * @module
 */

/** A network address as seen by a transport. */
export interface NetAddress {
  /** IP address or host name, without brackets for IPv6. */
  hostname: string;
  /** TCP port. */
  port: number;
}

/**
 * A connected, bidirectional byte transport.
 *
 * Reading contract: the chunk returned by {@linkcode Transport.read} is only
 * valid until the next call to `read()`; adapters may reuse one buffer per
 * connection so that idle connections cost little memory and busy ones do not
 * allocate per read. Consumers copy whatever they need to keep.
 *
 * Backpressure: a consumer that does not call `read()` stops the adapter from
 * reading the socket (Deno: no pending read op; Bun: the socket is paused once
 * its small internal queue is full), so the kernel's TCP window pushes back on
 * the peer.
 */
export interface Transport {
  /**
   * Reads the next chunk of bytes. Resolves `null` at end of stream (the peer
   * closed its side, or {@linkcode Transport.close} was called). Rejects only
   * on a socket error. Never call it again before the previous call settled.
   */
  read(): Promise<Uint8Array | null>;
  /**
   * Writes all of `data`. Returns `undefined` when the bytes were handed to the
   * kernel synchronously, or a promise that settles once they were (the caller
   * must not mutate `data` before then). Rejects (or throws) if the socket is
   * closed or broken.
   */
  write(data: Uint8Array): Promise<void> | undefined;
  /** Closes the socket at once (both directions). Idempotent. */
  close(): void;
  /**
   * Optional half-close: sends FIN once everything written so far is out,
   * and keeps reading. A side that fails a connection uses it so that a peer
   * still sending does not get a reset, which could destroy the close frame
   * in its receive buffer before it reads it. Call `close()` later.
   */
  closeWrite?(): void;
  /**
   * Optional push path, offered where the runtime's socket is callback-based
   * (Bun): from now on, chunks go to `consumer.data()` synchronously from the
   * socket's own data callback instead of to `read()` (do not call `read()`
   * any more). Replies written during that call are batched by the runtime
   * with its own socket work, which costs far less than writing from a
   * promise callback. Chunks queued before are delivered first.
   */
  setConsumer?(consumer: ChunkConsumer): void;
  /** Restarts delivery after `consumer.data()` returned `false`. */
  resumeConsumer?(): void;
  /**
   * Leaves push mode: chunks go to `read()` again, those queued first. Call
   * it only from `consumer.data()` (which then returns `false`) or while
   * delivery is stopped. A consumer may also hand over to another with
   * `setConsumer()` from within `data()`; its return value then counts no
   * more.
   */
  dropConsumer?(): void;
  /**
   * `true` when the chunks of the push path are lent, not given (Deno: the
   * transport's read buffer, reused): valid only during `consumer.data()`.
   */
  readonly lendsChunks?: boolean;
  /**
   * `true` while a server-side TLS handshake is still under way (server
   * transports are handed out at TCP accept, so that the server's handshake
   * deadline covers TLS too). Nothing written then could reach the peer as
   * HTTP: a server giving up on such a connection just closes it. Absent or
   * `false` for plain TCP and once TLS is established.
   */
  readonly tlsHandshaking?: boolean;
  /** Bytes accepted by `write()` but not yet handed to the kernel. */
  readonly bufferedAmount: number;
  /**
   * Optional: makes a buffer of `size` bytes that its caller writes in full
   * before reading any of it, so it may be uninitialized (Bun: skips
   * zero-filling large payloads). A plain function, not bound to the
   * transport.
   */
  readonly allocate?: (size: number) => Uint8Array;
  /**
   * Optional: the largest payload worth copying next to its frame header so
   * that a frame leaves in one `write()` (see `ProtocolOptions.copyLimit`).
   */
  readonly frameCopyLimit?: number;
  /**
   * Optional: `true` where allocating a small buffer costs far more than a
   * view of an existing one (Deno's V8: ~250 ns against ~10 ns), so small
   * binary messages are cut from a per-connection buffer.
   */
  readonly slabSmallMessages?: boolean;
  /** The local address of the socket. */
  readonly localAddr: NetAddress;
  /** The remote address of the socket. */
  readonly remoteAddr: NetAddress;
}

/** Receives a transport's bytes in push mode ({@linkcode Transport.setConsumer}). */
export interface ChunkConsumer {
  /**
   * A chunk of bytes, owned by the consumer (unless the transport
   * {@linkcode Transport.lendsChunks}). Return `false` to stop the flow (the
   * socket is paused) until `resumeConsumer()` is called.
   */
  data(chunk: Uint8Array): boolean;
  /**
   * Optional: where the transport may read the next bytes directly (the
   * rest of a large payload, in the buffer that keeps it), or `null`.
   * Transports that read into a buffer of their choice (Deno) ask before
   * each read; bytes read there are reported with `dataInPlace()`.
   */
  target?(): Uint8Array | null;
  /** With `target()`: `n` bytes were read into the last target. Returns as `data()`. */
  dataInPlace?(n: number): boolean;
  /**
   * End of stream (`null`) or a socket error. Not called after the consumer
   * closed the transport itself.
   */
  end(error: Error | null): void;
}

/** A listening server socket that yields transports. */
export interface Listener {
  /** The bound address (with the real port when port 0 was requested). */
  readonly addr: NetAddress;
  /**
   * Waits for the next connection; resolves `null` once the listener is
   * closed. A TLS listener yields connections as soon as TCP accepted them,
   * before their TLS handshake (see {@linkcode Transport.tlsHandshaking}).
   */
  accept(): Promise<Transport | null>;
  /** Stops listening. Already accepted transports stay open. Idempotent. */
  close(): void;
}

/** TLS material for a server, as PEM strings. */
export interface TlsServerOptions {
  /** Certificate chain in PEM. */
  cert: string;
  /** Private key in PEM. */
  key: string;
}

/** Options for {@linkcode RuntimeAdapter.listen}. */
export interface ListenOptions {
  /** Interface to bind. */
  hostname: string;
  /** Port to bind; 0 picks a free port. */
  port: number;
  /** When set, the listener speaks TLS. */
  tls?: TlsServerOptions;
  /**
   * Sets `SO_REUSEPORT`, so that several processes can listen on the same
   * port (Linux spreads connections across them). Deno: needs
   * `--unstable-net`, and plain TCP only.
   */
  reusePort?: boolean;
}

/** Options for {@linkcode RuntimeAdapter.connect}. */
export interface ConnectOptions {
  /** Host name or IP address to connect to. */
  hostname: string;
  /** TCP port. */
  port: number;
  /** When set, the connection uses TLS. */
  tls?: {
    /** Server name for SNI and certificate checks (defaults to `hostname`). */
    serverName?: string;
    /** Extra trusted CA certificates in PEM. */
    caCerts?: string[];
  };
}

/** What each runtime provides: listen and connect, turned into transports. */
export interface RuntimeAdapter {
  /** `"deno"` or `"bun"`. */
  readonly name: string;
  /** Binds a listener. */
  listen(options: ListenOptions): Promise<Listener>;
  /** Opens a connection. */
  connect(options: ConnectOptions): Promise<Transport>;
}
