/**
 * The broadcast load generator (Bun, raw `Bun.connect` sockets): N
 * subscribers on `/sub`, one publisher on `/pub` keeping at most `window`
 * messages in flight (a message is done once every subscriber has it).
 * Reports deliveries per second (messages received, summed over the
 * subscribers), delivery latency (publisher's send to a subscriber's
 * receipt, same process clock), and lost or reordered messages.
 *
 * Every message starts with its sequence number (u32, big-endian). Frames
 * are parsed by skipping payloads, reading only those 4 bytes; with
 * `compress`, subscribers offer permessage-deflate (no context takeover both
 * ways) and only every `probeEvery`-th subscriber inflates (for latency and
 * order); the others count frames.
 *
 * Usage: `bun bench/clients/broadcast_load.ts '<json BroadcastConfig>'`;
 * prints one JSON line ({@linkcode BroadcastResult}).
 *
 * @module
 */

import { constants, inflateRawSync } from "node:zlib";
import { Buffer } from "node:buffer";
import process from "node:process";
import { bun, type BunSocket } from "../lib/bun_api.ts";
import { cpuSeconds, Histogram, type LoadResult, machineCpuSeconds, sleep } from "../lib/proc.ts";

/** What one run measures. */
export interface BroadcastConfig {
  hostname: string;
  port: number;
  subscribers: number;
  /** Payload bytes per message. */
  size: number;
  /** Messages the publisher keeps in flight. */
  window: number;
  warmupMs: number;
  durationMs: number;
  serverPid: number;
  /** Offer permessage-deflate and publish compressible payloads. */
  compress: boolean;
  /** With `compress`: every n-th subscriber inflates. @default 50 */
  probeEvery?: number;
}

/** The result: `messagesPerSec` is deliveries per second. */
export interface BroadcastResult extends LoadResult {
  /** Messages published per second. */
  publishedPerSec: number;
  /** Messages a subscriber missed or got out of order (checked subscribers). */
  lost: number;
  /** Subscribers whose frames were checked for order and latency. */
  checked: number;
  /** Whether the window stalled (some subscriber stopped receiving) for over 5 s. */
  stalled: boolean;
}

const config = JSON.parse(process.argv[2] ?? "{}") as BroadcastConfig;
const N = config.subscribers;
const RING = 1 << 16;
const sendTimes = new Float64Array(RING);
/** Subscribers that have message j, at j % RING. */
const got = new Uint32Array(RING);
const histogram = new Histogram();
let published = 0;
let completed = 0;
let deliveries = 0;
let deliveredBytes = 0;
let lost = 0;
let errors = 0;
let measuring = false;
let stopping = false;
let lastProgress = performance.now();
let stalled = false;

const probeEvery = config.compress ? (config.probeEvery ?? 50) : 1;

/** The payload: seq (4 bytes) then, for compression, JSON-like text. */
function makePayload(size: number, compressible: boolean): Uint8Array {
  const out = new Uint8Array(size);
  if (compressible) {
    const text = new TextEncoder().encode(
      '{"symbol":"ACME","bid":101.25,"ask":101.27,"volume":182733,"venue":"XNAS"},'.repeat(
        Math.ceil(size / 70),
      ),
    );
    out.set(text.subarray(0, size));
  } else {
    for (let i = 0; i < size; i++) out[i] = (i * 31) & 0xff;
  }
  return out;
}

/** One masked frame (zero mask key: payload bytes stay as they are). */
function maskedFrame(payload: Uint8Array): { frame: Uint8Array; seqAt: number } {
  const n = payload.length;
  const head = n < 126 ? 2 : n < 0x10000 ? 4 : 10;
  const frame = new Uint8Array(head + 4 + n);
  frame[0] = 0x82;
  if (n < 126) frame[1] = 0x80 | n;
  else if (n < 0x10000) {
    frame[1] = 0x80 | 126;
    frame[2] = n >>> 8;
    frame[3] = n & 0xff;
  } else {
    frame[1] = 0x80 | 127;
    new DataView(frame.buffer).setUint32(6, n);
  }
  frame.set(payload, head + 4);
  return { frame, seqAt: head + 4 };
}

const pubPayload = makePayload(config.size, config.compress);
const { frame: pubFrame, seqAt } = maskedFrame(pubPayload);
const pubView = new DataView(pubFrame.buffer);

