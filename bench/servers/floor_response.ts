/**
 * The one answer the floor servers give: a `101` that the load generator
 * accepts (the key's answer is the RFC's example; the load generator does
 * not check it).
 *
 * @module
 */
export const FLOOR_RESPONSE: Uint8Array = new TextEncoder().encode(
  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
);
