/**
 * An interop peer: Deno's built-in server (`Deno.serve` +
 * `Deno.upgradeWebSocket`). Imported in-process by tests running on Deno, and
 * run as `deno run --allow-net deno_server.ts` by tests running on Bun. The
 * behaviour every peer shares is described in `peers.ts`.
 *
 * @module
 */

import { command, type PeerEvent, report as printEvent, sha256Hex, SUPPORTED } from "./shared.ts";

/** A running in-process peer. */
export interface LocalPeer {
  /** The bound port on 127.0.0.1. */
  port: number;
  /** Stops the server. */
  stop(): Promise<void>;
}

/** Starts the peer on 127.0.0.1 with a free port; events go to `report`. */
export function startDenoPeer(report: (event: PeerEvent) => void): Promise<LocalPeer> {
  return new Promise((resolve) => {
    const server = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      onListen: ({ port }) => resolve({ port, stop: () => server.shutdown() }),
    }, (request) => {
      const id = new URL(request.url).searchParams.get("id") ?? "";
      const offered = (request.headers.get("sec-websocket-protocol") ?? "")
        .split(",").map((p) => p.trim()).filter((p) => p !== "");
      const protocol = offered.find((p) => SUPPORTED.includes(p));
      const { socket, response } = Deno.upgradeWebSocket(request, {
        protocol,
        idleTimeout: 0,
      });
      socket.binaryType = "arraybuffer";
      // socket.protocol is still "" in onopen on Deno 2.x: report what we selected.
      socket.onopen = () => report({ event: "open", id, protocol: protocol ?? "" });
      socket.onmessage = async (event: MessageEvent<string | ArrayBuffer>) => {
        const data = event.data;
        if (typeof data === "string" && data.startsWith("CMD ")) {
          return command(data, (code, reason) => socket.close(code, reason));
        }
        socket.send(data);
        const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
        socket.send(JSON.stringify({
          kind: typeof data === "string" ? "text" : "binary",
          length: bytes.byteLength,
          sha256: await sha256Hex(bytes),
        }));
      };
      socket.onclose = (event) => {
        report({ event: "close", id, code: event.code, reason: event.reason });
      };
      return response;
    });
  });
}

if (import.meta.main) {
  const peer = await startDenoPeer(printEvent);
  printEvent({ port: peer.port });
  // Exit once stdin closes: the test that started us is gone.
  for await (const _ of Deno.stdin.readable) { /* discard */ }
  Deno.exit(0);
}
