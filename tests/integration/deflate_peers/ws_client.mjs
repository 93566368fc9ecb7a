// A client peer: npm `ws` on Node, run as `node ws_client.mjs SPEC`.
//
// Same contract as whatwg_client.ts (SPEC and the one JSON line it prints are
// described there). With `compression` (the default) it offers
// permessage-deflate with a threshold of 0, so that even the small messages
// are compressed; `ca` is a CA file it trusts through ws's `ca` option.
import { readFileSync } from "node:fs";
import WebSocket from "ws";
import { Inbox, runCases } from "./scenario.mjs";

const spec = JSON.parse(process.argv[2]);
const report = { runtime: "node-ws", opened: false };

const deadline = setTimeout(() => {
  report.error = `${report.error ?? ""}Timed out after 45 s`;
  console.log(JSON.stringify(report));
  process.exit(1);
}, 45_000);

const inbox = new Inbox();
let errorMessage;
const ws = new WebSocket(spec.url, {
  perMessageDeflate: spec.compression === false ? false : { threshold: 0 },
  maxPayload: 64 * 1024 * 1024,
  ca: spec.ca === undefined ? undefined : readFileSync(spec.ca),
});
const opened = new Promise((resolve) => {
  ws.on("open", () => resolve(true));
  ws.on("close", () => resolve(false));
});
const closed = new Promise((resolve) => {
  ws.on("close", (code, reason) => {
    inbox.fail(new Error(`closed with ${code} while waiting for a message`));
    resolve({ code, reason: reason.toString("utf8") });
  });
});
ws.on("error", (err) => {
  errorMessage ??= err.message;
});
ws.on("message", (data, isBinary) => {
  inbox.push(isBinary ? new Uint8Array(data) : data.toString("utf8"));
});

try {
  report.opened = await opened;
  if (report.opened) {
    report.extensions = ws.extensions;
    report.cases = await runCases(spec.cases, (m) => ws.send(m), (ms) => inbox.next(ms));
    if (spec.close.by === "client") ws.close(spec.close.code, spec.close.reason);
    else ws.send(`CLOSE ${spec.close.code} ${spec.close.reason}`);
  }
  const { code, reason } = await closed;
  // ws has no wasClean; a close frame was received if the code is not 1006.
  report.close = { code, reason, wasClean: code !== 1006 };
} catch (err) {
  errorMessage ??= err.message;
}
if (errorMessage !== undefined) report.error = errorMessage;
clearTimeout(deadline);
console.log(JSON.stringify(report));
process.exit(0);
