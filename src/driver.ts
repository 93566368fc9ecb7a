/**
 * The connection's one I/O driver: everything that moves bytes between a
 * transport and the sans-I/O protocol core, with one set of rules for
 *
 * - reading: each received chunk goes through the protocol core in one
 *   synchronous step; reading pauses while the application is behind (its
 *   faces say when) or, on a server, while our output to the peer is backed
 *   up (TCP then pushes back on a peer that does not read);
 * - writing: everything queued during a step leaves in one coalesced write;
 *   backlog, overflow (`maxBufferedAmount` → 1008) and drain are counted
 *   here, each byte once;
 * - closing: every path out of OPEN (our close, the peer's, a protocol
 *   failure, an overflow, a keepalive timeout) gets the `closeTimeout`
 *   deadline, and the side that must close TCP first does so once its close
 *   frame is written;
 * - finishing: exactly once, whatever ended the connection;
 * - keepalive: pings and the idle timeout on a shared clock.
 *
 * It knows nothing of events, callbacks or streams: the faces in
 * `websocket.ts` sit on top and report back through {@linkcode DriverEvents}.
 *
 * @module
 */

import type { ChunkConsumer, NetAddress, Transport } from "./runtime/transport.ts";
import {
  type MessageCodec,
  type ProtocolHandler,
  ReadyState,
  WebSocketProtocol,
} from "./protocol/connection.ts";
import { CloseCode, isValidWireCloseCode } from "./protocol/close_codes.ts";
import { toError, WebSocketError } from "./protocol/errors.ts";
import {
  clockNow,
  joinClock,
  type KeepaliveSettings,
  leaveClock,
  type Ticking,
  tickPeriod,
} from "./keepalive.ts";

/**
 * A received message: text as `string`, binary as a `Uint8Array` that the
 * receiver owns. Binary messages given to callbacks and `readable` may be
 * views into a larger buffer: large ones (8 KiB and up) into one that
 * nothing else uses (they cost no copy, and a server sending one on, an
 * echo or a relay, writes it with no copy either); on Deno, small ones
 * (up to 256 bytes) into a 4 KiB buffer shared with the same connection's
 * neighbouring messages (allocating a buffer costs ~250 ns there). Use
 * `byteOffset` and `byteLength`, not `.buffer` alone; `message` events with
 * `binaryType` `"arraybuffer"` always get exactly sized ArrayBuffers.
 */
export type Message = string | Uint8Array;

/** The result of `WebSocketConnection.closed`. */
export interface CloseInfo {
  /**
   * The close code: the peer's; on a server, the code it failed the
   * connection with (1002, 1007, 1008, 1009, 1011, ...); 1005 if the peer's
   * close frame had none; 1006 if the connection dropped without one (and on
   * a client, after any failure, as in browsers).
   */
  closeCode: number;
  /** The peer's close reason, or the reason this side failed with. */
  reason: string;
  /** Whether close frames were exchanged both ways. */
  wasClean: boolean;
}

/** The limits and timers of one connection. */
export interface DriverOptions {
  role: "server" | "client";
  maxMessageSize: number;
  maxFrameSize: number;
  maxFragments?: number;
  closeTimeout: number;
  maxBufferedAmount: number;
  keepalive?: KeepaliveSettings;
}

/** What the driver tells the faces above it. */
export interface DriverEvents {
  /** A message arrived. */
  message(message: Message): void;
  /** A ping arrived (the pong is already queued). */
  ping(payload: Uint8Array): void;
  /** A pong arrived. */
  pong(payload: Uint8Array): void;
  /**
   * Whether the application takes more messages now (no `message` promise
   * pending, `readable` not full). When it turns true again, the face calls
   * {@linkcode ConnectionDriver.resume}.
   */
  applicationReady(): boolean;
  /** The connection failed: a protocol violation, a socket error, a timeout, an overflow. */
  failed(error: Error): void;
  /**
   * Everything queued was written. `backlogged`: a send had to wait behind a
   * real backlog (the socket was not keeping up); `waited`: some write did
   * not complete at once.
   */
  flushed(backlogged: boolean, waited: boolean): void;
  /** The connection is over: called exactly once. */
  finished(info: CloseInfo): void;
}

