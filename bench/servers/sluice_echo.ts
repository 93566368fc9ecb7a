/**
 * Sluice echo server for the benchmark; runs on Deno and Bun. Prints one JSON
 * line `{"port":N}` once listening, then echoes every message until killed.
 *
 * @module
 */

import process from "node:process";
import { serve } from "../../mod.ts";

// Exit normally on SIGTERM, so that `bun --cpu-prof` writes its profile.
process.on("SIGTERM", () => process.exit(0));

const server = await serve({ port: 0, hostname: "127.0.0.1" }, {
  message(ws, data) {
    ws.send(data);
  },
});
console.log(JSON.stringify({ port: server.addr.port }));
