/**
 * The benchmark runner: `deno task bench` (or `deno task bench --quick`).
 *
 * Starts every echo server as its own process pinned to core 1 and drives it
 * with the Bun load generator pinned to core 0, one scenario at a time with
 * all targets side by side; then measures server memory per idle connection
 * and the client side. Prints the tables, writes raw JSON to `bench/results/`
 * and the latest tables, with the machine they ran on, to `bench/README.md`.
 *
 * Flags (environment variable in brackets):
 * - `--quick`: short windows and fewer idle connections (a smoke run, < 1 min)
 * - `--duration=S` [BENCH_DURATION]: measured seconds per run (default 3)
 * - `--warmup=S` [BENCH_WARMUP]: warmup seconds per run (default 1)
 * - `--rounds=N` [BENCH_ROUNDS]: runs per target and scenario, interleaved
 *   with the other targets; the fastest round that other processes left alone
 *   is reported, and up to 3 more are run for a target whose every round was
 *   disturbed (default 3, quick 1)
 * - `--idle-connections=N` [BENCH_IDLE_CONNECTIONS]: default 10000
 * - `--idle-minute=S` [BENCH_IDLE_MINUTE]: after the idle reading 2 s in, keep
 *   the connections open (the load generator answers keepalive pings) until S
 *   seconds and read the memory every 5 s (default 60; quick 0: not at all)
 * - `--only=REGEX`: run only targets/clients whose id matches
 * - `--scenarios=REGEX`: run only server scenarios whose id matches (e.g.
 *   `1MiB`, `handshake`), for quick A/B runs of one change
 * - `--skip=servers,handshakes,breakdown,idle,clients,broadcast,scaleout`: leave
 *   out whole parts (`handshakes`: the handshake rows of the server table;
 *   `breakdown`: the profiled runs that split the 64 B echo's CPU time by stage)
 * - `--wait-quiet=S` [BENCH_WAIT_QUIET]: before each run, wait up to S seconds
 *   for the machine to be nearly idle (under 25% of a core busy), for shared
 *   machines where other work skews the numbers (default 0: do not wait)
 * - `--loadgen=c|bun`: the load generator: bench/loadgen.c, compiled with the
 *   system's C compiler (default; falls back to bun without one), or
 *   bench/loadgen.ts on Bun
 * - `--nice=N` [BENCH_NICE]: run servers and load at this nice value (e.g. -10,
 *   needs root) so that other work on a shared machine disturbs less
 * - `--no-readme`: do not rewrite bench/README.md
 * - `--from=FILE`: measure nothing; print (and write to the README) the tables
 *   of a saved bench/results/*.json
 *
 * No timing assertions: this only reports.
 *
 * @module
 */

import { type LoadResult, machineCpuSeconds, sleep } from "./lib/proc.ts";
import type { BroadcastConfig, BroadcastResult } from "./clients/broadcast_load.ts";
import { RedisProcess } from "../tests/_redis.ts";
import type { IdleResult } from "./loadgen.ts";
import { profileServer } from "./profile.ts";
import { type Stage, STAGE_NOTES, STAGES, stageShares } from "./lib/breakdown.ts";
import {
  capture,
  CLIENT_SCENARIOS,
  CLIENT_SERVER,
  CLIENTS,
  type ClientTarget,
  findTools,
  HANDSHAKE_SCENARIO,
  loadConfig,
  runJson,
  runLoad,
  runtimeArgv,
  type Scenario,
  SCENARIOS,
  ServerProcess,
  type Target,
  TARGETS,
  type Tools,
} from "./lib/harness.ts";

