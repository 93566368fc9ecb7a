/**
 * A seeded fuzz test of the server over real loopback sockets. A small PRNG
 * (mulberry32, never `Math.random`) builds byte streams from valid frames and
 * then breaks them: header bit flips, random opcodes, lying lengths, unmasked
 * frames, garbage between frames, truncation, payload bit flips, random
 * chunking. Each stream goes to the server over a fresh connection. Whatever
 * arrives, the server must, within bounded time, either echo or close with a
 * code a broken peer can earn (1000, 1002, 1007, 1009, or the echo of a close
 * code the stream itself carried), send only well-formed unmasked frames, and
 * close TCP. A control client must keep getting echoes, and no promise
 * rejection may go unhandled. Streams left unmutated must come back exactly.
 *
 * A second part sends garbage before and inside the HTTP handshake: the
 * server answers 101 or 4xx, or closes, within its handshake timeout.
 *
 * Set FUZZ_SEED to replay a run; every failure message carries the seed and
 * the case number, and the case's bytes in hex.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import process from "node:process";
import { serve, type Server } from "../../mod.ts";
import {
  buildFrame,
  closeFrame,
  concat,
  Op,
  RawClient,
  type ServerFrame,
  sleep,
  upgradeRequest,
  utf8,
  watchUnhandledRejections,
  within,
} from "./_raw_client.ts";

const HOST = "127.0.0.1";
const SEED = Number(process.env.FUZZ_SEED || 0x51c3_2026) >>> 0;
const FRAME_CASES = 300;
const HANDSHAKE_CASES = 60;
const CONCURRENCY = 12;
const CLOSE_TIMEOUT = 300;
const HANDSHAKE_TIMEOUT = 800;
const MAX_MESSAGE = 64 * 1024;
const fatal = new TextDecoder("utf-8", { fatal: true });

/** mulberry32: a tiny, well-mixed, seedable 32-bit PRNG. */
class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

function hex(bytes: Uint8Array, max = 160): string {
  const shown = Buffer.from(bytes.subarray(0, max)).toString("hex");
  return bytes.length > max ? `${shown}… (${bytes.length} bytes)` : shown;
}

// ---------------------------------------------------------------------------
// Stream generation
// ---------------------------------------------------------------------------

const snippets = ["a", "hello", "κόσμε", "€", "😀", "\u{10ffff}", "\uffff", " ", "ß"];

function randomText(rng: Rng, maxChars: number): Uint8Array {
  let s = "";
  const n = rng.int(maxChars + 1);
  for (let i = 0; i < n; i++) s += rng.pick(snippets);
  return utf8(s);
}

function randomSize(rng: Rng): number {
  const r = rng.next();
  if (r < 0.6) return rng.int(126);
  if (r < 0.85) return 126 + rng.int(2000);
  if (r < 0.95) return rng.pick([65_535, 65_536, MAX_MESSAGE - 1]);
  return MAX_MESSAGE + 1 + rng.int(1000);
}

/** What an unmutated stream must produce: frames, then (maybe) a close code. */
interface Oracle {
  frames: { op: number; payload: Uint8Array }[];
  close: number | null;
}

interface Case {
  index: number;
  frames: Uint8Array[];
  mutations: string[];
  stream: Uint8Array;
  chunks: number[];
  /** Set only when no mutation was applied. */
  oracle: Oracle | null;
}

