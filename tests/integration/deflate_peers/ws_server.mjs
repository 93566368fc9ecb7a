// A server peer: npm `ws` on Node, run as `node ws_server.mjs [SPEC]`.
//
// SPEC is JSON {compression?: boolean} (default true: permessage-deflate with
// ws's defaults and a threshold of 0, so that small messages are compressed
// too). Prints {"port":N} first, then {"event":"open",id,extensions} and
// {"event":"close",id,code,reason} per connection (`id` is the request's
// `?id=` parameter). Echoes every message with its type; the text message
// "CLOSE <code> <reason>" makes it close the connection instead. Exits when
// its stdin closes, so it cannot outlive the test that started it.
import { WebSocketServer } from "ws";

const spec = JSON.parse(process.argv[2] ?? "{}");

function report(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

const server = new WebSocketServer({
  host: "127.0.0.1",
  port: 0,
  maxPayload: 64 * 1024 * 1024,
  perMessageDeflate: spec.compression === false ? false : { threshold: 0 },
});

// The agreed extension, as sent in the 101 response.
const agreed = new WeakMap();
server.on("headers", (headers, request) => {
  const line = headers.find((h) => h.toLowerCase().startsWith("sec-websocket-extensions:"));
  agreed.set(request, line === undefined ? "" : line.slice(line.indexOf(":") + 1).trim());
});

server.on("connection", (ws, request) => {
  const id = new URL(request.url, "http://x").searchParams.get("id") ?? "";
  report({ event: "open", id, extensions: agreed.get(request) ?? "" });
  ws.on("message", (data, isBinary) => {
    if (!isBinary) {
      const text = data.toString("utf8");
      if (text.startsWith("CLOSE ")) {
        const [, code, ...reason] = text.split(" ");
        ws.close(Number(code), reason.join(" "));
        return;
      }
      ws.send(text);
    } else {
      ws.send(data, { binary: true });
    }
  });
  ws.on("close", (code, reason) => {
    report({ event: "close", id, code, reason: reason.toString("utf8") });
  });
  ws.on("error", (err) => report({ event: "error", id, message: err.message }));
});

server.on("listening", () => report({ port: server.address().port }));
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