const BENCH_DIR = new URL(".", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

// ---------------------------------------------------------------- options

interface Options {
  quick: boolean;
  warmupMs: number;
  durationMs: number;
  rounds: number;
  idleConnections: number;
  /** Idle connections stay open until this long after opening (0: read once, 2 s in). */
  idleMinuteMs: number;
  only: RegExp | null;
  scenarios: RegExp | null;
  skip: Set<string>;
  readme: boolean;
  nice: number;
  waitQuietMs: number;
  loadgen: "c" | "bun";
  from: string | null;
}

function parseOptions(args: string[]): Options {
  const flags = new Map<string, string>();
  for (const arg of args) {
    const match = /^--([^=]+)(?:=(.*))?$/.exec(arg);
    if (match === null) throw new Error(`Unknown argument ${arg}; see the header of bench/run.ts`);
    flags.set(match[1], match[2] ?? "true");
  }
  const known = [
    "quick",
    "duration",
    "warmup",
    "idle-connections",
    "idle-minute",
    "rounds",
    "wait-quiet",
    "only",
    "scenarios",
    "skip",
    "nice",
    "loadgen",
    "no-readme",
    "from",
  ];
  for (const name of flags.keys()) {
    if (!known.includes(name)) {
      throw new Error(`Unknown flag --${name}; known: ${known.join(", ")}`);
    }
  }
  const quick = flags.has("quick");
  const number = (flag: string, env: string, full: number, short: number): number => {
    const text = flags.get(flag) ?? Deno.env.get(env);
    const value = text === undefined ? (quick ? short : full) : Number(text);
    if (!(value > 0)) throw new Error(`--${flag} must be a positive number, got ${text}`);
    return value;
  };
  return {
    quick,
    warmupMs: number("warmup", "BENCH_WARMUP", 1, 0.25) * 1000,
    durationMs: number("duration", "BENCH_DURATION", 3, 0.5) * 1000,
    rounds: Math.round(number("rounds", "BENCH_ROUNDS", 3, 1)),
    idleConnections: Math.round(
      number("idle-connections", "BENCH_IDLE_CONNECTIONS", 10_000, 2_000),
    ),
    idleMinuteMs: Number(
      flags.get("idle-minute") ?? Deno.env.get("BENCH_IDLE_MINUTE") ?? (quick ? 0 : 60),
    ) * 1000,
    only: flags.has("only") ? new RegExp(flags.get("only")!) : null,
    scenarios: flags.has("scenarios") ? new RegExp(flags.get("scenarios")!) : null,
    skip: new Set((flags.get("skip") ?? "").split(",").filter((s) => s !== "")),
    readme: !flags.has("no-readme"),
    nice: Number(flags.get("nice") ?? Deno.env.get("BENCH_NICE") ?? 0),
    loadgen: flags.get("loadgen") === "bun" ? "bun" : "c",
    from: flags.get("from") ?? null,
    waitQuietMs: Number(flags.get("wait-quiet") ?? Deno.env.get("BENCH_WAIT_QUIET") ?? 0) * 1000,
  };
}

// ---------------------------------------------------------------- results

interface ServerRow {
  scenario: string;
  target: string;
  /** The round with the least CPU used by other processes. */
  result?: LoadResult;
  /** Every successful round. */
  runs: LoadResult[];
  error?: string;
}

interface IdleRow {
  target: string;
  result?: IdleResult;
  error?: string;
}

interface ClientRow {
  scenario: string;
  client: string;
  /** The round with the least CPU used by other processes. */
  result?: LoadResult;
  /** Every successful round. */
  runs: LoadResult[];
  error?: string;
}

/** The median run by messages per second (the lower middle one for an even count). */
function median(runs: LoadResult[]): LoadResult | undefined {
  const sorted = [...runs].sort((a, b) => a.messagesPerSec - b.messagesPerSec);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/** The run least disturbed by other processes. */
function quietest(runs: LoadResult[]): LoadResult | undefined {
  let best: LoadResult | undefined;
  for (const run of runs) if (best === undefined || run.otherCpu < best.otherCpu) best = run;
  return best;
}

/**
 * The run to report: the fastest of the rounds that other processes left
 * alone (interference only ever slows a run down, also the kind a VM cannot
 * see, so the best quiet round is the closest to what the code can do), or
 * the quietest round when none was quiet.
 */
function representative(runs: LoadResult[]): LoadResult | undefined {
  let best: LoadResult | undefined;
  for (const run of runs) {
    if (run.otherCpu > NOISY_CPU) continue;
    if (best === undefined || run.messagesPerSec > best.messagesPerSec) best = run;
  }
  return best ?? quietest(runs);
}

interface Machine {
  date: string;
  nproc: number;
  cpu: string;
  memoryGiB: number;
  kernel: string;
  deno: string;
  v8: string;
  bun: string;
  node: string;
  commit: string;
  pinned: string;
  loadgen: string;
  loadAverageBefore: string;
  loadAverageAfter: string;
}

interface Report {
  machine: Machine;
  options: {
    warmupMs: number;
    durationMs: number;
    rounds: number;
    idleConnections: number;
    /** Absent in reports saved before it existed. */
    idleMinuteMs?: number;
    quick: boolean;
    waitQuietMs: number;
  };
  servers: ServerRow[];
  idle: IdleRow[];
  clients: ClientRow[];
  /** Absent in results saved before the broadcast scenario existed. */
  broadcast?: BroadcastRow[];
  /** Scale-out rows (1 process, Redis broker, 2 workers on one port); absent in older results. */
  scaleout?: BroadcastRow[];
  /** Where the 64 B echo's server CPU goes, per runtime; absent in older results. */
  breakdown?: BreakdownRow[];
}

interface BreakdownRow {
  scenario: string;
  target: string;
  /** Shares (0-1) of the profiled server's busy samples per stage. */
  shares?: Record<Stage, number>;
  /** Server CPU µs per message in the profiled run. */
  cpuPerMessage?: number;
  error?: string;
}

interface BroadcastRow {
  scenario: string;
  target: string;
  result?: BroadcastResult;
  runs: BroadcastResult[];
  error?: string;
}

// ---------------------------------------------------------------- broadcast

/** A broadcast server: `/sub` subscribes, each message on `/pub` goes to every subscriber. */
interface BroadcastTarget {
  id: string;
  label: string;
  runtime: "deno" | "bun" | "node";
  script: string;
  /** Offers permessage-deflate (the 16 KiB scenario runs only these). */
  deflate: boolean;
  /** The built-in server of the same runtime. */
  peer?: string;
}

const BROADCAST_TARGETS: BroadcastTarget[] = [
  {
    id: "bcast-sluice-deno",
    label: "Sluice on Deno (publish)",
    runtime: "deno",
    script: "servers/broadcast_sluice.ts",
    deflate: true,
    peer: "bcast-deno-builtin",
  },
  {
    id: "bcast-deno-builtin",
    label: "Deno built-in (send loop)",
    runtime: "deno",
    script: "servers/broadcast_deno_builtin.ts",
    deflate: false,
  },
  {
    id: "bcast-sluice-bun",
    label: "Sluice on Bun (publish)",
    runtime: "bun",
    script: "servers/broadcast_sluice.ts",
    deflate: true,
    peer: "bcast-bun-builtin",
  },
  {
    id: "bcast-bun-builtin",
    label: "Bun built-in (server.publish)",
    runtime: "bun",
    script: "servers/broadcast_bun_builtin.ts",
    deflate: true,
  },
  {
    id: "bcast-ws-node",
    label: "npm ws on Node (send loop)",
    runtime: "node",
    script: "servers/broadcast_ws_node.mjs",
    deflate: true,
  },
];

interface BroadcastScenario {
  id: string;
  label: string;
  size: number;
  subscribers: number;
  window: number;
  compress: boolean;
}

const BROADCAST_SCENARIOS: BroadcastScenario[] = [
  {
    id: "bcast-64B-s1000",
    label: "64 B to 1000 subscribers, 32 in flight",
    size: 64,
    subscribers: 1000,
    window: 32,
    compress: false,
  },
  {
    id: "bcast-16KiB-s1000-deflate",
    label: "16 KiB to 1000 subscribers, deflate, 4 in flight",
    size: 16 * 1024,
    subscribers: 1000,
    window: 4,
    compress: true,
  },
];

async function runBroadcast(tools: Tools, options: Options, report: Report): Promise<void> {
  const rows: BroadcastRow[] = (report.broadcast ??= []);
  for (const scenario of BROADCAST_SCENARIOS) {
    const targets = BROADCAST_TARGETS.filter((t) =>
      selected(options, t.id) && (!scenario.compress || t.deflate)
    );
    const byTarget = new Map<string, BroadcastRow>();
    for (let round = 1; round <= options.rounds; round++) {
      for (const target of targets) {
        const row = byTarget.get(target.id) ??
          { scenario: scenario.id, target: target.id, runs: [] };
        byTarget.set(target.id, row);
        progress(`${scenario.id.padEnd(26)} #${round} ${target.label.padEnd(30)} `);
        let server: ServerProcess | undefined;
        try {
          await waitForQuiet(options);
          // The servers read the compression switch from the environment they inherit.
          if (scenario.compress) Deno.env.set("BENCH_BROADCAST_COMPRESS", "1");
          else Deno.env.delete("BENCH_BROADCAST_COMPRESS");
          // ServerProcess takes the echo targets' runtimes; runtimeArgv also runs Node.
          server = await ServerProcess.start(tools, {
            id: target.id,
            label: target.label,
            runtime: target.runtime as Target["runtime"],
            script: target.script,
          });
          const config: BroadcastConfig = {
            hostname: "127.0.0.1",
            port: server.port,
            subscribers: scenario.subscribers,
            size: scenario.size,
            window: scenario.window,
            warmupMs: options.warmupMs,
            durationMs: options.durationMs,
            serverPid: server.pid,
            compress: scenario.compress,
          };
          const result = await runJson<BroadcastResult>(
            tools,
            runtimeArgv(tools, "bun", "clients/broadcast_load.ts").concat(JSON.stringify(config)),
            options.warmupMs + options.durationMs + 90_000,
          );
          row.runs.push(result);
          progress(
            `${fmt(result.messagesPerSec)} deliveries/s` +
              (result.lost > 0 || result.stalled ? ` (lost ${result.lost})` : "") + "\n",
          );
        } catch (error) {
          row.error = `${(error as Error).message}\n${server?.stderr.slice(-1000) ?? ""}`;
          progress(`failed: ${row.error.split("\n")[0]}\n`);
        } finally {
          Deno.env.delete("BENCH_BROADCAST_COMPRESS");
          await server?.stop();
        }
      }
    }
    for (const row of byTarget.values()) {
      row.result = representative(row.runs) as BroadcastResult | undefined;
      rows.push(row);
    }
  }
}

// ---------------------------------------------------------------- breakdown

/** The echo runs whose CPU time is split by stage: Sluice on each runtime, 64 B. */
const BREAKDOWN_TARGETS = ["sluice-deno", "sluice-bun"];
const BREAKDOWN_SCENARIOS = ["64B-c100-if1", "64B-c100-if16"];

/** Profiles Sluice on each runtime under the 64 B echo and splits its CPU time by stage. */
async function runBreakdown(tools: Tools, options: Options, report: Report): Promise<void> {
  const rows: BreakdownRow[] = (report.breakdown ??= []);
  for (const scenarioId of BREAKDOWN_SCENARIOS) {
    const scenario = SCENARIOS.find((s) => s.id === scenarioId)!;
    for (const targetId of BREAKDOWN_TARGETS.filter((id) => selected(options, id))) {
      const target = TARGETS.find((t) => t.id === targetId)!;
      const row: BreakdownRow = { scenario: scenario.id, target: target.id };
      rows.push(row);
      progress(`breakdown ${scenario.id.padEnd(14)} ${target.label.padEnd(20)} `);
      try {
        await waitForQuiet(options);
        const { profile, result } = await profileServer(tools, target, scenario, {
          durationMs: Math.max(options.durationMs, 3000),
          warmupMs: Math.max(options.warmupMs, 1000),
        });
        row.shares = stageShares(profile);
        row.cpuPerMessage = result.serverCpu ? (result.serverCpu * 1e4) / result.messagesPerSec : 0;
        progress(`${fmt(row.cpuPerMessage, 2)} µs/msg profiled\n`);
      } catch (error) {
        row.error = (error as Error).message;
        progress(`failed: ${row.error.split("\n")[0]}\n`);
      }
    }
  }
}

/**
 * The breakdown table: each stage's share of the profiled run times the
 * server CPU µs per message of the throughput table (of the profiled run
 * when the table has no such row).
 */
function breakdownTable(report: Report): string {
  const rows = (report.breakdown ?? []).filter((r) => r.shares !== undefined);
  const cpu = (scenario: string, target: string) => {
    const r = report.servers.find((row) => row.scenario === scenario && row.target === target)
      ?.result;
    return r?.serverCpu ? (r.serverCpu * 1e4) / r.messagesPerSec : undefined;
  };
  const columns = rows.map((row) => {
    const scenario = SCENARIOS.find((s) => s.id === row.scenario)!;
    return {
      label: `${targetLabel(row.target)}, ${scenario.inflight} in flight`,
      total: cpu(row.scenario, row.target) ?? row.cpuPerMessage ?? 0,
      row,
      scenario,
    };
  });
  const body: string[][] = STAGES.map((stage) => [
    stage,
    STAGE_NOTES[stage],
    ...columns.map((c) => fmt(c.total * c.row.shares![stage], 2)),
  ]);
  body.push([
    "**total**",
    "server CPU µs / msg of the throughput table (or of the profiled run)",
    ...columns.map((c) => `**${fmt(c.total, 2)}**`),
  ]);
  const reference = (kind: "peer" | "ceiling", label: string) => [
    label,
    "total, same scenario, same run",
    ...columns.map((c) => {
      const id = TARGETS.find((t) => t.id === c.row.target)?.[kind];
      const value = id === undefined ? undefined : cpu(c.row.scenario, id);
      return value === undefined ? "–" : fmt(value, 2);
    }),
  ];
  body.push(reference("peer", "built-in server"));
  body.push(reference("ceiling", "raw TCP echo"));
  return table(["64 B echo", "what it covers", ...columns.map((c) => c.label)], body);
}

const BREAKDOWN_NOTE = "Each column is one profiled run of Sluice's echo server (V8's " +
  "sampling profiler over the inspector on Deno, `bun --cpu-prof` on Bun; `bench/profile.ts`), " +
  "its busy samples sorted into stages by the innermost frame that names one " +
  "(`bench/lib/breakdown.ts`): a native I/O leaf (`op_write`, `op_read`, Bun's socket " +
  "`write`) is runtime I/O whoever called it, other natives (`slice`, `set`) count for their " +
  "caller. The shares are multiplied by the server CPU µs per message of the throughput " +
  "table. Runtime I/O includes the kernel's work for the system calls, which on loopback " +
  "also delivers the bytes to the load generator's socket.";

// ---------------------------------------------------------------- scale-out

/** One way of running the broadcast server: processes on one port, with or without Redis. */
interface ScaleOutTarget {
  id: string;
  label: string;
  workers: number;
  redis: boolean;
}

const SCALEOUT_TARGETS: ScaleOutTarget[] = [
  { id: "scale-1proc", label: "Sluice on Deno, 1 process", workers: 1, redis: false },
  { id: "scale-1proc-redis", label: "1 process + Redis broker", workers: 1, redis: true },
  { id: "scale-2workers-redis", label: "2 workers (reusePort) + Redis", workers: 2, redis: true },
];

/** The scale-out rows: the 64 B broadcast (1000 subscribers) through each target. */
async function runScaleOut(tools: Tools, options: Options, report: Report): Promise<void> {
  const rows: BroadcastRow[] = (report.scaleout ??= []);
  const scenario = BROADCAST_SCENARIOS[0];
  let redis: RedisProcess | null = null;
  try {
    redis = await RedisProcess.start();
  } catch (error) {
    progress(`scale-out: no redis-server (${(error as Error).message}); Redis rows skipped\n`);
  }
  try {
    for (const target of SCALEOUT_TARGETS.filter((t) => selected(options, t.id))) {
      const row: BroadcastRow = { scenario: scenario.id, target: target.id, runs: [] };
      rows.push(row);
      if (target.redis && redis === null) {
        row.error = "redis-server not installed";
        continue;
      }
      for (let round = 1; round <= options.rounds; round++) {
        progress(`${"scale-out 64B s1000".padEnd(26)} #${round} ${target.label.padEnd(30)} `);
        let server: ServerProcess | undefined;
        try {
          await waitForQuiet(options);
          Deno.env.set("BENCH_SCALEOUT_WORKERS", String(target.workers));
          if (target.redis) Deno.env.set("BENCH_REDIS_URL", redis!.url);
          else Deno.env.delete("BENCH_REDIS_URL");
          server = await ServerProcess.start(tools, {
            id: target.id,
            label: target.label,
            runtime: "deno",
            script: "servers/broadcast_sluice_scaleout.ts",
          } as Target);
          const config: BroadcastConfig = {
            hostname: "127.0.0.1",
            port: server.port,
            subscribers: scenario.subscribers,
            size: scenario.size,
            window: scenario.window,
            warmupMs: options.warmupMs,
            durationMs: options.durationMs,
            // CPU of one process only: with workers it would be the launcher's.
            serverPid: target.workers === 1 ? server.pid : 0,
            compress: false,
          };
          const result = await runJson<BroadcastResult>(
            tools,
            runtimeArgv(tools, "bun", "clients/broadcast_load.ts").concat(JSON.stringify(config)),
            options.warmupMs + options.durationMs + 90_000,
          );
          row.runs.push(result);
          progress(
            `${fmt(result.messagesPerSec)} deliveries/s` +
              (result.lost > 0 || result.stalled ? ` (lost ${result.lost})` : "") + "\n",
          );
        } catch (error) {
          row.error = `${(error as Error).message}\n${server?.stderr.slice(-1000) ?? ""}`;
          progress(`failed: ${row.error.split("\n")[0]}\n`);
        } finally {
          Deno.env.delete("BENCH_SCALEOUT_WORKERS");
          Deno.env.delete("BENCH_REDIS_URL");
          await server?.stop();
        }
      }
      row.result = representative(row.runs) as BroadcastResult | undefined;
    }
  } finally {
    await redis?.stop();
  }
}

function scaleOutTable(report: Report): string {
  const rows = (report.scaleout ?? []).map((row) => {
    const label = SCALEOUT_TARGETS.find((t) => t.id === row.target)?.label ?? row.target;
    const r = row.result;
    if (r === undefined) return [label, "failed", "", "", "", "", ""];
    return [
      label + flags(r),
      fmt(r.messagesPerSec),
      fmt(r.publishedPerSec),
      fmt(r.p50us === null ? null : r.p50us / 1000, 1),
      fmt(r.p99us === null ? null : r.p99us / 1000, 1),
      fmt(r.loadCpu),
      `${fmt(r.lost)}${r.stalled ? " (stalled)" : ""}`,
    ];
  });
  return table(
    [
      "64 B to 1000 subscribers, 32 in flight",
      "deliveries/s",
      "published/s",
      "p50 ms",
      "p99 ms",
      "loadgen CPU %",
      "lost",
    ],
    rows,
  );
}

const SCALEOUT_NOTE = "The broadcast scenario above, served three ways on this 2-core " +
  "machine: one Sluice process on Deno; the same with a RedisBroker (each publish also goes " +
  "through a local redis-server and comes back, where its origin tag has it skipped); and two " +
  "worker processes sharing the port (reusePort; the kernel spreads the 1000 subscribers and " +
  "the publisher between them) with a RedisBroker in each, so that a publish in one worker " +
  "reaches the other's subscribers through Redis. The first worker is pinned to the server " +
  "core, the second to the load generator's core; redis-server is not pinned.";

function broadcastTable(report: Report): string {
  const all = report.broadcast ?? [];
  const find = (scenario: string, target: string | undefined) =>
    all.find((r) => r.scenario === scenario && r.target === target)?.result;
  const rows: string[][] = [];
  for (const scenario of BROADCAST_SCENARIOS) {
    for (const row of all.filter((r) => r.scenario === scenario.id)) {
      const target = BROADCAST_TARGETS.find((t) => t.id === row.target)!;
      const r = row.result;
      if (r === undefined) {
        rows.push([scenario.label, target.label, "failed", "", "", "", "", "", "", "", "", ""]);
        continue;
      }
      rows.push([
        scenario.label,
        target.label + flags(r),
        fmt(r.messagesPerSec),
        fmt(r.publishedPerSec),
        fmt(r.p50us === null ? null : r.p50us / 1000, 1),
        fmt(r.p99us === null ? null : r.p99us / 1000, 1),
        fmt(r.serverCpu),
        r.serverCpu ? fmt((r.serverCpu * 1e4) / r.messagesPerSec, 2) : "–",
        fmt(r.loadCpu),
        fmt(r.otherCpu),
        `${fmt(r.lost)}${r.stalled ? " (stalled)" : ""}`,
        target.peer ? ratio(r.messagesPerSec, find(scenario.id, target.peer)?.messagesPerSec) : "",
      ]);
    }
  }
  return table(
    [
      "Scenario",
      "Server",
      "deliveries/s",
      "published/s",
      "p50 ms",
      "p99 ms",
      "server CPU %",
      "server CPU µs / delivery",
      "loadgen CPU %",
      "other CPU %",
      "lost",
      "vs built-in",
    ],
    rows,
  );
}

function broadcastGoals(report: Report): string[] {
  const all = report.broadcast ?? [];
  if (all.length === 0) return [];
  const get = (target: string) =>
    all.find((r) => r.scenario === "bcast-64B-s1000" && r.target === target)?.result;
  const lines: string[] = [];
  const deno = get("bcast-sluice-deno")?.messagesPerSec;
  const denoBuiltin = get("bcast-deno-builtin")?.messagesPerSec;
  const denoPass = deno === undefined || denoBuiltin === undefined ? null : deno >= 3 * denoBuiltin;
  lines.push(
    "- Broadcast: Sluice on Deno ≥ 3× Deno built-in deliveries/s: " +
      `${verdict(denoPass)} (${ratio(deno, denoBuiltin)})`,
  );
  const bun = get("bcast-sluice-bun")?.messagesPerSec;
  const bunBuiltin = get("bcast-bun-builtin")?.messagesPerSec;
  const bunPass = bun === undefined || bunBuiltin === undefined ? null : bun >= bunBuiltin;
  lines.push(
    "- Broadcast: Sluice on Bun ≥ Bun's server.publish deliveries/s: " +
      `${verdict(bunPass)} (${ratio(bun, bunBuiltin)})`,
  );
  const sluiceRows = all.filter((r) => r.target.startsWith("bcast-sluice") && r.result);
  const lost = sluiceRows.reduce((n, r) => n + r.result!.lost, 0);
  const lostPass = sluiceRows.length === 0
    ? null
    : lost === 0 && sluiceRows.every((r) => !r.result!.stalled);
  lines.push(
    `- Broadcast: zero lost messages for subscribers that keep up (Sluice): ${
      verdict(lostPass)
    } (${lost} lost)`,
  );
  return lines;
}

async function describeMachine(tools: Tools): Promise<Machine> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
  const memKiB = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0);
  return {
    date: new Date().toISOString(),
    nproc: Number(await capture("nproc", [])) || navigator.hardwareConcurrency,
    cpu: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "unknown",
    memoryGiB: Math.round((memKiB / 1024 / 1024) * 10) / 10,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    bun: await capture(tools.bun, ["--version"]),
    node: await capture(tools.node, ["--version"]),
    commit: await capture("git", ["-C", ROOT, "rev-parse", "--short", "HEAD"]),
    pinned:
      (tools.pin === null
        ? "not pinned"
        : `server on core ${tools.pin.server}, load on core ${tools.pin.load} (taskset)`) +
      (tools.nice === 0 ? "" : `, nice ${tools.nice}`),
    loadgen: tools.cLoadgen === null
      ? "bench/loadgen.ts on Bun"
      : `bench/loadgen.c (${await capture("sh", ["-c", "cc --version | head -1"])}, -O2)`,
    loadAverageBefore: await loadAverage(),
    loadAverageAfter: "",
  };
}

