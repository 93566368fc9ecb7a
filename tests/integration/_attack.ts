/**
 * Shared pieces of the attack tests (`attack_*_test.ts`) and of
 * `bench/soak.ts`: a real `serve()` echo server that records what its
 * handlers saw, a control client that keeps doing echo round trips while an
 * attack runs, RSS sampling (after a GC where the runtime offers one), raw
 * `node:net` sockets that can be reset, and the checks every attack ends
 * with: the server holds no connection, the control client got its answers,
 * and memory came back near its baseline.
 *
 * Every loop here is bounded in count and in time; every wait has a deadline.
 *
 * @module
 */

import assert from "node:assert/strict";
import net from "node:net";
import process from "node:process";
import { serve, type ServeOptions, type Server } from "../../mod.ts";
import { buildFrame, closeFrame, Op, RawClient, sleep, upgradeRequest } from "./_raw_client.ts";

export const HOST = "127.0.0.1";
export const KiB = 1024;
export const MiB = 1024 * KiB;

/** Whether the tests run on Bun (some faults differ between runtimes). */
export const isBun = typeof (globalThis as { Bun?: unknown }).Bun === "object";
/** The runtime's name, for messages. */
export const runtimeName = isBun ? "Bun" : "Deno";

/**
 * `node:test` options marking a test as known to fail, with the reason.
 * Neither runtime runs a todo test at all, so set `ATTACK_RUN_TODO=1` to run
 * them as ordinary tests (and see them fail until the fix lands).
 */
export function knownFailure(reason: string | undefined): { todo?: string } {
  if (reason === undefined || process.env.ATTACK_RUN_TODO) return {};
  return { todo: reason };
}

/** What the echo server's handlers saw. */
export interface EchoStats {
  opened: number;
  /** Close codes the server's `close` callback reported, in order. */
  closeCodes: number[];
  /** Errors the `error` callback got (protocol errors of attackers are expected). */
  connectionErrors: Error[];
  /** Errors `onError` got (failed handshakes are expected). */
  serverErrors: Error[];
  messages: number;
}

/** A running echo server under attack. */
export interface EchoServer {
  server: Server;
  port: number;
  stats: EchoStats;
  /** Shuts the server down, giving up after `ms`. */
  stop(ms?: number): Promise<void>;
}

/**
 * Starts a real `serve()` echo server on loopback: every message is sent
 * back as it came (text as text, binary as binary).
 */
export async function startEchoServer(options: ServeOptions = {}): Promise<EchoServer> {
  const stats: EchoStats = {
    opened: 0,
    closeCodes: [],
    connectionErrors: [],
    serverErrors: [],
    messages: 0,
  };
  const server = await serve({
    ...options,
    hostname: HOST,
    port: 0,
    onError(error) {
      if (stats.serverErrors.length < 10_000) stats.serverErrors.push(error);
    },
  }, {
    open() {
      stats.opened++;
    },
    message(ws, data) {
      stats.messages++;
      ws.send(data);
    },
    close(_ws, code) {
      stats.closeCodes.push(code);
    },
    error(_ws, error) {
      if (stats.connectionErrors.length < 10_000) stats.connectionErrors.push(error);
    },
  });
  let stopped: Promise<void> | null = null;
  return {
    server,
    port: server.addr.port,
    stats,
    stop(ms = 10_000) {
      stopped ??= (async () => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          server.shutdown(),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
        ]);
        clearTimeout(timer);
      })();
      return stopped;
    },
  };
}

// ---------------------------------------------------------------------------
// Memory

type GcFunction = () => void;
let gcFunction: GcFunction | null | undefined;

/** The runtime's full GC, if it offers one: `Bun.gc(true)`, or V8's `gc` via node:v8 on Deno. */
async function findGc(): Promise<GcFunction | null> {
  if (gcFunction !== undefined) return gcFunction;
  const bun = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun;
  if (bun !== undefined) return (gcFunction = () => bun.gc(true));
  try {
    const v8 = await import("node:v8");
    v8.setFlagsFromString("--expose-gc");
    const vm = await import("node:vm");
    const gc = vm.runInNewContext("gc") as unknown;
    gcFunction = typeof gc === "function" ? (gc as GcFunction) : null;
  } catch {
    gcFunction = null;
  }
  return gcFunction;
}