function generateCase(rng: Rng, index: number): Case {
  const frames: Uint8Array[] = [];
  const oracle: Oracle = { frames: [], close: null };
  let size = 0;
  const mask = () => rng.bytes(4);
  const count = 1 + rng.int(5);
  if (index % 25 === 7) {
    // Every 25th stream opens with a message over maxMessageSize, so each seed reaches 1009.
    frames.push(
      buildFrame({
        opcode: Op.Binary,
        payload: rng.bytes(MAX_MESSAGE + 1 + rng.int(1000)),
        mask: mask(),
      }),
    );
    oracle.close = 1009;
  }
  for (let i = 0; i < count && oracle.close === null; i++) {
    const kind = rng.int(10);
    if (kind <= 2) {
      const payload = randomText(rng, rng.chance(0.1) ? 4000 : 40);
      frames.push(buildFrame({ opcode: Op.Text, payload, mask: mask() }));
      size = payload.length;
      if (size > MAX_MESSAGE) oracle.close = 1009;
      else oracle.frames.push({ op: Op.Text, payload });
    } else if (kind <= 4) {
      const payload = rng.bytes(randomSize(rng));
      frames.push(buildFrame({ opcode: Op.Binary, payload, mask: mask() }));
      if (payload.length > MAX_MESSAGE) oracle.close = 1009;
      else oracle.frames.push({ op: Op.Binary, payload });
    } else if (kind === 5) {
      const payload = rng.bytes(rng.int(126));
      frames.push(buildFrame({ opcode: Op.Ping, payload, mask: mask() }));
      oracle.frames.push({ op: Op.Pong, payload });
    } else if (kind === 6) {
      frames.push(buildFrame({ opcode: Op.Pong, payload: rng.bytes(rng.int(126)), mask: mask() }));
    } else if (kind <= 8) {
      // A fragmented text, split anywhere (also inside a code point), maybe with a ping inside.
      const whole = randomText(rng, 30);
      const parts = 1 + rng.int(4);
      const cuts = Array.from({ length: parts - 1 }, () => rng.int(whole.length + 1)).sort((
        a,
        b,
      ) => a - b);
      const bounds = [0, ...cuts, whole.length];
      const pings: Uint8Array[] = [];
      for (let p = 0; p < parts; p++) {
        frames.push(buildFrame({
          opcode: p === 0 ? Op.Text : Op.Continuation,
          fin: p === parts - 1,
          payload: whole.subarray(bounds[p], bounds[p + 1]),
          mask: mask(),
        }));
        if (p < parts - 1 && rng.chance(0.3)) {
          const ping = rng.bytes(rng.int(20));
          frames.push(buildFrame({ opcode: Op.Ping, payload: ping, mask: mask() }));
          pings.push(ping);
        }
      }
      for (const ping of pings) oracle.frames.push({ op: Op.Pong, payload: ping });
      oracle.frames.push({ op: Op.Text, payload: whole });
    } else {
      const code = rng.pick([1000, 1001, 3000, 4999]);
      frames.push(buildFrame({
        opcode: Op.Close,
        payload: concat(new Uint8Array([code >> 8, code & 0xff]), randomText(rng, 10)),
        mask: mask(),
      }));
      oracle.close = code;
    }
  }

  const mutations: string[] = [];
  const mutationCount = rng.chance(0.25) ? 0 : 1 + rng.int(3);
  let truncateAt: number | null = null;
  for (let m = 0; m < mutationCount; m++) {
    const at = rng.int(frames.length);
    const f = new Uint8Array(frames[at]);
    const kind = rng.int(8);
    if (kind === 0) {
      const byte = rng.int(2);
      const bit = rng.int(8);
      f[byte] ^= 1 << bit;
      mutations.push(`flip bit ${bit} of header byte ${byte} in frame ${at}`);
    } else if (kind === 1) {
      const opcode = rng.int(16);
      f[0] = (f[0] & 0xf0) | opcode;
      mutations.push(`opcode ${opcode} in frame ${at}`);
    } else if (kind === 2) {
      // Rebuild with a lying length (the payload bytes stay what they were).
      const announce = rng.pick([0, 1, 125, 126, 127, 65_535, 65_536, 2 ** 32, 2 ** 53 - 1]);
      const bits = rng.pick([7, 16, 64] as const);
      const len7 = f[1] & 0x7f;
      const headerLength = (len7 < 126 ? 2 : len7 === 126 ? 4 : 10) + ((f[1] & 0x80) ? 4 : 0);
      const masked = (f[1] & 0x80) !== 0;
      const key = masked ? f.slice(headerLength - 4, headerLength) : null;
      const fitting = bits === 7
        ? Math.min(announce, 125)
        : bits === 16
        ? Math.min(announce, 65_535)
        : announce;
      const rebuilt = buildFrame({
        opcode: f[0] & 0x0f,
        fin: (f[0] & 0x80) !== 0,
        announce: fitting,
        lengthBits: bits,
        mask: key ?? false,
      });
      frames[at] = concat(rebuilt, f.subarray(headerLength));
      mutations.push(`length ${fitting} in ${bits}-bit form in frame ${at}`);
      continue;
    } else if (kind === 3) {
      f[1] &= 0x7f;
      mutations.push(`mask bit cleared in frame ${at}`);
    } else if (kind === 4) {
      if (f.length > 2) {
        const pos = 2 + rng.int(f.length - 2);
        f[pos] ^= 1 << rng.int(8);
        mutations.push(`flip a bit of byte ${pos} in frame ${at}`);
      }
    } else if (kind === 5) {
      frames.splice(at, 0, rng.bytes(1 + rng.int(20)));
      mutations.push(`garbage before frame ${at}`);
      continue;
    } else if (kind === 6) {
      f[0] ^= 0x80;
      mutations.push(`FIN flipped in frame ${at}`);
    } else {
      truncateAt = rng.next();
      mutations.push(`truncated`);
      continue;
    }
    frames[at] = f;
  }
  let stream = concat(...frames);
  if (truncateAt !== null) stream = stream.subarray(0, Math.floor(truncateAt * stream.length));

  const chunks: number[] = [];
  if (rng.chance(0.5)) {
    let left = stream.length;
    const unit = rng.pick([1, 2, 3, 7, 64, 1000]);
    while (left > 0 && chunks.length < 60) {
      const n = Math.min(left, 1 + rng.int(unit));
      chunks.push(n);
      left -= n;
    }
    if (left > 0) chunks.push(left);
  } else {
    chunks.push(stream.length);
  }
  return {
    index,
    frames,
    mutations,
    stream,
    chunks,
    oracle: mutationCount === 0 ? oracle : null,
  };
}