async function loadAverage(): Promise<string> {
  const text = await Deno.readTextFile("/proc/loadavg").catch(() => "");
  return text.split(" ").slice(0, 3).join(" ");
}

// ---------------------------------------------------------------- running

function selected(options: Options, id: string): boolean {
  return options.only === null || options.only.test(id);
}

function progress(text: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(text));
}

/** CPU % of one core used by other processes above which a run counts as disturbed. */
const NOISY_CPU = 25;

/** Runs `fn`, and once more after a pause if it fails (a reinstall or a hiccup). */
async function retryOnce<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch {
    progress("(failed, retrying) ");
    await sleep(2000);
    return await fn();
  }
}

/** Other processes used over a quarter of a core in even the quietest run. */
function noisy(runs: LoadResult[]): boolean {
  const best = quietest(runs);
  return best !== undefined && best.otherCpu > NOISY_CPU;
}

/** Rounds added for a target whose every run was disturbed (only with rounds > 1). */
function extraRounds(options: Options, runs: LoadResult[] | undefined): number {
  return options.rounds > 1 && runs !== undefined && runs.length > 0 ? 3 : 0;
}

/** Busy share of one core used by the whole machine over `ms`, in %. */
async function machineBusy(ms: number): Promise<number> {
  const start = machineCpuSeconds();
  await sleep(ms);
  return (100 * (machineCpuSeconds() - start)) / (ms / 1000);
}

