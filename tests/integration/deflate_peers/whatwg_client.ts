/**
 * A client peer: the runtime's built-in WHATWG `WebSocket` (Deno's or Bun's),
 * run as `deno run -A whatwg_client.ts SPEC` or `bun whatwg_client.ts SPEC`.
 *
 * SPEC is a JSON {@linkcode ClientSpec}. The peer connects, runs the cases of
 * `scenario.mjs` (each message echoed and compared), closes as asked and
 * prints one JSON {@linkcode ClientReport} line, then exits. It trusts extra
 * CAs only through its runtime's own mechanism (`DENO_CERT` for Deno,
 * `NODE_EXTRA_CA_CERTS` for Bun), set by the test in its environment.
 *
 * @module
 */

import process from "node:process";
import { Inbox, runCases } from "./scenario.mjs";

/** What the test asks a client peer to do. */
export interface ClientSpec {
  url: string;
  cases: string[];
  /** Who starts the closing handshake, and with what. */
  close: { by: "client" | "server"; code: number; reason: string };
  /** Offer permessage-deflate (peers that can choose). @default {true} */
  compression?: boolean;
  /** A CA file to trust (peers whose API takes one: npm ws, Python). */
  ca?: string;
}

/** What a client peer prints. */
export interface ClientReport {
  runtime: string;
  opened: boolean;
  extensions?: string;
  cases?: { name: string; ok: boolean; count: number; error?: string }[];
  close?: { code: number; reason: string; wasClean: boolean };
  error?: string;
}

const spec: ClientSpec = JSON.parse(process.argv[2]);
const runtime = "Deno" in globalThis ? "deno" : "bun";
const report: ClientReport = { runtime, opened: false };

const deadline = setTimeout(() => {
  report.error = `${report.error ?? ""}Timed out after 45 s`;
  console.log(JSON.stringify(report));
  process.exit(1);
}, 45_000);

const inbox = new Inbox();
let errorMessage: string | undefined;
const ws = new WebSocket(spec.url);
ws.binaryType = "arraybuffer";
const opened = new Promise<boolean>((resolve) => {
  ws.onopen = () => resolve(true);
  ws.onclose = () => resolve(false);
});
const closed = new Promise<CloseEvent>((resolve) => {
  ws.addEventListener("close", (event) => {
    inbox.fail(new Error(`closed with ${event.code} while waiting for a message`));
    resolve(event);
  });
});
ws.onerror = (event) => {
  errorMessage ??= (event as ErrorEvent).message ?? "error event";
};
ws.onmessage = (event) => inbox.push(event.data);

try {
  report.opened = await opened;
  if (report.opened) {
    report.extensions = ws.extensions;
    report.cases = await runCases(
      spec.cases,
      (message: string | Uint8Array) => ws.send(message),
      (ms: number) => inbox.next(ms),
    );
    if (spec.close.by === "client") ws.close(spec.close.code, spec.close.reason);
    else ws.send(`CLOSE ${spec.close.code} ${spec.close.reason}`);
  }
  const event = await closed;
  report.close = { code: event.code, reason: event.reason, wasClean: event.wasClean };
} catch (err) {
  errorMessage ??= (err as Error).message;
}
if (errorMessage !== undefined) report.error = errorMessage;
clearTimeout(deadline);
console.log(JSON.stringify(report));
process.exit(0);