/** Chunks up to this size are copied together into one write; larger ones go as they are. */
const COALESCE_CHUNK = 16 * 1024;
/** The most bytes one coalesced write collects. */
const COALESCE_LIMIT = 64 * 1024;
/**
 * Unsent output above which a server does not read the socket (so a peer
 * that does not read cannot make it queue without end) and above which
 * `writable` writes wait.
 */
export const OUTPUT_HIGH_WATER = 1024 * 1024;
/** No chunks: a write list that is never added to. */
const NO_CHUNKS: Uint8Array[] = [];
/** Most input read and dropped after the close before the socket is closed anyway. */
const DISCARD_LIMIT = 256 * 1024;
/** A write that leaves more than this unsent means the socket is behind: `drain` follows. */
const DRAIN_MARK = 64 * 1024;
/**
 * The rest of a payload in progress is read straight into the message's
 * buffer (transports that ask `ChunkConsumer.target()`) when at least this much is to come:
 * below it, one read into the transport's buffer takes in the rest and
 * what follows for about the same copy.
 */
const DIRECT_READ_MIN = 16 * 1024;

/**
 * Joins runs of small chunks (frames of small messages, headers) into single
 * buffers so that a burst of sends costs one socket write, while large
 * payloads are written from where they are instead of being copied.
 */
function coalesce(chunks: Uint8Array[]): Uint8Array[] {
  // The common case (a burst of small frames, a pub/sub backlog): one join.
  let total = 0;
  for (const chunk of chunks) {
    if (chunk.length > COALESCE_CHUNK) return coalesceRuns(chunks);
    total += chunk.length;
  }
  if (total > COALESCE_LIMIT) return coalesceRuns(chunks);
  // A fan-out queues the very same frames on every subscriber: the join of
  // the previous connection serves the next (the bytes are never changed:
  // frames are shared read-only, and arena bytes once taken are final).
  if (sameChunks(chunks, lastJoin.chunks)) return [lastJoin.joined];
  const joined = join(chunks, total);
  lastJoin.chunks = chunks;
  lastJoin.joined = joined;
  return [joined];
}

/** The last batch `coalesce` joined, and the result. */
const lastJoin: { chunks: Uint8Array[]; joined: Uint8Array } = {
  chunks: [],
  joined: new Uint8Array(0),
};

