/**
 * The load generator, written so that it is not the bottleneck: it runs on
 * Bun with raw `Bun.connect` sockets, sends precomputed masked frames (a
 * batch of k replies is one write of k frames cut from one buffer), and
 * parses replies by reading frame headers and skipping payloads, without
 * copying or unmasking anything.
 *
 * Usage: `bun bench/loadgen.ts '<json config>'` (see {@linkcode Config}).
 * Prints one JSON line: a {@linkcode LoadResult} for `mode: "load"` and for
 * `mode: "handshake"` (messages are completed opening handshakes), an
 * {@linkcode IdleResult} for `mode: "idle"`.
 *
 * Raw TCP echo targets get no handshake and send back the masked frames
 * byte for byte; the reply parser accepts masked frames for that reason.
 *
 * @module
 */

import process from "node:process";
import { bun, type BunSocket } from "./lib/bun_api.ts";
import {
  CpuMeter,
  cpuSeconds,
  Histogram,
  type LoadResult,
  machineCpuSeconds,
  rssKiB,
  sleep,
} from "./lib/proc.ts";

/** What to run, passed as one JSON argument. */
export interface Config {
  mode: "load" | "idle" | "handshake";
  hostname: string;
  port: number;
  /** The target is a raw TCP echo: no handshake, masked frames come back. */
  raw: boolean;
  connections: number;
  /** Messages in flight per connection (load mode). */
  inflight: number;
  /** Payload bytes per message (load mode). */
  size: number;
  warmupMs: number;
  durationMs: number;
  /** Server process id, for its CPU (load) or memory (idle). */
  serverPid: number;
  /**
   * Connections opened at once: idle mode (so the SYN backlog is not
   * overrun) and handshake mode (a new one starts as soon as one completes).
   */
  batch?: number;
  /** Milliseconds to let the server settle before reading its memory (idle mode). */
  settleMs?: number;
  /**
   * Idle mode: also keep the connections open (answering keepalive pings)
   * this long after they opened, and read the memory again at the end.
   */
  steadyMs?: number;
}

/** What idle mode reports. */
export interface IdleResult {
  connections: number;
  rssBeforeKiB: number;
  rssAfterKiB: number;
  perConnectionKiB: number;
  /** With `steadyMs`: per connection at the end of it. */
  steadyPerConnectionKiB?: number;
  /** With `steadyMs`: per connection every 5 s from the first reading on. */
  series?: number[];
  openSeconds: number;
  errors: number;
}

const MASK = [0x37, 0xfa, 0x21, 0x3d];

/** One masked binary frame with a `size`-byte payload. */
function maskedFrame(size: number): Uint8Array {
  const extra = size < 126 ? 0 : size < 65536 ? 2 : 8;
  const header = 2 + extra + 4;
  const frame = new Uint8Array(header + size);
  frame[0] = 0x82;
  if (extra === 0) frame[1] = 0x80 | size;
  else if (extra === 2) {
    frame[1] = 0x80 | 126;
    frame[2] = size >>> 8;
    frame[3] = size & 0xff;
  } else {
    frame[1] = 0x80 | 127;
    new DataView(frame.buffer).setUint32(6, size);
  }
  frame.set(MASK, header - 4);
  for (let i = 0; i < size; i++) frame[header + i] = (i & 0xff) ^ MASK[i & 3];
  return frame;
}

/** Per-connection state. */
class Conn {
  socket!: BunSocket<Conn>;
  /** The opening handshake is done (or there is none). */
  open = false;
  head = "";
  /** Bytes of an incomplete frame header, kept for the next chunk. */
  stash: Uint8Array | null = null;
  /** Payload bytes of the current frame still to skip. */
  skip = 0;
  /** The current frame ends a data message (FIN, not a control frame). */
  counts = false;
  /** The payload of a ping being read, to be answered with the same bytes. */
  ping: number[] | null = null;
  /** Send times of the messages in flight, oldest first (a ring). */
  times: Float64Array;
  first = 0;
  queued = 0;
  /** Writes the kernel has not taken yet, in order. */
  writes: Uint8Array[] = [];
  /** Closed by us: its close is not an error. */
  ended = false;
  onOpen: (() => void) | null = null;
  onFail: ((error: Error) => void) | null = null;

