/**
 * The broadcast server of `bench/servers/broadcast_sluice.ts`, scaled out
 * (Deno): `BENCH_SCALEOUT_WORKERS` processes on one port (`reusePort`), and
 * with `BENCH_REDIS_URL` a `RedisBroker` in each, so that a publish in any
 * of them reaches the subscribers of all. With one worker it serves in this
 * process; with more, this process is a launcher: it starts the workers (a
 * worker per core, `taskset`), prints `{"port":N}` once all listen, and
 * stops them on SIGTERM.
 *
 * @module
 */

import process from "node:process";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { HandshakeError, serve } from "../../mod.ts";
import { RedisBroker } from "../../src/redis_broker.ts";

const workers = Number(process.env.BENCH_SCALEOUT_WORKERS ?? "1");
const redisUrl = process.env.BENCH_REDIS_URL;
const childPort = process.env.BENCH_SCALEOUT_CHILD_PORT;

async function runServer(port: number, reusePort: boolean): Promise<number> {
  const server = await serve<"sub" | "pub">({
    port,
    hostname: "127.0.0.1",
    reusePort,
    broker: redisUrl ? new RedisBroker({ url: redisUrl }) : undefined,
    onUpgrade(request) {
      const path = request.url.pathname;
      if (path === "/sub") return { data: "sub" };
      if (path === "/pub") return { data: "pub" };
      throw new HandshakeError(404, "Not found");
    },
  }, {
    open(ws) {
      if (ws.data === "sub") ws.subscribe("broadcast");
    },
    message(ws, data) {
      if (ws.data === "pub") ws.publish("broadcast", data);
    },
  });
  process.on("SIGTERM", () => server.shutdown().then(() => process.exit(0)));
  return server.addr.port;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

if (childPort !== undefined) {
  await runServer(Number(childPort), true);
  console.log(JSON.stringify({ worker: process.pid }));
} else if (workers <= 1) {
  console.log(JSON.stringify({ port: await runServer(0, false) }));
} else {
  const port = await freePort();
  const taskset = spawnSync("sh", ["-c", "command -v taskset"]).status === 0;
  const cores = navigator.hardwareConcurrency;
  const children: ChildProcess[] = [];
  const ready: Promise<void>[] = [];
  for (let i = 0; i < workers; i++) {
    // Worker 0 on the server core (1), the next on core 0 (shared with the load generator).
    const core = String((cores - 1 - i + cores) % cores);
    const argv = [
      process.execPath,
      "run",
      "--allow-all",
      "--unstable-net",
      fileURLToPath(import.meta.url),
    ];
    const [command, ...args] = taskset ? ["taskset", "-c", core, ...argv] : argv;
    const child = spawn(command, args, {
      env: { ...process.env, BENCH_SCALEOUT_CHILD_PORT: String(port) },
      stdio: ["ignore", "pipe", "inherit"],
    });
    children.push(child);
    ready.push(
      new Promise((resolve, reject) => {
        let out = "";
        child.stdout!.on("data", (chunk: Uint8Array) => {
          out += new TextDecoder().decode(chunk);
          if (out.includes('"worker"')) resolve();
        });
        child.on("exit", (code) => reject(new Error(`worker exited with ${code}`)));
      }),
    );
  }
  process.on("SIGTERM", () => {
    for (const child of children) child.kill("SIGTERM");
    setTimeout(() => process.exit(0), 2_000);
  });
  await Promise.all(ready);
  console.log(JSON.stringify({ port }));
}
