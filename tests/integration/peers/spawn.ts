/**
 * Running peers in child processes: finding the `deno`, `bun` and `node`
 * executables, starting a script, reading the JSON line it prints, and
 * killing it (by its own pid) whatever happens.
 *
 * A peer script prints exactly one JSON object per line on stdout; the first
 * one is its "ready" line (for servers) or its result (for clients).
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";
import { findExecutable, RUNTIME } from "../../_executables.ts";

const here = dirname(fileURLToPath(import.meta.url));

/** The runtime this test runs on. */
export const currentRuntimeName = RUNTIME;

/** Absolute path of a script in this folder. */
export function peerPath(name: string): string {
  return join(here, name);
}

/** The command running `script` with `runtime`, or `null` if it is not installed. */
export function commandFor(runtime: "deno" | "bun" | "node", script: string): string[] | null {
  const exe = findExecutable(runtime);
  if (exe === null) return null;
  if (runtime === "deno") return [exe, "run", "--allow-all", "--no-check", script];
  return [exe, script];
}

/** The command running `script` with the current runtime. */
export function runtimeCommand(script: string): string[] {
  return commandFor(currentRuntimeName, script)!;
}

/**
 * For a peer that cannot be found: fails under CI (where every peer must be
 * installed), otherwise warns loudly and returns a skip reason.
 */
export function missing(what: string): string {
  const message = `${what} not found: SKIPPING the tests that need it.`;
  if (process.env.CI) throw new Error(`${message} CI must provide it.`);
  console.warn(`\n!!! ${message} !!!\n`);
  return `${what} not installed`;
}

/** A running peer process. */
export interface Peer {
  /** The first JSON object it printed. */
  result: Record<string, unknown>;
  /** Every JSON object it printed so far. */
  readonly results: Record<string, unknown>[];
  /** What it wrote to stderr so far. */
  readonly stderr: string;
  /** Resolves with the exit code (or null when killed by a signal). */
  readonly exited: Promise<number | null>;
  /** Kills the process (SIGKILL), if it is still running. Idempotent. */
  kill(): void;
}

function describeChild(command: string[], stderr: string): string {
  const tail = stderr.trim().split("\n").slice(-15).join("\n");
  return `${command.map((part) => part.split("/").pop()).join(" ")}${
    tail ? `\nstderr:\n${tail}` : ""
  }`;
}

/**
 * Starts `command` and resolves once it printed its first JSON line. Rejects
 * (after killing it) if that takes more than `ms`, or if it exits first.
 */
export function startPeer(
  command: string[],
  ms: number,
  env: Record<string, string> = {},
): Promise<Peer> {
  const child: ChildProcess = spawn(command[0], command.slice(1), {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1", ...env },
  });
  let stdout = "";
  let stderr = "";
  const results: Record<string, unknown>[] = [];
  let exited = false;
  const kill = () => {
    if (!exited && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  const exitedPromise = new Promise<number | null>((resolve) => {
    child.on("exit", (code) => {
      exited = true;
      resolve(code);
    });
    child.on("error", () => {
      exited = true;
      resolve(null);
    });
  });
  return new Promise<Peer>((resolve, reject) => {
    const timer = setTimeout(() => {
      kill();
      reject(new Error(`Peer gave no result within ${ms} ms: ${describeChild(command, stderr)}`));
    }, ms);
    const peer: Peer = {
      result: {},
      results,
      get stderr() {
        return stderr;
      },
      exited: exitedPromise,
      kill,
    };
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (chunk: string) => {
      if (stderr.length < 1 << 20) stderr += chunk;
    });
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (chunk: string) => {
      stdout += chunk;
      let newline: number;
      while ((newline = stdout.indexOf("\n")) !== -1) {
        const line = stdout.slice(0, newline).trim();
        stdout = stdout.slice(newline + 1);
        if (!line.startsWith("{")) continue;
        try {
          results.push(JSON.parse(line));
        } catch {
          continue;
        }
        if (results.length === 1) {
          clearTimeout(timer);
          peer.result = results[0];
          resolve(peer);
        }
      }
    });
    exitedPromise.then((code) => {
      if (results.length === 0) {
        clearTimeout(timer);
        reject(
          new Error(`Peer exited (${code}) without a result: ${describeChild(command, stderr)}`),
        );
      }
    });
  });
}

/** Runs `command` to completion (at most `ms`) and returns its first JSON line. */
export async function runPeer(
  command: string[],
  ms: number,
  env: Record<string, string> = {},
): Promise<{ result: Record<string, unknown>; stderr: string }> {
  const started = performance.now();
  const peer = await startPeer(command, ms, env);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      peer.exited,
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`Peer did not exit within ${ms} ms`)),
          Math.max(1, ms - (performance.now() - started)),
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    peer.kill();
  }
  return { result: peer.result, stderr: peer.stderr };
}