  constructor(inflight: number) {
    this.times = new Float64Array(Math.max(1, inflight));
  }
}

const config = JSON.parse(process.argv[2] ?? "{}") as Config;
const inflight = Math.max(1, config.inflight ?? 1);
const size = config.size ?? 64;
const frame = maskedFrame(size);
const frameLength = frame.byteLength;
/** `inflight` frames back to back, so k replies cost one write of a subarray. */
const batch = new Uint8Array(frameLength * inflight);
for (let i = 0; i < inflight; i++) batch.set(frame, i * frameLength);
const batchable = frameLength <= 4096;

const histogram = new Histogram();
let measuring = false;
let stopping = false;
let received = 0;
let errors = 0;

function write(c: Conn, bytes: Uint8Array): void {
  if (c.writes.length > 0) {
    c.writes.push(bytes);
    return;
  }
  const n = c.socket.write(bytes);
  if (n < 0) return;
  if (n < bytes.byteLength) c.writes.push(bytes.subarray(n));
}

function drain(c: Conn): void {
  const writes = c.writes;
  while (writes.length > 0) {
    const bytes = writes[0];
    const n = c.socket.write(bytes);
    if (n < 0) return;
    if (n < bytes.byteLength) {
      writes[0] = bytes.subarray(n);
      return;
    }
    writes.shift();
  }
}

/** Sends `k` messages on `c`, stamping each with the current time. */
function send(c: Conn, k: number, now: number): void {
  const times = c.times;
  const cap = times.length;
  for (let i = 0; i < k; i++) times[(c.first + c.queued++) % cap] = now;
  if (batchable) write(c, batch.subarray(0, k * frameLength));
  else for (let i = 0; i < k; i++) write(c, frame);
}

/**
 * Skips through the frames in `buf` from `start`; returns how many data
 * messages were completed.
 */
function parse(c: Conn, buf: Uint8Array, start: number): number {
  let done = 0;
  let i = start;
  const n = buf.length;
  while (i < n) {
    if (c.skip > 0) {
      const avail = n - i;
      if (c.ping !== null) c.ping.push(...buf.subarray(i, i + Math.min(avail, c.skip)));
      if (avail < c.skip) {
        c.skip -= avail;
        return done;
      }
      i += c.skip;
      c.skip = 0;
      if (c.counts) done++;
      if (c.ping !== null) pong(c);
      continue;
    }
    const left = n - i;
    if (left < 2) {
      c.stash = buf.slice(i);
      return done;
    }
    const b0 = buf[i];
    const b1 = buf[i + 1];
    let length = b1 & 127;
    let header = (b1 & 0x80) !== 0 ? 6 : 2;
    if (length === 126) header += 2;
    else if (length === 127) header += 8;
    if (left < header) {
      c.stash = buf.slice(i);
      return done;
    }
    if (length === 126) length = (buf[i + 2] << 8) | buf[i + 3];
    else if (length === 127) {
      length = (buf[i + 6] * 0x1000000) + ((buf[i + 7] << 16) | (buf[i + 8] << 8) | buf[i + 9]);
    }
    i += header;
    // FIN set and not a control frame: the end of a data message.
    c.counts = (b0 & 0x80) !== 0 && (b0 & 0x08) === 0;
    // A server's keepalive ping (unmasked: raw echo targets send none).
    if ((b0 & 0x0f) === 0x9 && header === 2) c.ping = [];
    if (length === 0) {
      if (c.counts) done++;
      if (c.ping !== null) pong(c);
    } else c.skip = length;
  }
  return done;
}

/**
 * Answers the ping just read with a pong carrying its payload (§5.5.3), so
 * servers with keepalive keep idle connections open: masked, as a client's
 * frames must be, with an all-zero key (the payload goes as it is).
 */
function pong(c: Conn): void {
  const payload = c.ping!;
  c.ping = null;
  const out = new Uint8Array(6 + payload.length);
  out[0] = 0x8a;
  out[1] = 0x80 | payload.length;
  out.set(payload, 6);
  write(c, out);
}

