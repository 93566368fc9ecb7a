/**
 * A soak for humans: a real `serve()` echo server on loopback under a mix of
 * the attacks the CI attack tests run one at a time (tests/integration/
 * attack_*_test.ts), all at once and for longer: connect/echo/close churn,
 * slowloris, peers that never read, resets at random stages and fragment
 * floods, while a control client keeps doing echo round trips. Every few
 * seconds it prints RSS, the connections the server holds, handshakes/s and
 * the control client's round trips; at the end a summary, and exit code 1 if
 * the server did not come back to 0 connections, the control client failed,
 * or a promise rejection went unhandled.
 *
 *     deno task soak                       # 60 s
 *     deno run -A bench/soak.ts --seconds 300 --every 10
 *     bun bench/soak.ts --seconds 30
 *
 * @module
 */

import process from "node:process";
import type net from "node:net";
import {
  connectSocket,
  type EchoServer,
  eventually,
  handshakeBytes,
  HOST,
  KiB,
  mib,
  resetSocket,
  runtimeName,
  settledRss,
  startControl,
  startEchoServer,
  waitForDrain,
} from "../tests/integration/_attack.ts";
import {
  buildFrame,
  closeFrame,
  Op,
  RawClient,
  sleep,
  upgradeRequest,
} from "../tests/integration/_raw_client.ts";
import { watchUnhandledRejections } from "../tests/_watch.ts";

function parseArgs(args: string[]): { seconds: number; every: number } {
  let seconds = 60;
  let every = 5;
  for (let i = 0; i < args.length; i++) {
    const value = Number(args[i + 1]);
    if (args[i] === "--seconds" && value > 0) seconds = value, i++;
    else if (args[i] === "--every" && value > 0) every = value, i++;
    else if (args[i] === "--help" || args[i] === "-h") {
      console.log("Usage: bench/soak.ts [--seconds N (60)] [--every N (5)]");
      process.exit(0);
    } else {
      console.error(`Unknown or invalid argument: ${args[i]} (try --help)`);
      process.exit(2);
    }
  }
  return { seconds, every };
}

const { seconds, every } = parseArgs(process.argv.slice(2));
const endAt = performance.now() + seconds * 1000;
const running = () => performance.now() < endAt;

const counts = {
  churnCycles: 0,
  churnFailures: 0,
  slowloris: 0,
  slowloris408: 0,
  neverReaders: 0,
  resets: 0,
  fragmentFloods: 0,
  fragmentOutcomes: new Map<string, number>(),
};

const rejections = watchUnhandledRejections();
const echo: EchoServer = await startEchoServer({ handshakeTimeout: 1000, closeTimeout: 1000 });
const port = echo.port;
const baselineRss = await settledRss();
console.log(
  `Sluice soak on ${runtimeName}: ${seconds} s against ${echo.server.url}, ` +
    `baseline RSS ${mib(baselineRss)}`,
);

/** Runs `body` again and again, `n` at a time, until the time is up. */
function workers(n: number, body: () => Promise<void>): Promise<void>[] {
  return Array.from({ length: n }, async () => {
    while (running()) {
      try {
        await body();
      } catch {
        // Each body counts its own outcomes.
      }
    }
  });
}

async function churn(): Promise<void> {
  const client = await RawClient.open(port, { host: HOST }).catch(() => null);
  if (client === null) {
    counts.churnFailures++;
    return;
  }
  try {
    client.write(buildFrame({ opcode: Op.Text, payload: "churn" }));
    await client.expectFrame(10_000);
    client.write(closeFrame(1000));
    await client.expectClose(10_000);
    counts.churnCycles++;
  } catch {
    counts.churnFailures++;
  } finally {
    client.destroy();
  }
}

async function slowloris(): Promise<void> {
  const socket: net.Socket = await connectSocket(port);
  counts.slowloris++;
  const request = new TextEncoder().encode(handshakeBytes(port));
  let got408 = false;
  socket.on("data", (chunk: Uint8Array) => {
    if (new TextDecoder().decode(chunk).startsWith("HTTP/1.1 408")) got408 = true;
  });
  // One byte per 100 ms, never the last one; the server's 1 s timeout ends it.
  for (let at = 0; at < request.length - 1 && !socket.destroyed && running(); at++) {
    socket.write(request.subarray(at, at + 1));
    await sleep(100);
  }
  if (got408) counts.slowloris408++;
  socket.destroy();
}

const floodFrame = buildFrame({ opcode: Op.Binary, payload: new Uint8Array(64 * KiB) });

async function neverReader(): Promise<void> {
  const client = await RawClient.open(port, { host: HOST });
  counts.neverReaders++;
  client.socket.pause();
  const until = performance.now() + 2000;
  for (let i = 0; i < 4096 && performance.now() < until && !client.ended; i++) {
    if (!client.socket.write(floodFrame)) await waitForDrain(client.socket, 50);
  }
  client.destroy();
}

const stages = ["mid-handshake", "before 101", "after 101", "mid-frame", "mid-close"] as const;
let stageIndex = 0;

