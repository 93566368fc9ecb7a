/**
 * What the benchmark runs (servers, scenarios, clients) and how it runs
 * them: pinned, rlimit-raised subprocesses, servers that print their port,
 * load processes that print one JSON line. Shared by `run.ts` and
 * `profile.ts`.
 *
 * @module
 */

import type { ClientConfig } from "../clients/client.ts";
import type { Config } from "../loadgen.ts";
import type { LoadResult } from "./proc.ts";

const BENCH_DIR = new URL("..", import.meta.url).pathname;
const ROOT = new URL("../..", import.meta.url).pathname;

export type Runtime = "deno" | "bun";

export interface Target {
  id: string;
  label: string;
  runtime: Runtime;
  script: string;
  /** A raw TCP echo: no handshake. */
  raw?: boolean;
  /** The built-in server this one is compared with. */
  peer?: string;
  /** The raw TCP echo on the same runtime. */
  ceiling?: string;
  /** Measured in the idle-connection scenario. */
  idle?: boolean;
  /**
   * A floor, not a WebSocket server: answers any head with a fixed 101 and
   * holds the connection. Measured in the handshake and idle scenarios only.
   */
  floor?: boolean;
}

export const TARGETS: Target[] = [
  {
    id: "sluice-deno",
    label: "Sluice on Deno",
    runtime: "deno",
    script: "servers/sluice_echo.ts",
    peer: "deno-builtin",
    ceiling: "deno-tcp",
    idle: true,
  },
  {
    id: "deno-builtin",
    label: "Deno built-in",
    runtime: "deno",
    script: "servers/deno_builtin.ts",
    ceiling: "deno-tcp",
    idle: true,
  },
  {
    id: "deno-tcp",
    label: "Deno raw TCP echo",
    runtime: "deno",
    script: "servers/deno_tcp_echo.ts",
    raw: true,
  },
  {
    id: "sluice-bun",
    label: "Sluice on Bun",
    runtime: "bun",
    script: "servers/sluice_echo.ts",
    peer: "bun-builtin",
    ceiling: "bun-tcp",
    idle: true,
  },
  {
    id: "bun-builtin",
    label: "Bun built-in",
    runtime: "bun",
    script: "servers/bun_builtin.ts",
    ceiling: "bun-tcp",
    idle: true,
  },
  {
    id: "bun-tcp",
    label: "Bun raw TCP echo",
    runtime: "bun",
    script: "servers/bun_tcp_echo.ts",
    raw: true,
  },
  {
    id: "deno-floor",
    label: "Deno fixed-101 floor",
    runtime: "deno",
    script: "servers/deno_floor.ts",
    peer: "deno-builtin",
    idle: true,
    floor: true,
  },
  {
    id: "bun-floor",
    label: "Bun fixed-101 floor",
    runtime: "bun",
    script: "servers/bun_floor.ts",
    peer: "bun-builtin",
    idle: true,
    floor: true,
  },
];

export interface Scenario {
  id: string;
  label: string;
  size: number;
  connections: number;
  inflight: number;
}

export const SCENARIOS: Scenario[] = [
  {
    id: "64B-c100-if1",
    label: "64 B × 100 conns, 1 in flight",
    size: 64,
    connections: 100,
    inflight: 1,
  },
  {
    id: "64B-c100-if16",
    label: "64 B × 100 conns, 16 in flight",
    size: 64,
    connections: 100,
    inflight: 16,
  },
  {
    id: "64KiB-c10-if1",
    label: "64 KiB × 10 conns, 1 in flight",
    size: 65536,
    connections: 10,
    inflight: 1,
  },
  {
    id: "1MiB-c4-if1",
    label: "1 MiB × 4 conns, 1 in flight",
    size: 1 << 20,
    connections: 4,
    inflight: 1,
  },
];

/**
 * Opening handshakes: 2 000 connections per pass, 64 opening at a time,
 * passes repeated for the measured window (loadgen.ts `mode: "handshake"`).
 * Raw TCP echoes have no handshake and sit it out.
 */
export const HANDSHAKE_SCENARIO: Scenario = {
  id: "handshake-c2000-b64",
  label: "handshakes, 2 000 conns, 64 at a time",
  size: 0,
  connections: 2000,
  inflight: 64,
};

export interface ClientTarget {
  id: string;
  label: string;
  runtime: Runtime | "node";
  impl: ClientConfig["impl"] | "ws";
  /** The built-in client of the same runtime. */
  peer?: string;
}

export const CLIENTS: ClientTarget[] = [
  {
    id: "client-sluice-deno",
    label: "Sluice WebSocket (events), Deno",
    runtime: "deno",
    impl: "sluice",
    peer: "client-builtin-deno",
  },
  {
    id: "client-sluice-cb-deno",
    label: "Sluice connect() callbacks, Deno",
    runtime: "deno",
    impl: "sluice-callbacks",
    peer: "client-builtin-deno",
  },
  { id: "client-builtin-deno", label: "Deno built-in WebSocket", runtime: "deno", impl: "builtin" },
  {
    id: "client-sluice-bun",
    label: "Sluice WebSocket (events), Bun",
    runtime: "bun",
    impl: "sluice",
    peer: "client-builtin-bun",
  },
  {
    id: "client-sluice-cb-bun",
    label: "Sluice connect() callbacks, Bun",
    runtime: "bun",
    impl: "sluice-callbacks",
    peer: "client-builtin-bun",
  },
  { id: "client-builtin-bun", label: "Bun built-in WebSocket", runtime: "bun", impl: "builtin" },
  { id: "client-ws-node", label: "npm ws, Node", runtime: "node", impl: "ws" },
];

