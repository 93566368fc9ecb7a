/**
 * The receive path, for messages the application keeps: every way a binary
 * message is handed out without a copy (views cut from the per-connection
 * slab, views in place in an owned input chunk, buffers with room for a frame
 * header in front, buffers the Deno transport reads the rest of a payload
 * straight into, parts and tails of fragmented messages, text decoded from
 * the shared scratch buffer, inflated messages) must keep its bytes however
 * long it is kept, whatever this connection and the others receive or send
 * afterwards; and `binaryType: "arraybuffer"` must get exactly the message's
 * bytes, never a larger buffer with other messages (or other connections) in
 * it.
 *
 * Every test keeps every message it received and checks all of them at the
 * end, which is how aliasing shows. Runs under `deno test -A` and `bun test`.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import net from "node:net";
import { constants as zlibConstants, deflateRawSync } from "node:zlib";
import { connect, type Message, serve, type WebSocketConnection } from "../mod.ts";
import { type ProtocolHandler, WebSocketProtocol } from "../src/protocol/connection.ts";
import { PerMessageDeflate } from "../src/protocol/deflate_codec.ts";
import { concat, pattern, seededRandom, utf8 } from "./_bytes.ts";
import { delay, within } from "./_watch.ts";
import { buildFrame, expectedAccept, Op, RawClient } from "./integration/_raw_client.ts";

const HOST = "127.0.0.1";
const decoder = new TextDecoder();

// --- Messages -------------------------------------------------------------

/** A deterministic PRNG, so a failing run can be repeated from its seed. */
const rng = seededRandom;

/** Bytes that start every tagged message of connection `conn`: found anywhere means its bytes. */
function marker(conn: number): Uint8Array {
  return Uint8Array.of(0xa5, 0x5a, 0xc3, 0x3c, 0x96, 0x69, conn & 0xff, 0xe7);
}

/** The payload of connection `conn`'s message `seq`: tagged with the connection if long enough. */
function binaryPayload(conn: number, seq: number, size: number): Uint8Array {
  const out = pattern(size, conn * 977 + seq);
  const tag = marker(conn);
  if (size >= tag.length + 2) {
    out.set(tag);
    out[tag.length] = seq >>> 8;
    out[tag.length + 1] = seq & 0xff;
  }
  return out;
}

/** Text with 1-, 2-, 3- and 4-byte UTF-8 sequences, so that cuts fall inside them. */
function textPayload(conn: number, seq: number, units: number): string {
  const alphabet = ["a", "é", "€", "😀", "ж", "z", "語", "𝄞"];
  let s = `c${conn}s${seq}:`;
  for (let i = 0; s.length < units; i++) s += alphabet[(i * 7 + seq + conn) % alphabet.length];
  return s;
}

const SIZES = [
  0,
  1,
  7,
  15,
  16,
  100,
  125,
  126,
  255,
  256,
  257,
  1000,
  4095,
  4096,
  8191,
  8192,
  8193,
  20_000,
  65_535,
  65_536,
  70_000,
  200_000,
];

interface Spec {
  text: boolean;
  /** The message: bytes, or the UTF-8 of the text. */
  bytes: Uint8Array;
  string?: string;
  /** Payload offsets where a new frame starts (sorted, inside the payload). */
  cuts: number[];
  /** A ping between every two fragments. */
  pings: boolean;
  /** Mask with an all-zero key (the payload then stands unmasked on the wire). */
  zeroKey: boolean;
  /** Sent compressed (permessage-deflate), RSV1 on the first frame. */
  compress: boolean;
}

