/**
 * Client-side benchmark on Deno or Bun: N connections to an echo server, each
 * keeping `inflight` binary messages in flight, through one of
 *
 * - `sluice`: Sluice's browser-compatible `WebSocket` class (events),
 * - `sluice-callbacks`: Sluice's `connect()` with a `message` callback,
 * - `builtin`: the runtime's own global `WebSocket`.
 *
 * Usage: `deno run -A bench/clients/client.ts '<json>'` or
 * `bun bench/clients/client.ts '<json>'`; prints one JSON {@linkcode LoadResult}
 * whose `loadCpu` is this client's CPU.
 *
 * @module
 */

import process from "node:process";
import { connect, WebSocket as SluiceWebSocket } from "../../mod.ts";
import { CpuMeter, Histogram, type LoadResult, sleep } from "../lib/proc.ts";

/** What to run, passed as one JSON argument. */
export interface ClientConfig {
  impl: "sluice" | "sluice-callbacks" | "builtin";
  url: string;
  connections: number;
  inflight: number;
  size: number;
  warmupMs: number;
  durationMs: number;
  serverPid: number;
}

const config = JSON.parse(process.argv[process.argv.length - 1]) as ClientConfig;
const payload = new Uint8Array(config.size).map((_, i) => i & 0xff);
const histogram = new Histogram();
let measuring = false;
let stopping = false;
let received = 0;
let errors = 0;

/** One connection's sender and its ring of send times. */
class Slot {
  times: Float64Array;
  first = 0;
  queued = 0;
  send: (data: Uint8Array) => void = () => {};

  constructor(inflight: number) {
    this.times = new Float64Array(inflight);
  }

  sendOne(now: number): void {
    this.times[(this.first + this.queued++) % this.times.length] = now;
    this.send(payload);
  }

  /** A reply arrived: record its latency and send the next message. */
  reply(): void {
    const now = performance.now();
    if (measuring) {
      received++;
      histogram.record((now - this.times[this.first]) * 1000);
    }
    this.first = (this.first + 1) % this.times.length;
    this.queued--;
    if (!stopping) this.sendOne(now);
  }
}

interface Closable {
  close(): void;
}

async function open(slot: Slot): Promise<Closable> {
  if (config.impl === "sluice-callbacks") {
    const ws = await connect(config.url, {
      binaryType: "arraybuffer",
      handlers: { message: () => slot.reply() },
    });
    slot.send = (data) => ws.send(data);
    return ws;
  }
  const Impl = config.impl === "sluice" ? SluiceWebSocket : globalThis.WebSocket;
  const ws = new Impl(config.url);
  ws.binaryType = "arraybuffer";
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error(`Could not connect to ${config.url}`));
  });
  ws.onerror = () => {
    if (!stopping) errors++;
  };
  ws.onmessage = () => slot.reply();
  slot.send = (data) => ws.send(data);
  return ws;
}

const slots = Array.from({ length: config.connections }, () => new Slot(config.inflight));
const sockets = await Promise.all(slots.map(open));
const start = performance.now();
for (const slot of slots) for (let i = 0; i < config.inflight; i++) slot.sendOne(start);
await sleep(config.warmupMs);

const self = new CpuMeter("self");
const server = config.serverPid > 0 ? new CpuMeter(config.serverPid) : null;
const machine = new CpuMeter("machine");
histogram.reset();
received = 0;
errors = 0;
self.start();
server?.start();
machine.start();
const t0 = performance.now();
measuring = true;
await sleep(config.durationMs);
measuring = false;
const seconds = (performance.now() - t0) / 1000;
const loadCpu = self.percent();
const serverCpu = server?.percent() ?? null;
const otherCpu = Math.max(0, machine.percent() - loadCpu - (serverCpu ?? 0));
const messages = received;
stopping = true;
for (const ws of sockets) ws.close();

const result: LoadResult = {
  messagesPerSec: messages / seconds,
  mbPerSec: (messages * config.size) / seconds / 1e6,
  p50us: histogram.percentile(50),
  p99us: histogram.percentile(99),
  serverCpu,
  loadCpu,
  otherCpu,
  messages,
  seconds,
  connections: sockets.length,
  errors,
};
console.log(JSON.stringify(result));
process.exit(0);
