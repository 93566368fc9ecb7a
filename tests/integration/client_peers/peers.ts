/**
 * Interop peers for the client tests: real WebSocket servers from other
 * implementations, started in-process where the runtime has them built in
 * and as subprocesses otherwise.
 *
 * Every peer behaves the same way:
 * - listens on 127.0.0.1 with a free port; a subprocess prints `{"port":N}`
 *   as its first stdout line, then one JSON line per event;
 * - selects the first subprotocol the client offers among `sluice.v1` and
 *   `sluice.v2`, and none if it offers neither;
 * - echoes each message with the same type, then sends a text message
 *   `{"kind","length","sha256"}` describing what it received;
 * - on the text message `CMD close <code|none> [reason]`, closes with that
 *   code and reason (or with no code);
 * - reports `open` and `close` (with the code and reason it saw) for each
 *   connection, keyed by the `id` query parameter of the request URL.
 * Subprocesses exit when their stdin closes, so none outlives the test.
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { serve } from "../../../src/server.ts";
import {
  findExecutable,
  findPythonWithWebsockets,
  REPO_ROOT,
  RUNTIME,
} from "../../_executables.ts";
import { startBunPeer } from "./bun_server.ts";
import { type LocalPeer, startDenoPeer } from "./deno_server.ts";
import { command, type PeerEvent, sha256Hex, SUPPORTED } from "./shared.ts";

export type { PeerEvent } from "./shared.ts";
export { findExecutable, REPO_ROOT, RUNTIME };

/** The peers the interop suite runs against. */
export type PeerName = "sluice" | "deno" | "bun" | "node-ws" | "python-websockets";

/** The running peers' common face. */
export interface Peer {
  /** Which implementation this is. */
  readonly name: PeerName;
  /** `ws://127.0.0.1:<port>/`. */
  readonly url: string;
  /** Waits for the peer's report about connection `id` (`open` or `close`). */
  waitFor(kind: "open" | "close", id: string, ms?: number): Promise<PeerEvent>;
  /** Stops the peer (and its process). */
  stop(): Promise<void>;
}

/** The repository root, where `node_modules/` lives. */
const HERE = fileURLToPath(new URL(".", import.meta.url));

interface Launch {
  command: string;
  args: string[];
}

/** How to start each subprocess peer, or why it cannot be started. */
function launcher(name: PeerName): Launch | string | null {
  switch (name) {
    case "sluice":
      return null;
    case "deno": {
      if (RUNTIME === "deno") return null;
      const deno = findExecutable("deno");
      if (deno === null) return "deno is not installed";
      return {
        command: deno,
        args: ["run", "--quiet", "--no-check", "--allow-net", join(HERE, "deno_server.ts")],
      };
    }
    case "bun": {
      if (RUNTIME === "bun") return null;
      const bun = findExecutable("bun");
      if (bun === null) return "bun is not installed";
      return { command: bun, args: [join(HERE, "bun_server.ts")] };
    }
    case "node-ws": {
      const node = findExecutable("node");
      if (node === null) return "node is not installed (Deno's node shim does not count)";
      if (!existsSync(join(REPO_ROOT, "node_modules", "ws", "package.json"))) {
        return "npm ws is not installed in node_modules";
      }
      return { command: node, args: [join(HERE, "ws_server.mjs")] };
    }
    case "python-websockets": {
      const found = findPythonWithWebsockets();
      if (found === null) {
        return "python3 with websockets >= 10 is not installed (apt-get install python3-websockets)";
      }
      return { command: found.python, args: ["-u", join(HERE, "python_server.py")] };
    }
  }
}

/**
 * Why the peer cannot run here, or `null` if it can. Under `CI` a missing
 * peer must fail the suite, so callers turn a reason into a failure there.
 */
export function unavailable(name: PeerName): string | null {
  const launch = launcher(name);
  return typeof launch === "string" ? launch : null;
}

