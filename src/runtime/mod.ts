/**
 * Picks the adapter for the runtime we are running on, so that code above
 * this layer never asks which runtime it is on.
 *
 * @module
 */

import { bunAdapter } from "./bun.ts";
import { denoAdapter } from "./deno.ts";
import type { RuntimeAdapter } from "./transport.ts";

export type {
  ConnectOptions,
  Listener,
  ListenOptions,
  NetAddress,
  RuntimeAdapter,
  TlsServerOptions,
  Transport,
} from "./transport.ts";
export { bunAdapter } from "./bun.ts";
export { denoAdapter } from "./deno.ts";
export { transportReadable, transportWritable } from "./streams.ts";

/**
 * Returns the adapter for the current runtime. Throws on runtimes Sluice does
 * not support (Node.js, browsers) rather than failing later on a missing API.
 *
 * @example Connect wherever we run
 * ```ts ignore
 * import { currentRuntime } from "./mod.ts";
 *
 * const conn = await currentRuntime().connect({ hostname: "127.0.0.1", port: 8080 });
 * ```
 */
export function currentRuntime(): RuntimeAdapter {
  const global = globalThis as { Deno?: { version?: { deno?: unknown } }; Bun?: unknown };
  if (typeof global.Deno?.version?.deno === "string") return denoAdapter;
  if (typeof global.Bun === "object" && global.Bun !== null) return bunAdapter;
  throw new Error(
    "Cannot pick a runtime adapter: Sluice runs on Deno or Bun, and neither was detected.",
  );
}
