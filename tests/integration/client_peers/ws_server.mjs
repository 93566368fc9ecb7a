// An interop peer: npm `ws` server on Node. Behaviour shared by every peer in
// this folder (see peers.ts): prints {"port":N} as its first stdout line, then
// one JSON line per event; echoes each message with the same type and follows
// it with a JSON text report of what arrived; "CMD close <code|none> [reason]"
// makes it close; it selects the first offered subprotocol it supports.
// It exits when stdin closes, so it cannot outlive the test that started it.
import { createHash } from "node:crypto";
import { WebSocketServer } from "ws";

const SUPPORTED = ["sluice.v1", "sluice.v2"];
const MAX = 64 * 1024 * 1024;

function report(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

const server = new WebSocketServer({
  host: "127.0.0.1",
  port: 0,
  maxPayload: MAX,
  perMessageDeflate: false,
  handleProtocols(offered) {
    for (const protocol of offered) if (SUPPORTED.includes(protocol)) return protocol;
    return false;
  },
});

server.on("connection", (ws, req) => {
  const id = new URL(req.url, "http://x").searchParams.get("id") ?? "";
  report({ event: "open", id, protocol: ws.protocol });
  ws.on("message", (data, isBinary) => {
    if (!isBinary) {
      const text = data.toString("utf8");
      if (text.startsWith("CMD ")) return command(ws, text);
      ws.send(text);
    } else {
      ws.send(data, { binary: true });
    }
    ws.send(JSON.stringify({
      kind: isBinary ? "binary" : "text",
      length: data.length,
      sha256: createHash("sha256").update(data).digest("hex"),
    }));
  });
  ws.on("close", (code, reason) => {
    report({ event: "close", id, code, reason: reason.toString("utf8") });
  });
  ws.on("error", (err) => report({ event: "error", id, message: err.message }));
});

function command(ws, text) {
  const [, verb, code, ...reason] = text.split(" ");
  if (verb === "close") {
    if (code === "none") ws.close();
    else ws.close(Number(code), reason.join(" "));
  }
}

server.on("listening", () => report({ port: server.address().port }));
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