/** Events a peer reported, with waiting. */
class EventLog {
  #events: PeerEvent[] = [];
  #wake = new Set<() => void>();

  push(event: PeerEvent): void {
    this.#events.push(event);
    for (const wake of this.#wake) wake();
  }

  async waitFor(kind: "open" | "close", id: string, ms: number, who: string): Promise<PeerEvent> {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = this.#events.find((e) => "event" in e && e.event === kind && e.id === id);
      if (found !== undefined) return found;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`${who} did not report ${kind} of connection ${id} in ${ms} ms`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done() {
          clearTimeout(timer);
          wake.delete(done);
          resolve();
        }
        const wake = this.#wake;
        wake.add(done);
      });
    }
  }
}

async function startSluicePeer(report: (event: PeerEvent) => void): Promise<LocalPeer> {
  const server = await serve({
    hostname: "127.0.0.1",
    port: 0,
    maxMessageSize: 64 * 1024 * 1024,
    protocols: (offered) => offered.find((p) => SUPPORTED.includes(p)),
  }, {
    open(ws) {
      report({ event: "open", id: idOf(ws.url), protocol: ws.protocol });
    },
    async message(ws, data) {
      if (typeof data === "string" && data.startsWith("CMD ")) {
        return command(data, (code, reason) => ws.close(code, reason));
      }
      ws.send(data);
      const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
      ws.send(JSON.stringify({
        kind: typeof data === "string" ? "text" : "binary",
        length: bytes.byteLength,
        sha256: await sha256Hex(bytes),
      }));
    },
    close(ws, code, reason) {
      report({ event: "close", id: idOf(ws.url), code, reason });
    },
  });
  return { port: server.addr.port, stop: () => server.shutdown() };
}

function idOf(url: string): string {
  return new URL(url).searchParams.get("id") ?? "";
}

function startSubprocess(
  name: PeerName,
  launch: Launch,
  log: EventLog,
): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(launch.command, launch.args, {
    cwd: REPO_ROOT,
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (text: string) => {
    stderr = (stderr + text).slice(-4096);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${name} peer did not print its port within 20 s. stderr: ${stderr}`));
    }, 20_000);
    let buffered = "";
    let started = false;
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (text: string) => {
      buffered += text;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (line === "") continue;
        let event: PeerEvent;
        try {
          event = JSON.parse(line);
        } catch {
          continue; // Not ours (a runtime's warning).
        }
        if ("port" in event && !started) {
          started = true;
          clearTimeout(timer);
          resolve({ child, port: event.port });
        } else {
          log.push(event);
        }
      }
    });
    child.on("exit", (code, signal) => {
      if (!started) {
        clearTimeout(timer);
        reject(new Error(`${name} peer exited (${code ?? signal}) before listening. ${stderr}`));
      }
    });
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Starts a peer. Throws if it cannot be started (see {@linkcode unavailable}). */
export async function startPeer(name: PeerName): Promise<Peer> {
  const log = new EventLog();
  const launch = launcher(name);
  if (typeof launch === "string") throw new Error(`Cannot start the ${name} peer: ${launch}`);
  let port: number;
  let stop: () => Promise<void>;
  if (launch === null) {
    const report = (event: PeerEvent) => log.push(event);
    const local = name === "sluice"
      ? await startSluicePeer(report)
      : name === "deno"
      ? await startDenoPeer(report)
      : await startBunPeer(report);
    port = local.port;
    stop = local.stop;
  } else {
    const started = await startSubprocess(name, launch, log);
    port = started.port;
    const child = started.child;
    stop = () => {
      if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
        child.on("exit", () => {
          clearTimeout(timer);
          resolve();
        });
        child.stdin?.end();
      });
    };
  }
  return {
    name,
    url: `ws://127.0.0.1:${port}/`,
    waitFor: (kind, id, ms = 10_000) => log.waitFor(kind, id, ms, `The ${name} peer`),
    stop,
  };
}
