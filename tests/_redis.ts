/**
 * A throwaway `redis-server` for tests and benchmarks: started on a free
 * loopback port with no persistence, stopped by its pid.
 *
 * A missing `redis-server` skips the suites that need it with a loud message
 * on a developer's machine, and fails them in CI (`CI=true`), where
 * `.ci/run` installs Debian's package.
 *
 * @module
 */

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import process from "node:process";

/** Where Debian puts it, then PATH. */
function findRedisServer(): string | null {
  for (const path of ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]) {
    if (existsSync(path)) return path;
  }
  const which = spawnSync("sh", ["-c", "command -v redis-server"], { encoding: "utf8" });
  const path = which.stdout?.trim() ?? "";
  return which.status === 0 && path !== "" ? path : null;
}

/** The path of `redis-server`, or `null` when it is not installed. */
export const REDIS_SERVER: string | null = findRedisServer();

/**
 * Why a Redis suite cannot run here, or `null` when it can. In CI a missing
 * server is an error (thrown), never a skip.
 */
export function redisSkipReason(): string | null {
  if (REDIS_SERVER !== null) return null;
  const message = "redis-server is not installed (apt-get install redis-server): " +
    "SKIPPING the Redis broker tests";
  if (process.env.CI === "true") throw new Error(message.replace("SKIPPING", "cannot run"));
  console.error(`\n*** ${message} ***\n`);
  return message;
}

/** A free TCP port on 127.0.0.1 (free when asked; good enough for a test). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** A running redis-server that this process started. */
export class RedisProcess {
  readonly port: number;
  #child: ChildProcess | null = null;

  /** A server to be started on `port` with {@linkcode restart} (see {@linkcode start}). */
  constructor(port: number) {
    this.port = port;
  }

  /** `redis://127.0.0.1:PORT`. */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** The server's pid while it runs. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Starts a server on `port` (a free one by default) and waits until it accepts. */
  static async start(port?: number): Promise<RedisProcess> {
    const redis = new RedisProcess(port ?? await freePort());
    await redis.restart();
    return redis;
  }

  /** Starts the server again on the same port (after {@linkcode stop}). */
  async restart(): Promise<void> {
    if (REDIS_SERVER === null) throw new Error("redis-server is not installed");
    if (this.#child !== null) throw new Error("redis-server is already running");
    const child = spawn(REDIS_SERVER, [
      "--port",
      String(this.port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--protected-mode",
      "no",
    ], { stdio: ["ignore", "pipe", "pipe"] });
    this.#child = child;
    let output = "";
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`redis-server did not start in 10 s: ${output}`));
      }, 10_000);
      const onData = (chunk: Uint8Array) => {
        output += new TextDecoder().decode(chunk);
        if (output.includes("Ready to accept connections")) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on("data", onData);
      child.stderr!.on("data", onData);
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code}: ${output}`));
      });
    });
    try {
      await ready;
    } catch (error) {
      this.#kill();
      throw error;
    }
  }

  /** Stops the server (SIGKILL by default: an outage, not a goodbye) and waits for it to exit. */
  async stop(signal: "SIGKILL" | "SIGTERM" = "SIGKILL"): Promise<void> {
    const child = this.#child;
    if (child === null) return;
    this.#child = null;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill(signal);
    await exited;
  }

  #kill(): void {
    const child = this.#child;
    this.#child = null;
    if (child !== null && child.exitCode === null) child.kill("SIGKILL");
  }
}
