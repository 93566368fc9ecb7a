/**
 * Sluice broadcast server for the benchmark (Deno and Bun): a connection to
 * `/sub` subscribes to one topic, every message on `/pub` is published to
 * it with `ws.publish` (encoded once). `--compress` (or BENCH_BROADCAST_COMPRESS=1) accepts permessage-deflate
 * with `server_no_context_takeover`, so each message is compressed once.
 * Prints `{"port":N}` once listening.
 *
 * @module
 */

import process from "node:process";
import { HandshakeError, serve } from "../../mod.ts";

process.on("SIGTERM", () => process.exit(0));

const compress = process.argv.includes("--compress") ||
  process.env.BENCH_BROADCAST_COMPRESS === "1";
const server = await serve<"sub" | "pub">({
  port: 0,
  hostname: "127.0.0.1",
  compression: compress ? { serverNoContextTakeover: true } : false,
  onUpgrade(request) {
    const path = request.url.pathname;
    if (path === "/sub") return { data: "sub" };
    if (path === "/pub") return { data: "pub" };
    throw new HandshakeError(404, "Not found");
  },
}, {
  open(ws) {
    if (ws.data === "sub") ws.subscribe("broadcast");
  },
  message(ws, data) {
    if (ws.data === "pub") ws.publish("broadcast", data);
  },
});
console.log(JSON.stringify({ port: server.addr.port }));
