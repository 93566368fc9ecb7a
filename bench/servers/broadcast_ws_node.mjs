// npm `ws` on Node as a broadcast server: a loop over the subscribers calling
// `send` (each call frames, and with --compress deflates, the message again).
// `--compress` enables its permessage-deflate (server_no_context_takeover, so
// it costs no zlib memory per subscriber). Prints {"port":N} once listening.

import { WebSocketServer } from "ws";

process.on("SIGTERM", () => process.exit(0));

const compress = process.argv.includes("--compress") ||
  process.env.BENCH_BROADCAST_COMPRESS === "1";
const subscribers = new Set();
const wss = new WebSocketServer({
  host: "127.0.0.1",
  port: 0,
  perMessageDeflate: compress ? { serverNoContextTakeover: true, threshold: 1024 } : false,
  maxPayload: 16 * 1024 * 1024,
});
wss.on("connection", (ws, request) => {
  if (request.url === "/sub") {
    subscribers.add(ws);
    ws.on("close", () => subscribers.delete(ws));
  } else if (request.url === "/pub") {
    ws.on("message", (data, isBinary) => {
      for (const sub of subscribers) sub.send(data, { binary: isBinary });
    });
  } else {
    ws.close(1008, "Not found");
  }
});
wss.on("listening", () => console.log(JSON.stringify({ port: wss.address().port })));