function makeSpecs(
  conn: number,
  count: number,
  random: () => number,
  compress = false,
): Spec[] {
  const specs: Spec[] = [];
  for (let seq = 0; seq < count; seq++) {
    const text = random() < 0.2;
    // Half of them small enough to be cut from the slab.
    const size = random() < 0.5
      ? Math.floor(random() * 257)
      : SIZES[Math.floor(random() * SIZES.length)];
    let bytes: Uint8Array;
    let string: string | undefined;
    if (text) {
      string = textPayload(conn, seq, Math.max(8, Math.min(size, 30_000) >>> 1));
      bytes = utf8(string);
    } else {
      bytes = binaryPayload(conn, seq, size);
    }
    const cuts: number[] = [];
    if (random() < 0.3 && bytes.length > 1) {
      const n = 1 + Math.floor(random() * 5);
      for (let i = 0; i < n; i++) cuts.push(1 + Math.floor(random() * (bytes.length - 1)));
      cuts.sort((a, b) => a - b);
    }
    specs.push({
      text,
      bytes,
      string,
      cuts,
      pings: random() < 0.5,
      zeroKey: random() < 0.15,
      compress: compress && random() < 0.7,
    });
  }
  return specs;
}

/** The payload a compressed message carries (RFC 7692 §7.2.1: the 00 00 ff ff tail removed). */
function deflateMessage(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(
    deflateRawSync(bytes, { finishFlush: zlibConstants.Z_SYNC_FLUSH }),
  );
  return out.subarray(0, out.length - 4);
}

/** The client frames of one message (masked; fragments, pings in between). */
function clientFrames(spec: Spec, random: () => number): Uint8Array[] {
  const payload = spec.compress ? deflateMessage(spec.bytes) : spec.bytes;
  const bounds = [0, ...spec.cuts.filter((c) => c < payload.length), payload.length];
  const frames: Uint8Array[] = [];
  const mask = (): Uint8Array =>
    spec.zeroKey ? new Uint8Array(4) : Uint8Array.from({ length: 4 }, () => random() * 256);
  for (let i = 0; i + 1 < bounds.length; i++) {
    if (i > 0 && spec.pings) {
      frames.push(buildFrame({ opcode: Op.Ping, payload: pattern(i * 13 % 126, i), mask: mask() }));
    }
    frames.push(buildFrame({
      opcode: i === 0 ? (spec.text ? Op.Text : Op.Binary) : Op.Continuation,
      fin: i + 2 === bounds.length,
      rsv1: i === 0 && spec.compress,
      payload: payload.subarray(bounds[i], bounds[i + 1]),
      mask: mask(),
    }));
  }
  return frames;
}

/**
 * Cuts the wire into writes: some frames whole, several frames in one write,
 * headers, mask keys and payloads cut anywhere (small cuts near the start of
 * each frame, where the header is).
 */
function cutWire(frames: Uint8Array[], random: () => number): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  for (const frame of frames) {
    const cuts = new Set<number>();
    const r = random();
    if (r < 0.4) {
      // Whole.
    } else if (r < 0.75) {
      for (let i = 0; i < 3; i++) cuts.add(1 + Math.floor(random() * Math.min(14, frame.length)));
    } else {
      for (let i = 0; i < 4; i++) cuts.add(1 + Math.floor(random() * frame.length));
    }
    const sorted = [...cuts].filter((c) => c > 0 && c < frame.length).sort((a, b) => a - b);
    let at = 0;
    for (const cut of [...sorted, frame.length]) {
      pieces.push(frame.subarray(at, cut));
      at = cut;
    }
  }
  // Join neighbours now and then: many frames (and parts of frames) per read.
  const writes: Uint8Array[] = [];
  let group: Uint8Array[] = [];
  for (const piece of pieces) {
    group.push(piece);
    if (random() < 0.6) {
      writes.push(concat(...group));
      group = [];
    }
  }
  if (group.length > 0) writes.push(concat(...group));
  return writes;
}

/** Writes the pieces over a no-delay socket, pausing now and then so they arrive as separate reads. */
async function writeSlowly(client: RawClient, writes: Uint8Array[], random: () => number) {
  for (const piece of writes) {
    if (!client.write(piece)) await new Promise((resolve) => client.socket.once("drain", resolve));
    if (random() < 0.35) await delay(random() < 0.2 ? 3 : 1);
  }
}