function onFrames(c: Conn, buf: Uint8Array, start: number): void {
  const done = parse(c, buf, start);
  if (done === 0) return;
  const now = performance.now();
  const times = c.times;
  const cap = times.length;
  if (measuring) {
    received += done;
    for (let i = 0; i < done; i++) {
      histogram.record((now - times[c.first]) * 1000);
      c.first = (c.first + 1) % cap;
    }
  } else c.first = (c.first + done) % cap;
  c.queued -= done;
  if (!stopping) send(c, done, now);
}

function onData(c: Conn, data: Uint8Array): void {
  if (c.stash !== null) {
    const joined = new Uint8Array(c.stash.byteLength + data.byteLength);
    joined.set(c.stash);
    joined.set(data, c.stash.byteLength);
    c.stash = null;
    data = joined;
  }
  if (c.open) return onFrames(c, data, 0);
  // The handshake response; latin1 keeps byte offsets equal to string offsets.
  c.head += new TextDecoder("latin1").decode(data);
  const end = c.head.indexOf("\r\n\r\n");
  if (end < 0) {
    if (c.head.length > 16384) c.onFail?.(new Error("Handshake response too long"));
    return;
  }
  if (!/^HTTP\/1\.1 101 /.test(c.head)) {
    c.onFail?.(new Error(`Handshake failed: ${c.head.slice(0, c.head.indexOf("\r\n"))}`));
    return;
  }
  const restStart = data.byteLength - (c.head.length - (end + 4));
  c.head = "";
  c.open = true;
  c.onOpen?.();
  if (restStart < data.byteLength) onFrames(c, data, restStart);
}

const request = (port: number) =>
  new TextEncoder().encode(
    `GET / HTTP/1.1\r\nHost: ${config.hostname}:${port}\r\nUpgrade: websocket\r\n` +
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      "Sec-WebSocket-Version: 13\r\n\r\n",
  );

/** Opens one connection and completes its handshake (if the target has one). */
async function openConnection(): Promise<Conn> {
  const c = new Conn(inflight);
  const opened = new Promise<void>((resolve, reject) => {
    c.onOpen = resolve;
    c.onFail = reject;
  });
  c.socket = await bun().connect<Conn>({
    hostname: config.hostname,
    port: config.port,
    data: c,
    socket: {
      open(socket) {
        socket.setNoDelay(true);
      },
      data(socket, data) {
        onData(socket.data, data);
      },
      drain(socket) {
        drain(socket.data);
      },
      close(socket) {
        const conn = socket.data;
        if (!stopping && !conn.ended) {
          errors++;
          conn.onFail?.(new Error("Connection closed by the server"));
        }
      },
      error(socket, error) {
        if (!stopping && !socket.data.ended) errors++;
        socket.data.onFail?.(error);
      },
    },
  });
  if (config.raw) {
    c.open = true;
    return c;
  }
  c.socket.write(request(config.port));
  await opened;
  return c;
}

async function openMany(count: number, batchSize: number): Promise<Conn[]> {
  const conns: Conn[] = [];
  while (conns.length < count) {
    const n = Math.min(batchSize, count - conns.length);
    const settled = await Promise.allSettled(Array.from({ length: n }, openConnection));
    for (const result of settled) {
      if (result.status === "fulfilled") conns.push(result.value);
      else if (conns.length === 0 && errors === 0) throw result.reason;
      else errors++;
    }
    if (errors > count / 10) throw new Error(`Too many failed connections (${errors})`);
  }
  return conns;
}

function closeAll(conns: Conn[]): void {
  stopping = true;
  for (const c of conns) {
    c.ended = true;
    c.socket.terminate();
  }
}

async function runLoad(): Promise<LoadResult> {
  const conns = await openMany(config.connections, 500);
  const start = performance.now();
  for (const c of conns) send(c, inflight, start);
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
  const messages = received;
  const loadCpu = self.percent();
  const serverCpu = server?.percent() ?? null;
  const otherCpu = Math.max(0, machine.percent() - loadCpu - (serverCpu ?? 0));
  closeAll(conns);
  return {
    messagesPerSec: messages / seconds,
    mbPerSec: (messages * size) / seconds / 1e6,
    p50us: histogram.percentile(50),
    p99us: histogram.percentile(99),
    serverCpu,
    loadCpu,
    otherCpu,
    messages,
    seconds,
    connections: conns.length,
    errors,
  };
}