/**
 * Waits (up to `options.waitQuietMs`) until the machine is nearly idle, so
 * that other work on a shared machine does not land in a measured window.
 */
async function waitForQuiet(options: Options): Promise<void> {
  if (options.waitQuietMs <= 0) return;
  const deadline = performance.now() + options.waitQuietMs;
  let busy = await machineBusy(500);
  if (busy < 25) return;
  progress(`(machine ${Math.round(busy)}% busy, waiting) `);
  while (performance.now() < deadline) {
    busy = await machineBusy(1000);
    if (busy < 25) return;
  }
  progress(`(still ${Math.round(busy)}% busy, running anyway) `);
}

/** The server scenarios this run measures: the echo ones, then handshakes. */
function serverScenarios(options: Options): Scenario[] {
  const all = options.skip.has("handshakes") ? SCENARIOS : [...SCENARIOS, HANDSHAKE_SCENARIO];
  const pattern = options.scenarios;
  return pattern === null ? all : all.filter((s) => pattern.test(s.id));
}

/** Every server scenario a report may hold, in table order. */
const ALL_SERVER_SCENARIOS = [...SCENARIOS, HANDSHAKE_SCENARIO];

async function runServers(tools: Tools, options: Options, report: Report): Promise<void> {
  const targets = TARGETS.filter((t) => selected(options, t.id));
  const servers = new Map<string, ServerProcess>();
  try {
    for (const target of targets) {
      try {
        servers.set(target.id, await ServerProcess.start(tools, target));
      } catch (error) {
        for (const scenario of serverScenarios(options)) {
          report.servers.push({
            scenario: scenario.id,
            target: target.id,
            runs: [],
            error: (error as Error).message,
          });
        }
      }
    }
    for (const scenario of serverScenarios(options)) {
      const rows = new Map<string, ServerRow>();
      const measure = async (target: Target, round: string): Promise<void> => {
        const server = servers.get(target.id);
        // Raw TCP echoes have no handshake; the fixed-101 floors have nothing but one.
        if (
          server === undefined || (scenario === HANDSHAKE_SCENARIO && target.raw) ||
          (scenario !== HANDSHAKE_SCENARIO && target.floor)
        ) return;
        const row = rows.get(target.id) ?? { scenario: scenario.id, target: target.id, runs: [] };
        rows.set(target.id, row);
        progress(`${scenario.id.padEnd(14)} ${round} ${target.label.padEnd(20)} `);
        try {
          await waitForQuiet(options);
          const result = await retryOnce(() =>
            runLoad(tools, loadConfig(server, scenario, options))
          );
          row.runs.push(result);
          progress(`${fmt(result.messagesPerSec)} msg/s\n`);
        } catch (error) {
          row.error = `${(error as Error).message}\n${server.stderr.slice(-1000)}`;
          progress(`failed: ${row.error.split("\n")[0]}\n`);
        }
      };
      for (let round = 1; round <= options.rounds; round++) {
        for (const target of targets) await measure(target, `#${round}`);
      }
      for (const target of targets) {
        for (let extra = 1; extra <= extraRounds(options, rows.get(target.id)?.runs); extra++) {
          if (!noisy(rows.get(target.id)!.runs)) break;
          await measure(target, `+${extra}`);
        }
      }
      for (const row of rows.values()) {
        row.result = representative(row.runs);
        report.servers.push(row);
      }
    }
  } finally {
    for (const server of servers.values()) await server.stop();
  }
}

