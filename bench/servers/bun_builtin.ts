/**
 * Bun's built-in WebSocket server (`Bun.serve` with a `websocket` handler) as
 * an echo server: the peer Sluice-on-Bun is compared with.
 *
 * @module
 */

import process from "node:process";
import { bun } from "../lib/bun_api.ts";

// Exit normally on SIGTERM, so that `bun --cpu-prof` writes its profile.
process.on("SIGTERM", () => process.exit(0));

const server = bun().serve({
  port: 0,
  hostname: "127.0.0.1",
  fetch(request, server) {
    if (server.upgrade(request)) return undefined;
    return new Response("Upgrade required", { status: 426 });
  },
  websocket: {
    // Same limit as Sluice's default maxMessageSize.
    maxPayloadLength: 16 * 1024 * 1024,
    message(ws, message) {
      ws.send(message);
    },
  },
});
console.log(JSON.stringify({ port: server.port }));
