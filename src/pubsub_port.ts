/**
 * The seam between a connection and the pub/sub layer: what a connection
 * offers the fan-out code (write pre-encoded frames, report its backlog) and
 * what it tells the fan-out code (drained, finished). Internal: not exported
 * from `mod.ts`.
 *
 * @module
 */

/**
 * What a connection offers the pub/sub layer. Implemented by
 * `WebSocketConnection` (server side).
 *
 * @internal
 */
export interface FanOutTarget {
  /**
   * Queues one complete, already encoded (unmasked, server-side) frame
   * behind everything queued on this connection. Returns `false` and queues
   * nothing unless the connection is open. Never closes the connection for
   * its backlog: the caller applies its own slow-subscriber policy.
   */
  _writeFrame(frame: Uint8Array): boolean;
  /**
   * Encodes and queues one message through this connection's own codec (for
   * connections whose compression keeps context across messages, so frames
   * cannot be shared). Same return and backlog rules as `_writeFrame`.
   */
  _writeMessage(data: string | Uint8Array): boolean;
  /**
   * How frames for this connection may be shared: `null` when no compression
   * was negotiated (the plain frame fits every such connection); otherwise a
   * key naming the negotiated sending parameters when the server does not
   * keep context (`server_no_context_takeover`): connections with equal keys
   * can take the same compressed frame; `"context-takeover"` when frames
   * must be compressed per connection (use `_writeMessage`).
   */
  readonly _compressionKey: string | null;
  /** Bytes queued and not yet handed to the kernel. */
  readonly bufferedAmount: number;
  /** Closes the connection (any code valid on the wire). */
  _closeWith(code: number, reason: string): void;
}

/**
 * What the pub/sub layer offers each connection. The connection calls
 * `drained` every time its queued output has been fully handed to the
 * kernel after a write had to wait, and `finished` once, when it closed.
 */
export interface FanOutHub<Target extends FanOutTarget = FanOutTarget> {
  /** The connection's backlog went to zero after a wait. */
  drained(target: Target): void;
  /** The connection closed: forget its subscriptions. */
  finished(target: Target): void;
}
