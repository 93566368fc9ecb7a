/**
 * Starting the other implementations as subprocesses for the wss:// and
 * permessage-deflate interop tests: npm `ws` on Node, Bun's and Deno's
 * built-in WebSocket, Python `websockets`.
 *
 * - Server peers print `{"port":N}`, then one JSON event per line; they exit
 *   when their stdin closes, and {@linkcode ServerPeer.stop} also kills them
 *   by their own pid after a grace period.
 * - Client peers take a JSON spec as their argument and print one JSON
 *   report; {@linkcode runClient} kills them by pid if they overrun.
 *
 * A peer that is not installed is reported by {@linkcode peerSkipReason}:
 * under `CI` that throws (CI must have every peer), otherwise it warns loudly
 * and returns the reason to skip with.
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import {
  findExecutable,
  findPythonWithWebsockets,
  REPO_ROOT,
  RUNTIME,
  SYSTEM_PYTHON,
} from "../../_executables.ts";
import type { ClientReport, ClientSpec } from "./whatwg_client.ts";

export type { ClientReport, ClientSpec } from "./whatwg_client.ts";
export { findExecutable, REPO_ROOT, RUNTIME };

const HERE = fileURLToPath(new URL(".", import.meta.url));

/** The implementations that can be started as peers. */
export type PeerName = "node-ws" | "bun" | "deno" | "python-websockets";

/** The command line of a server (`role` "server") or client peer. */
function commandLine(name: PeerName, role: "server" | "client"): string[] | string {
  switch (name) {
    case "node-ws": {
      const node = findExecutable("node");
      if (node === null) return "node not found";
      if (!existsSync(join(REPO_ROOT, "node_modules", "ws", "package.json"))) {
        return "npm ws not installed in node_modules (run npm install)";
      }
      return [node, join(HERE, role === "server" ? "ws_server.mjs" : "ws_client.mjs")];
    }
    case "bun": {
      const bun = findExecutable("bun");
      if (bun === null) return "bun not found";
      return [bun, join(HERE, role === "server" ? "bun_server.ts" : "whatwg_client.ts")];
    }
    case "deno": {
      if (role === "server") return "no Deno server peer (Deno's server has no permessage-deflate)";
      const deno = findExecutable("deno");
      if (deno === null) return "deno not found";
      return [deno, "run", "--allow-all", "--no-check", "--quiet", join(HERE, "whatwg_client.ts")];
    }
    case "python-websockets": {
      const found = findPythonWithWebsockets();
      if (found === null) {
        return `${SYSTEM_PYTHON} with websockets >= 10 not found (apt-get install python3-websockets)`;
      }
      return [
        found.python,
        "-u",
        join(HERE, role === "server" ? "python_server.py" : "python_client.py"),
      ];
    }
  }
}

/**
 * `false` when the peer can run; otherwise, under `CI`, throws, and elsewhere
 * warns loudly and returns the skip reason (for `test(name, { skip })`).
 */
export function peerSkipReason(name: PeerName, role: "server" | "client"): string | false {
  const command = commandLine(name, role);
  if (typeof command !== "string") return false;
  const message = `${name} ${role} peer unavailable (${command}): SKIPPING the tests that need it.`;
  if (process.env.CI) throw new Error(`${message} CI must provide it.`);
  console.warn(`\n!!! ${message} !!!\n`);
  return `${name} unavailable: ${command}`;
}

/** One JSON line a server peer printed after its port. */
export type PeerEvent = Record<string, unknown> & { event?: string; id?: string };

/** A running server peer. */
export interface ServerPeer {
  readonly name: PeerName;
  readonly port: number;
  /** `ws://127.0.0.1:<port>/`. */
  readonly url: string;
  /** The events it printed so far. */
  readonly events: readonly PeerEvent[];
  /** Waits (at most `ms`) for an event of `kind` about connection `id`. */
  waitFor(kind: string, id: string, ms?: number): Promise<PeerEvent>;
  /** Closes its stdin, then kills it (by pid) if it has not exited within 3 s. */
  stop(): Promise<void>;
}

function tail(text: string): string {
  return text.trim().split("\n").slice(-15).join("\n");
}

function killChild(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}

