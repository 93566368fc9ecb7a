/**
 * Profiles one server under one benchmark scenario and prints where its CPU
 * time goes (self and total time per function, idle time left out).
 *
 * `deno run -A bench/profile.ts --target=sluice-bun --scenario=64B-c100-if16`
 *
 * - Deno servers run with `--inspect=127.0.0.1:0`; the V8 sampling profiler
 *   is started over the inspector protocol after the warmup and stopped after
 *   the measured window. Line numbers are those of Deno's emitted JavaScript,
 *   not of the TypeScript source: go by function names.
 * - Bun servers run with `bun --cpu-prof` (whole process life, warmup
 *   included); lines are source lines.
 *
 * Flags: `--target=ID` and `--scenario=ID` (ids as in bench/README.md),
 * `--duration=S` (default 5), `--warmup=S` (default 1), `--top=N` (default
 * 30), `--after=ID` (the same server first runs that scenario's load,
 * unprofiled, as in the full benchmark, which runs every scenario against one
 * server process). The raw profile is kept in `bench/results/`.
 *
 * @module
 */

import type { LoadResult } from "./lib/proc.ts";
import {
  findTools,
  HANDSHAKE_SCENARIO,
  loadConfig,
  runLoad,
  type Scenario,
  SCENARIOS,
  ServerProcess,
  type Target,
  TARGETS,
  type Tools,
} from "./lib/harness.ts";

const RESULTS = new URL("./results/", import.meta.url).pathname;

import type { CpuProfile } from "./lib/breakdown.ts";

/** Per-function share of the non-idle samples. */
export interface FunctionTime {
  name: string;
  selfPercent: number;
  totalPercent: number;
}

const IDLE = new Set(["(idle)", "(program)", "(root)"]);

/** Aggregates a profile by function: self and inclusive time, idle excluded. */
export function summarize(profile: CpuProfile): { idlePercent: number; functions: FunctionTime[] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const key = (id: number) => {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame;
    const file = url.split("/").pop() ?? "";
    return `${functionName || "(anonymous)"}${file ? ` ${file}:${lineNumber + 1}` : ""}`;
  };
  const counts = new Map<number, number>();
  for (const id of profile.samples) counts.set(id, (counts.get(id) ?? 0) + 1);
  let idle = 0;
  let busy = 0;
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  for (const [id, count] of counts) {
    if (IDLE.has(byId.get(id)!.callFrame.functionName)) {
      idle += count;
      continue;
    }
    busy += count;
    const k = key(id);
    self.set(k, (self.get(k) ?? 0) + count);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const name = key(at);
      if (seen.has(name) || IDLE.has(byId.get(at)!.callFrame.functionName)) continue;
      seen.add(name);
      total.set(name, (total.get(name) ?? 0) + count);
    }
  }
  const functions = [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([name, count]) => ({
      name,
      selfPercent: (100 * count) / busy,
      totalPercent: (100 * (total.get(name) ?? 0)) / busy,
    }));
  return { idlePercent: (100 * idle) / Math.max(1, idle + busy), functions };
}

/** Profiles a Deno process through its inspector for `ms` milliseconds. */
async function inspectorProfile(url: string, ms: number): Promise<CpuProfile> {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`Cannot reach the inspector at ${url}`));
  });
  let id = 0;
  const pending = new Map<number, (result: unknown) => void>();
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    pending.get(message.id)?.(message.result);
    pending.delete(message.id);
  };
  const call = (method: string, params = {}) =>
    new Promise<unknown>((resolve) => {
      pending.set(++id, resolve);
      ws.send(JSON.stringify({ id, method, params }));
    });
  await call("Profiler.enable");
  await call("Profiler.setSamplingInterval", { interval: 250 });
  await call("Profiler.start");
  await new Promise((resolve) => setTimeout(resolve, ms));
  const { profile } = (await call("Profiler.stop")) as { profile: CpuProfile };
  ws.close();
  return profile;
}