/**
 * Close codes the stream itself carries in well-formed-looking close frames,
 * read by a lenient parser of our own: the server may legitimately echo them.
 */
function closeCodesIn(stream: Uint8Array): Set<number> {
  const codes = new Set<number>();
  let at = 0;
  while (at + 2 <= stream.length) {
    const b0 = stream[at];
    const b1 = stream[at + 1];
    const len7 = b1 & 0x7f;
    let header = 2;
    let length = len7;
    if (len7 === 126) {
      if (at + 4 > stream.length) break;
      length = (stream[at + 2] << 8) | stream[at + 3];
      header = 4;
    } else if (len7 === 127) {
      if (at + 10 > stream.length) break;
      length = 0;
      for (let i = 2; i < 10; i++) length = length * 256 + stream[at + i];
      header = 10;
    }
    const masked = (b1 & 0x80) !== 0;
    const key = masked ? stream.subarray(at + header, at + header + 4) : null;
    if (masked) header += 4;
    if ((b0 & 0x0f) === Op.Close) {
      if (length === 0) codes.add(1005);
      else if (at + header + 2 <= stream.length) {
        const c0 = stream[at + header] ^ (key ? key[0] : 0);
        const c1 = stream[at + header + 1] ^ (key ? key[1] : 0);
        codes.add((c0 << 8) | c1);
      }
    }
    at += header + length;
  }
  return codes;
}

// ---------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------

interface Outcome {
  frames: ServerFrame[];
  close: { code: number; reason: Uint8Array } | null;
  /** Whether the server ended TCP before we half-closed. */
  endedBeforeOurFin: boolean;
  sentFin: boolean;
  sentClose: boolean;
  /** The close frame we appended, if any: it may become part of an unfinished frame. */
  ourClose: Uint8Array;
}

/** Reads frames until a close frame, the end of the stream, or `idleMs` of silence. */
async function drain(
  client: RawClient,
  out: Outcome,
  idleMs: number,
): Promise<"close" | "end" | "idle"> {
  for (;;) {
    let frame: ServerFrame | null;
    try {
      frame = await client.readFrame(idleMs);
    } catch (error) {
      if (/Timed out/.test(String(error))) return "idle";
      throw error;
    }
    if (frame === null) return "end";
    if (frame.opcode === Op.Close) {
      out.close = {
        code: frame.payload.length === 0 ? 1005 : (frame.payload[0] << 8) | frame.payload[1],
        reason: frame.payload.subarray(2),
      };
      if (frame.payload.length === 1) throw new Error("the server sent a 1-byte close payload");
      return "close";
    }
    out.frames.push(frame);
  }
}

