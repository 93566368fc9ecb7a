/**
 * The Sluice command line: an echo/broadcast server and an interactive client.
 *
 * ```sh
 * deno run -A cli.ts serve --port 8080 --mode echo
 * bun run cli.ts connect ws://127.0.0.1:8080/ --header "Authorization: Bearer x"
 * ```
 *
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { createInterface } from "node:readline";
import { readFileSync, statSync } from "node:fs";
import { connect, HandshakeError, serve, type WebSocketConnection } from "./mod.ts";
import { CloseCode } from "./src/protocol/close_codes.ts";
import { serveStatic } from "./src/static_files.ts";
import {
  defaultWorkerCount,
  selfCommand,
  Supervisor,
  watchSupervisor,
  workerIndex,
} from "./src/workers.ts";

const HELP = `Sluice: RFC 6455 WebSockets for Deno and Bun.

Usage:
  sluice serve [options]          Run a WebSocket server
  sluice connect URL [options]    Connect, send stdin lines, print messages
  sluice --help                   Show this help

serve options:
  --port N                  Port to listen on (default 8080; 0 picks a free one)
  --hostname H              Interface to listen on (default 0.0.0.0)
  --mode MODE               echo: send every message back with its type, on any
                            path (default)
                            broadcast: the shape load tools compare servers with:
                            /echo echoes; a connection to /sub subscribes to one
                            topic; every message sent on /pub is published to all
                            /sub connections (not back to the publisher); other
                            paths get 404
  --max-message-size BYTES  Largest message; larger ones close with 1009 (default 16777216)
  --allow-origin ORIGIN     Allow browser connections from ORIGIN only (repeatable;
                            default: any origin)
  --cert FILE --key FILE    Serve wss:// with this PEM certificate chain and key
  --protocol P              Subprotocol the server speaks (repeatable)
  --compression             Accept permessage-deflate (RFC 7692) offers (broadcast
                            mode asks for server_no_context_takeover, so that each
                            published message is compressed once for everyone)
  --static DIR              Serve the files in DIR over plain HTTP on the same port
                            (GET and HEAD; / is DIR/index.html; nothing outside DIR,
                            no hidden files; other requests get 404). Without it a
                            plain HTTP request gets 426 Upgrade Required

  --workers N               Run N server processes on the same port (SO_REUSEPORT;
                            Linux spreads connections across them), restart any
                            that dies; 0 means one per core. Deno: needs
                            --allow-run; workers get --unstable-net
  --reuse-port              Listen with SO_REUSEPORT, so that other processes can
                            share the port (Deno: run with --unstable-net)
  --broker redis://H:P      Carry publishes to and from every process using the
                            same Redis (pub/sub across workers and hosts; at most
                            once across processes)

  Ctrl-C closes every connection with 1001 and exits (with --workers: stops every
  worker that way).

connect options:
  --header 'K: V'           Extra request header (repeatable)
  --protocol P              Subprotocol to offer (repeatable)
  --origin ORIGIN           Origin header to send
  --ca FILE                 Extra trusted CA certificate (PEM) for wss://
  --max-message-size BYTES  Largest message to accept (default 16777216)
  --compression             Offer permessage-deflate (RFC 7692)

  Each stdin line is sent as a text message; end of input closes with 1000.
  Text messages print as they are; binary ones as "[binary N bytes] <base64>".
  Exit status: 0 after a normal close (1000, or 1005 with no code), 1 after any
  other close code or a dropped connection, 2 for usage errors and failed
  handshakes.
`;

function fail(message: string, code = 2): never {
  process.stderr.write(`sluice: ${message}\n`);
  process.exit(code);
}

function positiveInt(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) fail(`${name} must be a non-negative integer, got ${value}`);
  return n;
}

const CLOSE_MEANINGS: Record<number, string> = {
  1000: "normal closure",
  1001: "going away",
  1002: "protocol error",
  1003: "unsupported data",
  1005: "no status code",
  1006: "abnormal closure (connection dropped)",
  1007: "invalid payload data",
  1008: "policy violation",
  1009: "message too big",
  1010: "mandatory extension",
  1011: "internal server error",
  1015: "TLS handshake failure",
};

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** What a connection does in broadcast mode, by path; `undefined` in echo mode. */
type BroadcastRole = "echo" | "sub" | "pub" | undefined;

/** The one topic of broadcast mode. */
const BROADCAST_TOPIC = "broadcast";

