/**
 * Sluice: RFC 6455 WebSockets for Deno and Bun, on web-standard streams.
 *
 * - {@linkcode serve} starts a server; each connection is a
 *   {@linkcode WebSocketConnection} with the browser's `WebSocket` surface and
 *   a `WebSocketStream`-style `readable`/`writable`/`closed` view.
 * - The sans-I/O protocol core ({@linkcode WebSocketProtocol},
 *   {@linkcode FrameParser}, handshake helpers) is exported for custom
 *   transports and tests.
 *
 * @example An echo server
 * ```ts
 * import { serve } from "@sluice/ws";
 *
 * const server = await serve({ port: 8080 }, {
 *   message(ws, data) {
 *     ws.send(data);
 *   },
 * });
 * console.log(`Listening on ${server.url}`);
 * await server.shutdown();
 * ```
 *
 * @module
 */

export {
  type ConnectionHandler,
  type ProtocolSelector,
  serve,
  type ServeOptions,
  type Server,
  type TlsOptions,
  type UpgradeDecision,
  type UpgradeRequestInfo,
} from "./src/server.ts";
export type { FetchHandler, FetchInfo } from "./src/http_responder.ts";
export { contentType, serveStatic, type StaticFilesOptions } from "./src/static_files.ts";
export { connect, type ConnectOptions, WebSocket } from "./src/client.ts";
export {
  type ConnectionEnd,
  type DisconnectedPolicy,
  type JitterMode,
  type OpenAttempt,
  type OpenedSocket,
  type ReconnectableSocket,
  ReconnectEvent,
  ReconnectingSocket,
  ReconnectingWebSocket,
  type ReconnectingWebSocketEventMap,
  type ReconnectOptions,
  type ReconnectPolicyOptions,
  shouldReconnectByDefault,
  type SocketOpener,
} from "./src/reconnect.ts";
export {
  type BinaryType,
  type CloseInfo,
  type Message,
  type SendData,
  WebSocketConnection,
  type WebSocketConnectionEventMap,
  type WebSocketHandlers,
} from "./src/websocket.ts";
export { HandshakeError, WebSocketError, type WebSocketErrorCode } from "./src/protocol/errors.ts";
export {
  CloseCode,
  type ClosePayload,
  encodeClosePayload,
  isValidWireCloseCode,
  parseClosePayload,
} from "./src/protocol/close_codes.ts";
export { Opcode } from "./src/protocol/opcodes.ts";
export {
  type MessageCodec,
  type ProtocolHandler,
  type ProtocolOptions,
  ReadyState,
  WebSocketProtocol,
} from "./src/protocol/connection.ts";
export {
  encodeFrame,
  type EncodeFrameOptions,
  type Frame,
  type FrameHandler,
  type FrameHeader,
  FrameParser,
  type FrameParserOptions,
} from "./src/protocol/frame.ts";
export {
  type FrameDecoderOptions,
  FrameDecoderStream,
  type FrameEncoderOptions,
  FrameEncoderStream,
} from "./src/streams/frame_stream.ts";
export {
  type ByteStreamPair,
  type StreamConnectionOptions,
  webSocketFromStreams,
} from "./src/stream_connection.ts";
export {
  type DecodedMessage,
  type MessageDecoderOptions,
  MessageDecoderStream,
  type MessageEncoderOptions,
  MessageEncoderStream,
} from "./src/streams/message_stream.ts";
export type { DeflateOptions, NegotiatedDeflate } from "./src/protocol/permessage_deflate.ts";
export type { InflateFunction } from "./src/protocol/message.ts";
export { acceptKey, generateKey } from "./src/protocol/handshake.ts";
export type { NetAddress } from "./src/runtime/transport.ts";
export {
  type ConflationKey,
  formatPrometheus,
  type PublishedData,
  type PublishOptions,
  type PubSubOptions,
  type ServerStats,
  type SlowPolicy,
  type SubscribeOptions,
} from "./src/pubsub.ts";
export type { ShutdownOptions } from "./src/server.ts";
export type { Broker, BrokerHealth, BrokerReceiver, BrokerStats } from "./src/broker.ts";