/** The process's resident set size in bytes, after a full GC where one is available. */
export async function settledRss(): Promise<number> {
  const gc = await findGc();
  for (let i = 0; i < 3; i++) {
    gc?.();
    await sleep(20);
  }
  return process.memoryUsage().rss;
}

/** Samples RSS every `everyMs` until stopped; reports the peak (no GC: what the attack cost). */
export function sampleRss(everyMs = 100): { readonly peak: number; stop(): number } {
  let peak = process.memoryUsage().rss;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, everyMs);
  return {
    get peak() {
      return Math.max(peak, process.memoryUsage().rss);
    },
    stop() {
      clearInterval(timer);
      peak = Math.max(peak, process.memoryUsage().rss);
      return peak;
    },
  };
}

/** Bytes as MiB with one decimal, for messages. */
export function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

// ---------------------------------------------------------------------------
// The control client

/** What the control client achieved. */
export interface ControlResult {
  roundTrips: number;
  connections: number;
  errors: string[];
  /** The slowest round trip seen, in ms (reported, never asserted). */
  slowestMs: number;
}

/** A control client running in the background. */
export interface Control {
  /** Round trips completed so far. */
  readonly roundTrips: number;
  /** Resolves once `n` round trips are done (or after `ms`, whichever first). */
  reached(n: number, ms: number): Promise<void>;
  /** Stops after the current round trip and reports. */
  stop(): Promise<ControlResult>;
}

/**
 * Starts a client that, until stopped (at most `maxMs`), opens a fresh
 * connection, does `perConnection` echo round trips on it, closes it cleanly
 * and starts over. A new connection per few round trips shows that the
 * server still accepts and upgrades, not only that an old connection works.
 */
export function startControl(
  port: number,
  options: { perConnection?: number; maxMs?: number; pauseMs?: number } = {},
): Control {
  const perConnection = options.perConnection ?? 5;
  // A short pause between round trips keeps the control from starving the attack of CPU.
  const pauseMs = options.pauseMs ?? 5;
  const maxMs = options.maxMs ?? 60_000;
  const result: ControlResult = { roundTrips: 0, connections: 0, errors: [], slowestMs: 0 };
  let stopping = false;
  let waiters: { n: number; resolve: () => void }[] = [];
  const notify = () => {
    waiters = waiters.filter((w) => {
      if (result.roundTrips < w.n) return true;
      w.resolve();
      return false;
    });
  };
  const start = performance.now();
  const done = (async () => {
    let seq = 0;
    while (!stopping && performance.now() - start < maxMs && result.errors.length < 20) {
      let client: RawClient | null = null;
      try {
        client = await RawClient.open(port, { host: HOST });
        result.connections++;
        for (let i = 0; i < perConnection && !stopping; i++) {
          const text = `control ${seq++}`;
          const sent = performance.now();
          client.write(buildFrame({ opcode: Op.Text, payload: text }));
          const frame = await client.expectFrame(10_000);
          const answer = new TextDecoder().decode(frame.payload);
          if (frame.opcode !== Op.Text || answer !== text) {
            throw new Error(`Control got opcode ${frame.opcode} ${JSON.stringify(answer)}`);
          }
          result.slowestMs = Math.max(result.slowestMs, performance.now() - sent);
          result.roundTrips++;
          notify();
          await sleep(pauseMs);
        }
        client.write(closeFrame(1000));
        const { code } = await client.expectClose(10_000);
        if (code !== 1000) throw new Error(`Control's close was answered with ${code}`);
      } catch (error) {
        result.errors.push(error instanceof Error ? error.message : String(error));
        await sleep(50);
      } finally {
        client?.destroy();
      }
    }
    for (const w of waiters) w.resolve();
    waiters = [];
  })();
  return {
    get roundTrips() {
      return result.roundTrips;
    },
    reached(n, ms) {
      if (result.roundTrips >= n) return Promise.resolve();
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          waiters = waiters.filter((w) => w.resolve !== wrapped);
          resolve();
        }, ms);
        const wrapped = () => {
          clearTimeout(timer);
          resolve();
        };
        waiters.push({ n, resolve: wrapped });
      });
    },
    async stop() {
      stopping = true;
      await done;
      return result;
    },
  };
}