/** How each case ended, tallied so a degenerate generator shows up as a failure. */
type Tally = Map<string, number>;

async function runFrameCase(port: number, c: Case, tally: Tally): Promise<void> {
  const what = () =>
    `seed 0x${SEED.toString(16)} case ${c.index} [${
      c.mutations.join("; ") || "unmutated"
    }] chunks ${c.chunks.length} bytes ${hex(c.stream)}`;
  const client = await RawClient.open(port);
  const out: Outcome = {
    frames: [],
    close: null,
    endedBeforeOurFin: false,
    sentFin: false,
    sentClose: false,
    ourClose: new Uint8Array(0),
  };
  try {
    let at = 0;
    for (const n of c.chunks) {
      const piece = c.stream.subarray(at, at + n);
      at += n;
      if (c.chunks.length > 1) await client.writeAndFlush(piece).catch(() => {});
      else client.write(piece);
    }
    let state = await drain(client, out, 250);
    if (state === "idle") {
      // The server may be waiting for the rest of a frame or message: ask it to close.
      out.sentClose = true;
      out.ourClose = closeFrame(1000);
      client.write(out.ourClose);
      state = await drain(client, out, 600);
    }
    if (state === "end") out.endedBeforeOurFin = true;
    if (state === "idle") {
      // Still mid-frame (our close became payload): half-close; the server must hang up.
      out.sentFin = true;
      client.end();
    }
    const endBound = CLOSE_TIMEOUT + 2000;
    const ended = await client.waitForEnd(endBound);
    assert.ok(ended, `the server closes TCP within ${endBound} ms (${state}): ${what()}`);
    if (state === "close") {
      // Nothing may follow a close frame.
      assert.equal(client.buffered, 0, `bytes after the close frame: ${what()}`);
    }
  } catch (error) {
    throw new Error(`${(error as Error).message}\n  ${what()}`, { cause: error });
  } finally {
    client.destroy();
  }

  for (const f of out.frames) {
    assert.equal(f.masked, false, `a masked server frame: ${what()}`);
    assert.ok(!f.rsv1 && !f.rsv2 && !f.rsv3, `RSV bits on a server frame: ${what()}`);
    assert.ok(
      [Op.Text, Op.Binary, Op.Pong].includes(f.opcode as 1 | 2 | 10),
      `server opcode ${f.opcode}: ${what()}`,
    );
    assert.equal(f.fin, true, `a fragmented echo: ${what()}`);
    if (f.opcode === Op.Text) fatal.decode(f.payload);
    if (f.opcode === Op.Pong) assert.ok(f.payload.length <= 125, `a long pong: ${what()}`);
  }
  if (out.close !== null) {
    const allowed = new Set([
      1000,
      1002,
      1007,
      1009,
      ...closeCodesIn(concat(c.stream, out.ourClose)),
    ]);
    assert.ok(
      allowed.has(out.close.code),
      `close code ${out.close.code} not in ${[...allowed]}: ${what()}`,
    );
    fatal.decode(out.close.reason);
  } else {
    // Without a close frame, the server may only hang up because we did.
    assert.ok(out.sentFin, `TCP closed without a close frame before our FIN: ${what()}`);
  }

  const key = out.close === null ? "TCP close after our FIN" : `close ${out.close.code}`;
  tally.set(key, (tally.get(key) ?? 0) + 1);
  if (out.frames.length > 0) {
    tally.set("some frames echoed", (tally.get("some frames echoed") ?? 0) + 1);
  }

  if (c.oracle !== null) {
    const o = c.oracle;
    assert.equal(
      out.frames.length,
      o.frames.length,
      `frame count of an unmutated stream: ${what()}`,
    );
    for (let i = 0; i < o.frames.length; i++) {
      assert.equal(out.frames[i].opcode, o.frames[i].op, `frame ${i} opcode: ${what()}`);
      assert.ok(
        Buffer.from(out.frames[i].payload).equals(Buffer.from(o.frames[i].payload)),
        `frame ${i} payload: ${what()}`,
      );
    }
    assert.equal(out.close?.code, o.close ?? 1000, `close code of an unmutated stream: ${what()}`);
    assert.equal(out.sentClose, o.close === null, `the server waits for our close: ${what()}`);
  }
}