function broadcastRoute(request: { url: URL }): { data: BroadcastRole } {
  switch (request.url.pathname) {
    case "/echo":
      return { data: "echo" };
    case "/sub":
      return { data: "sub" };
    case "/pub":
      return { data: "pub" };
    default:
      throw new HandshakeError(
        404,
        `No such path: ${request.url.pathname} (use /echo, /sub or /pub)`,
      );
  }
}

async function runServe(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      port: { type: "string" },
      hostname: { type: "string" },
      mode: { type: "string" },
      "max-message-size": { type: "string" },
      "allow-origin": { type: "string", multiple: true },
      cert: { type: "string" },
      key: { type: "string" },
      protocol: { type: "string", multiple: true },
      compression: { type: "boolean" },
      workers: { type: "string" },
      "reuse-port": { type: "boolean" },
      broker: { type: "string" },
      static: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (values.static !== undefined) {
    let isDirectory = false;
    try {
      isDirectory = statSync(values.static).isDirectory();
    } catch (err) {
      fail(`cannot serve --static ${values.static}: ${(err as Error).message}`);
    }
    if (!isDirectory) fail(`--static ${values.static} is not a directory`);
  }
  const worker = workerIndex();
  if (values.workers !== undefined && worker === null) {
    return await runSupervisor(args, values);
  }
  if (values.broker !== undefined && !/^rediss?:\/\//.test(values.broker)) {
    fail(`--broker must be a redis:// URL, got ${values.broker}`);
  }
  // Only loaded when asked for: the Redis client is not needed otherwise.
  const broker = values.broker === undefined
    ? undefined
    : new (await import("./src/redis_broker.ts")).RedisBroker({ url: values.broker });
  const mode = values.mode ?? "echo";
  if (mode !== "echo" && mode !== "broadcast") {
    fail(`unknown --mode ${mode}: use echo or broadcast`);
  }
  if ((values.cert === undefined) !== (values.key === undefined)) {
    fail("--cert and --key go together");
  }
  let tls: { cert: string; key: string } | undefined;
  if (values.cert !== undefined && values.key !== undefined) {
    try {
      tls = { cert: readFileSync(values.cert, "utf8"), key: readFileSync(values.key, "utf8") };
    } catch (err) {
      fail(`cannot read certificate or key: ${(err as Error).message}`);
    }
  }
  const broadcast = mode === "broadcast";
  const server = await serve<BroadcastRole>({
    port: positiveInt("--port", values.port, 8080),
    hostname: values.hostname ?? "0.0.0.0",
    maxMessageSize: positiveInt("--max-message-size", values["max-message-size"], 16 * 1024 * 1024),
    allowedOrigins: values["allow-origin"],
    protocols: values.protocol,
    compression: values.compression
      ? (broadcast ? { serverNoContextTakeover: true } : true)
      : false,
    tls,
    onUpgrade: broadcast ? broadcastRoute : undefined,
    reusePort: values["reuse-port"] === true || worker !== null,
    broker,
    fetch: values.static === undefined ? undefined : serveStatic(values.static),
  }, {
    open(ws) {
      if (ws.data === "sub") ws.subscribe(BROADCAST_TOPIC);
    },
    message(ws, data) {
      // Echo mode leaves data undefined: every path echoes.
      if (ws.data === "pub") ws.publish(BROADCAST_TOPIC, data);
      else if (ws.data !== "sub") ws.send(data);
    },
  }).catch((err: Error) => fail(`cannot listen: ${err.message}`, 1));
  const who = worker === null ? "" : ` (worker ${worker}, pid ${process.pid})`;
  process.stdout.write(`Sluice ${mode} server listening on ${server.url}${who}\n`);
  if (values.static !== undefined && worker === null) {
    const page = server.url.replace(/^ws/, "http");
    process.stdout.write(`Serving files from ${values.static} on ${page}\n`);
  }
  let stopping = false;
  const stop = () => {
    if (stopping) process.exit(130);
    stopping = true;
    process.stdout.write("Shutting down: closing connections with 1001\n");
    server.shutdown().then(() => process.exit(0));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  if (worker !== null) watchSupervisor(stop);
  await server.finished;
}

/** `serve --workers N`: N copies of this server on one port, supervised. */
async function runSupervisor(
  args: string[],
  values: { workers?: string; port?: string; hostname?: string; mode?: string; broker?: string },
): Promise<void> {
  const requested = positiveInt("--workers", values.workers, 0);
  const count = requested === 0 ? defaultWorkerCount() : requested;
  let port = positiveInt("--port", values.port, 8080);
  if (port === 0) port = await freePort(values.hostname ?? "0.0.0.0");
  // The workers get the same arguments, minus --workers, plus the real port.
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--workers") i++;
    else if (!args[i].startsWith("--workers=")) rest.push(args[i]);
  }
  rest.push("--port", String(port));
  if (values.broker === undefined) {
    process.stderr.write(
      "sluice: --workers without --broker: a publish reaches only the subscribers of the " +
        "worker it was made in\n",
    );
  }
  const supervisor = new Supervisor({
    count,
    command: selfCommand(import.meta.url, ["serve", ...rest]),
    log: (line) => process.stdout.write(line + "\n"),
  });
  let stopping = false;
  const stop = () => {
    if (stopping) process.exit(130);
    stopping = true;
    process.stdout.write(`Shutting down ${count} workers: closing connections with 1001\n`);
    supervisor.stop().then(() => process.exit(0));
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  try {
    const url = await supervisor.ready;
    const mode = values.mode ?? "echo";
    process.stdout.write(`Sluice ${mode} server listening on ${url} with ${count} workers\n`);
  } catch (err) {
    process.stderr.write(`sluice: ${(err as Error).message}; stopping\n`);
    await supervisor.stop();
    process.exit(1);
  }
  // Runs until a signal stops it (a timer keeps the event loop alive on every runtime).
  setInterval(() => {}, 1 << 30);
}

/** A port that was free a moment ago on `hostname`. */
async function freePort(hostname: string): Promise<number> {
  const { createServer } = await import("node:net");
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, hostname, () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

async function runConnect(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      header: { type: "string", multiple: true },
      protocol: { type: "string", multiple: true },
      origin: { type: "string" },
      ca: { type: "string" },
      "max-message-size": { type: "string" },
      compression: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (positionals.length !== 1) fail("connect takes exactly one URL");
  const headers = new Headers();
  for (const header of values.header ?? []) {
    const colon = header.indexOf(":");
    if (colon <= 0) fail(`--header must look like 'Name: value', got ${JSON.stringify(header)}`);
    try {
      headers.append(header.slice(0, colon).trim(), header.slice(colon + 1).trim());
    } catch {
      fail(`invalid header ${JSON.stringify(header)}`);
    }
  }
  let caCerts: string[] | undefined;
  if (values.ca !== undefined) {
    try {
      caCerts = [readFileSync(values.ca, "utf8")];
    } catch (err) {
      fail(`cannot read CA file: ${(err as Error).message}`);
    }
  }
  let ws: WebSocketConnection;
  try {
    ws = await connect(positionals[0], {
      headers,
      protocols: values.protocol,
      origin: values.origin,
      caCerts,
      compression: values.compression ?? false,
      maxMessageSize: positiveInt(
        "--max-message-size",
        values["max-message-size"],
        16 * 1024 * 1024,
      ),
    });
  } catch (err) {
    fail(`connection failed: ${(err as Error).message}`);
  }
  ws.addEventListener("error", (event) => {
    process.stderr.write(`sluice: ${(event as ErrorEvent).message}\n`);
  });
  const output = (async () => {
    for await (const message of ws.readable) {
      if (typeof message === "string") process.stdout.write(message + "\n");
      else process.stdout.write(`[binary ${message.byteLength} bytes] ${toBase64(message)}\n`);
    }
  })().catch(() => {});
  const input = createInterface({ input: process.stdin, terminal: false });
  const closed = ws.closed;
  const reading = (async () => {
    for await (const line of input) {
      if (ws.readyState !== ws.OPEN) break;
      ws.send(line);
    }
    if (ws.readyState === ws.OPEN) ws.close(CloseCode.Normal);
  })();
  const info = await closed;
  input.close();
  await Promise.race([reading, output]);
  const meaning = CLOSE_MEANINGS[info.closeCode] ?? "application-defined";
  process.stderr.write(
    `Connection closed: ${info.closeCode} ${meaning}${info.reason ? ` (${info.reason})` : ""}\n`,
  );
  const normal = info.closeCode === CloseCode.Normal || info.closeCode === CloseCode.NoStatus;
  process.exit(normal ? 0 : 1);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return await runServe(rest);
    case "connect":
      return await runConnect(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(HELP);
      return;
    default:
      fail(`unknown command ${JSON.stringify(command)}; see sluice --help`);
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).catch((err: Error) => fail(err.message));
}