// ---------------------------------------------------------------------------
// Raw sockets

/** Connects a plain `node:net` socket (no data listener: it stays paused until asked). */
export function connectSocket(port: number, ms = 5000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: HOST });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`Connecting to port ${port} timed out after ${ms} ms`));
    }, ms);
    socket.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      socket.on("error", () => {}); // Resets are what these tests cause.
      resolve(socket);
    });
  });
}

/** Ends a socket with a TCP RST where the runtime can (`resetAndDestroy`), else destroys it. */
export function resetSocket(socket: net.Socket): void {
  const reset = (socket as { resetAndDestroy?: () => unknown }).resetAndDestroy;
  if (typeof reset === "function" && !socket.destroyed) {
    try {
      reset.call(socket);
      return;
    } catch {
      // Fall through to destroy().
    }
  }
  socket.destroy();
}

/** A handshake request for the echo server. */
export function handshakeBytes(port: number): string {
  return upgradeRequest(`${HOST}:${port}`);
}

/** Writes `bytes` in chunks of `chunk`, waiting for `drain` (at most `ms` in all). */
export async function writeAll(
  socket: net.Socket,
  bytes: Uint8Array,
  chunk = 64 * KiB,
  ms = 20_000,
): Promise<void> {
  const deadline = performance.now() + ms;
  for (let at = 0; at < bytes.length; at += chunk) {
    if (socket.destroyed) throw new Error(`Socket closed after ${at} of ${bytes.length} bytes`);
    if (!socket.write(bytes.subarray(at, at + chunk))) {
      await waitForDrain(socket, Math.max(1, deadline - performance.now()));
    }
    if (performance.now() > deadline) {
      throw new Error(`Writing ${bytes.length} bytes took over ${ms} ms (at ${at})`);
    }
  }
}

/** Resolves at the socket's next `drain` or `close`, or after `ms`. */
export function waitForDrain(socket: net.Socket, ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      socket.off("drain", done);
      socket.off("close", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    socket.once("drain", done);
    socket.once("close", done);
  });
}

// ---------------------------------------------------------------------------
// Checks

/** Polls until `ready()` or `ms` passed; returns whether it became ready. */
export async function eventually(ready: () => boolean, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!ready()) {
    if (performance.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

/** Options of {@linkcode assertAftermath}. */
export interface AftermathOptions {
  /** RSS measured (with {@linkcode settledRss}) before the attack. */
  baselineRss: number;
  /** What the control client did during the attack. */
  control: ControlResult;
  /** Round trips the control client must have completed during the attack. */
  minRoundTrips: number;
  /** How far above the baseline RSS may stay. @default 150 MiB */
  rssMargin?: number;
  /** How long the server gets to drop every connection. @default 10 s */
  drainMs?: number;
}

/**
 * The checks after every attack: `server.connections` is back to 0, the
 * control client kept getting answers, and RSS came back near its baseline.
 * (Unhandled rejections are checked by the watched `test` of tests/_watch.ts.)
 */
export async function assertAftermath(echo: EchoServer, options: AftermathOptions): Promise<void> {
  const { server } = echo;
  const empty = await eventually(() => server.connections.size === 0, options.drainMs ?? 10_000);
  assert.ok(
    empty,
    `server.connections should be back to 0, but holds ${server.connections.size}`,
  );
  const { control } = options;
  assert.deepEqual(
    control.errors,
    [],
    `the control client failed ${control.errors.length} times: ${control.errors.join("; ")}`,
  );
  assert.ok(
    control.roundTrips >= options.minRoundTrips,
    `the control client completed ${control.roundTrips} round trips during the attack, ` +
      `fewer than ${options.minRoundTrips}`,
  );
  const margin = options.rssMargin ?? 150 * MiB;
  const after = await settledRss();
  assert.ok(
    after <= options.baselineRss + margin,
    `RSS stayed at ${mib(after)} after the attack, over the baseline ${
      mib(options.baselineRss)
    } + ${mib(margin)}`,
  );
}

/** Logs one line of measurements (visible in the test output; never asserted). */
export function report(what: string, figures: Record<string, string | number>): void {
  const parts = Object.entries(figures).map(([k, v]) => `${k}=${v}`);
  console.log(`[attack ${runtimeName}] ${what}: ${parts.join(" ")}`);
}
