// @ts-check
/**
 * Runs the interop scenario with a real client and prints its report as one
 * JSON line: `ws_client.mjs global <url>` uses the runtime's built-in
 * WebSocket (Deno, Bun), `ws_client.mjs ws <url>` npm `ws` (Node).
 *
 * @module
 */

import process from "node:process";
import { runScenario } from "./echo_scenario.mjs";

const [mode, url] = process.argv.slice(2);
try {
  const WebSocketClass = mode === "ws" ? (await import("ws")).WebSocket : globalThis.WebSocket;
  const report = await runScenario(WebSocketClass, url);
  console.log(JSON.stringify(report));
  process.exit(0);
} catch (error) {
  console.log(JSON.stringify({ failed: String(error instanceof Error ? error.stack : error) }));
  process.exit(1);
}