async function waitFor(read: () => string, pattern: RegExp, ms: number): Promise<string> {
  const deadline = Date.now() + ms;
  for (;;) {
    const match = pattern.exec(read());
    if (match !== null) return match[1];
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${pattern}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * A profile of one server under one scenario, with the load result of the
 * same run; with `after`, the server first runs that scenario's load,
 * unprofiled.
 */
export async function profileServer(
  tools: Tools,
  target: Target,
  scenario: Scenario,
  timing: { durationMs: number; warmupMs: number },
  after?: Scenario,
): Promise<{ profile: CpuProfile; result: LoadResult; dir: string }> {
  const { durationMs, warmupMs } = timing;
  await Deno.mkdir(RESULTS, { recursive: true });
  const profileDir = await Deno.makeTempDir({ dir: RESULTS, prefix: "profile-" });
  const runtimeFlags = target.runtime === "deno"
    ? ["--inspect=127.0.0.1:0"]
    : ["--cpu-prof", `--cpu-prof-dir=${profileDir}`];
  const server = await ServerProcess.start(tools, target, runtimeFlags);
  let profile: CpuProfile;
  let result: LoadResult;
  try {
    if (after !== undefined) await runLoad(tools, loadConfig(server, after, timing));
    const load = runLoad(tools, loadConfig(server, scenario, timing));
    if (target.runtime === "deno") {
      const url = await waitFor(() => server.stderr, /Debugger listening on (ws:\S+)/, 10_000);
      await new Promise((resolve) => setTimeout(resolve, warmupMs));
      const profiled = inspectorProfile(url, durationMs);
      [profile, result] = await Promise.all([profiled, load]);
    } else {
      result = await load;
    }
  } finally {
    await server.stop();
  }
  if (target.runtime === "bun") {
    const files = [...Deno.readDirSync(profileDir)].filter((f) => f.name.endsWith(".cpuprofile"));
    if (files.length === 0) throw new Error(`Bun wrote no profile to ${profileDir}`);
    profile = JSON.parse(await Deno.readTextFile(`${profileDir}/${files[0].name}`));
  } else {
    await Deno.writeTextFile(`${profileDir}/deno.cpuprofile`, JSON.stringify(profile!));
  }
  return { profile: profile!, result, dir: profileDir };
}

async function main(): Promise<void> {
  const flags = new Map(
    Deno.args.map((arg) => {
      const [name, value] = arg.replace(/^--/, "").split("=");
      return [name, value ?? "true"] as const;
    }),
  );
  const target = TARGETS.find((t) => t.id === flags.get("target"));
  const scenario = [...SCENARIOS, HANDSHAKE_SCENARIO].find((s) => s.id === flags.get("scenario"));
  const after = [...SCENARIOS, HANDSHAKE_SCENARIO].find((s) => s.id === flags.get("after"));
  if (flags.has("after") && after === undefined) {
    throw new Error(`Unknown scenario for --after: ${flags.get("after")}`);
  }
  if (target === undefined || scenario === undefined) {
    throw new Error(
      `Usage: --target=${TARGETS.map((t) => t.id).join("|")} ` +
        `--scenario=${
          [...SCENARIOS, HANDSHAKE_SCENARIO].map((s) => s.id).join("|")
        } [--duration=S --warmup=S --top=N]`,
    );
  }
  const durationMs = Number(flags.get("duration") ?? 5) * 1000;
  const warmupMs = Number(flags.get("warmup") ?? 1) * 1000;
  const top = Number(flags.get("top") ?? 30);
  const tools: Tools = await findTools(Number(flags.get("nice") ?? 0));
  const { profile, result, dir } = await profileServer(tools, target, scenario, {
    durationMs,
    warmupMs,
  }, after);
  const summary = summarize(profile);
  console.log(
    `${target.label}, ${scenario.label}: ${Math.round(result.messagesPerSec)} msg/s, ` +
      `server CPU ${Math.round(result.serverCpu ?? 0)}%, load generator CPU ${
        Math.round(result.loadCpu)
      }%, other ${Math.round(result.otherCpu)}%`,
  );
  console.log(
    `Idle in ${summary.idlePercent.toFixed(1)}% of samples; shares below are of the busy samples.` +
      `\nRaw profile: ${dir}\n`,
  );
  console.log("  self %  total %  function");
  for (const f of summary.functions.slice(0, top)) {
    console.log(
      `${f.selfPercent.toFixed(1).padStart(8)} ${f.totalPercent.toFixed(1).padStart(8)}  ${f.name}`,
    );
  }
}

if (import.meta.main) await main();
