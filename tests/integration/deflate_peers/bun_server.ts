/**
 * A server peer: Bun's built-in server (`Bun.serve` with `websocket`), run
 * as `bun bun_server.ts [SPEC]` (also under `bun test`, as a subprocess like
 * every other peer). SPEC is JSON `{compression?: boolean, takeover?: boolean}`.
 * `compression` (default true) is `perMessageDeflate: true`, with which Bun
 * always answers `server_no_context_takeover; client_no_context_takeover`
 * (uWebSockets' shared compressor); `takeover: true` asks for dedicated
 * compressors instead, which keep the context. Bun compresses a message only
 * when `send()` is told to, so every echo asks. Same behaviour as `ws_server.mjs`: prints
 * `{"port":N}` first, then open and close events per connection; echoes every
 * message with its type; "CLOSE <code> <reason>" makes it close. Exits when
 * stdin closes.
 *
 * `@types/bun` is not a dependency (this file must pass `deno check`), so the
 * few Bun types used are declared here.
 *
 * @module
 */

import process from "node:process";

interface BunServerWebSocket {
  data: { id: string; extensions: string };
  send(data: string | Uint8Array, compress?: boolean): number;
  close(code?: number, reason?: string): void;
}

interface BunServer {
  readonly port: number;
  upgrade(request: Request, options: { data: { id: string; extensions: string } }): boolean;
}

interface BunServeApi {
  serve(options: {
    hostname: string;
    port: number;
    fetch(request: Request, server: BunServer): Response | undefined;
    websocket: {
      maxPayloadLength: number;
      perMessageDeflate: boolean | { compress: string; decompress: string };
      idleTimeout: number;
      open(ws: BunServerWebSocket): void;
      message(ws: BunServerWebSocket, message: string | Uint8Array): void;
      close(ws: BunServerWebSocket, code: number, reason: string): void;
    };
  }): BunServer;
}

function report(event: Record<string, unknown>): void {
  console.log(JSON.stringify(event));
}

const spec: { compression?: boolean; takeover?: boolean } = JSON.parse(process.argv[2] ?? "{}");
const compression = spec.compression !== false;
const bun = (globalThis as unknown as { Bun: BunServeApi }).Bun;
const server = bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  fetch(request, server) {
    const id = new URL(request.url).searchParams.get("id") ?? "";
    // Bun decides the response's extensions itself and does not expose them;
    // the offer is recorded, the client reports what was agreed.
    const extensions = request.headers.get("sec-websocket-extensions") ?? "";
    if (server.upgrade(request, { data: { id, extensions } })) return undefined;
    return new Response("Expected a WebSocket upgrade", { status: 400 });
  },
  websocket: {
    maxPayloadLength: 64 * 1024 * 1024,
    perMessageDeflate: compression && spec.takeover
      ? { compress: "dedicated", decompress: "dedicated" }
      : compression,
    idleTimeout: 0,
    open(ws) {
      report({ event: "open", id: ws.data.id, offered: ws.data.extensions });
    },
    message(ws, message) {
      if (typeof message === "string" && message.startsWith("CLOSE ")) {
        const [, code, ...reason] = message.split(" ");
        ws.close(Number(code), reason.join(" "));
        return;
      }
      ws.send(message, compression);
    },
    close(ws, code, reason) {
      report({ event: "close", id: ws.data.id, code, reason });
    },
  },
});
report({ port: server.port });
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
