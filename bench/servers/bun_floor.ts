/**
 * The floor for any WebSocket server on Bun's TCP API (handshake and idle
 * scenarios only): each connection gets one fixed `101` answer to its first
 * `data` callback, whatever it asked, written from that callback; later
 * bytes are dropped. No parsing, no key, no frames: what is left is Bun's
 * socket work and what Bun keeps per open connection. Sluice's own cost is
 * what it adds to this.
 *
 * @module
 */

import process from "node:process";
import { bun } from "../lib/bun_api.ts";
import { FLOOR_RESPONSE } from "./floor_response.ts";

// Exit normally on SIGTERM, so that `bun --cpu-prof` writes its profile.
process.on("SIGTERM", () => process.exit(0));

const listener = bun().listen<{ answered: boolean }>({
  port: 0,
  hostname: "127.0.0.1",
  socket: {
    open(socket) {
      socket.data = { answered: false };
      socket.setNoDelay(true);
    },
    data(socket) {
      if (socket.data.answered) return;
      socket.data.answered = true;
      socket.write(FLOOR_RESPONSE);
    },
    drain() {},
  },
});
console.log(JSON.stringify({ port: listener.port }));