// ---------------------------------------------------------------------------
// Handshake garbage
// ---------------------------------------------------------------------------

interface HandshakeCase {
  index: number;
  bytes: Uint8Array;
  how: string;
  /** Whether we half-close after sending (otherwise the handshake timeout must fire). */
  fin: boolean;
}

function printable(rng: Rng, n: number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_:; /=,.";
  let s = "";
  for (let i = 0; i < n; i++) s += alphabet[rng.int(alphabet.length)];
  return s;
}

function generateHandshakeCase(rng: Rng, index: number, port: number): HandshakeCase {
  const request = utf8(upgradeRequest(`${HOST}:${port}`, { key: "dGhlIHNhbXBsZSBub25jZQ==" }));
  const body = request.subarray(0, request.length - 2); // without the final CRLF
  const lines = new TextDecoder("latin1").decode(body).split("\r\n").filter((l) => l !== "");
  const kind = rng.int(6);
  let bytes: Uint8Array;
  let how: string;
  if (kind === 0) {
    bytes = concat(rng.bytes(1 + rng.int(64)), request);
    how = "binary bytes before the request line";
  } else if (kind === 1) {
    const at = 1 + rng.int(lines.length - 1);
    const extra = printable(rng, 1 + rng.int(60));
    lines.splice(at, 0, extra);
    bytes = utf8(lines.join("\r\n") + "\r\n\r\n");
    how = `header line ${JSON.stringify(extra)}`;
  } else if (kind === 2) {
    const at = 1 + rng.int(lines.length - 1);
    const head = utf8(lines.slice(0, at).join("\r\n") + "\r\n");
    const tail = utf8(lines.slice(at).join("\r\n") + "\r\n\r\n");
    bytes = concat(head, rng.bytes(1 + rng.int(40)), utf8("\r\n"), tail);
    how = "a binary header line";
  } else if (kind === 3) {
    bytes = rng.bytes(1 + rng.int(300));
    how = "binary bytes only";
  } else if (kind === 4) {
    const cut = rng.int(body.length);
    bytes = concat(body.subarray(0, cut), rng.bytes(rng.int(30)));
    how = `request cut at ${cut} then garbage, no end of head`;
  } else {
    const pos = rng.int(body.length);
    bytes = new Uint8Array(request);
    bytes[pos] = rng.int(256);
    how = `byte ${pos} replaced`;
  }
  return { index, bytes, how, fin: rng.chance(0.5) };
}

async function runHandshakeCase(port: number, c: HandshakeCase, tally: Tally): Promise<void> {
  const what = `seed 0x${SEED.toString(16)} handshake case ${c.index} (${c.how}, ${
    c.fin ? "FIN" : "no FIN"
  }): ${hex(c.bytes)}`;
  const client = await RawClient.connect(port);
  try {
    client.write(c.bytes);
    if (c.fin) client.end();
    const bound = HANDSHAKE_TIMEOUT + 2000;
    let response;
    try {
      response = await client.readResponse(bound);
    } catch (error) {
      // No response: allowed only if the server closed the connection.
      assert.ok(client.ended, `neither a response nor a close within ${bound} ms: ${what}`);
      // A client still waiting (no FIN) is owed an answer: 400, or 408 at the timeout.
      assert.ok(c.fin, `closed without an HTTP response to a client still waiting: ${what}`);
      assert.match(String(error), /Stream ended before a full response head; got ""/, what);
      tally.set("closed", (tally.get("closed") ?? 0) + 1);
      return;
    }
    const ok = response.status === 101 || (response.status >= 400 && response.status < 500);
    assert.ok(ok, `status ${response.status}: ${what}`);
    tally.set(String(response.status), (tally.get(String(response.status)) ?? 0) + 1);
    if (response.status === 101) {
      if (!c.fin) {
        client.write(buildFrame({ opcode: Op.Text, payload: "after a lenient handshake" }));
        const echo = await client.expectFrame(3000);
        assert.equal(new TextDecoder().decode(echo.payload), "after a lenient handshake", what);
        client.write(closeFrame(1000));
        assert.equal((await client.expectClose(3000)).code, 1000, what);
      }
    }
    assert.ok(await client.waitForEnd(bound), `the server closes TCP: ${what}`);
  } finally {
    client.destroy();
  }
}

