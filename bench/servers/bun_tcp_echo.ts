/**
 * Raw TCP echo on Bun, the ceiling: each `data` callback writes the bytes
 * straight back (what the kernel does not take waits for `drain`).
 *
 * @module
 */

import process from "node:process";
import { bun, type BunSocket } from "../lib/bun_api.ts";

// Exit normally on SIGTERM, so that `bun --cpu-prof` writes its profile.
process.on("SIGTERM", () => process.exit(0));

interface State {
  queue: Uint8Array[];
}

function flush(socket: BunSocket<State>): void {
  const queue = socket.data.queue;
  while (queue.length > 0) {
    const chunk = queue[0];
    const n = socket.write(chunk);
    if (n < 0) return;
    if (n < chunk.byteLength) {
      queue[0] = chunk.subarray(n);
      return;
    }
    queue.shift();
  }
}

const listener = bun().listen<State>({
  port: 0,
  hostname: "127.0.0.1",
  socket: {
    open(socket) {
      socket.data = { queue: [] };
      socket.setNoDelay(true);
    },
    data(socket, data) {
      const queue = socket.data.queue;
      if (queue.length > 0) {
        // Bun may reuse the buffer after the callback: keep a copy (a Buffer's
        // slice() would be a view).
        queue.push(new Uint8Array(data));
        return;
      }
      const n = socket.write(data);
      if (n >= 0 && n < data.byteLength) queue.push(new Uint8Array(data.subarray(n)));
    },
    drain(socket) {
      flush(socket);
    },
  },
});
console.log(JSON.stringify({ port: listener.port }));