/** Every byte of `buffer`'s backing store, searched for another connection's marker. */
function foreignMarker(data: Uint8Array, own: number, connections: number): number | null {
  const all = new Uint8Array(data.buffer);
  for (let other = 0; other < connections; other++) {
    if (other === own) continue;
    const tag = marker(other);
    outer: for (let i = 0; i + tag.length <= all.length; i++) {
      for (let j = 0; j < tag.length; j++) if (all[i + j] !== tag[j]) continue outer;
      return other;
    }
  }
  return null;
}

async function waitUntil(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`Timed out after ${ms} ms: ${what}`);
    await delay(5);
  }
}

// --- The server, with each way of taking messages --------------------------

type Face = "callback" | "arraybuffer-event" | "blob-event" | "readable";

/** What the server kept of one message, in the form the application got it. */
type Kept = string | Uint8Array | ArrayBuffer | Blob;

/** Bytes of a kept message, as the application sees them now. */
async function keptBytes(kept: Kept): Promise<Uint8Array | string> {
  if (typeof kept === "string") return kept;
  if (kept instanceof Blob) return new Uint8Array(await kept.arrayBuffer());
  if (kept instanceof ArrayBuffer) return new Uint8Array(kept);
  return kept;
}

/** A round of messages after the checked ones: more than a slab of small ones, and large ones. */
const EXTRA_SIZES = [...Array(30).fill(200), 9000, 70_000, 1, 256];

interface Run {
  connections: number;
  messages: number;
  seed: number;
  face: Face;
  /** Echo each binary message to its sender and send it on to every other connection. */
  relay: boolean;
  compress?: boolean;
}