async function runIdle(tools: Tools, options: Options, report: Report): Promise<void> {
  for (const target of TARGETS.filter((t) => t.idle && selected(options, t.id))) {
    progress(`idle ${options.idleConnections} conns ${target.label.padEnd(20)} `);
    const row: IdleRow = { target: target.id };
    let server: ServerProcess | undefined;
    try {
      server = await ServerProcess.start(tools, target);
      const base = {
        mode: "idle" as const,
        hostname: "127.0.0.1",
        port: server.port,
        raw: false,
        inflight: 1,
        size: 0,
        warmupMs: 0,
        durationMs: 0,
        serverPid: server.pid,
        batch: 250,
      };
      await waitForQuiet(options);
      // Warm the handshake path first, so compiling it is not counted per connection.
      await runJson<IdleResult>(
        tools,
        runtimeArgv(tools, "bun", "loadgen.ts").concat(
          JSON.stringify({ ...base, connections: 100, settleMs: 100 }),
        ),
        60_000,
      );
      row.result = await runJson<IdleResult>(
        tools,
        runtimeArgv(tools, "bun", "loadgen.ts").concat(
          JSON.stringify({
            ...base,
            connections: options.idleConnections,
            settleMs: options.quick ? 500 : 2000,
            ...(options.idleMinuteMs > 0 ? { steadyMs: options.idleMinuteMs } : {}),
          }),
        ),
        180_000 + options.idleMinuteMs,
      );
      progress(`${row.result.perConnectionKiB.toFixed(2)} KiB/conn\n`);
    } catch (error) {
      row.error = `${(error as Error).message}\n${server?.stderr.slice(-1000) ?? ""}`;
      progress(`failed: ${row.error.split("\n")[0]}\n`);
    } finally {
      await server?.stop();
    }
    report.idle.push(row);
  }
}

async function runClients(tools: Tools, options: Options, report: Report): Promise<void> {
  const clients = CLIENTS.filter((c) => selected(options, c.id));
  if (clients.length === 0) return;
  const serverTarget = TARGETS.find((t) => t.id === CLIENT_SERVER)!;
  const server = await ServerProcess.start(tools, serverTarget);
  try {
    for (const scenario of CLIENT_SCENARIOS) {
      const rows = new Map<string, ClientRow>();
      const measure = async (client: ClientTarget, round: string): Promise<void> => {
        progress(`client ${scenario.id.padEnd(14)} ${round} ${client.label.padEnd(34)} `);
        const row = rows.get(client.id) ?? { scenario: scenario.id, client: client.id, runs: [] };
        rows.set(client.id, row);
        const config = {
          impl: client.impl,
          url: `ws://127.0.0.1:${server.port}/`,
          connections: scenario.connections,
          inflight: scenario.inflight,
          size: scenario.size,
          warmupMs: options.warmupMs,
          durationMs: options.durationMs,
          serverPid: server.pid,
        };
        const script = client.runtime === "node" ? "clients/ws_node.mjs" : "clients/client.ts";
        try {
          await waitForQuiet(options);
          const result = await retryOnce(() =>
            runJson<LoadResult>(
              tools,
              runtimeArgv(tools, client.runtime, script).concat(JSON.stringify(config)),
              options.warmupMs + options.durationMs + 60_000,
            )
          );
          row.runs.push(result);
          progress(`${fmt(result.messagesPerSec)} msg/s\n`);
        } catch (error) {
          row.error = (error as Error).message;
          progress(`failed: ${row.error.split("\n")[0]}\n`);
        }
      };
      for (let round = 1; round <= options.rounds; round++) {
        for (const client of clients) await measure(client, `#${round}`);
      }
      for (const client of clients) {
        for (let extra = 1; extra <= extraRounds(options, rows.get(client.id)?.runs); extra++) {
          if (!noisy(rows.get(client.id)!.runs)) break;
          await measure(client, `+${extra}`);
        }
      }
      for (const row of rows.values()) {
        row.result = representative(row.runs);
        report.clients.push(row);
      }
    }
  } finally {
    await server.stop();
  }
}

