/**
 * What the three example apps have in common: each owns a WebSocket path, a
 * few HTTP routes and one page, and `start.ts` puts them all behind one
 * `serve()` call. An upgrade request is routed by its path to one app, whose
 * `upgrade()` checks it and returns the connection's {@linkcode Session}; the
 * server's handlers just call that session.
 *
 * @module
 */

import type { Message, Server, UpgradeRequestInfo, WebSocketConnection } from "../mod.ts";

/** One connection's state and behaviour, made by its app's `upgrade()`. */
export interface Session {
  /** The connection opened. */
  open(ws: SessionSocket): void;
  /** A message arrived. */
  message(ws: SessionSocket, data: Message): void;
  /** The connection closed (subscriptions are already gone). */
  close(ws: SessionSocket, code: number, reason: string): void;
}

/** A connection of the examples server: its data is its session. */
export type SessionSocket = WebSocketConnection<Session>;

/** One example app. */
export interface ExampleApp {
  /** Short name, e.g. "chat". */
  readonly name: string;
  /** The WebSocket path, e.g. "/chat". */
  readonly path: string;
  /** The page's file name in `examples/`, served at `/<name>`, e.g. "chat.html". */
  readonly page: string;
  /** One line for the index page. */
  readonly description: string;
  /** Called once the server runs (before any upgrade): timers start here. */
  attach(server: Server): void;
  /** Checks an upgrade request for `path`; throws `HandshakeError` to refuse it. */
  upgrade(request: UpgradeRequestInfo): Session;
  /** Answers an HTTP request under `/api/`, or returns `null` if it is not this app's. */
  fetch(request: Request, url: URL): Response | null;
  /** Stops timers. */
  stop(): void;
}

/** A JSON response. */
export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" },
  });
}

/**
 * A client's message as a JSON object, or `null` when it is not one (binary,
 * not JSON, not an object): apps answer those with an error message.
 */
export function parseJson(data: Message): Record<string, unknown> | null {
  if (typeof data !== "string") return null;
  try {
    const value: unknown = JSON.parse(data);
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? value as Record<string, unknown>
      : null;
  } catch {
    return null;
  }
}

/** Sends `{ type: "error", message }`. */
export function sendError(ws: SessionSocket, message: string): void {
  ws.send(JSON.stringify({ type: "error", message }));
}