async function runServer(run: Run): Promise<void> {
  const { connections, messages, seed, face, relay } = run;
  const kept = new Map<number, Kept[]>();
  const byWs = new Map<WebSocketConnection, number>();
  const open = new Set<WebSocketConnection>();
  const readers: Promise<void>[] = [];
  const errors: Error[] = [];
  const onMessage = (ws: WebSocketConnection, data: Message | ArrayBuffer | Blob) => {
    if (!byWs.has(ws)) {
      // The first message names the connection.
      assert.equal(typeof data, "string");
      const id = Number(/^conn:(\d+)$/.exec(data as string)![1]);
      byWs.set(ws, id);
      kept.set(id, []);
      return;
    }
    kept.get(byWs.get(ws)!)!.push(data);
    if (relay && data instanceof Uint8Array) {
      // The very view goes out (a header may go into its room), to the
      // sender and to every other connection, while it is also kept.
      for (const other of open) other.send(data);
    }
  };
  const server = await serve(
    {
      port: 0,
      hostname: HOST,
      maxMessageSize: 1 << 20,
      binaryType: face === "arraybuffer-event" ? "arraybuffer" : "blob",
      compression: run.compress ? true : undefined,
      onError: (error) => void errors.push(error),
    },
    face === "callback"
      ? {
        open: (ws) => void open.add(ws),
        message: onMessage,
        close: (ws) => void open.delete(ws),
        error: (_ws, error) => void errors.push(error),
      }
      : (ws: WebSocketConnection) => {
        open.add(ws);
        ws.addEventListener("close", () => open.delete(ws));
        ws.addEventListener("error", (event) => errors.push((event as ErrorEvent).error));
        if (face === "readable") {
          readers.push(
            (async () => {
              const reader = ws.readable.getReader();
              let n = 0;
              for (;;) {
                // A slow reader: messages wait in the stream, kept as they came.
                if (n++ % 7 === 0) await delay(2);
                const { value, done } = await reader.read();
                if (done) return;
                onMessage(ws, value);
              }
            })().catch((error) => void errors.push(error)),
          );
        } else {
          ws.addEventListener("message", (event) => onMessage(ws, (event as MessageEvent).data));
        }
      },
  );
  const clients: RawClient[] = [];
  try {
    const extensions = run.compress
      ? {
        "Sec-WebSocket-Extensions":
          "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
      }
      : undefined;
    for (let c = 0; c < connections; c++) {
      clients.push(await RawClient.open(server.addr.port, { headers: extensions }));
    }
    const specs = clients.map((_, c) =>
      makeSpecs(c, messages, rng(seed * 31 + c), run.compress ?? false)
    );
    // Every connection names itself first, then all send at once.
    for (const [c, client] of clients.entries()) {
      client.write(buildFrame({ opcode: Op.Text, payload: `conn:${c}` }));
    }
    await waitUntil(() => kept.size === connections, 5000, "every connection named");
    await within(
      Promise.all(clients.map((client, c) => {
        const random = rng(seed * 7919 + c);
        const frames = specs[c].flatMap((spec) => clientFrames(spec, random));
        return writeSlowly(client, cutWire(frames, random), random);
      })),
      30_000,
      "sending",
    );
    await waitUntil(
      () => [...kept.values()].every((list) => list.length === messages),
      20_000,
      "every message received",
    );
    // Whatever happens on the other connections afterwards (more traffic
    // reusing the same slabs, pools and scratch buffers) must not change what
    // was kept: one more round of small and large messages on each.
    for (const [c, client] of clients.entries()) {
      const random = rng(seed + 100 + c);
      const extra = EXTRA_SIZES.map((size, i) =>
        buildFrame({ opcode: Op.Binary, payload: pattern(size, 99 + i), mask: true })
      );
      await writeSlowly(client, cutWire(extra, random), random);
    }
    await waitUntil(
      () => [...kept.values()].every((list) => list.length === messages + EXTRA_SIZES.length),
      20_000,
      "the extra messages received",
    );
    if (relay) {
      // Every client gets its own binary messages back and everyone else's.
      const binaries = specs.flatMap((list, c) =>
        list.flatMap((spec, seq) => spec.text ? [] : [{ c, seq, bytes: spec.bytes }])
      );
      const expected = binaries.length + EXTRA_SIZES.length * connections;
      for (const client of clients) {
        let got = 0;
        while (got < expected) {
          const frame = await client.expectFrame(10_000);
          if (frame.opcode !== Op.Binary) continue;
          got++;
          const p = frame.payload;
          if (p.length < 10 || p[0] !== 0xa5) continue;
          const c = p[6], seq = (p[8] << 8) | p[9];
          const spec = specs[c]?.[seq];
          assert.ok(spec !== undefined && !spec.text, `a relayed message c${c} s${seq}`);
          assert.deepEqual(p, spec.bytes, `relayed message c${c} s${seq} arrived intact`);
        }
      }
    }
    // Now check everything that was kept, as the application sees it now.
    for (let c = 0; c < connections; c++) {
      const list = kept.get(c)!;
      for (let seq = 0; seq < messages; seq++) {
        const spec = specs[c][seq];
        const item = list[seq];
        const what = `${face}: connection ${c} message ${seq} (${spec.bytes.length} bytes, ` +
          `${spec.text ? "text" : "binary"}, ${spec.cuts.length + 1} frames` +
          `${spec.compress ? ", compressed" : ""})`;
        if (spec.text) {
          assert.equal(item, spec.string, what);
          continue;
        }
        if (face === "arraybuffer-event") {
          assert.ok(item instanceof ArrayBuffer, `${what}: an ArrayBuffer`);
          assert.equal(item.byteLength, spec.bytes.length, `${what}: exactly the message`);
        }
        if (face === "blob-event") assert.ok(item instanceof Blob, `${what}: a Blob`);
        if (face === "callback" || face === "readable") {
          assert.ok(item instanceof Uint8Array, `${what}: a Uint8Array`);
          const foreign = foreignMarker(item, c, connections);
          assert.equal(foreign, null, `${what}: its buffer holds connection ${foreign}'s bytes`);
        }
        assert.deepEqual(await keptBytes(item), spec.bytes, what);
      }
    }
    assert.deepEqual(errors, []);
  } finally {
    for (const client of clients) client.destroy();
    await within(server.shutdown(), 10_000, "server shutdown");
    await Promise.allSettled(readers);
  }
}