/** Starts a server peer and resolves once it printed its port (at most 20 s). */
export function startServer(
  name: PeerName,
  spec: Record<string, unknown> = {},
): Promise<ServerPeer> {
  const command = commandLine(name, "server");
  if (typeof command === "string") throw new Error(`Cannot start the ${name} server: ${command}`);
  const child = spawn(command[0], [...command.slice(1), JSON.stringify(spec)], {
    cwd: REPO_ROOT,
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  const events: PeerEvent[] = [];
  const wakers = new Set<() => void>();
  let stderr = "";
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (text: string) => (stderr = (stderr + text).slice(-8192)));
  const exited = new Promise<void>((resolve) => {
    child.on("exit", () => resolve());
    child.on("error", () => resolve());
  });
  return new Promise<ServerPeer>((resolve, reject) => {
    const timer = setTimeout(() => {
      killChild(child);
      reject(new Error(`${name} server printed no port within 20 s:\n${tail(stderr)}`));
    }, 20_000);
    let buffered = "";
    let port = 0;
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (text: string) => {
      buffered += text;
      let newline;
      while ((newline = buffered.indexOf("\n")) !== -1) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        let event: PeerEvent;
        try {
          event = JSON.parse(line);
        } catch {
          continue; // Not ours: a runtime's warning.
        }
        if (port === 0 && typeof event.port === "number") {
          port = event.port;
          clearTimeout(timer);
          resolve(peer(port));
        } else {
          events.push(event);
          for (const wake of wakers) wake();
        }
      }
    });
    child.on("exit", (code, signal) => {
      if (port === 0) {
        clearTimeout(timer);
        reject(new Error(`${name} server exited (${code ?? signal}) early:\n${tail(stderr)}`));
      }
    });
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });

  function peer(port: number): ServerPeer {
    return {
      name,
      port,
      url: `ws://127.0.0.1:${port}/`,
      events,
      async waitFor(kind, id, ms = 10_000) {
        const deadline = Date.now() + ms;
        for (;;) {
          const found = events.find((e) => e.event === kind && e.id === id);
          if (found !== undefined) return found;
          const left = deadline - Date.now();
          if (left <= 0) {
            throw new Error(
              `${name} server reported no ${kind} for ${id} in ${ms} ms; events: ${
                JSON.stringify(events).slice(0, 500)
              }\nstderr: ${tail(stderr)}`,
            );
          }
          await new Promise<void>((resolve) => {
            const done = () => {
              clearTimeout(t);
              wakers.delete(done);
              resolve();
            };
            const t = setTimeout(done, left);
            wakers.add(done);
          });
        }
      },
      async stop() {
        child.stdin!.end();
        const timer = setTimeout(() => killChild(child), 3_000);
        await exited;
        clearTimeout(timer);
      },
    };
  }
}

/**
 * Runs a client peer with `spec` (and extra environment variables) and
 * returns its report. Kills it by pid if it has not finished within `ms`.
 */
export function runClient(
  name: PeerName,
  spec: ClientSpec,
  options: { env?: Record<string, string>; ms?: number } = {},
): Promise<ClientReport> {
  const command = commandLine(name, "client");
  if (typeof command === "string") throw new Error(`Cannot start the ${name} client: ${command}`);
  const ms = options.ms ?? 50_000;
  const child = spawn(command[0], [...command.slice(1), JSON.stringify(spec)], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1", ...options.env },
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (text: string) => (stdout += text));
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (text: string) => (stderr = (stderr + text).slice(-8192)));
  return new Promise<ClientReport>((resolve, reject) => {
    const timer = setTimeout(() => {
      killChild(child);
      reject(new Error(`${name} client did not finish within ${ms} ms:\n${tail(stderr)}`));
    }, ms);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const line = stdout.split("\n").map((l) => l.trim()).find((l) => l.startsWith("{"));
      if (line === undefined) {
        reject(
          new Error(`${name} client exited (${code ?? signal}) without a report:\n${tail(stderr)}`),
        );
        return;
      }
      const report = JSON.parse(line) as ClientReport;
      if (report.error !== undefined && stderr.trim() !== "") {
        report.error += `\nstderr: ${tail(stderr)}`;
      }
      resolve(report);
    });
  });
}
