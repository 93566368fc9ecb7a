/**
 * Server helpers shared by the integration tests: an echo handler and a
 * fresh loopback server per test body, always shut down.
 *
 * @module
 */

import {
  serve,
  type ServeOptions,
  type Server,
  type WebSocketConnection,
  type WebSocketHandlers,
} from "../../mod.ts";
import { within } from "../_watch.ts";

/** An echo handler: every message goes back as it came. */
export const echo: WebSocketHandlers<unknown> = {
  message(ws, data) {
    ws.send(data);
  },
};

/** Runs `body` against a fresh server on loopback and always shuts it down. */
export async function withServer<Data = undefined>(
  options: Omit<ServeOptions<Data>, "port" | "hostname">,
  handler: WebSocketHandlers<Data> | ((ws: WebSocketConnection<Data>) => void),
  body: (server: Server, port: number) => Promise<void>,
): Promise<void> {
  const server = await serve<Data>({ ...options, port: 0, hostname: "127.0.0.1" }, handler);
  try {
    await body(server, server.addr.port);
  } finally {
    await within(server.shutdown(), 10_000, "server shutdown");
  }
}