async function runIdle(): Promise<IdleResult> {
  await sleep(config.settleMs ?? 1000);
  const rssBeforeKiB = rssKiB(config.serverPid);
  const t0 = performance.now();
  const conns = await openMany(config.connections, config.batch ?? 500);
  const openSeconds = (performance.now() - t0) / 1000;
  const opened = performance.now();
  await sleep(config.settleMs ?? 1000);
  const rssAfterKiB = rssKiB(config.serverPid);
  const perConnection = (rss: number) => (rss - rssBeforeKiB) / conns.length;
  const result: IdleResult = {
    connections: conns.length,
    rssBeforeKiB,
    rssAfterKiB,
    perConnectionKiB: perConnection(rssAfterKiB),
    openSeconds,
    errors,
  };
  if (config.steadyMs !== undefined) {
    const series = [result.perConnectionKiB];
    for (;;) {
      const left = config.steadyMs - (performance.now() - opened);
      if (left <= 0) break;
      await sleep(Math.min(5000, left));
      series.push(perConnection(rssKiB(config.serverPid)));
    }
    result.series = series.map((kib) => Math.round(kib * 100) / 100);
    result.steadyPerConnectionKiB = series[series.length - 1];
    result.errors = errors;
  }
  closeAll(conns);
  return result;
}

/**
 * Passes of `connections` connections, each opened `batch` at a time (a new
 * one starts as soon as one completes its handshake), until the passes add
 * up to `durationMs`. Only the passes are timed: between them the
 * connections are closed and the server gets 200 ms to take them down, so
 * its close work stays out of the window. Handshakes per second over the
 * timed passes; latency from connect() to the 101 response. A first pass of
 * a quarter as many warms the server's handshake path.
 */
async function runHandshakes(): Promise<LoadResult> {
  const window = config.batch ?? 64;
  const pass = async (count: number): Promise<Conn[]> => {
    const conns: Conn[] = [];
    let started = 0;
    const worker = async () => {
      while (started < count) {
        started++;
        const t = performance.now();
        try {
          conns.push(await openConnection());
          if (measuring) histogram.record((performance.now() - t) * 1000);
        } catch {
          errors++;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(window, count) }, worker));
    return conns;
  };
  const settle = async (conns: Conn[]) => {
    closeAll(conns);
    await sleep(200);
    stopping = false;
  };
  await settle(await pass(Math.max(1, config.connections >> 2)));
  await sleep(config.warmupMs);
  histogram.reset();
  errors = 0;
  let seconds = 0, handshakes = 0, self = 0, server = 0, machine = 0;
  const serverCpu = () => config.serverPid > 0 ? cpuSeconds(config.serverPid) : 0;
  do {
    const s0 = cpuSeconds("self"), v0 = serverCpu(), m0 = machineCpuSeconds();
    const t0 = performance.now();
    measuring = true;
    const conns = await pass(config.connections);
    measuring = false;
    seconds += (performance.now() - t0) / 1000;
    self += cpuSeconds("self") - s0;
    server += serverCpu() - v0;
    machine += machineCpuSeconds() - m0;
    handshakes += conns.length;
    await settle(conns);
  } while (seconds * 1000 < config.durationMs);
  const loadCpu = (100 * self) / seconds;
  const serverPercent = config.serverPid > 0 ? (100 * server) / seconds : null;
  return {
    messagesPerSec: handshakes / seconds,
    mbPerSec: 0,
    p50us: histogram.percentile(50),
    p99us: histogram.percentile(99),
    serverCpu: serverPercent,
    loadCpu,
    otherCpu: Math.max(0, (100 * machine) / seconds - loadCpu - (serverPercent ?? 0)),
    messages: handshakes,
    seconds,
    connections: config.connections,
    errors,
  };
}

const result = config.mode === "idle"
  ? await runIdle()
  : config.mode === "handshake"
  ? await runHandshakes()
  : await runLoad();
console.log(JSON.stringify(result));
process.exit(0);