// ---------------------------------------------------------------- tables

function fmt(n: number | null | undefined, digits = 0): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  return n.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || b === 0) return "–";
  return `${(a / b).toFixed(2)}×`;
}

function table(head: string[], rows: string[][]): string {
  const right = head.map((_, i) => i >= 2);
  const lines = [
    `| ${head.join(" | ")} |`,
    `| ${head.map((_, i) => (right[i] ? "---:" : "---")).join(" | ")} |`,
    ...rows.map((row) => `| ${row.join(" | ")} |`),
  ];
  return lines.join("\n");
}

function targetLabel(id: string): string {
  return TARGETS.find((t) => t.id === id)?.label ?? id;
}

/** How far apart the rounds were: (max − min) / median of msg/s, in %. */
function spread(runs: LoadResult[]): string {
  if (runs.length < 2) return "–";
  const rates = runs.map((r) => r.messagesPerSec);
  const mid = median(runs)!.messagesPerSec;
  return mid > 0 ? fmt((100 * (Math.max(...rates) - Math.min(...rates))) / mid) : "–";
}

/** Marks a run whose numbers are suspect: saturated load generator or a busy machine. */
function flags(result: LoadResult): string {
  const marks = [];
  if (result.loadCpu > 90) marks.push("L");
  if (result.otherCpu > NOISY_CPU) marks.push("N");
  if (result.errors > 0) marks.push("E");
  return marks.length > 0 ? ` (${marks.join("")})` : "";
}

function serverTable(report: Report): string {
  const find = (scenario: string, target: string | undefined) =>
    report.servers.find((r) => r.scenario === scenario && r.target === target)?.result;
  const rows: string[][] = [];
  for (const scenario of ALL_SERVER_SCENARIOS) {
    for (const row of report.servers.filter((r) => r.scenario === scenario.id)) {
      const target = TARGETS.find((t) => t.id === row.target)!;
      const r = row.result;
      if (r === undefined) {
        rows.push([scenario.label, target.label, "failed", "", "", "", "", "", "", "", "", "", ""]);
        continue;
      }
      rows.push([
        scenario.label,
        target.label + flags(r),
        fmt(r.messagesPerSec),
        spread(row.runs),
        scenario.size === 0 ? "–" : fmt(r.mbPerSec, 1),
        fmt(r.p50us),
        fmt(r.p99us),
        fmt(r.serverCpu),
        r.serverCpu
          ? fmt((r.serverCpu * 1e4) / r.messagesPerSec, scenario.size < 1024 ? 1 : 0)
          : "–",
        fmt(r.loadCpu),
        fmt(r.otherCpu),
        target.peer ? ratio(r.messagesPerSec, find(scenario.id, target.peer)?.messagesPerSec) : "",
        target.ceiling
          ? ratio(r.messagesPerSec, find(scenario.id, target.ceiling)?.messagesPerSec)
          : "",
      ]);
    }
  }
  return table(
    [
      "Scenario",
      "Server",
      "msg/s",
      "spread %",
      "MB/s",
      "p50 µs",
      "p99 µs",
      "server CPU %",
      "server CPU µs / msg",
      "loadgen CPU %",
      "other CPU %",
      "vs built-in",
      "vs raw TCP",
    ],
    rows,
  );
}

/** The window of the later idle readings, e.g. "2-60 s in". */
function untilSeconds(report: Report): string {
  return `2-${(report.options.idleMinuteMs ?? 60_000) / 1000} s in`;
}

/** "; a-b KiB 2-60 s in" for an idle result with later readings. */
function minuteRange(report: Report, r: IdleResult): string {
  if (r.series === undefined || r.series.length === 0) return "";
  const [low, high] = [Math.min(...r.series), Math.max(...r.series)];
  return `; ${fmt(low, 2)}-${fmt(high, 2)} KiB ${untilSeconds(report)}`;
}

function idleTable(report: Report): string {
  const minute = report.idle.some((row) => row.result?.series !== undefined);
  return table(
    [
      "Server",
      "connections",
      "RSS before MiB",
      "RSS after MiB",
      "KiB / connection",
      ...(minute ? [`${untilSeconds(report)}: min / median / max KiB`] : []),
    ],
    report.idle.map((row) => {
      const r = row.result;
      if (r === undefined) return [targetLabel(row.target), "failed", "", "", "", ""];
      const series = [...(r.series ?? [])].sort((a, b) => a - b);
      const spread = series.length === 0 ? "–" : [
        series[0],
        series[series.length >> 1],
        series[series.length - 1],
      ].map((kib) => fmt(kib, 2)).join(" / ");
      return [
        targetLabel(row.target),
        fmt(r.connections) + (r.errors > 0 ? ` (${r.errors} failed)` : ""),
        fmt(r.rssBeforeKiB / 1024, 1),
        fmt(r.rssAfterKiB / 1024, 1),
        fmt(r.perConnectionKiB, 2),
        ...(minute ? [spread] : []),
      ];
    }),
  );
}

function clientTable(report: Report): string {
  const find = (scenario: string, client: string | undefined) =>
    report.clients.find((r) => r.scenario === scenario && r.client === client)?.result;
  const rows: string[][] = [];
  for (const scenario of CLIENT_SCENARIOS) {
    for (const row of report.clients.filter((r) => r.scenario === scenario.id)) {
      const client = CLIENTS.find((c) => c.id === row.client)!;
      const r = row.result;
      if (r === undefined) {
        rows.push([scenario.label, client.label, "failed", "", "", "", "", "", "", "", "", ""]);
        continue;
      }
      rows.push([
        scenario.label,
        client.label + flags({ ...r, loadCpu: 0 }),
        fmt(r.messagesPerSec),
        spread(row.runs),
        fmt(r.mbPerSec, 1),
        fmt(r.p50us),
        fmt(r.p99us),
        fmt(r.loadCpu),
        fmt(r.serverCpu),
        fmt(r.otherCpu),
        client.peer ? ratio(r.messagesPerSec, find(scenario.id, client.peer)?.messagesPerSec) : "",
        ratio(r.messagesPerSec, find(scenario.id, "client-ws-node")?.messagesPerSec),
      ]);
    }
  }
  return table(
    [
      "Scenario",
      "Client",
      "msg/s",
      "spread %",
      "MB/s",
      "p50 µs",
      "p99 µs",
      "client CPU %",
      "server CPU %",
      "other CPU %",
      "vs built-in",
      "vs ws",
    ],
    rows,
  );
}

function verdict(pass: boolean | null): string {
  return pass === null ? "not measured" : pass ? "**met**" : "**not met**";
}