describe("Receive aliasing: a server keeps every message, over real sockets", () => {
  const seed = Date.now() % 100_000;

  test(`message callback (views, slab, in place, direct reads), relayed while kept [seed ${seed}]`, async () => {
    await runServer({ connections: 4, messages: 60, seed, face: "callback", relay: true });
  });

  test(`binaryType "arraybuffer" events: exact buffers, nothing else in them [seed ${seed}]`, async () => {
    await runServer({
      connections: 3,
      messages: 50,
      seed,
      face: "arraybuffer-event",
      relay: false,
    });
  });

  test(`binaryType "blob" events [seed ${seed}]`, async () => {
    await runServer({ connections: 2, messages: 40, seed, face: "blob-event", relay: false });
  });

  test(`readable stream read slowly, messages queued as views [seed ${seed}]`, async () => {
    await runServer({ connections: 3, messages: 50, seed, face: "readable", relay: false });
  });

  test(`permessage-deflate, compressed and fragmented, message callback [seed ${seed}]`, async () => {
    await runServer({
      connections: 3,
      messages: 40,
      seed,
      face: "callback",
      relay: false,
      compress: true,
    });
  });
});

// --- The client, against a hand-made server with controlled chunking --------

/**
 * A one-connection server on node:net that answers the handshake by hand and
 * then writes `writes` (unmasked frames cut anywhere), pausing between them.
 */
async function rawServer(
  writes: () => Uint8Array[],
): Promise<{ port: number; done: Promise<void>; close(): void }> {
  let finished!: () => void;
  const done = new Promise<void>((resolve) => (finished = resolve));
  const sockets: net.Socket[] = [];
  const server = net.createServer((socket) => {
    sockets.push(socket);
    socket.setNoDelay(true);
    let head = "";
    const onData = async (chunk: Uint8Array) => {
      head += decoder.decode(chunk);
      if (!head.includes("\r\n\r\n")) return;
      socket.off("data", onData);
      const key = /sec-websocket-key:\s*(\S+)/i.exec(head)![1];
      socket.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          `Sec-WebSocket-Accept: ${expectedAccept(key)}\r\n\r\n`,
      );
      // Answer nothing more; swallow the client's frames.
      socket.on("data", () => {});
      await delay(20);
      for (const piece of writes()) {
        if (socket.destroyed) break;
        if (!socket.write(piece)) await new Promise((resolve) => socket.once("drain", resolve));
        if (piece.length % 3 === 0) await delay(1);
      }
      finished();
    };
    socket.on("data", onData);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    done,
    close() {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/** Unmasked server frames of one message (fragments, pings in between). */
function serverFrames(spec: Spec): Uint8Array[] {
  const bounds = [0, ...spec.cuts, spec.bytes.length];
  const frames: Uint8Array[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    if (i > 0 && spec.pings) {
      frames.push(buildFrame({ opcode: Op.Ping, payload: pattern(i, i), mask: false }));
    }
    frames.push(buildFrame({
      opcode: i === 0 ? (spec.text ? Op.Text : Op.Binary) : Op.Continuation,
      fin: i + 2 === bounds.length,
      payload: spec.bytes.subarray(bounds[i], bounds[i + 1]),
      mask: false,
    }));
  }
  return frames;
}

describe("Receive aliasing: a client keeps every message", () => {
  const seed = Date.now() % 100_000 + 1;

  for (const face of ["readable", "arraybuffer-event"] as const) {
    test(`${face}: a server's frames cut anywhere, messages kept and checked at the end [seed ${seed}]`, async () => {
      const random = rng(seed);
      const specs = makeSpecs(7, 80, random);
      const peer = await rawServer(() => cutWire(specs.flatMap(serverFrames), random));
      const kept: Kept[] = [];
      const ws = await connect(`ws://${HOST}:${peer.port}/`, {
        binaryType: face === "arraybuffer-event" ? "arraybuffer" : "blob",
        maxMessageSize: 1 << 20,
      });
      try {
        if (face === "readable") {
          const reader = ws.readable.getReader();
          while (kept.length < specs.length) {
            if (kept.length % 5 === 0) await delay(2);
            const { value, done } = await within(reader.read(), 10_000, "a message");
            if (done) break;
            kept.push(value);
          }
        } else {
          ws.addEventListener("message", (event) => kept.push((event as MessageEvent).data));
          await waitUntil(() => kept.length >= specs.length, 20_000, "every message");
        }
        await within(peer.done, 10_000, "the peer wrote everything");
        for (const [i, spec] of specs.entries()) {
          const what = `message ${i} (${spec.bytes.length} bytes, ${spec.cuts.length + 1} frames)`;
          if (spec.text) {
            assert.equal(kept[i], spec.string, what);
            continue;
          }
          if (face === "arraybuffer-event") {
            assert.ok(kept[i] instanceof ArrayBuffer, what);
            assert.equal((kept[i] as ArrayBuffer).byteLength, spec.bytes.length, what);
          }
          assert.deepEqual(await keptBytes(kept[i]), spec.bytes, what);
        }
      } finally {
        ws.close();
        peer.close();
      }
    });
  }
});

// --- The protocol core, with any chunking ----------------------------------

class Keep implements ProtocolHandler {
  messages: (string | Uint8Array)[] = [];
  pings: Uint8Array[] = [];
  text(data: string): void {
    this.messages.push(data);
  }
  binary(data: Uint8Array): void {
    this.messages.push(data);
  }
  ping(payload: Uint8Array): void {
    this.pings.push(payload);
  }
}

/** fast-check: one message as the core's property runs generate it. */
const specArb = fc.record({
  text: fc.boolean(),
  size: fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 300 }), weight: 4 },
    { arbitrary: fc.constantFrom(4095, 4096, 8191, 8192, 8193, 65_535, 65_536, 70_000), weight: 1 },
    { arbitrary: fc.integer({ min: 0, max: 80_000 }), weight: 1 },
  ),
  cuts: fc.oneof(
    { arbitrary: fc.constant<number[]>([]), weight: 2 },
    {
      arbitrary: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 4 }),
      weight: 1,
    },
  ),
  pings: fc.boolean(),
  zeroKey: fc.boolean(),
  compress: fc.boolean(),
});

