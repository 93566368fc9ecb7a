/**
 * The supervisor behind `sluice serve --workers N`: N copies of the server
 * on one port (`SO_REUSEPORT`, Linux spreads connections across them), each
 * restarted when it dies, all stopped together.
 *
 * A worker is the same program run again with the same arguments, minus
 * `--workers`, and `SLUICE_WORKER=<index>` in its environment: the running
 * executable with the script for source runs (`deno run -A --unstable-net
 * cli.ts …`, `bun cli.ts …`), or the executable alone when it is a compiled
 * binary (`deno compile`, `bun build --compile`).
 *
 * - A worker that exits while the supervisor is running is logged and
 *   started again: at once (after 100 ms) if it had run for a while, with a
 *   doubling delay (up to 10 s) while it keeps dying within 5 s of starting.
 * - SIGINT/SIGTERM to the supervisor sends SIGTERM to every worker (each
 *   closes its connections with 1001) and waits for them; a worker still
 *   running after `stopTimeout` is killed.
 * - Workers run in their own process group, so that a Ctrl-C in the
 *   terminal reaches only the supervisor, which stops them in order; and
 *   each watches its stdin, a pipe from the supervisor, so that a supervisor
 *   that dies without stopping them (SIGKILL) does not leave them running.
 *
 * Internal: used by `cli.ts`; not part of the library's API.
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { availableParallelism, cpus } from "node:os";
import { basename } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** The environment variable that makes a run of the CLI a worker; its value is the index. */
export const WORKER_ENV = "SLUICE_WORKER";

/** The worker index when this process is a worker, else `null`. */
export function workerIndex(): number | null {
  const value = process.env[WORKER_ENV];
  if (value === undefined || value === "") return null;
  const n = Number(value);
  return Number.isInteger(n) && n >= 0 ? n : null;
}

/** `--workers 0`: one per core. */
export function defaultWorkerCount(): number {
  try {
    return Math.max(1, availableParallelism());
  } catch {
    return Math.max(1, cpus().length);
  }
}

/**
 * How to start one more copy of the running program: `[command, args]`.
 * `scriptUrl` is the entry script's `import.meta.url`; `args` are the
 * program's own arguments (after the script).
 */
export function selfCommand(scriptUrl: string, args: readonly string[]): [string, string[]] {
  const exec = process.execPath;
  const isDeno = typeof (globalThis as { Deno?: unknown }).Deno === "object";
  // Compiled binaries carry their script inside: Bun serves it from a
  // virtual file system, Deno from a temporary folder it names after itself.
  const compiled = isDeno
    ? scriptUrl.includes("/deno-compile-") || !/^deno(\.exe)?$/i.test(basename(exec))
    : scriptUrl.includes("$bunfs") || scriptUrl.includes("~BUN");
  if (compiled) return [exec, [...args]];
  const script = scriptUrl.startsWith("file:") ? fileURLToPath(scriptUrl) : scriptUrl;
  // A Deno worker needs the unstable net API for reusePort.
  if (isDeno) return [exec, ["run", "--allow-all", "--unstable-net", script, ...args]];
  return [exec, [script, ...args]];
}

/** Options of {@linkcode Supervisor}. */
export interface SupervisorOptions {
  /** How many workers. */
  count: number;
  /** The command and arguments of one worker. */
  command: [string, string[]];
  /** Log lines (worker output is prefixed with `[worker i]`). @default stderr */
  log?: (line: string) => void;
  /** Milliseconds a stopping worker has before SIGKILL. @default {10000} */
  stopTimeout?: number;
  /** A worker that dies sooner than this after starting backs off. @default {5000} */
  stableAfter?: number;
  /** First restart delay in milliseconds. @default {100} */
  minRestartDelay?: number;
  /** Longest restart delay in milliseconds. @default {10000} */
  maxRestartDelay?: number;
}

/** One worker slot: its current process and its restart bookkeeping. */
interface Slot {
  index: number;
  child: ChildProcess | null;
  startedAt: number;
  delay: number;
  restarts: number;
  timer: ReturnType<typeof setTimeout> | null;
  /** Resolves when the slot's first process printed its listening line. */
  listening: PromiseWithResolvers<string>;
}

/**
 * Starts and watches the workers. `ready` resolves with the first worker's
 * URL once every worker printed its listening line (rejects if one exits
 * before); `stop()` stops them all.
 *
 * @internal
 */
export class Supervisor {
  readonly ready: Promise<string>;
  readonly #options: Required<SupervisorOptions>;
  readonly #slots: Slot[] = [];
  #stopping: Promise<void> | null = null;

