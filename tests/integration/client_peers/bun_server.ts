/**
 * An interop peer: Bun's built-in server (`Bun.serve` with `websocket`).
 * Imported in-process by tests running on Bun, and run as
 * `bun bun_server.ts` by tests running on Deno. The behaviour every peer
 * shares is described in `peers.ts`.
 *
 * `@types/bun` is not a dependency (this file must pass `deno check`), so the
 * few Bun types used are declared here.
 *
 * @module
 */

import { command, type PeerEvent, report as printEvent, sha256Hex, SUPPORTED } from "./shared.ts";
import type { LocalPeer } from "./deno_server.ts";
import process from "node:process";

interface BunServerWebSocket {
  data: { id: string };
  readonly protocol?: string;
  send(data: string | Uint8Array): number;
  close(code?: number, reason?: string): void;
}

interface BunServer {
  readonly port: number;
  upgrade(
    request: Request,
    options: { data: { id: string }; headers?: Record<string, string> },
  ): boolean;
  stop(closeActiveConnections?: boolean): Promise<void>;
}

interface BunServeApi {
  serve(options: {
    hostname: string;
    port: number;
    fetch(request: Request, server: BunServer): Response | undefined;
    websocket: {
      maxPayloadLength: number;
      perMessageDeflate: boolean;
      idleTimeout: number;
      open(ws: BunServerWebSocket): void;
      message(ws: BunServerWebSocket, message: string | Uint8Array): void | Promise<void>;
      close(ws: BunServerWebSocket, code: number, reason: string): void;
    };
  }): BunServer;
}

/** Starts the peer on 127.0.0.1 with a free port; events go to `report`. */
export function startBunPeer(report: (event: PeerEvent) => void): Promise<LocalPeer> {
  const bun = (globalThis as unknown as { Bun: BunServeApi }).Bun;
  const protocols = new WeakMap<BunServerWebSocket, string>();
  const selected = new Map<string, string>();
  const server = bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(request, server) {
      const id = new URL(request.url).searchParams.get("id") ?? "";
      const offered = (request.headers.get("sec-websocket-protocol") ?? "")
        .split(",").map((p) => p.trim()).filter((p) => p !== "");
      const protocol = offered.find((p) => SUPPORTED.includes(p));
      if (protocol !== undefined) selected.set(id, protocol);
      // Bun selects the first offered subprotocol unless told otherwise; an
      // empty value makes it send no Sec-WebSocket-Protocol header at all.
      const headers = { "Sec-WebSocket-Protocol": protocol ?? "" };
      if (server.upgrade(request, { data: { id }, headers })) return undefined;
      return new Response("Expected a WebSocket upgrade", { status: 400 });
    },
    websocket: {
      maxPayloadLength: 64 * 1024 * 1024,
      perMessageDeflate: false,
      idleTimeout: 0,
      open(ws) {
        protocols.set(ws, selected.get(ws.data.id) ?? "");
        report({ event: "open", id: ws.data.id, protocol: protocols.get(ws) ?? "" });
      },
      async message(ws, message) {
        if (typeof message === "string" && message.startsWith("CMD ")) {
          return command(message, (code, reason) => ws.close(code, reason));
        }
        ws.send(message);
        const bytes = typeof message === "string" ? new TextEncoder().encode(message) : message;
        ws.send(JSON.stringify({
          kind: typeof message === "string" ? "text" : "binary",
          length: bytes.byteLength,
          sha256: await sha256Hex(bytes),
        }));
      },
      close(ws, code, reason) {
        report({ event: "close", id: ws.data.id, code, reason });
      },
    },
  });
  return Promise.resolve({ port: server.port, stop: () => server.stop(true) });
}

if (import.meta.main) {
  const peer = await startBunPeer(printEvent);
  printEvent({ port: peer.port });
  // Exit once stdin closes: the test that started us is gone.
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}