function goals(report: Report): string {
  const lines: string[] = [];
  const server = (scenario: string, target: string) =>
    report.servers.find((r) => r.scenario === scenario && r.target === target)?.result;
  for (const [sluice, peer] of [["sluice-deno", "deno-builtin"], ["sluice-bun", "bun-builtin"]]) {
    const parts: string[] = [];
    let pass: boolean | null = null;
    for (const scenario of ALL_SERVER_SCENARIOS) {
      const a = server(scenario.id, sluice)?.messagesPerSec;
      const b = server(scenario.id, peer)?.messagesPerSec;
      if (a === undefined || b === undefined) continue;
      pass = (pass ?? true) && a >= b;
      parts.push(`${scenario.id} ${ratio(a, b)}`);
    }
    lines.push(
      `- ${targetLabel(sluice)} ≥ ${targetLabel(peer)} throughput in every scenario: ` +
        `${verdict(pass)} (${parts.join(", ") || "–"})`,
    );
  }
  for (const [sluice, ceiling] of [["sluice-deno", "deno-tcp"], ["sluice-bun", "bun-tcp"]]) {
    const a = server("1MiB-c4-if1", sluice)?.mbPerSec;
    const b = server("1MiB-c4-if1", ceiling)?.mbPerSec;
    const pass = a === undefined || b === undefined ? null : a / b >= 0.5;
    lines.push(
      `- ${targetLabel(sluice)} ≥ 50% of the raw TCP echo with 1 MiB messages: ` +
        `${verdict(pass)} (${
          a === undefined || b === undefined ? "–" : `${Math.round((100 * a) / b)}%`
        })`,
    );
  }
  // Deno's built-in server takes ~19 KiB, Bun's (uWebSockets) ~1.5 KiB.
  for (const [sluice, limit] of [["sluice-deno", 10], ["sluice-bun", 4]] as const) {
    const r = report.idle.find((row) => row.target === sluice)?.result;
    lines.push(
      `- ${targetLabel(sluice)} ≤ ${limit} KiB of server memory per idle connection: ` +
        `${verdict(r === undefined ? null : r.perConnectionKiB <= limit)} (${
          r === undefined
            ? "–"
            : `${fmt(r.perConnectionKiB, 2)} KiB 2 s in${minuteRange(report, r)}`
        })`,
    );
  }
  for (const runtime of ["deno", "bun"]) {
    const parts: string[] = [];
    let pass: boolean | null = null;
    for (const scenario of CLIENT_SCENARIOS) {
      const find = (id: string) =>
        report.clients.find((r) => r.scenario === scenario.id && r.client === id)?.result;
      const a = find(`client-sluice-${runtime}`)?.messagesPerSec;
      const b = find(`client-builtin-${runtime}`)?.messagesPerSec;
      if (a === undefined || b === undefined) continue;
      pass = (pass ?? true) && a >= b;
      parts.push(`${scenario.id} ${ratio(a, b)}`);
    }
    const name = runtime === "deno" ? "Deno" : "Bun";
    lines.push(
      `- Sluice client ≥ ${name} built-in client (same WHATWG API): ${verdict(pass)} (${
        parts.join(", ") || "–"
      })`,
    );
  }
  lines.push(...broadcastGoals(report));
  return lines.join("\n");
}

function errorsSection(report: Report): string {
  const failed = [
    ...report.servers.filter((r) => r.error).map((r) => `${r.scenario} ${r.target}: ${r.error}`),
    ...report.idle.filter((r) => r.error).map((r) => `idle ${r.target}: ${r.error}`),
    ...report.clients.filter((r) => r.error).map((r) => `${r.scenario} ${r.client}: ${r.error}`),
    ...(report.broadcast ?? []).filter((r) => r.error).map((r) =>
      `${r.scenario} ${r.target}: ${r.error}`
    ),
  ];
  if (failed.length === 0) return "";
  return `\n## Failed runs\n\n\`\`\`\n${failed.map((f) => f.slice(0, 600)).join("\n\n")}\n\`\`\`\n`;
}

function tables(report: Report): string {
  const o = report.options;
  const parts = [
    `Measured window ${o.durationMs / 1000} s after ${o.warmupMs / 1000} s of warmup per run, ` +
    `${o.rounds} round${o.rounds === 1 ? "" : "s"} per target` +
    (o.rounds > 1
      ? " (shown: the fastest round that other processes left alone, else the quietest)"
      : "") +
    (o.waitQuietMs > 0
      ? `, each run started once the machine was idle (waiting up to ${o.waitQuietMs / 1000} s)`
      : "") +
    (o.quick ? " (**quick smoke run**: too short for reliable numbers)." : "."),
  ];
  if (report.servers.length > 0) {
    parts.push(`### Server throughput and latency\n\n${serverTable(report)}`);
  }
  if ((report.breakdown ?? []).some((r) => r.shares !== undefined)) {
    parts.push(
      `### Where the time goes: 64 B echo, µs of server CPU per message\n\n${
        breakdownTable(report)
      }\n\n${BREAKDOWN_NOTE}`,
    );
  }
  if (report.idle.length > 0) {
    parts.push(`### Server memory per idle connection\n\n${idleTable(report)}`);
  }
  if (report.clients.length > 0) {
    parts.push(
      `### Client side (against ${targetLabel(CLIENT_SERVER)} on the other core)\n\n${
        clientTable(report)
      }`,
    );
  }
  if ((report.broadcast ?? []).length > 0) {
    parts.push(`### Broadcast (pub/sub fan-out)\n\n${broadcastTable(report)}\n\n${BROADCAST_NOTE}`);
  }
  if ((report.scaleout ?? []).length > 0) {
    parts.push(
      `### Scale-out (workers, Redis broker)\n\n${scaleOutTable(report)}\n\n${SCALEOUT_NOTE}`,
    );
  }
  parts.push(`### Goals\n\n${goals(report)}`);
  parts.push(
    "spread %: (max − min) / median msg/s over the rounds. server CPU µs / msg: server CPU " +
      "time per echoed message, which a busy machine disturbs less than msg/s. Handshake " +
      "rows: msg/s is completed opening handshakes per second (passes of 2 000 connections, " +
      "64 opening at a time, each kept open until its pass ends; p50/p99 from connect() to the " +
      "101; server CPU µs per handshake). " +
      "Marks: (L) load generator above 90% CPU, so it may be the bottleneck; (N) other " +
      "processes used over 25% of a core during the window (shared machine: noisy); " +
      "(E) connections failed.",
  );
  return parts.join("\n\n") + "\n" + errorsSection(report);
}

function machineSection(m: Machine): string {
  return [
    `- Date: ${m.date}`,
    `- CPU: ${m.cpu}, nproc ${m.nproc}; ${m.pinned}`,
    `- Memory: ${m.memoryGiB} GiB; kernel ${m.kernel}`,
    `- Deno ${m.deno} (V8 ${m.v8}), Bun ${m.bun}, Node ${m.node}`,
    `- Load generator: ${m.loadgen}`,
    `- Sluice commit: ${m.commit}`,
    `- Load average before / after: ${m.loadAverageBefore} / ${m.loadAverageAfter}`,
  ].join("\n");
}

const BROADCAST_NOTE = "deliveries/s: messages received per second summed over the " +
  "subscribers (bench/clients/broadcast_load.ts on Bun, raw sockets, one process); the " +
  "publisher keeps a window of messages in flight, each done once every subscriber has it. " +
  "p50/p99: from the publisher's send to a subscriber's receipt (with deflate: every 50th " +
  "subscriber inflates and is timed). lost: messages missing or out of order at a checked " +
  "subscriber. Deno's built-in server has no permessage-deflate, so it sits out the 16 KiB row.";

