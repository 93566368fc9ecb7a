/**
 * Bun's built-in WebSocket server as a broadcast server, with its native
 * pub/sub: `ws.subscribe` and `server.publish` (uWebSockets encodes once).
 * `--compress` turns on its permessage-deflate.
 *
 * @module
 */

import process from "node:process";

process.on("SIGTERM", () => process.exit(0));

interface BunWs {
  data: { sub: boolean };
  subscribe(topic: string): void;
}
interface BunServer {
  port: number;
  upgrade(request: Request, options: { data: { sub: boolean } }): boolean;
  publish(topic: string, data: string | Uint8Array): number;
}
const Bun = (globalThis as unknown as {
  Bun: {
    serve(options: {
      port: number;
      hostname: string;
      fetch(request: Request, server: BunServer): Response | undefined;
      websocket: {
        maxPayloadLength: number;
        perMessageDeflate: boolean;
        backpressureLimit: number;
        open(ws: BunWs): void;
        message(ws: BunWs, message: string | Uint8Array): void;
      };
    }): BunServer;
  };
}).Bun;

const compress = process.argv.includes("--compress") ||
  process.env.BENCH_BROADCAST_COMPRESS === "1";
const server: BunServer = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  fetch(request, server) {
    const path = new URL(request.url).pathname;
    if (path !== "/sub" && path !== "/pub") return new Response("Not found", { status: 404 });
    if (server.upgrade(request, { data: { sub: path === "/sub" } })) return undefined;
    return new Response("Upgrade required", { status: 426 });
  },
  websocket: {
    maxPayloadLength: 16 * 1024 * 1024,
    perMessageDeflate: compress,
    // Same as Sluice's default maxBufferedAmount: subscribers that keep up never hit it.
    backpressureLimit: 16 * 1024 * 1024,
    open(ws) {
      if (ws.data.sub) ws.subscribe("broadcast");
    },
    message(ws, message) {
      if (!ws.data.sub) server.publish("broadcast", message);
    },
  },
});
console.log(JSON.stringify({ port: server.port }));