function sameChunks(a: Uint8Array[], b: Uint8Array[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function join(chunks: Uint8Array[], total: number): Uint8Array {
  const joined = new Uint8Array(total);
  let at = 0;
  for (const chunk of chunks) {
    joined.set(chunk, at);
    at += chunk.length;
  }
  return joined;
}

function coalesceRuns(chunks: Uint8Array[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let run: Uint8Array[] = [];
  let runBytes = 0;
  const endRun = () => {
    if (run.length === 1) out.push(run[0]);
    else if (run.length > 1) out.push(join(run, runBytes));
    run = [];
    runBytes = 0;
  };
  for (const chunk of chunks) {
    if (chunk.length > COALESCE_CHUNK) {
      endRun();
      out.push(chunk);
      continue;
    }
    if (runBytes + chunk.length > COALESCE_LIMIT) endRun();
    run.push(chunk);
    runBytes += chunk.length;
  }
  endRun();
  return out;
}

/**
 * Reads `transport` and hands each chunk to `consumer`, pausing while
 * `consumer.data()` returns `false`. Push transports (Bun) do this in their
 * own data callback (`null` is returned: `resumeConsumer()` restarts them);
 * pull transports (Deno, streams) get a read loop here, and the function
 * that restarts it after a pause.
 */
function startReading(transport: Transport, consumer: ChunkConsumer): (() => void) | null {
  if (transport.setConsumer !== undefined) {
    transport.setConsumer(consumer);
    return null;
  }
  let paused = false;
  let wake: (() => void) | null = null;
  (async () => {
    for (;;) {
      if (paused) {
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      let chunk: Uint8Array | null;
      try {
        chunk = await transport.read();
      } catch (err) {
        consumer.end(toError(err));
        return;
      }
      if (chunk === null) {
        consumer.end(null);
        return;
      }
      if (!consumer.data(chunk)) paused = true;
    }
  })();
  return () => {
    if (!paused) return;
    paused = false;
    const resume = wake;
    wake = null;
    resume?.();
  };
}

/** One connection's I/O, from the first byte after the handshake to the end. */
export class ConnectionDriver {
  /**
   * How the protocol core, a push transport and the keepalive clock call
   * back into the driver: one small object per connection rather than a
   * closure per callback (idle connections are mostly such objects).
   */
  static #Callbacks = class implements ProtocolHandler, ChunkConsumer, Ticking {
    readonly #driver: ConnectionDriver;

    constructor(driver: ConnectionDriver) {
      this.#driver = driver;
    }

    text(data: string): void {
      this.#driver.#deliver(data);
    }

    binary(data: Uint8Array): void {
      this.#driver.#deliver(data);
    }

    ping(payload: Uint8Array): void {
      this.#driver.#events.ping(payload);
    }

    pong(payload: Uint8Array): void {
      this.#driver.#events.pong(payload);
    }

    data(chunk: Uint8Array): boolean {
      const driver = this.#driver;
      return driver.#onData(chunk, driver.#ownedInput);
    }

    target(): Uint8Array | null {
      return this.#driver.#readTarget();
    }

    dataInPlace(n: number): boolean {
      return this.#driver.#onDataInPlace(n);
    }

    end(error: Error | null): void {
      this.#driver.#onEnd(error);
    }

    tick(now: number): void {
      this.#driver.#tick(now);
    }
  };
  readonly #callbacks = new ConnectionDriver.#Callbacks(this);

  readonly #transport: Transport;
  readonly #protocol: WebSocketProtocol;
  readonly #codec: MessageCodec | null;
  readonly #options: DriverOptions;
  readonly #events: DriverEvents;
  #started = false;
  #finished = false;
  #transportClosed = false;
  /** Why this side ended the connection, when it did so because of an error. */
  #failure: Error | null = null;

  // Input.
  /** Chunks are handed over, not lent (push transports: a fresh buffer per read). */
  readonly #ownedInput: boolean;
  #resumeReading: (() => void) | null = null;
  #readPaused = false;

  // Output.
  /** Inside `#onData`: it flushes once the chunk is parsed, so sends need no microtask. */
  #receiving = false;
  #flushScheduled = false;
  #writing = false;
  /** Bytes taken from the protocol and not yet handed to `transport.write()`. */
  #inFlight = 0;
  /** A write had to wait since the last time everything was flushed. */
  #waited = false;
  #backlogged = false;
  #closeWhenFlushed = false;
  #halfCloseWhenFlushed = false;
  /** Bytes read and dropped after the protocol closed. */
  #discarded = 0;
  #drainWaiters: (() => void)[] | null = null;
  /** Sends waiting behind a Blob being read, so messages keep the order of send() calls. */
  #orderQueue: Promise<void> | null = null;
  #ordered = 0;
  #blobBytes = 0;

  // Keepalive.
  /** The period of the clock this connection is on, 0 when on none. */
  #clockPeriod = 0;
  /** Bytes arrived since the last tick. */
  #heard = false;
  /** A message arrived since the last tick. */
  #heardMessage = false;
  #lastHeard = 0;
  #lastMessage = 0;
  #pingSentAt = 0;
  /** The output backlog at the last tick that found reading paused; -1 when not paused. */
  #pausedBacklog = -1;

  #closeTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    transport: Transport,
    codec: MessageCodec | null,
    options: DriverOptions,
    events: DriverEvents,
  ) {
    this.#transport = transport;
    this.#codec = codec;
    this.#options = options;
    this.#events = events;
    this.#ownedInput = transport.setConsumer !== undefined && transport.lendsChunks !== true;
    this.#protocol = new WebSocketProtocol(
      {
        role: options.role,
        maxMessageSize: options.maxMessageSize,
        maxFrameSize: options.maxFrameSize,
        maxFragments: options.maxFragments,
        codec,
        allocate: transport.allocate,
        copyLimit: transport.frameCopyLimit,
        slabSmallMessages: transport.slabSmallMessages,
      },
      this.#callbacks,
    );
  }

  /** See {@linkcode WebSocketProtocol.deliverViews}. */
  set deliverViews(value: boolean) {
    this.#protocol.deliverViews = value;
  }

  /** The protocol state (OPEN, CLOSING, or CLOSED once close frames crossed or it failed). */
  get state(): ReadyState {
    return this.#protocol.state;
  }

  /** Whether the connection is over (`finished` was reported). */
  get isFinished(): boolean {
    return this.#finished;
  }

  /** Bytes queued and not yet handed to the kernel, Blobs still being read included. */
  get bufferedAmount(): number {
    return this.#outputBacklog() + this.#blobBytes;
  }

  /** The peer's address. */
  get remoteAddr(): NetAddress {
    return this.#transport.remoteAddr;
  }

  /** The failure this side ended the connection with, if any. */
  get failure(): Error | null {
    return this.#failure;
  }

  /**
   * Starts reading (after the faces fired `open`). `initial` holds bytes
   * that arrived with the handshake.
   */
  start(initial: Uint8Array | null): void {
    if (this.#started) return;
    this.#started = true;
    if (this.#transportClosed) {
      this.#finish();
      return;
    }
    this.#startKeepalive();
    if (initial !== null && initial.length > 0 && !this.#onData(initial, false)) {
      this.#readPaused = true;
    }
    if (this.#transportClosed) return;
    const paused = this.#readPaused;
    this.#readPaused = false;
    this.#resumeReading = startReading(this.#transport, this.#callbacks);
    // The bytes that came with the handshake already filled what the
    // application takes: the next chunk is refused until resume().
    if (paused && !this.#canRead()) this.#readPaused = true;
  }

  // --- Sending ---

  /**
   * Queues a message. Returns false when it was discarded (not OPEN). A send
   * that finds more than `maxBufferedAmount` already waiting fails the
   * connection with 1008; one message of any size is always accepted.
   */
  send(data: string | Uint8Array | Blob): boolean {
    if (this.#protocol.state !== ReadyState.OPEN) return false;
    if (this.#ordered > 0 || data instanceof Blob) return this.#sendInOrder(data);
    const before = this.#outputBacklog() + this.#blobBytes;
    const sent = typeof data === "string"
      ? this.#protocol.sendText(data)
      : this.#protocol.sendBinary(data);
    if (!sent) return false;
    if (before > this.#options.maxBufferedAmount) {
      this.#overflow();
      return false;
    }
    this.#queued();
    return true;
  }

  /** Queues a ping. */
  ping(payload: Uint8Array): void {
    if (this.#protocol.ping(payload)) this.#afterControl();
  }

  /** Queues an unsolicited pong. */
  pong(payload: Uint8Array): void {
    if (this.#protocol.pong(payload)) this.#afterControl();
  }

  /** Queues a complete, already encoded frame (pub/sub); no overflow check. */
  writeFrame(frame: Uint8Array): boolean {
    if (this.#ordered > 0) {
      return this.#writeInOrder(frame.length, () => this.#protocol.sendRaw(frame));
    }
    if (!this.#protocol.sendRaw(frame)) return false;
    this.#queued();
    return true;
  }

  /** Encodes a message with this connection's codec (pub/sub); no overflow check. */
  writeMessage(data: string | Uint8Array): boolean {
    const send = () =>
      typeof data === "string" ? this.#protocol.sendText(data) : this.#protocol.sendBinary(data);
    if (this.#ordered > 0) return this.#writeInOrder(data.length, send);
    const sent = send();
    if (sent) this.#queued();
    return sent;
  }

  /**
   * A pub/sub write behind Blobs still being read: queued after them (frames
   * keep the order of sends), counted as buffered meanwhile. Its bytes are
   * the hub's own, so they need no copy.
   */
  #writeInOrder(size: number, send: () => boolean): boolean {
    if (this.#protocol.state !== ReadyState.OPEN) return false;
    this.#blobBytes += size;
    this.#enqueueOrdered(() => {
      this.#blobBytes -= size;
      if (send()) this.#queued();
    });
    return true;
  }

  /** Resolves once everything queued was written (or the connection ended). */
  waitForDrain(): Promise<void> {
    if (this.bufferedAmount === 0 || this.#transportClosed) return Promise.resolve();
    return new Promise((resolve) => (this.#drainWaiters ??= []).push(resolve));
  }

  // --- Closing ---

  /** Starts the closing handshake (after Blobs queued before it). No-op unless OPEN. */
  close(code: number | undefined, reason: string): void {
    if (this.#protocol.state !== ReadyState.OPEN) return;
    if (this.#ordered > 0) {
      this.#enqueueOrdered(() => this.#closeNow(code, reason));
      return;
    }
    this.#closeNow(code, reason);
  }

  /** Closes the transport at once, without a closing handshake. */
  terminate(): void {
    this.#closeTransport();
  }

  /** The application caught up: read again if reading was paused for it. */
  resume(): void {
    if (!this.#readPaused || this.#transportClosed || !this.#canRead()) return;
    this.#readPaused = false;
    // Deadlines do not run against a peer we were not reading.
    this.#heard = true;
    this.#restartReading();
  }

  // --- Reading ---

  /**
   * One received chunk: parse, deliver, answer. Returns whether to keep
   * reading. `owned`: the chunk is ours to keep and change (push transports).
   */
  #onData(chunk: Uint8Array, owned: boolean): boolean {
    if (this.#transportClosed) return false;
    if (this.#protocol.state === ReadyState.CLOSED) {
      // Input after the close is only read (and dropped) to let our close
      // frame reach the peer before the socket closes; a peer that keeps
      // sending gets at most this much attention.
      this.#discarded += chunk.length;
      if (this.#discarded > DISCARD_LIMIT) {
        this.#closeTransport();
        return false;
      }
    }
    this.#heard = true;
    this.#receiving = true;
    try {
      this.#protocol.receive(chunk, owned);
    } finally {
      this.#receiving = false;
    }
    return this.#afterReceive();
  }

  /** Where to read the next bytes directly (the rest of a large payload), or `null`. */
  #readTarget(): Uint8Array | null {
    if (this.#transportClosed) return null;
    return this.#protocol.receiveTarget(DIRECT_READ_MIN);
  }

  /** `n` bytes were read into `#readTarget()`: as `#onData`, with no copy. */
  #onDataInPlace(n: number): boolean {
    if (this.#transportClosed) return false;
    this.#heard = true;
    this.#receiving = true;
    try {
      this.#protocol.receivedInPlace(n);
    } finally {
      this.#receiving = false;
    }
    return this.#afterReceive();
  }

  /** After a chunk was parsed: write what it produced; whether to keep reading. */
  #afterReceive(): boolean {
    // Everything this chunk produced (replies, handler sends) is queued now:
    // write it before the next read is issued rather than in a microtask.
    if (this.#protocol.outputBytes > 0 && !this.#writing) this.#flush();
    this.#afterStateChange();
    if (this.#canRead()) return true;
    this.#readPaused = true;
    return false;
  }

  #onEnd(error: Error | null): void {
    if (this.#transportClosed) return;
    if (error !== null) return this.#fail(error);
    this.#protocol.receiveEnd();
    this.#closeTransport();
  }

  /**
   * Whether to read more: the application keeps up and, on a server, so
   * does the peer (our unsent output to it is under the high-water mark).
   * Clients keep reading whatever their backlog: if both ends paused on
   * output, two peers sending bulk to each other would wait forever.
   */
  #canRead(): boolean {
    // Once closed, input is only read to see the peer's EOF: nothing is delivered.
    if (this.#protocol.state === ReadyState.CLOSED) return true;
    // Once our close frame is out, read on to find the peer's answer: an
    // application that is behind must not turn a clean close into 1006.
    if (this.#protocol.closeSent) return true;
    if (!this.#events.applicationReady()) return false;
    return this.#options.role === "client" || this.#outputBacklog() <= OUTPUT_HIGH_WATER;
  }

  #deliver(message: Message): void {
    this.#heardMessage = true;
    // Once our close frame is out, reading goes on while the application is
    // behind (to find the peer's answer, see #canRead): what arrives then is
    // dropped rather than queued, so a peer that keeps sending cannot grow
    // memory for the whole closeTimeout.
    if (this.#protocol.closeSent && !this.#events.applicationReady()) return;
    this.#events.message(message);
  }

  /**
   * The one place that acts on the protocol leaving OPEN: every closing path
   * gets the `closeTimeout` deadline, a failure is reported, and the side
   * that should close TCP first does so once its close frame is written.
   */
  #afterStateChange(): void {
    const protocol = this.#protocol;
    const state = protocol.state;
    if (state === ReadyState.OPEN) return;
    this.#startCloseTimer();
    if (state !== ReadyState.CLOSED) return;
    const error = protocol.error;
    if (error !== null && this.#failure === null) {
      this.#failure = error;
      this.#events.failed(error);
    }
    // The server closes TCP first (§7.1.1), once its close frame is out. A
    // side that failed the connection half-closes instead: the peer may
    // still be sending, and closing with unread input would reset the
    // connection, which can destroy our close frame (and what came before
    // it) in the peer's receive buffer. It reads and drops input until the
    // peer's FIN or `closeTimeout`.
    if (error !== null) this.#halfCloseAfterFlush();
    else if (this.#options.role === "server") this.#closeAfterFlush();
  }

  // --- Closing ---

  #closeNow(code: number | undefined, reason: string): void {
    const protocol = this.#protocol;
    if (protocol.state !== ReadyState.OPEN) return;
    protocol.close(code, reason);
    this.#scheduleFlush();
    this.#afterStateChange();
  }

  /** Fails the connection from this side with a close code (overflow, keepalive). */
  #failWith(error: WebSocketError): void {
    const protocol = this.#protocol;
    if (protocol.state === ReadyState.CLOSED) return;
    this.#failure = error;
    protocol.fail(error);
    this.#events.failed(error);
    this.#scheduleFlush();
    this.#afterStateChange();
  }

  #startCloseTimer(): void {
    if (this.#closeTimer !== undefined || this.#transportClosed) return;
    this.#closeTimer = setTimeout(() => {
      this.#closeTimer = undefined;
      this.#closeTransport();
    }, this.#options.closeTimeout);
  }

  #halfCloseAfterFlush(): void {
    this.#halfCloseWhenFlushed = true;
    if (!this.#writing && !this.#flushScheduled && this.#protocol.outputBytes === 0) {
      this.#halfClose();
    }
  }

  #halfClose(): void {
    if (this.#transportClosed) return;
    const closeWrite = this.#transport.closeWrite;
    if (closeWrite === undefined) return this.#closeTransport();
    this.#halfCloseWhenFlushed = false;
    closeWrite.call(this.#transport);
    // Keep reading (and dropping) until the peer's FIN; the close timer runs.
    this.resume();
  }

  #closeAfterFlush(): void {
    this.#closeWhenFlushed = true;
    if (!this.#writing && !this.#flushScheduled && this.#protocol.outputBytes === 0) {
      this.#closeTransport();
    }
  }

  /** The transport failed (socket error): nothing more can be sent. */
  #fail(error: Error): void {
    // Once the peer's valid close frame is in, a socket error (a reset right
    // after it, the echo's write failing) is the peer leaving, not a failure
    // to report: the close it asked for is what the application sees.
    const peerClosed = this.#protocol.closeCode !== CloseCode.Abnormal;
    if (this.#failure === null && !this.#finished && !peerClosed) {
      this.#failure = error;
      this.#events.failed(error);
    }
    this.#closeTransport();
  }

  #closeTransport(): void {
    if (this.#transportClosed) return;
    this.#transportClosed = true;
    if (this.#closeTimer !== undefined) {
      clearTimeout(this.#closeTimer);
      this.#closeTimer = undefined;
    }
    this.#leaveClock();
    this.#transport.close();
    this.#protocol.receiveEnd();
    const waiters = this.#drainWaiters;
    this.#drainWaiters = null;
    for (const resolve of waiters ?? []) resolve();
    // A paused pull loop wakes, reads the end of stream and stops.
    this.#readPaused = false;
    this.#resumeReading?.();
    // Close events never fire inside the call that closed.
    if (this.#started) queueMicrotask(() => this.#finish());
  }

  /**
   * What the connection ended with. On a server, a failure this side
   * declared (and sent a close frame for) is reported with its code, so
   * `close` callbacks and stats see 1008 for an overflow or 1011 for a dead
   * peer; a client reports 1006 for any failure, as browsers do.
   */
  #closeInfo(): CloseInfo {
    const protocol = this.#protocol;
    const failure = this.#failure;
    if (
      this.#options.role === "server" && failure instanceof WebSocketError &&
      isValidWireCloseCode(failure.closeCode) && protocol.closeSent
    ) {
      return { closeCode: failure.closeCode, reason: failure.message, wasClean: false };
    }
    return {
      closeCode: protocol.closeCode,
      reason: protocol.closeReason,
      wasClean: protocol.wasClean,
    };
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#leaveClock();
    try {
      this.#codec?.close?.();
    } catch {
      // Freeing zlib memory must not stop the close from being reported.
    }
    this.#events.finished(this.#closeInfo());
  }

  // --- Writing ---

  /**
   * Sends behind Blobs still being read, so messages keep the order of the
   * send() calls. Bytes are copied now: the caller may reuse its buffer.
   */
  #sendInOrder(data: string | Uint8Array | Blob): boolean {
    const snapshot = data instanceof Blob || typeof data === "string" ? data : data.slice();
    const size = snapshot instanceof Blob
      ? snapshot.size
      : typeof snapshot === "string"
      ? snapshot.length
      : snapshot.byteLength;
    // Blobs count against the limit from the moment they are queued.
    if (this.bufferedAmount > this.#options.maxBufferedAmount) {
      this.#overflow();
      return false;
    }
    this.#blobBytes += size;
    this.#enqueueOrdered(async () => {
      const bytes = snapshot instanceof Blob
        ? new Uint8Array(await snapshot.arrayBuffer())
        : snapshot;
      this.#blobBytes -= size;
      const sent = typeof bytes === "string"
        ? this.#protocol.sendText(bytes)
        : this.#protocol.sendBinary(bytes);
      if (sent) this.#queued();
    });
    return true;
  }

  /** Runs `task` after every task queued before it. */
  #enqueueOrdered(task: () => void | Promise<void>): void {
    this.#ordered++;
    const run = (this.#orderQueue ?? Promise.resolve())
      .then(task)
      .catch((err) => this.#fail(toError(err)))
      .finally(() => {
        if (--this.#ordered === 0) this.#orderQueue = null;
      });
    this.#orderQueue = run;
  }

  /** Bytes queued by the protocol, taken but not yet written, and held by the transport. */
  #outputBacklog(): number {
    return this.#protocol.outputBytes + this.#inFlight + this.#transport.bufferedAmount;
  }

  /** A control frame was queued by this side's own `ping()`/`pong()`. */
  #afterControl(): void {
    if (this.bufferedAmount > this.#options.maxBufferedAmount) return this.#overflow();
    this.#queued();
  }

  /** Schedules the write; notes that the sender had to wait behind a write in progress. */
  #queued(): void {
    if (this.#writing) this.#backlogged = true;
    this.#scheduleFlush();
  }

  #overflow(): void {
    const limit = this.#options.maxBufferedAmount;
    this.#failWith(
      new WebSocketError(
        "BUFFER_OVERFLOW",
        CloseCode.PolicyViolation,
        `Send buffer is over maxBufferedAmount (${limit} bytes): the peer is not reading`,
      ),
    );
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#writing || this.#receiving) return;
    this.#flushScheduled = true;
    const pending = ConnectionDriver.#pendingFlushes;
    pending.push(this);
    if (pending.length === 1) queueMicrotask(ConnectionDriver.#flushPending);
  }

  /**
   * Connections with output queued outside a read (a pub/sub fan-out, sends
   * from timers): one microtask writes them all, rather than a microtask and
   * a closure per connection.
   */
  static #pendingFlushes: ConnectionDriver[] = [];

  static #flushPending(): void {
    const drivers = ConnectionDriver.#pendingFlushes;
    ConnectionDriver.#pendingFlushes = [];
    for (const driver of drivers) {
      try {
        driver.#flush();
      } catch (error) {
        // As from a microtask of its own; the other connections still flush.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  /** Writes everything queued, coalescing small frames into one write. */
  #flush(): void {
    this.#flushScheduled = false;
    if (this.#writing || this.#transportClosed) return;
    const chunks = this.#protocol.takeOutput();
    if (chunks.length === 0) return this.#flushed();
    const batch = chunks.length === 1 ? chunks : coalesce(chunks);
    let total = 0;
    for (const chunk of batch) total += chunk.length;
    this.#inFlight = total;
    this.#writeChunks(batch, 0);
  }

  #writeChunks(chunks: Uint8Array[], index: number): void {
    for (let i = index; i < chunks.length; i++) {
      const chunk = chunks[i];
      // From here on the transport counts these bytes.
      this.#inFlight -= chunk.length;
      let pending: Promise<void> | undefined;
      try {
        pending = this.#transport.write(chunk);
      } catch (err) {
        return this.#writeFailed(err);
      }
      if (pending !== undefined) {
        this.#writing = true;
        this.#waited = true;
        // Deno settles every write later, even one the kernel takes at once:
        // only a sizeable backlog counts as the socket not keeping up.
        if (this.#outputBacklog() > DRAIN_MARK) this.#backlogged = true;
        pending.then(() => {
          this.#writing = false;
          this.#writeChunks(chunks, i + 1);
        }, (err) => {
          this.#writing = false;
          this.#writeFailed(err);
        });
        return;
      }
    }
    this.#inFlight = 0;
    if (this.#protocol.outputBytes > 0) return this.#flush();
    this.#flushed();
  }

  /**
   * A write its owner started on the transport before handing it over (the
   * server's 101, which a transport may settle later): output waits for it,
   * and its failure fails the connection, as for the driver's own writes.
   */
  adoptWrite(pending: Promise<void>): void {
    this.#writing = true;
    pending.then(() => {
      this.#writing = false;
      this.#writeChunks(NO_CHUNKS, 0);
    }, (err) => {
      this.#writing = false;
      this.#writeFailed(err);
    });
  }

  #writeFailed(err: unknown): void {
    this.#inFlight = 0;
    if (!this.#transportClosed) this.#fail(toError(err));
  }

  /** Everything queued is written. */
  #flushed(): void {
    if (this.#drainWaiters !== null) {
      const waiters = this.#drainWaiters;
      this.#drainWaiters = null;
      for (const resolve of waiters) resolve();
    }
    const backlogged = this.#backlogged;
    const waited = this.#waited;
    this.#backlogged = false;
    this.#waited = false;
    if (backlogged || waited) this.#events.flushed(backlogged, waited);
    if (this.#closeWhenFlushed) return this.#closeTransport();
    if (this.#halfCloseWhenFlushed) return this.#halfClose();
    this.resume();
  }

  // --- Keepalive ---

  #startKeepalive(): void {
    const settings = this.#options.keepalive;
    if (settings === undefined || this.#transportClosed) return;
    const period = tickPeriod(settings);
    if (period === 0) return;
    const now = clockNow();
    this.#lastHeard = this.#lastMessage = now;
    this.#clockPeriod = period;
    joinClock(this.#callbacks, period);
  }

  #leaveClock(): void {
    if (this.#clockPeriod === 0) return;
    leaveClock(this.#callbacks, this.#clockPeriod);
    this.#clockPeriod = 0;
  }

  /** Restarts delivery after a pause: the pull loop's, or the push transport's. */
  #restartReading(): void {
    if (this.#resumeReading !== null) this.#resumeReading();
    else if (this.#started) this.#transport.resumeConsumer?.();
  }

  /**
   * One keepalive check. Deadlines run only while the socket is being read:
   * a peer whose bytes we are not reading (the application is behind) is not
   * blamed for silence.
   */
  #tick(now: number): void {
    const settings = this.#options.keepalive;
    if (this.#transportClosed || settings === undefined) return;
    // Reading paused is not the peer's silence when the application is
    // behind, or when the peer is reading our output (the backlog that paused
    // us shrank since the last tick). A peer that stopped reading altogether
    // is not excused: else one frame sent once our output to it passed the
    // high-water mark would keep it from every deadline, forever.
    let excused = false;
    if (this.#readPaused) {
      const backlog = this.#outputBacklog();
      excused = !this.#events.applicationReady() || this.#pausedBacklog < 0 ||
        backlog < this.#pausedBacklog;
      this.#pausedBacklog = backlog;
    } else {
      this.#pausedBacklog = -1;
    }
    if (this.#heard || excused) {
      this.#heard = false;
      this.#lastHeard = now;
      this.#pingSentAt = 0;
    }
    if (this.#heardMessage || excused) {
      this.#heardMessage = false;
      this.#lastMessage = now;
    } else {
      // No message for a whole period: buffers kept for the next ones go.
      this.#protocol.releaseIdleMemory();
    }
    if (this.#protocol.state !== ReadyState.OPEN) return;
    const { pingInterval, pingTimeout, idleTimeout } = settings;
    if (idleTimeout > 0 && now - this.#lastMessage >= idleTimeout) {
      this.close(CloseCode.GoingAway, "Idle timeout");
      return;
    }
    if (pingInterval <= 0) return;
    if (this.#pingSentAt === 0) {
      if (now - this.#lastHeard >= pingInterval && this.#protocol.ping()) {
        this.#pingSentAt = now;
        this.#queued();
      }
    } else if (pingTimeout > 0 && now - this.#pingSentAt >= pingTimeout) {
      this.#failWith(
        new WebSocketError(
          "PING_TIMEOUT",
          CloseCode.InternalError,
          `Keepalive ping timeout: no answer within ${pingTimeout} ms`,
        ),
      );
    }
  }
}