const METHOD = `## What is measured

Every server is a separate process pinned to core 1 (\`taskset -c 1\`); the load
generator is pinned to core 0. It is \`bench/loadgen.c\` (epoll, compiled with the
system's C compiler into \`bench/results/\`; \`--loadgen=bun\` or no compiler:
\`bench/loadgen.ts\` on Bun with raw \`Bun.connect\` sockets): precomputed masked
frames, k replies answered with one write of k frames, replies parsed by
skipping payloads. All targets run side by side, one scenario at a time, in
interleaved rounds.

- **Servers** (\`bench/servers/\`): Sluice's \`serve()\` with an echo \`message\`
  callback on Deno and on Bun; Deno's built-in \`Deno.serve\` +
  \`Deno.upgradeWebSocket\`; Bun's built-in \`Bun.serve\` websocket handler; and a
  raw TCP echo per runtime (Deno \`conn.read\`/\`conn.write\` loop, Bun \`data\`
  callback writing back), the ceiling. The raw echo gets the same WebSocket
  frames and sends them back byte for byte, still masked. In the handshake and
  idle rows, a **fixed-101 floor** per runtime (\`bench/servers/*_floor.ts\`):
  one constant \`101\` answer to whatever arrives first, then one pending read
  until the peer leaves; no parsing, no key, no frames. It is what the
  runtime's TCP API costs any server written on it: Sluice's own cost is the
  difference.
- **msg/s**: messages echoed back per second in the measured window, each
  connection keeping a fixed number of binary messages in flight. **MB/s**:
  echoed payload bytes received per second (10^6). **p50/p99**: round-trip time
  from send to reply, µs.
- **CPU %**: user + system time of the process (all threads) over the window,
  from \`/proc/PID/stat\`, as % of one core. **server CPU µs / msg**: server CPU
  time per echoed message (efficiency; less disturbed by other load than msg/s). **other CPU %**: the rest of the machine's busy time in the
  window (other work on a shared machine).
- **vs built-in**: msg/s relative to the same runtime's built-in server (or
  client); **vs raw TCP**: relative to the same runtime's raw TCP echo.
- **Handshakes**: \`bench/loadgen.ts\` on Bun (\`mode: "handshake"\`) opens 2 000
  connections per pass, 64 at a time (a new one as soon as one gets its 101),
  keeps them open until the pass ends, then closes them and gives the server
  200 ms outside the window; passes repeat until the measured window is full.
- **Idle memory**: a fresh server process, warmed with 100 connections, then
  N connections opened in batches of 250 (handshake completed, nothing sent);
  (RSS after − RSS before) / N, from \`/proc/PID/status\` VmRSS, 2 s after the last
  one opened. The connections then stay open to the end of a minute, the load
  generator answering keepalive pings with pongs, and the same figure is read every
  5 s: the last column is the lowest, median and highest of those readings (a
  garbage-collected runtime's young generation grows with bursts of work such as
  10 000 handshakes or a round of keepalive pings, and is given back later).
- **Client side**: each client library opens the connections itself against
  Bun's built-in server on the other core; client CPU is the client process.

Run it: \`deno task bench\` (about 21 minutes on 2 cores), \`deno task bench --quick\` (under
a minute, smoke only), options \`--duration=S --warmup=S --rounds=N
--idle-connections=N --idle-minute=S --only=REGEX --scenarios=REGEX --skip=servers,handshakes,breakdown,idle,clients,broadcast,scaleout
--wait-quiet=S
--nice=N --no-readme\` (see \`bench/run.ts\`). Deno and Bun come from
\`tools/node_modules/.bin\` (\`npm install --prefix tools\`), Node's \`ws\` from
\`node_modules\`.

Profile one server under one scenario (self/total time per function):
\`deno run -A bench/profile.ts --target=sluice-deno --scenario=64B-c100-if16\`.

Raw JSON of every run goes to \`bench/results/\` (not committed). Benchmarks only
report: no test asserts on timings.
`;

/** Marks the hand-kept part of bench/README.md, which a regenerated README keeps. */
const NOTES_START = "<!-- hand-kept notes: start (deno task bench keeps this part) -->";
const NOTES_END = "<!-- hand-kept notes: end -->";

/** The hand-kept notes of the current README, markers included, or "". */
async function currentNotes(): Promise<string> {
  const text = await Deno.readTextFile(`${BENCH_DIR}README.md`).catch(() => "");
  const start = text.indexOf(NOTES_START);
  const end = text.indexOf(NOTES_END);
  if (start === -1 || end < start) return "";
  return `${text.slice(start, end + NOTES_END.length)}\n\n`;
}

function readme(report: Report, notes: string): string {
  return `# Sluice benchmarks

Generated by \`deno task bench\`; do not edit by hand, except between the hand-kept
notes markers (analysis that the tables alone do not give), which a new run keeps.

## Latest results

${tables(report)}
${notes}## Machine

${machineSection(report.machine)}

${METHOD}`;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const options = parseOptions(Deno.args);
  if (options.from !== null) {
    const saved = JSON.parse(await Deno.readTextFile(options.from)) as Report;
    for (const row of [...saved.servers, ...saved.clients]) row.result = representative(row.runs);
    for (const row of saved.broadcast ?? []) {
      row.result = representative(row.runs) as BroadcastResult | undefined;
    }
    if (options.readme) {
      await Deno.writeTextFile(`${BENCH_DIR}README.md`, readme(saved, await currentNotes()));
    }
    console.log(`${tables(saved)}\n${machineSection(saved.machine)}`);
    return;
  }
  const tools = await findTools(options.nice, options.loadgen);
  const report: Report = {
    machine: await describeMachine(tools),
    options: {
      warmupMs: options.warmupMs,
      durationMs: options.durationMs,
      rounds: options.rounds,
      idleConnections: options.idleConnections,
      idleMinuteMs: options.idleMinuteMs,
      quick: options.quick,
      waitQuietMs: options.waitQuietMs,
    },
    servers: [],
    idle: [],
    clients: [],
    broadcast: [],
  };
  const started = performance.now();
  if (!options.skip.has("servers")) await runServers(tools, options, report);
  if (!options.skip.has("breakdown")) await runBreakdown(tools, options, report);
  if (!options.skip.has("idle")) await runIdle(tools, options, report);
  if (!options.skip.has("clients")) await runClients(tools, options, report);
  if (!options.skip.has("broadcast")) await runBroadcast(tools, options, report);
  if (!options.skip.has("scaleout")) await runScaleOut(tools, options, report);
  report.machine.loadAverageAfter = await loadAverage();

  const stamp = report.machine.date.replace(/[:.]/g, "-");
  await Deno.mkdir(`${BENCH_DIR}results`, { recursive: true });
  const json = JSON.stringify(report, null, 2);
  await Deno.writeTextFile(`${BENCH_DIR}results/${stamp}.json`, json);
  await Deno.writeTextFile(`${BENCH_DIR}results/latest.json`, json);
  if (options.readme) {
    await Deno.writeTextFile(`${BENCH_DIR}README.md`, readme(report, await currentNotes()));
  }

  console.log(`\n${tables(report)}\n${machineSection(report.machine)}`);
  console.log(
    `\nDone in ${((performance.now() - started) / 1000).toFixed(0)} s; raw results in ` +
      `bench/results/${stamp}.json${options.readme ? ", tables in bench/README.md" : ""}.`,
  );
}

if (import.meta.main) await main();
