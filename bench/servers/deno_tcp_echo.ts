/**
 * Raw TCP echo on Deno, the ceiling: a plain `conn.read`/`conn.write` loop
 * that sends back every byte (the load generator's WebSocket frames come back
 * still masked, which it accepts for this target).
 *
 * @module
 */

/** Same as Sluice's largest read buffer, so the ceiling is not held back by it. */
const BUFFER_SIZE = 256 * 1024;

async function echo(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(BUFFER_SIZE);
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      let offset = 0;
      while (offset < n) offset += await conn.write(buf.subarray(offset, n));
    }
  } catch {
    // The load generator drops connections at the end of each scenario.
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

const listener = Deno.listen({ port: 0, hostname: "127.0.0.1" });
console.log(JSON.stringify({ port: (listener.addr as Deno.NetAddr).port }));
for await (const conn of listener) {
  conn.setNoDelay(true);
  echo(conn);
}
