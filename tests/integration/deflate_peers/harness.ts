/**
 * In-process helpers for the wss:// and permessage-deflate suites:
 *
 * - {@linkcode startSluiceEcho}: a Sluice echo server that records, per
 *   connection, what it negotiated, a fingerprint of every message it received
 *   and how the connection closed; `CLOSE <code> <reason>` makes it close,
 *   `PING <payload>` makes it send a ping.
 * - {@linkcode countingProxy}: a TCP relay on `node:net` that counts the bytes
 *   crossing it each way, to see what compression really put on the wire.
 * - {@linkcode fingerprintsOf}: what the Sluice server should have recorded
 *   for a list of `scenario.mjs` cases.
 *
 * @module
 */

import net from "node:net";
import { type Message, serve, type ServeOptions, type Server } from "../../../mod.ts";
import { fingerprint, messagesFor } from "./scenario.mjs";

/** A message as the server saw it. */
export interface Fingerprint {
  kind: string;
  length: number;
  sha256: string;
}

/** What the echo server recorded about one connection. */
export interface ConnectionRecord {
  /** The `Sec-WebSocket-Extensions` it agreed (`ws.extensions`). */
  extensions: string;
  /** The offer the client sent. */
  offered: string | null;
  received: Fingerprint[];
  /** Set once the connection closed: the code and reason the server saw. */
  close?: { code: number; reason: string };
  /** The connection's error, if it failed. */
  error?: string;
}

/** A running Sluice echo server. */
export interface SluiceEcho {
  readonly server: Server;
  readonly url: string;
  readonly port: number;
  /** Records by the `?id=` of the request URL. */
  readonly connections: Map<string, ConnectionRecord>;
  /** Waits (at most `ms`) until connection `id` has closed and returns its record. */
  closed(id: string, ms?: number): Promise<ConnectionRecord>;
  stop(): Promise<void>;
}

/** Starts a Sluice echo server on 127.0.0.1 with a free port and the given options. */
export async function startSluiceEcho(options: ServeOptions = {}): Promise<SluiceEcho> {
  const connections = new Map<string, ConnectionRecord>();
  const offers = new Map<string, string | null>();
  const idOf = (url: string) => new URL(url).searchParams.get("id") ?? "";
  const server = await serve({
    hostname: "127.0.0.1",
    port: 0,
    maxMessageSize: 64 * 1024 * 1024,
    ...options,
    onUpgrade(request) {
      offers.set(
        request.url.searchParams.get("id") ?? "",
        request.headers.get("sec-websocket-extensions"),
      );
    },
  }, {
    open(ws) {
      const id = idOf(ws.url);
      connections.set(id, {
        extensions: ws.extensions,
        offered: offers.get(id) ?? null,
        received: [],
      });
    },
    message(ws, data: Message) {
      const record = connections.get(idOf(ws.url))!;
      if (typeof data === "string" && data.startsWith("CLOSE ")) {
        const [, code, ...reason] = data.split(" ");
        ws.close(Number(code), reason.join(" "));
        return;
      }
      if (typeof data === "string" && data.startsWith("PING ")) {
        ws.ping(data.slice(5));
        return;
      }
      record.received.push(fingerprint(data));
      ws.send(data);
    },
    error(ws, error) {
      const record = connections.get(idOf(ws.url));
      if (record !== undefined) record.error ??= error.message;
    },
    close(ws, code, reason) {
      const record = connections.get(idOf(ws.url));
      if (record !== undefined) record.close = { code, reason };
    },
  });
  return {
    server,
    url: server.url,
    port: server.addr.port,
    connections,
    async closed(id, ms = 10_000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const record = connections.get(id);
        if (record?.close !== undefined) return record;
        if (Date.now() > deadline) {
          throw new Error(
            `Connection ${id} did not close within ${ms} ms: ${JSON.stringify(record ?? null)}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    },
    stop: () => server.shutdown(),
  };
}

/** The fingerprints of every message of `cases`, in order. */
export function fingerprintsOf(cases: string[]): Fingerprint[] {
  return cases.flatMap((name) => messagesFor(name).map((m: string | Uint8Array) => fingerprint(m)));
}

/** A TCP relay that counts bytes. */
export interface CountingProxy {
  readonly port: number;
  /** Bytes from clients to the target so far. */
  readonly up: number;
  /** Bytes from the target to clients so far. */
  readonly down: number;
  close(): Promise<void>;
}

/** Relays every connection on a free port of 127.0.0.1 to `targetPort`, counting bytes. */
export function countingProxy(targetPort: number): Promise<CountingProxy> {
  let up = 0;
  let down = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const target = net.connect({ host: "127.0.0.1", port: targetPort });
    sockets.add(client);
    sockets.add(target);
    client.setNoDelay(true);
    target.setNoDelay(true);
    client.on("data", (chunk: Uint8Array) => {
      up += chunk.length;
      if (!target.write(chunk)) client.pause();
    });
    target.on("drain", () => client.resume());
    target.on("data", (chunk: Uint8Array) => {
      down += chunk.length;
      if (!client.write(chunk)) target.pause();
    });
    client.on("drain", () => target.resume());
    client.on("end", () => target.end());
    target.on("end", () => client.end());
    const destroyBoth = () => {
      client.destroy();
      target.destroy();
    };
    client.on("error", destroyBoth);
    target.on("error", destroyBoth);
    client.on("close", () => sockets.delete(client));
    target.on("close", () => sockets.delete(target));
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address() as net.AddressInfo;
      resolve({
        port: address.port,
        get up() {
          return up;
        },
        get down() {
          return down;
        },
        close() {
          for (const socket of sockets) socket.destroy();
          return new Promise<void>((done) => server.close(() => done()));
        },
      });
    });
  });
}