  constructor(options: SupervisorOptions) {
    this.#options = {
      log: (line) => process.stderr.write(line + "\n"),
      stopTimeout: 10_000,
      stableAfter: 5_000,
      minRestartDelay: 100,
      maxRestartDelay: 10_000,
      ...options,
    };
    for (let index = 0; index < options.count; index++) {
      const slot: Slot = {
        index,
        child: null,
        startedAt: 0,
        delay: 0,
        restarts: 0,
        timer: null,
        listening: Promise.withResolvers<string>(),
      };
      slot.listening.promise.catch(() => {});
      this.#slots.push(slot);
      this.#start(slot);
    }
    this.ready = Promise.all(this.#slots.map((slot) => slot.listening.promise)).then((urls) =>
      urls[0]
    );
    this.ready.catch(() => {});
  }

  /** Pids of the running workers, by index (`undefined` while one restarts). */
  get pids(): (number | undefined)[] {
    return this.#slots.map((slot) => slot.child?.pid);
  }

  /** Restarts so far, all workers together. */
  get restarts(): number {
    return this.#slots.reduce((sum, slot) => sum + slot.restarts, 0);
  }

  /** SIGTERM to every worker; resolves once all exited (SIGKILL after `stopTimeout`). */
  stop(): Promise<void> {
    this.#stopping ??= Promise.all(this.#slots.map((slot) => this.#stopSlot(slot))).then(() => {});
    return this.#stopping;
  }

  #start(slot: Slot): void {
    const [command, args] = this.#options.command;
    const child = spawn(command, args, {
      env: { ...process.env, [WORKER_ENV]: String(slot.index) },
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
    });
    slot.child = child;
    slot.startedAt = Date.now();
    const log = this.#options.log;
    const prefix = `[worker ${slot.index}]`;
    child.on("error", (error) => log(`${prefix} could not start: ${error.message}`));
    child.stdin?.on("error", () => {});
    let pending = "";
    const onLine = (line: string) => {
      log(`${prefix} ${line}`);
      const url = /listening on (wss?:\/\/\S+)/.exec(line);
      if (url !== null) {
        slot.listening.resolve(url[1]);
        slot.delay = 0;
      }
    };
    const onData = (chunk: Uint8Array | string) => {
      pending += typeof chunk === "string" ? chunk : new TextDecoder().decode(chunk);
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        onLine(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.on("exit", (code, signal) => {
      if (pending !== "") onLine(pending);
      pending = "";
      if (slot.child === child) slot.child = null;
      if (this.#stopping !== null) return;
      const how = signal !== null ? `signal ${signal}` : `code ${code}`;
      slot.listening.reject(new Error(`worker ${slot.index} exited with ${how} before listening`));
      const ranFor = Date.now() - slot.startedAt;
      const { minRestartDelay, maxRestartDelay, stableAfter } = this.#options;
      slot.delay = ranFor >= stableAfter || slot.delay === 0
        ? minRestartDelay
        : Math.min(slot.delay * 2, maxRestartDelay);
      slot.restarts++;
      log(
        `${prefix} pid ${child.pid} exited with ${how} after ${ranFor} ms; ` +
          `restarting in ${slot.delay} ms`,
      );
      slot.timer = setTimeout(() => {
        slot.timer = null;
        if (this.#stopping === null) this.#start(slot);
      }, slot.delay);
    });
  }

  #stopSlot(slot: Slot): Promise<void> {
    if (slot.timer !== null) clearTimeout(slot.timer);
    slot.timer = null;
    const child = slot.child;
    if (child === null || child.exitCode !== null || child.signalCode !== null) {
      return Promise.resolve();
    }
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#options.log(`[worker ${slot.index}] did not stop in time: killing it`);
        // process.kill, not child.kill: on Deno a second child.kill() after
        // the SIGTERM sends nothing (and marks the child as signalled).
        try {
          process.kill(child.pid!, "SIGKILL");
        } catch {
          // Exited meanwhile.
        }
      }, this.#options.stopTimeout);
      child.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
      child.kill("SIGTERM");
    });
  }
}

/**
 * In a worker: stop (calling `stop`) when the supervisor goes away, seen as
 * the end of stdin, a pipe only the supervisor holds.
 */
export function watchSupervisor(stop: () => void): void {
  const stdin = process.stdin;
  stdin.on("end", stop);
  stdin.on("close", stop);
  stdin.on("error", stop);
  stdin.resume();
}
