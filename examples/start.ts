/**
 * The three example apps (chat, stock ticker, leaderboard) behind one
 * `serve()` call on one port: their pages, their JSON API and their
 * sockets, plus an index page.
 *
 * ```sh
 * deno task start                   # or: deno run -A examples/start.ts --port 8080
 * bun run examples/start.ts         # the same on Bun
 * PORT=9000 deno task start
 * ```
 *
 * Routes: `/` (index), `/chat`, `/ticker`, `/leaderboard` (the page for a
 * plain GET, the app's socket for a WebSocket upgrade), `/sluice.js` (the
 * browser entry point `browser.ts`, bundled at start), `/api/chat/token`,
 * `/api/ticker/quotes`, `/api/ticker/stats`, `/api/top`.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import process from "node:process";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { HandshakeError, serve, type Server } from "../mod.ts";
import type { ExampleApp, Session } from "./app.ts";
import { ChatApp, type ChatOptions } from "./chat.ts";
import { TickerApp, type TickerOptions } from "./ticker.ts";
import { LeaderboardApp, type LeaderboardOptions } from "./leaderboard.ts";

/** Options of {@linkcode startExamples}. */
export interface ExamplesOptions {
  /** @default {8080} */
  port?: number;
  /** @default {"0.0.0.0"} */
  hostname?: string;
  chat?: ChatOptions;
  ticker?: TickerOptions;
  leaderboard?: LeaderboardOptions;
}

/** A running examples server. */
export interface Examples {
  server: Server;
  /** The index page's URL, e.g. `http://localhost:8080/`. */
  url: string;
  chat: ChatApp;
  ticker: TickerApp;
  leaderboard: LeaderboardApp;
  /** Stops the feeds and shuts the server down. */
  close(): Promise<void>;
}

const HERE = new URL("./", import.meta.url);
const REPO = new URL("../", import.meta.url);

/**
 * `browser.ts` bundled for browsers as one ES module, by the running
 * runtime's own bundler (`deno bundle`, which fetches esbuild from npm on
 * first use, or `bun build`); on Deno, `bun build` is tried too if
 * `deno bundle` fails.
 */
export function bundleBrowserEntry(): string {
  const entry = fileURLToPath(new URL("browser.ts", REPO));
  const isDeno = typeof (globalThis as { Deno?: unknown }).Deno === "object";
  const bun = ["build", "--target", "browser", "--format", "esm", entry];
  const attempts: [string, string[]][] = isDeno
    ? [[process.execPath, ["bundle", "--quiet", "--platform", "browser", entry]], ["bun", bun]]
    : [[process.execPath, bun]];
  const failures: string[] = [];
  for (const [command, args] of attempts) {
    const out = spawnSync(command, args, {
      encoding: "utf8",
      maxBuffer: 16 * 1024 * 1024,
      timeout: 120_000,
      env: { ...process.env, NO_COLOR: "1" },
    });
    if (out.status === 0 && out.stdout.includes("ReconnectingWebSocket")) return out.stdout;
    failures.push(`${command} ${args.join(" ")}: ${out.error?.message ?? ""} ${out.stderr}`);
  }
  throw new Error(`Bundling browser.ts for the pages failed:\n${failures.join("\n")}`);
}

function page(name: string): string {
  return readFileSync(new URL(name, HERE), "utf8");
}

/** Starts the examples server; see the module documentation. */
export async function startExamples(options: ExamplesOptions = {}): Promise<Examples> {
  const chat = new ChatApp(options.chat);
  const ticker = new TickerApp(options.ticker);
  const leaderboard = new LeaderboardApp(options.leaderboard);
  const apps: ExampleApp[] = [chat, ticker, leaderboard];
  const routes = new Map(apps.map((app) => [app.path, app]));

  // Read once: the pages are small, and a running demo should not depend on the tree.
  const files = new Map<string, { body: string; type: string }>();
  const html = "text/html; charset=utf-8";
  files.set("/", { body: page("index.html"), type: html });
  for (const app of apps) files.set(app.path, { body: page(app.page), type: html });
  files.set("/sluice.js", { body: bundleBrowserEntry(), type: "text/javascript; charset=utf-8" });

  // Plain HTTP requests (the pages, the API) go to `fetch`; upgrades to the app
  // that owns the path.
  const server = await serve<Session>({
    port: options.port ?? 8080,
    hostname: options.hostname ?? "0.0.0.0",
    maxMessageSize: 64 * 1024,
    onUpgrade(request) {
      const app = routes.get(request.url.pathname);
      if (app === undefined) {
        throw new HandshakeError(404, `No WebSocket endpoint at ${request.url.pathname}`);
      }
      return { data: app.upgrade(request) };
    },
    fetch(request: Request): Response {
      const url = new URL(request.url);
      if (url.pathname.startsWith("/api/")) {
        for (const app of apps) {
          const response = app.fetch(request, url);
          if (response !== null) return response;
        }
        return new Response("Not found\n", { status: 404 });
      }
      if (url.pathname === "/favicon.ico") return new Response(null, { status: 204 });
      const file = files.get(url.pathname);
      if (file === undefined) return new Response("Not found\n", { status: 404 });
      if (request.method !== "GET" && request.method !== "HEAD") {
        return new Response("Method not allowed\n", {
          status: 405,
          headers: { allow: "GET, HEAD" },
        });
      }
      return new Response(file.body, {
        headers: { "content-type": file.type, "cache-control": "no-cache" },
      });
    },
  }, {
    open: (ws) => ws.data.open(ws),
    message: (ws, data) => ws.data.message(ws, data),
    close: (ws, code, reason) => ws.data.close(ws, code, reason),
  });
  for (const app of apps) app.attach(server);

  const { hostname, port } = server.addr;
  const host = hostname === "0.0.0.0" || hostname === "::" ? "localhost" : hostname;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}/`;
  return {
    server,
    url,
    chat,
    ticker,
    leaderboard,
    async close() {
      for (const app of apps) app.stop();
      await server.shutdown();
    },
  };
}

/** `--port N` / `PORT`, `--hostname H` / `HOST`. */
function parseArgs(argv: string[]): ExamplesOptions {
  const options: ExamplesOptions = {};
  const env = process.env;
  let port = env.PORT;
  let hostname = env.HOST;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [flag, inline] = arg.includes("=") ? arg.split(/=(.*)/s, 2) : [arg, undefined];
    const value = () => inline ?? argv[++i];
    if (flag === "--port" || flag === "-p") port = value();
    else if (flag === "--hostname") hostname = value();
    else if (flag === "--help" || flag === "-h") {
      console.log("Usage: examples/start.ts [--port N (or PORT, default 8080)] [--hostname H]");
      process.exit(0);
    } else throw new Error(`Unknown argument ${arg}: try --help`);
  }
  if (port !== undefined) {
    const n = Number(port);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`Bad port ${port}`);
    options.port = n;
  }
  if (hostname !== undefined) options.hostname = hostname;
  return options;
}

if ((import.meta as { main?: boolean }).main) {
  const examples = await startExamples(parseArgs(process.argv.slice(2)));
  console.log(`Sluice examples (chat, ticker, leaderboard) on ${examples.url}`);
  const stop = async () => {
    await examples.close();
    process.exit(0);
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
