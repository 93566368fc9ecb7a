// Client-side benchmark for npm `ws` on Node: the same shape as client.ts
// (N connections, `inflight` binary messages in flight each), using ws's own
// `message` event. Usage: `node bench/clients/ws_node.mjs '<json>'`; prints
// one JSON result line. Plain JavaScript because Node 20 does not run
// TypeScript; the /proc helpers are repeated here for that reason.

import { readFileSync } from "node:fs";
import { WebSocket } from "ws";

const config = JSON.parse(process.argv[2]);
const payload = Buffer.alloc(config.size).map((_, i) => i & 0xff);
const counts = new Uint32Array(1 << 20);
let samples = 0;
let measuring = false;
let stopping = false;
let received = 0;
let errors = 0;

function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function machineCpuSeconds() {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0];
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0);
  return (total - ticks[3] - ticks[4]) / 100;
}

function percentile(p) {
  if (samples === 0) return null;
  const rank = Math.ceil((p / 100) * samples);
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i];
    if (seen >= rank) return i;
  }
  return counts.length - 1;
}

function open() {
  const slot = { times: new Float64Array(config.inflight), first: 0, queued: 0, ws: null };
  slot.sendOne = (now) => {
    slot.times[(slot.first + slot.queued++) % slot.times.length] = now;
    slot.ws.send(payload, { binary: true });
  };
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(config.url, { perMessageDeflate: false });
    slot.ws = ws;
    ws.on("open", () => resolve(slot));
    ws.on("error", (error) => {
      if (!stopping) errors++;
      reject(error);
    });
    ws.on("message", () => {
      const now = performance.now();
      if (measuring) {
        received++;
        const us = (now - slot.times[slot.first]) * 1000;
        counts[us >= 1048575 ? 1048575 : us | 0]++;
        samples++;
      }
      slot.first = (slot.first + 1) % slot.times.length;
      slot.queued--;
      if (!stopping) slot.sendOne(now);
    });
  });
}

const slots = await Promise.all(Array.from({ length: config.connections }, open));
const start = performance.now();
for (const slot of slots) for (let i = 0; i < config.inflight; i++) slot.sendOne(start);
await new Promise((resolve) => setTimeout(resolve, config.warmupMs));

received = 0;
errors = 0;
const self0 = cpuSeconds("self");
const server0 = config.serverPid > 0 ? cpuSeconds(config.serverPid) : 0;
const machine0 = machineCpuSeconds();
const t0 = performance.now();
measuring = true;
await new Promise((resolve) => setTimeout(resolve, config.durationMs));
measuring = false;
const seconds = (performance.now() - t0) / 1000;
const loadCpu = (100 * (cpuSeconds("self") - self0)) / seconds;
const serverCpu = config.serverPid > 0
  ? (100 * (cpuSeconds(config.serverPid) - server0)) / seconds
  : null;
const otherCpu = Math.max(
  0,
  (100 * (machineCpuSeconds() - machine0)) / seconds - loadCpu - (serverCpu ?? 0),
);
const messages = received;
stopping = true;
for (const slot of slots) slot.ws.terminate();
console.log(JSON.stringify({
  messagesPerSec: messages / seconds,
  mbPerSec: (messages * config.size) / seconds / 1e6,
  p50us: percentile(50),
  p99us: percentile(99),
  serverCpu,
  loadCpu,
  otherCpu,
  messages,
  seconds,
  connections: slots.length,
  errors,
}));
process.exit(0);
