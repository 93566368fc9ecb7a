/**
 * The floor for any WebSocket server on Deno's TCP API (handshake and idle
 * scenarios only): each connection gets one fixed `101` answer to its first
 * read, whatever it asked, and then keeps one read pending (with a 512-byte
 * buffer, Sluice's smallest) until the peer leaves. No parsing, no key, no
 * frames: what is left is Deno's accept, read, write and close, and what
 * Deno keeps per open connection. Sluice's own cost is what it adds to this.
 *
 * @module
 */

import { FLOOR_RESPONSE } from "./floor_response.ts";

async function hold(conn: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(512);
  try {
    conn.setNoDelay(true);
    if ((await conn.read(buf)) === null) return;
    await conn.write(FLOOR_RESPONSE);
    while ((await conn.read(buf)) !== null);
  } catch {
    // The load generator resets its connections.
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
console.log(JSON.stringify({ port: listener.addr.port }));
for await (const conn of listener) hold(conn);
