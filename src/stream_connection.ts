/**
 * A complete WebSocket connection over any pair of byte streams: the same
 * connection driver that serves TCP (closing handshake and its deadline,
 * automatic pongs, keepalive, permessage-deflate, every size limit, user
 * code behind the guard), with the opening handshake left to the caller.
 *
 * @module
 */

import { StreamTransport } from "./runtime/stream_transport.ts";
import type { NetAddress } from "./runtime/transport.ts";
import { type BinaryType, WebSocketConnection, type WebSocketHandlers } from "./websocket.ts";
import { PerMessageDeflate } from "./protocol/deflate_codec.ts";
import type { DeflateOptions, NegotiatedDeflate } from "./protocol/permessage_deflate.ts";
import { checkKeepalive } from "./keepalive.ts";

/** A pair of byte streams: what the peer sends, and where to send to it. */
export interface ByteStreamPair {
  /** Bytes from the peer. */
  readable: ReadableStream<Uint8Array>;
  /** Bytes to the peer. */
  writable: WritableStream<Uint8Array>;
}

/** Options for {@linkcode webSocketFromStreams}. */
export interface StreamConnectionOptions<Data = undefined> {
  /**
   * Which end this is: a server expects masked frames and sends unmasked
   * ones, a client the reverse (RFC 6455 §5.1).
   */
  role: "server" | "client";
  /** The connection's URL, for `ws.url`. @default {"ws://localhost/"} */
  url?: string;
  /** The subprotocol agreed in the opening handshake. @default {""} */
  protocol?: string;
  /**
   * permessage-deflate parameters agreed in the opening handshake (both
   * ends must use the same), plus the compression knobs. Off when absent.
   */
  compression?: NegotiatedDeflate & Pick<DeflateOptions, "threshold" | "level" | "memLevel">;
  /** Largest message in bytes; larger ones close the connection with 1009. @default {16777216} */
  maxMessageSize?: number;
  /** Largest single frame in bytes. @default {maxMessageSize} */
  maxFrameSize?: number;
  /** Milliseconds to wait for the peer's close frame or end of stream. @default {5000} */
  closeTimeout?: number;
  /** Bytes of unsent output before the connection is failed with 1008. @default {16777216} */
  maxBufferedAmount?: number;
  /** Bytes of unread messages `ws.readable` may hold. @default {1048576} */
  readableHighWaterMark?: number;
  /** Milliseconds of silence before a keepalive ping; 0 for none. @default {0} */
  pingInterval?: number;
  /** Milliseconds to wait for an answer to a ping before failing (1011). @default {20000} */
  pingTimeout?: number;
  /** Milliseconds without a message before closing with 1001; 0 for none. @default {0} */
  idleTimeout?: number;
  /** How binary messages appear in `message` events. @default {"arraybuffer"} */
  binaryType?: BinaryType;
  /** Callbacks, as on `serve()`. */
  handlers?: WebSocketHandlers<Data>;
  /** Value for `ws.data`. */
  data?: Data;
  /** Addresses to report as `ws.remoteAddr`. */
  remoteAddr?: NetAddress;
}

/**
 * Runs a WebSocket connection over `streams`, after an opening handshake
 * done elsewhere (or none, between two ends that agree out of band). The
 * result is a full {@linkcode WebSocketConnection}: events, callbacks,
 * `readable`/`writable`, close handshake with `closeTimeout`, automatic
 * pongs, keepalive, compression and limits, exactly as over TCP, because it
 * is the same driver. Closing the connection closes `writable` and cancels
 * `readable`.
 *
 * The chunks written to `writable` are views into buffers the connection
 * keeps writing after them (and a server's empty pings and pongs are one
 * two-byte frame shared by all connections): the sink may read or copy
 * them, but must not modify them or transfer their `buffer` (to pass them
 * to a worker, post a copy).
 *
 * For composing your own pipeline from single stages instead, see
 * `FrameDecoderStream`, `MessageDecoderStream`, `MessageEncoderStream` and
 * `FrameEncoderStream`: they wrap the same protocol classes but leave the
 * closing handshake, pongs and compression to you.
 *
 * @example Two ends over an in-memory pipe
 * ```ts
 * import { webSocketFromStreams } from "@sluice/ws";
 *
 * const toServer = new TransformStream<Uint8Array, Uint8Array>();
 * const toClient = new TransformStream<Uint8Array, Uint8Array>();
 * const server = webSocketFromStreams(
 *   { readable: toServer.readable, writable: toClient.writable },
 *   { role: "server", handlers: { message: (ws, data) => ws.send(data) } },
 * );
 * const client = webSocketFromStreams(
 *   { readable: toClient.readable, writable: toServer.writable },
 *   { role: "client" },
 * );
 * const reply = new Promise((resolve) => (client.onmessage = (e) => resolve(e.data)));
 * client.send("hello");
 * console.log(await reply); // "hello"
 * client.close(1000);
 * await Promise.all([client.closed, server.closed]);
 * ```
 */
export function webSocketFromStreams<Data = undefined>(
  streams: ByteStreamPair,
  options: StreamConnectionOptions<Data>,
): WebSocketConnection<Data> {
  const { role } = options;
  if (role !== "server" && role !== "client") {
    throw new TypeError(`role must be "server" or "client", got ${String(role)}`);
  }
  const maxMessageSize = options.maxMessageSize ?? 16 * 1024 * 1024;
  const numbers = {
    maxMessageSize,
    maxFrameSize: options.maxFrameSize ?? maxMessageSize,
    closeTimeout: options.closeTimeout ?? 5_000,
    maxBufferedAmount: options.maxBufferedAmount ?? 16 * 1024 * 1024,
  };
  for (const [name, value] of Object.entries(numbers)) {
    if (!(typeof value === "number" && value > 0)) {
      throw new RangeError(`Option ${name} must be a positive number, got ${value}`);
    }
  }
  const keepalive = checkKeepalive({
    pingInterval: options.pingInterval ?? 0,
    pingTimeout: options.pingTimeout ?? 20_000,
    idleTimeout: options.idleTimeout ?? 0,
  });
  const compression = options.compression;
  const codec = compression === undefined
    ? null
    : new PerMessageDeflate(compression, role, compression);
  const ws = new WebSocketConnection<Data>(
    {
      role,
      ...numbers,
      readableHighWaterMark: options.readableHighWaterMark,
      binaryType: options.binaryType ?? "arraybuffer",
      handlers: options.handlers,
      keepalive,
    },
    options.url ?? "ws://localhost/",
    options.data as Data,
  );
  const transport = new StreamTransport(streams.readable, streams.writable, {
    remoteAddr: options.remoteAddr,
  });
  ws._start({
    transport,
    protocol: options.protocol ?? "",
    extensions: compression === undefined ? "" : "permessage-deflate",
    headers: new Headers(),
    codec,
    // `open` fires in a later task on both ends, once listeners are attached.
    deferOpen: true,
  }, null);
  return ws;
}