type SpecDraft = {
  text: boolean;
  size: number;
  cuts: readonly number[];
  pings: boolean;
  zeroKey: boolean;
  compress: boolean;
};

function toSpec(draft: SpecDraft, seq: number, compress: boolean): Spec {
  const string = draft.text ? textPayload(1, seq, Math.max(1, draft.size >>> 1)) : undefined;
  const bytes = string !== undefined ? utf8(string) : binaryPayload(1, seq, draft.size);
  const cuts = [...new Set(draft.cuts.map((f) => Math.floor(f * bytes.length)))]
    .filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b);
  return { ...draft, text: draft.text, bytes, string, cuts, compress: compress && draft.compress };
}

describe("Receive aliasing: the protocol core, any chunking, everything kept", () => {
  for (const compress of [false, true]) {
    test(
      `property: owned, lent and in-place reads, views toggled, echoed while kept${
        compress ? ", permessage-deflate" : ""
      }`,
      () => {
        fc.assert(
          fc.property(
            fc.array(specArb, { minLength: 1, maxLength: 80, size: "max" }),
            fc.array(
              fc.record({
                size: fc.oneof(
                  fc.integer({ min: 1, max: 16 }),
                  fc.integer({ min: 1, max: 90_000 }),
                ),
                how: fc.constantFrom("owned", "lent", "direct"),
                views: fc.oneof({ arbitrary: fc.constant(true), weight: 4 }, fc.boolean()),
                echo: fc.boolean(),
              }),
              { minLength: 1, maxLength: 40 },
            ),
            fc.integer({ min: 0, max: 2 ** 31 - 1 }),
            (drafts, reads, seed) => {
              const random = rng(seed);
              const specs = drafts.map((d, i) => toSpec(d, i, compress));
              const codec = compress
                ? new PerMessageDeflate({
                  serverNoContextTakeover: true,
                  clientNoContextTakeover: true,
                  serverMaxWindowBits: 15,
                  clientMaxWindowBits: 15,
                }, "server")
                : null;
              const keep = new Keep();
              const ws = new WebSocketProtocol({
                role: "server",
                maxMessageSize: 1 << 20,
                slabSmallMessages: true,
                codec,
              }, keep);
              const wire = concat(...specs.flatMap((spec) => clientFrames(spec, random)));
              // One reused read buffer, as a runtime that lends its chunks has.
              const lent = new Uint8Array(90_000);
              let at = 0;
              let r = 0;
              let seen = 0;
              while (at < wire.length && ws.state === 1) {
                const read = reads[r++ % reads.length];
                ws.deliverViews = read.views;
                const n = Math.min(read.size, wire.length - at);
                const target = read.how === "direct" ? ws.receiveTarget(1) : null;
                if (target !== null) {
                  const k = Math.min(n, target.length);
                  target.set(wire.subarray(at, at + k));
                  ws.receivedInPlace(k);
                  at += k;
                } else if (read.how === "lent") {
                  lent.set(wire.subarray(at, at + n));
                  ws.receive(lent.subarray(0, n));
                  lent.fill(0xee, 0, n); // the runtime reads the next bytes into it
                  at += n;
                } else {
                  ws.receive(wire.slice(at, at + n), true);
                  at += n;
                }
                // Echo what just arrived while keeping it (headers go into rooms).
                for (; seen < keep.messages.length; seen++) {
                  const m = keep.messages[seen];
                  if (read.echo && m instanceof Uint8Array) {
                    ws.sendBinary(m);
                  }
                }
                ws.takeOutput();
              }
              assert.equal(ws.error, null, String(ws.error));
              assert.equal(keep.messages.length, specs.length);
              for (const [i, spec] of specs.entries()) {
                assert.deepEqual(
                  keep.messages[i],
                  spec.text ? spec.string : spec.bytes,
                  `message ${i}`,
                );
              }
              codec?.close();
            },
          ),
          { numRuns: compress ? 60 : 150 },
        );
      },
    );
  }

  test("each delivery mode keeps its bytes across 200 more messages of every kind", () => {
    // One of each: slab view, in-place view, view with room, direct read,
    // fragmented (tail and parts), one-shot text; then a flood that reuses
    // the slab, the scratch buffers and the lent buffer.
    const keep = new Keep();
    const ws = new WebSocketProtocol(
      { role: "server", maxMessageSize: 1 << 20, slabSmallMessages: true },
      keep,
    );
    ws.deliverViews = true;
    const first = [
      binaryPayload(1, 0, 200), // slab
      binaryPayload(1, 1, 30_000), // in place (owned)
      binaryPayload(1, 2, 30_000), // room (lent)
      binaryPayload(1, 3, 100_000), // direct read
      binaryPayload(1, 4, 9_000), // fragmented
    ];
    const frame = (payload: Uint8Array, opcode: number = Op.Binary, fin = true) =>
      buildFrame({ opcode, payload, fin, mask: true });
    ws.receive(frame(first[0]));
    ws.receive(frame(first[1]), true);
    const lent = frame(first[2]);
    ws.receive(lent);
    lent.fill(0x11);
    const big = frame(first[3]);
    ws.receive(big.subarray(0, 1000));
    let at = 1000;
    while (at < big.length) {
      const target = ws.receiveTarget(1)!;
      assert.ok(target !== null, "the rest is read in place");
      const n = Math.min(7000, big.length - at);
      target.set(big.subarray(at, at + n));
      ws.receivedInPlace(n);
      at += n;
    }
    ws.receive(frame(first[4].subarray(0, 100), Op.Binary, false));
    ws.receive(frame(new Uint8Array(0), Op.Ping));
    ws.receive(frame(first[4].subarray(100, 5000), Op.Continuation, false));
    ws.receive(frame(first[4].subarray(5000), Op.Continuation));
    ws.receive(frame(utf8("héllo €"), Op.Text));
    assert.equal(keep.messages.length, 6);
    for (const m of keep.messages) if (m instanceof Uint8Array) ws.sendBinary(m);
    ws.takeOutput();
    for (let i = 0; i < 200; i++) {
      const payload = pattern([3, 256, 9000, 40_000][i % 4], i);
      const chunk = concat(frame(payload), frame(utf8(`t${i}€`), Op.Text));
      ws.receive(chunk, i % 2 === 0);
      if (i % 2 === 1) chunk.fill(0x22);
      const got = keep.messages.at(-2) as Uint8Array;
      ws.sendBinary(got);
      ws.takeOutput();
    }
    for (let i = 0; i < first.length; i++) assert.deepEqual(keep.messages[i], first[i], `#${i}`);
    assert.equal(keep.messages[5], "héllo €");
    for (let i = 0; i < 200; i++) {
      assert.deepEqual(keep.messages[6 + 2 * i], pattern([3, 256, 9000, 40_000][i % 4], i));
      assert.equal(keep.messages[7 + 2 * i], `t${i}€`);
    }
  });
});

