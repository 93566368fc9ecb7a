/**
 * A Sluice server that, on the first message, sends text, a Blob and text,
 * then closes with 4003 "after blob". Prints `{"port": n}` once listening and
 * exits once the connection is closed.
 *
 * Run: `deno run --allow-all blob_close_server.ts` or `bun blob_close_server.ts`.
 */

import { serve } from "../../../mod.ts";

const server = await serve({ port: 0, hostname: "127.0.0.1", closeTimeout: 2000 }, {
  message(ws) {
    ws.send("a");
    ws.send(new Blob([new Uint8Array([1, 2, 3])]));
    ws.send("z");
    ws.close(4003, "after blob");
  },
  close() {
    server.shutdown().then(() => console.log(JSON.stringify({ done: true })));
  },
});
console.log(JSON.stringify({ port: server.addr.port }));
