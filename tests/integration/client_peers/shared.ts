/**
 * What the TypeScript interop peers share: the subprotocols they support, the
 * command format and the event lines they print.
 *
 * @module
 */

/** Subprotocols every peer supports; it selects the first one the client offers. */
export const SUPPORTED = ["sluice.v1", "sluice.v2"];

/** A line a peer reports: `{port}` first, then open/close events. */
export type PeerEvent =
  | { port: number }
  | { event: "open"; id: string; protocol: string }
  | { event: "close"; id: string; code: number; reason: string }
  | { event: "error"; id: string; message: string };

/** Prints an event as one JSON line on stdout (the subprocess side channel). */
export function report(event: PeerEvent): void {
  console.log(JSON.stringify(event));
}

/** Runs `CMD close <code|none> [reason]`. */
export function command(text: string, close: (code?: number, reason?: string) => void): void {
  const [, verb, code, ...reason] = text.split(" ");
  if (verb !== "close") return;
  if (code === "none") close();
  else close(Number(code), reason.join(" "));
}

/** Lowercase hex SHA-256 of the bytes. */
export async function sha256Hex(bytes: ArrayBuffer | Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}