// ---------------------------------------------------------------------------

async function assertControlEchoes(control: RawClient, round: number): Promise<void> {
  const message = `control ${round}`;
  control.write(buildFrame({ opcode: Op.Text, payload: message }));
  const reply = await control.expectFrame(3000);
  assert.equal(
    new TextDecoder().decode(reply.payload),
    message,
    `seed 0x${SEED.toString(16)}: control echo ${round}`,
  );
}

async function withFuzzServer(
  body: (server: Server, control: RawClient) => Promise<void>,
): Promise<void> {
  const rejections = watchUnhandledRejections();
  const server = await serve({
    port: 0,
    hostname: HOST,
    maxMessageSize: MAX_MESSAGE,
    closeTimeout: CLOSE_TIMEOUT,
    handshakeTimeout: HANDSHAKE_TIMEOUT,
  }, {
    message(ws, data) {
      ws.send(data);
    },
  });
  const control = await RawClient.open(server.addr.port);
  try {
    await body(server, control);
    await sleep(20);
    assert.deepEqual(
      rejections.reasons,
      [],
      `seed 0x${SEED.toString(16)}: no unhandled promise rejection`,
    );
  } finally {
    control.destroy();
    await within(server.shutdown(), 10_000, "server shutdown");
    rejections.stop();
  }
}

describe(`fuzz (seed 0x${SEED.toString(16)})`, () => {
  test(`${FRAME_CASES} mutated frame streams: echo or a proper close, bounded, others unaffected`, async () => {
    const rng = new Rng(SEED);
    const cases = Array.from({ length: FRAME_CASES }, (_, i) => generateCase(rng, i));
    const started = performance.now();
    const tally: Tally = new Map();
    await withFuzzServer(async (server, control) => {
      for (let at = 0, round = 0; at < cases.length; at += CONCURRENCY, round++) {
        await Promise.all(
          cases.slice(at, at + CONCURRENCY).map((c) => runFrameCase(server.addr.port, c, tally)),
        );
        await assertControlEchoes(control, round);
      }
    });
    const unmutated = cases.filter((c) => c.oracle !== null).length;
    const seen = Object.fromEntries([...tally].sort());
    console.log(`fuzz outcomes: ${JSON.stringify(seen)}`);
    // The generator must reach every kind of ending, or it tests less than it claims.
    for (
      const outcome of [
        "close 1000",
        "close 1002",
        "close 1007",
        "close 1009",
        "some frames echoed",
      ]
    ) {
      assert.ok(
        (tally.get(outcome) ?? 0) > 0,
        `seed 0x${SEED.toString(16)}: no case ended with ${outcome}`,
      );
    }
    console.log(
      `fuzz: ${FRAME_CASES} frame cases (${unmutated} unmutated) in ${
        (performance.now() - started).toFixed(0)
      } ms, seed 0x${SEED.toString(16)}`,
    );
  });

  test(`${HANDSHAKE_CASES} garbled handshakes: 101, 4xx or a close, within the handshake timeout`, async () => {
    const rng = new Rng(SEED ^ 0x9e3779b9);
    const started = performance.now();
    const tally: Tally = new Map();
    await withFuzzServer(async (server, control) => {
      const port = server.addr.port;
      const cases = Array.from(
        { length: HANDSHAKE_CASES },
        (_, i) => generateHandshakeCase(rng, i, port),
      );
      for (let at = 0, round = 0; at < cases.length; at += CONCURRENCY * 2, round++) {
        await Promise.all(
          cases.slice(at, at + CONCURRENCY * 2).map((c) => runHandshakeCase(port, c, tally)),
        );
        await assertControlEchoes(control, round);
      }
    });
    console.log(
      `fuzz handshake outcomes: ${JSON.stringify(Object.fromEntries([...tally].sort()))}`,
    );
    assert.ok((tally.get("400") ?? 0) > 0, `seed 0x${SEED.toString(16)}: no handshake got 400`);
    assert.ok(
      (tally.get("closed") ?? 0) + (tally.get("408") ?? 0) > 0,
      "no handshake was cut short",
    );
    console.log(
      `fuzz: ${HANDSHAKE_CASES} handshake cases in ${(performance.now() - started).toFixed(0)} ms`,
    );
  });
});
