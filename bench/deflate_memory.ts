/**
 * Server memory per connection with permessage-deflate, on Deno and on Bun.
 *
 * For each runtime, compression setting and message size, a fresh Sluice echo
 * server runs in its own process; this process opens N client connections to
 * it (Sluice clients that offer compression), then every connection sends one
 * JSON-like text message of that size and reads the echo, so both sides of
 * the server have compressed (where the size reaches the `threshold`) and
 * inflated once. The server's RSS is read after a full GC at four points:
 * before any connection, with N idle connections, after the exchange, and
 * once every connection has closed. "After" minus "before" is what the
 * connections cost the process; "after" minus "closed" is what they still
 * hold (the rest is memory the runtime keeps after a peak, reused later).
 *
 * ```sh
 * deno run -A bench/deflate_memory.ts                 # defaults below, both runtimes
 * deno run -A bench/deflate_memory.ts --connections 1000 --sizes 200,65536 --runtimes bun
 * deno run -A bench/deflate_memory.ts --threshold 0   # compress every message, even 200 B
 * deno run -A bench/deflate_memory.ts --modes server-no-takeover
 * ```
 *
 * Prints one row per run and a Markdown table of KiB per connection.
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { connect, type DeflateOptions, serve, type WebSocketConnection } from "../mod.ts";
import { rssKiB } from "./lib/proc.ts";

type Mode = "off" | "takeover" | "no-takeover" | "server-no-takeover";

const MODES: Record<Mode, string> = {
  "off": "compression off",
  "takeover": "`compression: true` (context takeover both ways)",
  "no-takeover": "`serverNoContextTakeover` + `clientNoContextTakeover`",
  "server-no-takeover": "`serverNoContextTakeover` only",
};

/** The server's compression option for a mode; `threshold` as given on the command line. */
function serverCompression(mode: Mode, threshold: number | undefined): boolean | DeflateOptions {
  if (mode === "off") return false;
  const options: DeflateOptions = threshold === undefined ? {} : { threshold };
  if (mode === "no-takeover" || mode === "server-no-takeover") {
    options.serverNoContextTakeover = true;
  }
  if (mode === "no-takeover") options.clientNoContextTakeover = true;
  return options;
}

// ---------------------------------------------------------------- server role

/** Frees what can be freed, so RSS shows what connections hold. */
async function collect(): Promise<void> {
  const bun = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun;
  const gc = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < 3; i++) {
    if (bun) bun.gc(true);
    else if (gc) gc();
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function runServer(mode: Mode, threshold: number | undefined): Promise<void> {
  const server = await serve({
    port: 0,
    hostname: "127.0.0.1",
    compression: serverCompression(mode, threshold),
  }, { message: (ws, data) => ws.send(data) });
  const lines = createInterface({ input: process.stdin });
  console.log(JSON.stringify({ port: server.addr.port }));
  for await (const line of lines) {
    if (line === "rss") {
      await collect();
      const { heapUsed, external } = process.memoryUsage();
      const heap = Math.round((heapUsed + external) / 1024);
      console.log(
        JSON.stringify({ rss: rssKiB("self"), heap, connections: server.connections.size }),
      );
    } else if (line === "exit") {
      break;
    }
  }
  lines.close();
  await server.shutdown();
  process.exit(0);
}

// ---------------------------------------------------------------- client role

/** A deterministic JSON-like text of `size` characters (compresses about 3-4×, like real feeds). */
function message(size: number, seed: number): string {
  let state = seed * 2654435761 >>> 0 || 1;
  const next = (n: number) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % n;
  };
  const words = ["alpha", "bravo", "quote", "order", "fill", "price", "update", "user", "room"];
  let text = '{"events":[';
  while (text.length < size) {
    text += JSON.stringify({
      id: next(1e9),
      user: `user${next(50_000)}`,
      kind: words[next(words.length)],
      price: next(1e7) / 100,
      at: 1_760_000_000_000 + next(1e9),
      text: `${words[next(words.length)]} ${words[next(words.length)]} ${next(1e6).toString(36)}`,
    }) + ",";
  }
  return text.slice(0, size);
}

interface ServerProcess {
  child: ChildProcess;
  port: number;
  ask(): Promise<{ rss: number; heap: number; connections: number }>;
  stop(): Promise<void>;
}

function runtimeCommand(runtime: string, args: string[]): [string, string[]] {
  const self = fileURLToPath(import.meta.url);
  return runtime === "deno"
    ? ["deno", ["run", "-A", "--quiet", "--v8-flags=--expose-gc", self, ...args]]
    : ["bun", [self, ...args]];
}

