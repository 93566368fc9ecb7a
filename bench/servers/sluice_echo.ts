/**
 * Sluice echo server for the benchmark; runs on Deno and Bun. Prints one JSON
 * line `{"port":N}` once listening, then echoes every message until killed.
 *
 * @module
 */

import { serve } from "../../mod.ts";

const server = await serve({ port: 0, hostname: "127.0.0.1" }, {
  message(ws, data) {
    ws.send(data);
  },
});
console.log(JSON.stringify({ port: server.addr.port }));