function request(path: string, extensions: boolean): Uint8Array {
  return new TextEncoder().encode(
    `GET ${path} HTTP/1.1\r\nHost: ${config.hostname}:${config.port}\r\n` +
      "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
      (extensions
        ? "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; " +
          "client_no_context_takeover\r\n"
        : "") +
      "\r\n",
  );
}

/** A subscriber's receive state. */
class Sub {
  readonly probe: boolean;
  open = false;
  head: Uint8Array = new Uint8Array(0);
  onOpen: (() => void) | null = null;
  // Frame parser.
  hdr = new Uint8Array(14);
  hdrHave = 0;
  remaining = -1; // -1: reading a header
  opcode = 0;
  rsv1 = false;
  seq = 0;
  seqHave = 0;
  parts: Uint8Array[] = [];
  /** The index of the next message this subscriber should get. */
  next = -1;

  constructor(probe: boolean) {
    this.probe = probe;
  }

  data(chunk: Uint8Array): void {
    if (!this.open) {
      const all = new Uint8Array(this.head.length + chunk.length);
      all.set(this.head);
      all.set(chunk, this.head.length);
      const text = new TextDecoder().decode(all);
      const end = text.indexOf("\r\n\r\n");
      if (end < 0) {
        this.head = all;
        return;
      }
      if (!text.startsWith("HTTP/1.1 101")) {
        throw new Error(`Handshake failed: ${text.slice(0, 80)}`);
      }
      this.open = true;
      this.onOpen?.();
      chunk = all.subarray(new TextEncoder().encode(text.slice(0, end + 4)).length);
    }
    let i = 0;
    while (i < chunk.length) {
      if (this.remaining < 0) {
        this.hdr[this.hdrHave++] = chunk[i++];
        if (this.hdrHave < 2) continue;
        const len7 = this.hdr[1] & 0x7f;
        const need = len7 < 126 ? 2 : len7 === 126 ? 4 : 10;
        if (this.hdrHave < need) continue;
        this.opcode = this.hdr[0] & 0x0f;
        this.rsv1 = (this.hdr[0] & 0x40) !== 0;
        this.remaining = len7 < 126
          ? len7
          : len7 === 126
          ? (this.hdr[2] << 8) | this.hdr[3]
          : new DataView(this.hdr.buffer).getUint32(6);
        this.hdrHave = 0;
        this.seq = 0;
        this.seqHave = 0;
        this.parts = [];
        if (this.remaining === 0) this.frameEnd();
        continue;
      }
      const take = Math.min(this.remaining, chunk.length - i);
      if (this.rsv1 && this.probe) {
        this.parts.push(chunk.slice(i, i + take));
      } else {
        for (let k = i; k < i + take && this.seqHave < 4; k++) {
          this.seq = (this.seq * 256 + chunk[k]) >>> 0;
          this.seqHave++;
        }
      }
      i += take;
      this.remaining -= take;
      if (this.remaining === 0) this.frameEnd();
    }
  }

  frameEnd(): void {
    this.remaining = -1;
    if (this.opcode === 0x8) {
      if (!stopping) errors++;
      return;
    }
    if (this.opcode !== 0x1 && this.opcode !== 0x2) return;
    const now = performance.now();
    let index: number;
    if (this.rsv1 && !this.probe) {
      // Compressed and not inflated: ordered delivery makes it the next one.
      index = this.next;
    } else {
      let seq = this.seq;
      if (this.rsv1) {
        const input = Buffer.concat([...this.parts, Buffer.from([0, 0, 0xff, 0xff])]);
        const plain = inflateRawSync(input, { finishFlush: constants.Z_SYNC_FLUSH });
        seq = plain.readUInt32BE(0);
      }
      if (this.next >= 0 && seq !== this.next) lost++;
      index = seq;
      if (measuring) histogram.record((now - sendTimes[seq % RING]) * 1000);
    }
    if (index < 0) index = this.next; // (not yet synchronised: see start())
    this.next = index + 1;
    if (measuring) {
      deliveries++;
      deliveredBytes += config.size;
    }
    if (index >= completed && index < published) {
      const slot = index % RING;
      if (++got[slot] === N) advance();
    }
  }
}