describe("Receive aliasing: what a delivered view's buffer holds besides the message", () => {
  test("the room in front of a large message holds no other connection's bytes", async () => {
    // A large binary message whose first piece arrives without the rest is
    // assembled in a buffer with room for a server frame header in front
    // (frame_room.ts) and delivered as a view of it: the application can
    // reach the room through `.buffer`. Whatever the runtime's `allocate`
    // hands out (uninitialized memory on Bun), no earlier message of another
    // connection may show there.
    const SECRET = 0x5e;
    const SIZE = 70_000; // a 10-byte server header: allocate(SIZE + 10)
    const leaks: string[] = [];
    let victimSeen = 0;
    let checked = 0;
    const names = new Map<WebSocketConnection, string>();
    const server = await serve({ port: 0, hostname: HOST, maxMessageSize: 4 << 20 }, {
      message(ws, data) {
        if (typeof data === "string") return void names.set(ws, data);
        if (names.get(ws) === "victim") return void victimSeen++; // dropped at once
        checked++;
        const all = new Uint8Array(data.buffer);
        const outside = concat(
          all.subarray(0, data.byteOffset),
          all.subarray(data.byteOffset + data.byteLength),
        );
        const stale = outside.filter((b) => b === SECRET).length;
        if (stale > 0) leaks.push(`message ${checked}: ${stale} of ${outside.length} bytes`);
      },
    });
    const victim = await RawClient.open(server.addr.port);
    const other = await RawClient.open(server.addr.port);
    try {
      victim.write(buildFrame({ opcode: Op.Text, payload: "victim" }));
      other.write(buildFrame({ opcode: Op.Text, payload: "other" }));
      const gc = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun?.gc;
      for (let i = 0; i < 40; i++) {
        // The victim's large message goes in reads of SIZE + 10 bytes of
        // payload each: read buffers of the very size the other's message
        // is then allocated with, freed once copied.
        const pieces = 12;
        const secret = buildFrame({
          opcode: Op.Binary,
          payload: new Uint8Array(pieces * (SIZE + 10)).fill(SECRET),
          mask: new Uint8Array(4), // a zero key: the bytes stand as they are in every buffer
        });
        const head = secret.length - pieces * (SIZE + 10);
        await victim.writeAndFlush(secret.subarray(0, head));
        for (let k = 0; k < pieces; k++) {
          await delay(2);
          await victim.writeAndFlush(
            secret.subarray(head + k * (SIZE + 10), head + (k + 1) * (SIZE + 10)),
          );
        }
        await waitUntil(() => victimSeen === i + 1, 5000, "the victim's message");
        gc?.(true);
        const frame = buildFrame({ opcode: Op.Binary, payload: pattern(SIZE, i), mask: true });
        await other.writeAndFlush(frame.subarray(0, 20));
        await delay(5);
        await other.writeAndFlush(frame.subarray(20));
        await waitUntil(() => checked === i + 1, 5000, "the other's message");
      }
      assert.deepEqual(leaks, [], "bytes of the victim's freed messages in another's buffer");
    } finally {
      victim.destroy();
      other.destroy();
      await within(server.shutdown(), 10_000, "server shutdown");
    }
  });
});