export const CLIENT_SCENARIOS: Scenario[] = [
  {
    id: "64B-c100-if16",
    label: "64 B × 100 conns, 16 in flight",
    size: 64,
    connections: 100,
    inflight: 16,
  },
  {
    id: "64KiB-c10-if1",
    label: "64 KiB × 10 conns, 1 in flight",
    size: 65536,
    connections: 10,
    inflight: 1,
  },
];

/** The server every client is measured against. */
export const CLIENT_SERVER = "bun-builtin";

// ---------------------------------------------------------------- processes

export interface Tools {
  deno: string;
  bun: string;
  node: string;
  /** Cores to pin servers and load to, or null when pinning is unavailable. */
  pin: { server: number; load: number } | null;
  /** Nice value for servers and load (0: unchanged). */
  nice: number;
  /** The compiled C load generator, or null to use loadgen.ts on Bun. */
  cLoadgen: string | null;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

export async function capture(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return new TextDecoder().decode(out.stdout).trim();
  } catch {
    return "";
  }
}

/**
 * Compiles bench/loadgen.c into bench/results/ (when the source is newer than
 * the binary); null without a C compiler or when compiling fails.
 */
async function buildCLoadgen(): Promise<string | null> {
  const source = `${BENCH_DIR}loadgen.c`;
  const binary = `${BENCH_DIR}results/loadgen`;
  try {
    const [src, bin] = await Promise.all([Deno.stat(source), Deno.stat(binary).catch(() => null)]);
    if (bin !== null && (bin.mtime?.getTime() ?? 0) >= (src.mtime?.getTime() ?? 0)) return binary;
    const cc = await capture("sh", ["-c", "command -v cc || command -v gcc || command -v clang"]);
    if (cc === "") {
      console.warn("No C compiler: the load generator runs on Bun (bench/loadgen.ts)");
      return null;
    }
    await Deno.mkdir(`${BENCH_DIR}results`, { recursive: true });
    const out = await new Deno.Command(cc, { args: ["-O2", "-o", binary, source] }).output();
    if (!out.success) {
      console.warn(
        `Compiling bench/loadgen.c failed, using loadgen.ts:\n${
          new TextDecoder().decode(out.stderr)
        }`,
      );
      return null;
    }
    return binary;
  } catch (error) {
    console.warn(`Cannot build bench/loadgen.c (${(error as Error).message}), using loadgen.ts`);
    return null;
  }
}

export async function findTools(
  nice: number,
  loadgen: "c" | "bun" = "c",
): Promise<Tools> {
  // The repo installs Bun under tools/ (older checkouts: the root node_modules).
  let bun = "bun";
  for (const candidate of [`${ROOT}tools/node_modules/.bin/bun`, `${ROOT}node_modules/.bin/bun`]) {
    if (await exists(candidate)) {
      bun = candidate;
      break;
    }
  }
  const cores = navigator.hardwareConcurrency;
  const taskset = (await capture("sh", ["-c", "command -v taskset"])) !== "";
  if (!taskset) console.warn("taskset not found: processes are not pinned to cores");
  if (cores < 2) console.warn("Fewer than 2 cores: processes are not pinned to cores");
  return {
    deno: Deno.execPath(),
    bun,
    node: "node",
    pin: taskset && cores >= 2 ? { server: 1, load: 0 } : null,
    nice,
    cLoadgen: loadgen === "c" ? await buildCLoadgen() : null,
  };
}

/** The command line of the load generator for a load-mode `config`. */
export function loadArgv(tools: Tools, config: Config): string[] {
  if (tools.cLoadgen === null || config.mode !== "load") {
    return runtimeArgv(tools, "bun", "loadgen.ts").concat(JSON.stringify(config));
  }
  return [
    tools.cLoadgen,
    config.hostname,
    String(config.port),
    config.raw ? "1" : "0",
    String(config.connections),
    String(config.inflight),
    String(config.size),
    String(config.warmupMs),
    String(config.durationMs),
    String(config.serverPid),
  ];
}

/**
 * Runs one load-mode measurement; if the C load generator fails or sees no
 * message at all, measures again with loadgen.ts on Bun.
 */
export async function runLoad(tools: Tools, config: Config): Promise<LoadResult> {
  const timeout = config.warmupMs + config.durationMs + 60_000;
  if (tools.cLoadgen !== null) {
    try {
      const result = await runJson<LoadResult>(tools, loadArgv(tools, config), timeout);
      if (result.messages > 0) return result;
      console.warn("The C load generator saw no message; measuring again with loadgen.ts");
    } catch (error) {
      console.warn(`The C load generator failed (${(error as Error).message}); using loadgen.ts`);
    }
  }
  const argv = runtimeArgv(tools, "bun", "loadgen.ts").concat(JSON.stringify(config));
  return { ...(await runJson<LoadResult>(tools, argv, timeout)), loadgen: "bun" };
}