async function startServer(runtime: string, args: string[]): Promise<ServerProcess> {
  const [command, argv] = runtimeCommand(runtime, args);
  const child = spawn(command, argv, { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const read = async () => {
    const { value, done } = await lines.next();
    if (done) throw new Error(`${runtime} server exited early`);
    return JSON.parse(value);
  };
  const { port } = await read();
  return {
    child,
    port,
    ask: () => {
      child.stdin!.write("rss\n");
      return read();
    },
    stop: () =>
      new Promise((resolve) => {
        child.on("exit", () => resolve());
        child.stdin!.write("exit\n");
      }),
  };
}

/** Runs `task` over `items`, `width` at a time. */
async function inBatches<T>(items: T[], width: number, task: (item: T) => Promise<void>) {
  for (let i = 0; i < items.length; i += width) {
    await Promise.all(items.slice(i, i + width).map(task));
  }
}

interface Row {
  runtime: string;
  mode: Mode;
  size: number;
  idleKiB: number;
  afterKiB: number;
  heldKiB: number;
  heapKiB: number;
}

async function measure(
  runtime: string,
  mode: Mode,
  size: number,
  connections: number,
  threshold: number | undefined,
): Promise<Row> {
  const args = [
    "--serve",
    mode,
    ...(threshold === undefined ? [] : ["--threshold", `${threshold}`]),
  ];
  const server = await startServer(runtime, args);
  const base = await server.ask();
  const url = `ws://127.0.0.1:${server.port}/`;
  const clientCompression = threshold === undefined ? true : { threshold };
  const sockets: WebSocketConnection[] = [];
  await inBatches([...Array(connections).keys()], 50, async () => {
    sockets.push(await connect(url, { compression: clientCompression }));
  });
  const idle = await server.ask();
  await inBatches(sockets.map((ws, i) => [ws, i] as const), 50, async ([ws, i]) => {
    const reader = ws.readable.getReader();
    ws.send(message(size, i + 1));
    const { value } = await reader.read();
    if (typeof value !== "string" || value.length !== size) throw new Error("Bad echo");
    reader.releaseLock();
  });
  const after = await server.ask();
  if (after.connections !== connections) {
    throw new Error(`${after.connections} of ${connections} connections open on the server`);
  }
  await Promise.all(sockets.map((ws) => {
    ws.close();
    return ws.closed;
  }));
  let closed = await server.ask();
  for (let i = 0; i < 50 && closed.connections > 0; i++) closed = await server.ask();
  await server.stop();
  return {
    runtime,
    mode,
    size,
    idleKiB: (idle.rss - base.rss) / connections,
    afterKiB: (after.rss - base.rss) / connections,
    heldKiB: (after.rss - closed.rss) / connections,
    heapKiB: (after.heap - base.heap) / connections,
  };
}

function option(name: string, fallback: string): string {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? fallback : process.argv[at + 1];
}

function sizeLabel(size: number): string {
  return size >= 1024 ? `${size / 1024} KiB` : `${size} B`;
}

async function main(): Promise<void> {
  if (process.argv.includes("--serve")) {
    const threshold = process.argv.includes("--threshold")
      ? Number(option("threshold", ""))
      : undefined;
    return runServer(option("serve", "off") as Mode, threshold);
  }
  const connections = Number(option("connections", "500"));
  const sizes = option("sizes", "200,2048,16384,65536").split(",").map(Number);
  const runtimes = option("runtimes", "deno,bun").split(",");
  const modes = option("modes", "off,takeover,no-takeover").split(",") as Mode[];
  const threshold = process.argv.includes("--threshold")
    ? Number(option("threshold", ""))
    : undefined;
  const rows: Row[] = [];
  for (const runtime of runtimes) {
    for (const mode of modes) {
      for (const size of sizes) {
        const row = await measure(runtime, mode, size, connections, threshold);
        rows.push(row);
        console.log(
          `${runtime} ${mode.padEnd(11)} ${sizeLabel(size).padStart(7)}: ` +
            `idle ${row.idleKiB.toFixed(1)} KiB/conn, after one message each way ` +
            `${row.afterKiB.toFixed(1)} KiB/conn, of which held by open connections ` +
            `${row.heldKiB.toFixed(1)}, JS heap + external ${row.heapKiB.toFixed(1)}`,
        );
      }
    }
  }
  console.log(
    `\n${connections} connections, threshold ${threshold ?? "default"}, ` +
      `KiB of server RSS per connection after one message each way:\n`,
  );
  console.log(`| server setting | ${sizes.map(sizeLabel).join(" | ")} |`);
  for (const runtime of runtimes) {
    for (const mode of modes) {
      const cells = sizes.map((size) => {
        const row = rows.find((r) => r.runtime === runtime && r.mode === mode && r.size === size)!;
        return row.afterKiB.toFixed(0);
      });
      console.log(`| ${runtime}: ${MODES[mode]} | ${cells.join(" | ")} |`);
    }
  }
}

await main();