function advance(): void {
  while (completed < published && got[completed % RING] >= N) {
    got[completed % RING] = 0;
    completed++;
  }
  lastProgress = performance.now();
  pump();
}

let pub: BunSocket | null = null;
const backlog: Uint8Array[] = [];

function write(bytes: Uint8Array): void {
  if (backlog.length > 0) {
    backlog.push(bytes);
    return;
  }
  const n = pub!.write(bytes);
  if (n < bytes.length) backlog.push(bytes.subarray(Math.max(0, n)));
}

function pump(): void {
  if (stopping || pub === null) return;
  while (published - completed < config.window) {
    const seq = published++;
    pubView.setUint32(seqAt, seq);
    sendTimes[seq % RING] = performance.now();
    got[seq % RING] = 0;
    write(pubFrame.slice());
  }
}

async function connect(path: string, sub: Sub | null): Promise<BunSocket> {
  let resolveOpen!: () => void;
  let rejectOpen!: (error: Error) => void;
  const opened = new Promise<void>((resolve, reject) => {
    resolveOpen = resolve;
    rejectOpen = reject;
  });
  const state = sub ?? new Sub(false);
  state.onOpen = resolveOpen;
  const socket = await bun().connect<Sub>({
    hostname: config.hostname,
    port: config.port,
    data: state,
    socket: {
      data(s, chunk) {
        try {
          s.data.data(chunk);
        } catch (error) {
          errors++;
          rejectOpen(error as Error);
        }
      },
      drain(s) {
        if (s !== pub) return;
        while (backlog.length > 0) {
          const head = backlog[0];
          const n = s.write(head);
          if (n < head.length) {
            backlog[0] = head.subarray(Math.max(0, n));
            return;
          }
          backlog.shift();
        }
      },
      close() {
        if (!stopping) errors++;
      },
      error() {
        if (!stopping) errors++;
      },
    },
  });
  socket.setNoDelay(true);
  socket.write(request(path, sub !== null && config.compress));
  await Promise.race([
    opened,
    sleep(20_000).then(() => {
      throw new Error(`Handshake on ${path} timed out`);
    }),
  ]);
  return socket;
}

const subs: Sub[] = [];
for (let i = 0; i < N; i += 100) {
  const batch: Promise<BunSocket>[] = [];
  for (let j = i; j < Math.min(N, i + 100); j++) {
    const sub = new Sub(j % probeEvery === 0);
    subs.push(sub);
    batch.push(connect("/sub", sub));
  }
  await Promise.all(batch);
}
// Let the server finish subscribing the last ones.
await sleep(500);
for (const sub of subs) sub.next = 0;
pub = await connect("/pub", null);
pump();

const watchdog = setInterval(() => {
  if (!stopping && performance.now() - lastProgress > 5000) {
    stalled = true;
    stopping = true;
  }
}, 500);

await sleep(config.warmupMs);
measuring = true;
deliveries = 0;
deliveredBytes = 0;
lost = 0;
errors = 0;
const published0 = published;
const self0 = cpuSeconds("self");
const server0 = config.serverPid > 0 ? cpuSeconds(config.serverPid) : 0;
const machine0 = machineCpuSeconds();
const t0 = performance.now();
await sleep(config.durationMs);
const seconds = (performance.now() - t0) / 1000;
const selfCpu = cpuSeconds("self") - self0;
const serverCpu = config.serverPid > 0 ? cpuSeconds(config.serverPid) - server0 : 0;
const machineCpu = machineCpuSeconds() - machine0;
measuring = false;
stopping = true;
clearInterval(watchdog);

const result: BroadcastResult = {
  messagesPerSec: deliveries / seconds,
  mbPerSec: deliveredBytes / seconds / 1e6,
  p50us: histogram.percentile(50),
  p99us: histogram.percentile(99),
  serverCpu: config.serverPid > 0 ? (100 * serverCpu) / seconds : null,
  loadCpu: (100 * selfCpu) / seconds,
  otherCpu: Math.max(0, (100 * (machineCpu - selfCpu - serverCpu)) / seconds),
  messages: deliveries,
  seconds,
  connections: N + 1,
  errors,
  publishedPerSec: (published - published0) / seconds,
  lost,
  checked: subs.filter((s) => s.probe).length,
  stalled,
  loadgen: "bun",
};
console.log(JSON.stringify(result));
process.exit(0);