/** `sh` raises the open-file limit (10 000 idle sockets), then execs the pinned command. */
/** The load generator's settings for `scenario` against a running server. */
export function loadConfig(
  server: ServerProcess,
  scenario: Scenario,
  timing: { durationMs: number; warmupMs: number },
): Config {
  const handshakes = scenario === HANDSHAKE_SCENARIO;
  return {
    mode: handshakes ? "handshake" : "load",
    hostname: "127.0.0.1",
    port: server.port,
    raw: server.target.raw === true,
    connections: scenario.connections,
    inflight: handshakes ? 1 : scenario.inflight,
    size: scenario.size,
    warmupMs: timing.warmupMs,
    durationMs: timing.durationMs,
    serverPid: server.pid,
    ...(handshakes ? { batch: scenario.inflight } : {}),
  };
}

export function spawn(tools: Tools, core: "server" | "load", argv: string[]): Deno.ChildProcess {
  const script = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$@"';
  const pin = tools.pin === null ? [] : ["taskset", "-c", String(tools.pin[core])];
  const nice = tools.nice === 0 ? [] : ["nice", "-n", String(tools.nice)];
  return new Deno.Command("sh", {
    args: ["-c", script, "sh", ...nice, ...pin, ...argv],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** The command line running `script` (relative to bench/) with runtime `flags`. */
export function runtimeArgv(
  tools: Tools,
  runtime: Runtime | "node",
  script: string,
  flags: string[] = [],
): string[] {
  const path = `${BENCH_DIR}${script}`;
  if (runtime === "deno") return [tools.deno, "run", "--allow-all", ...flags, path];
  if (runtime === "bun") return [tools.bun, ...flags, path];
  return [tools.node, ...flags, path];
}

/** Collects the last few KiB of a stream (for error messages) and drains it. */
async function tail(stream: ReadableStream<Uint8Array>, into: { text: string }): Promise<void> {
  const decoder = new TextDecoder();
  for await (const chunk of stream) {
    into.text = (into.text + decoder.decode(chunk, { stream: true })).slice(-4000);
  }
}

export class ServerProcess {
  readonly target: Target;
  readonly pid: number;
  readonly port: number;
  #child: Deno.ChildProcess;
  #stderr: { text: string };

  private constructor(
    target: Target,
    child: Deno.ChildProcess,
    port: number,
    stderr: { text: string },
  ) {
    this.target = target;
    this.#child = child;
    this.pid = child.pid;
    this.port = port;
    this.#stderr = stderr;
  }

  /** Starts `target` (with extra runtime `flags`) and waits for its port. */
  static async start(tools: Tools, target: Target, flags: string[] = []): Promise<ServerProcess> {
    const child = spawn(tools, "server", runtimeArgv(tools, target.runtime, target.script, flags));
    const stderr = { text: "" };
    tail(child.stderr, stderr).catch(() => {});
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("no port printed within 30 s")), 30_000);
    });
    try {
      for (;;) {
        const { value, done } = await Promise.race([lines.read(), timeout]);
        if (done) throw new Error("exited before printing its port");
        buffer += value;
        const match = /\{"port":(\d+)\}/.exec(buffer);
        if (match !== null) {
          // Keep draining stdout so the server never blocks on a full pipe.
          (async () => {
            while (!(await lines.read()).done);
          })().catch(() => {});
          return new ServerProcess(target, child, Number(match[1]), stderr);
        }
      }
    } catch (error) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
      await child.status;
      throw new Error(
        `${target.label} did not start: ${(error as Error).message}\n${stderr.text}`,
      );
    } finally {
      clearTimeout(timer);
    }
  }

  get stderr(): string {
    return this.#stderr.text;
  }

  async stop(): Promise<void> {
    try {
      this.#child.kill("SIGTERM");
    } catch {
      // Already gone.
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killed = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        try {
          this.#child.kill("SIGKILL");
        } catch {
          // Already gone.
        }
        resolve();
      }, 3000);
    });
    await Promise.race([this.#child.status, killed]);
    clearTimeout(timer);
    await this.#child.status;
  }
}

/** Runs a pinned load process that prints one JSON line; kills it after `timeoutMs`. */
export async function runJson<T>(
  tools: Tools,
  argv: string[],
  timeoutMs: number,
): Promise<T> {
  const child = spawn(tools, "load", argv);
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  const stdout = new TextDecoder().decode(out.stdout).trim();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  const last = stdout.split("\n").pop() ?? "";
  if (!out.success || !last.startsWith("{")) {
    throw new Error(
      `exit ${out.code}${out.signal ? ` (${out.signal})` : ""}: ${(stderr || stdout).slice(-1500)}`,
    );
  }
  return JSON.parse(last) as T;
}