async function reset(): Promise<void> {
  const stage = stages[stageIndex++ % stages.length];
  const request = upgradeRequest(`${HOST}:${port}`);
  const client = stage === "mid-handshake" || stage === "before 101"
    ? await RawClient.connect(port, HOST)
    : await RawClient.open(port, { host: HOST });
  if (stage === "mid-handshake") await client.writeAndFlush(request.slice(0, 40));
  if (stage === "before 101") await client.writeAndFlush(request);
  if (stage === "mid-frame") await client.writeAndFlush(floodFrame.subarray(0, 1000));
  if (stage === "mid-close") await client.writeAndFlush(closeFrame(1000));
  await sleep(10);
  resetSocket(client.socket);
  counts.resets++;
  await sleep(50);
}

const mask = new Uint8Array([1, 2, 3, 4]);
const emptyContinuations = (() => {
  const n = 50_000;
  const first = buildFrame({ opcode: Op.Binary, payload: "a", fin: false, mask });
  const empty = buildFrame({ opcode: Op.Continuation, fin: false, mask });
  const last = buildFrame({ opcode: Op.Continuation, payload: "b", mask });
  const wire = new Uint8Array(first.length + n * empty.length + last.length);
  wire.set(first, 0);
  for (let i = 0; i < n; i++) wire.set(empty, first.length + i * empty.length);
  wire.set(last, wire.length - last.length);
  return wire;
})();

async function fragmentFlood(): Promise<void> {
  const client = await RawClient.open(port, { host: HOST });
  let outcome = "error";
  try {
    for (let at = 0; at < emptyContinuations.length; at += 64 * KiB) {
      if (!client.write(emptyContinuations.subarray(at, at + 64 * KiB))) {
        await waitForDrain(client.socket, 1000);
      }
    }
    const frame = await client.expectFrame(10_000);
    outcome = frame.opcode === Op.Close
      ? `close ${(frame.payload[0] << 8) | frame.payload[1]}`
      : `echo of ${frame.payload.length} B`;
  } catch (error) {
    outcome = error instanceof Error ? error.message.slice(0, 40) : "error";
  } finally {
    client.destroy();
  }
  counts.fragmentFloods++;
  counts.fragmentOutcomes.set(outcome, (counts.fragmentOutcomes.get(outcome) ?? 0) + 1);
  await sleep(1000);
}

const control = startControl(port, { maxMs: seconds * 1000 + 10_000, pauseMs: 20 });
let peakRss = baselineRss;
let lastOpened = 0;
let lastRoundTrips = 0;
const started = performance.now();
const ticker = setInterval(() => {
  const rss = process.memoryUsage().rss;
  peakRss = Math.max(peakRss, rss);
  const opened = echo.stats.opened;
  const roundTrips = control.roundTrips;
  console.log(
    `${((performance.now() - started) / 1000).toFixed(0).padStart(5)} s  ` +
      `rss ${mib(rss).padStart(10)}  connections ${
        String(echo.server.connections.size).padStart(4)
      }  ` +
      `handshakes/s ${((opened - lastOpened) / every).toFixed(0).padStart(5)}  ` +
      `control round trips/s ${((roundTrips - lastRoundTrips) / every).toFixed(0).padStart(4)}`,
  );
  lastOpened = opened;
  lastRoundTrips = roundTrips;
}, every * 1000);
const sampler = setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}, 100);

await Promise.all([
  ...workers(8, churn),
  ...workers(50, slowloris),
  ...workers(10, neverReader),
  ...workers(2, reset),
  ...workers(1, fragmentFlood),
]);
clearInterval(ticker);
clearInterval(sampler);
const result = await control.stop();
const drained = await eventually(() => echo.server.connections.size === 0, 10_000);
const left = echo.server.connections.size;
await echo.stop();
const finalRss = await settledRss();
rejections.stop();

const ok = drained && result.errors.length === 0 && rejections.reasons.length === 0;
console.log(`
Summary (${runtimeName}, ${seconds} s)
  handshakes completed     ${echo.stats.opened}
  churn cycles             ${counts.churnCycles} (${counts.churnFailures} failed)
  slowloris sockets        ${counts.slowloris} (${counts.slowloris408} got 408)
  never-reading peers      ${counts.neverReaders}
  resets                   ${counts.resets}
  fragment floods          ${counts.fragmentFloods} ${
  JSON.stringify(Object.fromEntries(counts.fragmentOutcomes))
}
  control round trips      ${result.roundTrips} (slowest ${
  result.slowestMs.toFixed(0)
} ms, ${result.errors.length} failures${
  result.errors.length > 0 ? `: ${result.errors.slice(0, 3).join("; ")}` : ""
})
  connections left         ${left}
  unhandled rejections     ${rejections.reasons.length}
  RSS baseline/peak/final  ${mib(baselineRss)} / ${mib(peakRss)} / ${mib(finalRss)} (after GC)
  verdict                  ${ok ? "OK" : "FAILED"}`);
process.exit(ok ? 0 : 1);
