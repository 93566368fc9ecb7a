/**
 * Process measurements from Linux's /proc, usable on Deno, Bun and Node
 * alike: CPU time (all threads) and resident memory of any process.
 *
 * @module
 */

import { readFileSync } from "node:fs";

/** Clock ticks per second for /proc/PID/stat times (USER_HZ, 100 on Linux). */
const CLK_TCK = 100;

/** CPU seconds (user + system, all threads) used so far by `pid`. */
export function cpuSeconds(pid: number | "self"): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after "(comm)": state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/** CPU seconds used by all processes on the machine so far (busy time of every core). */
export function machineCpuSeconds(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0];
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
  const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - ticks[3] - ticks[4]) / CLK_TCK;
}

/** Resident set size of `pid` in KiB (VmRSS). */
export function rssKiB(pid: number | "self"): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (match === null) throw new Error(`No VmRSS for process ${pid}`);
  return Number(match[1]);
}

/**
 * A CPU-time meter over a measured window: for one process, or for the whole
 * machine (`"machine"`, all cores added up).
 */
export class CpuMeter {
  #read: () => number;
  #start = 0;
  #wall = 0;

  constructor(pid: number | "self" | "machine") {
    this.#read = pid === "machine" ? machineCpuSeconds : () => cpuSeconds(pid);
  }

  /** Starts the window. */
  start(): void {
    this.#start = this.#read();
    this.#wall = performance.now();
  }

  /** CPU use since `start()` as a percentage of one core. */
  percent(): number {
    const cpu = this.#read() - this.#start;
    const wall = (performance.now() - this.#wall) / 1000;
    return wall > 0 ? (100 * cpu) / wall : 0;
  }
}

/**
 * Latency histogram with 1 µs buckets up to about one second (slower samples
 * land in the last bucket); recording is one array increment.
 */
export class Histogram {
  #counts = new Uint32Array(1 << 20);
  #n = 0;

  /** Records one sample, in microseconds. */
  record(us: number): void {
    const i = us < 0 ? 0 : us >= 1048575 ? 1048575 : us | 0;
    this.#counts[i]++;
    this.#n++;
  }

  /** Samples recorded. */
  get count(): number {
    return this.#n;
  }

  /** Forgets all samples. */
  reset(): void {
    this.#counts.fill(0);
    this.#n = 0;
  }

  /** The `p`-th percentile (0-100) in µs, or null without samples. */
  percentile(p: number): number | null {
    if (this.#n === 0) return null;
    const rank = Math.ceil((p / 100) * this.#n);
    let seen = 0;
    for (let i = 0; i < this.#counts.length; i++) {
      seen += this.#counts[i];
      if (seen >= rank) return i;
    }
    return this.#counts.length - 1;
  }
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The common shape of a measured window, as every load generator reports it. */
export interface LoadResult {
  /** Messages echoed back per second. */
  messagesPerSec: number;
  /** Echoed payload megabytes (10^6 bytes) received per second. */
  mbPerSec: number;
  p50us: number | null;
  p99us: number | null;
  /** Server CPU over the window, % of one core (null when no pid was given). */
  serverCpu: number | null;
  /** The load generator's (or client's) own CPU, % of one core. */
  loadCpu: number;
  /**
   * CPU used on the machine by everything else over the window, % of one
   * core: background noise (other work on a shared machine) that skews results.
   */
  otherCpu: number;
  messages: number;
  seconds: number;
  connections: number;
  errors: number;
  /** Which load generator measured it ("c" or "bun"); absent for clients. */
  loadgen?: string;
}
