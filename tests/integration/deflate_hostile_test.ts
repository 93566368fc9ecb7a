/**
 * permessage-deflate (RFC 7692) against hostile and unusual peers: deflate
 * bombs (whole, fragmented, leaning on the previous messages' window),
 * corrupt and truncated DEFLATE streams, BFINAL in every position, context
 * takeover over long random conversations, negotiation corner cases checked
 * as properties, the threshold and pub/sub's shared compressed frames.
 *
 * Frames are built by hand (`_raw_client.ts`) and compressed data either by
 * hand (bit by bit) or with `node:zlib`, so the code under test does not
 * check itself.
 *
 * Runs under `deno test -A` and `bun test`.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { constants, deflateRawSync, inflateRawSync } from "node:zlib";
import fc from "fast-check";
import { connect, type Message, serve, type Server, type WebSocketConnection } from "../../mod.ts";
import {
  DecompressedTooBigError,
  DecompressionError,
  PerMessageDeflate,
} from "../../src/protocol/deflate_codec.ts";
import {
  type DeflateOptions,
  type NegotiatedDeflate,
  parseDeflateResponse,
  selectDeflateOffer,
} from "../../src/protocol/permessage_deflate.ts";
import {
  buildFrame,
  concat,
  Op,
  RawClient,
  type ServerFrame,
  upgradeRequest,
  utf8,
  within,
} from "./_raw_client.ts";
import { FakeServer } from "./deflate_peers/fake_server.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const TAIL = new Uint8Array([0x00, 0x00, 0xff, 0xff]);
const decoder = new TextDecoder();
const TAKEOVER: NegotiatedDeflate = {
  serverNoContextTakeover: false,
  clientNoContextTakeover: false,
  serverMaxWindowBits: 15,
  clientMaxWindowBits: 15,
};

// ---------------------------------------------------------------------------
// DEFLATE by hand and with node:zlib.

/** Writes bits least significant first, Huffman codes most significant first (RFC 1951 §3.1.1). */
class BitWriter {
  readonly bytes: number[] = [];
  #acc = 0;
  #n = 0;

  bit(b: number): void {
    this.#acc |= b << this.#n;
    if (++this.#n === 8) {
      this.bytes.push(this.#acc);
      this.#acc = 0;
      this.#n = 0;
    }
  }

  bits(value: number, count: number): void {
    for (let i = 0; i < count; i++) this.bit((value >> i) & 1);
  }

  code(code: number, length: number): void {
    for (let i = length - 1; i >= 0; i--) this.bit((code >> i) & 1);
  }

  get aligned(): boolean {
    return this.#n === 0;
  }

  finish(): Uint8Array {
    if (this.#n > 0) this.bytes.push(this.#acc);
    this.#acc = 0;
    this.#n = 0;
    return Uint8Array.from(this.bytes);
  }
}

/**
 * A deflate bomb at DEFLATE's best ratio (~1032:1): one dynamic block where
 * "length 258, distance 1" costs two bits. Inflates to `1 + 258 * matches`
 * zero bytes. (The same construction as deflate_test.ts.)
 */
function deflateBomb(matches: number): Uint8Array {
  const w = new BitWriter();
  w.bits(0, 1);
  w.bits(2, 2);
  w.bits(286 - 257, 5);
  w.bits(0, 5);
  w.bits(18 - 4, 4);
  const order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1];
  const lengths: Record<number, number> = { 18: 1, 1: 2, 2: 2 };
  for (const symbol of order) w.bits(lengths[symbol] ?? 0, 3);
  w.code(0b11, 2);
  w.code(0b0, 1);
  w.bits(127, 7);
  w.code(0b0, 1);
  w.bits(106, 7);
  w.code(0b11, 2);
  w.code(0b0, 1);
  w.bits(17, 7);
  w.code(0b10, 2);
  w.code(0b10, 2);
  w.code(0b10, 2);
  let zeroBits = 2 * matches;
  while (zeroBits > 0 && !w.aligned) {
    w.bit(0);
    zeroBits--;
  }
  const head = w.finish();
  const zeroBytes = Math.floor(zeroBits / 8);
  const end = new BitWriter();
  for (let i = 0; i < zeroBits % 8; i++) end.bit(0);
  end.code(0b11, 2);
  const tail = end.finish();
  const out = new Uint8Array(head.length + zeroBytes + tail.length);
  out.set(head);
  out.set(tail, head.length + zeroBytes);
  return out;
}

/**
 * One fixed-Huffman block (BFINAL = 0) holding `matches` (each `[length,
 * distance]`), then the header bits of the empty stored block the message
 * tail completes: a valid RFC 7692 payload that only decodes with at least
 * `distance` bytes of history.
 */
function fixedMatches(matches: readonly (readonly [number, number])[]): Uint8Array {
  const w = new BitWriter();
  w.bits(0, 1); // BFINAL 0
  w.bits(1, 2); // BTYPE 01, fixed codes
  // Length and distance codes (RFC 1951 §3.2.5).
  // deno-fmt-ignore
  const lengthBase = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
  ];
  // deno-fmt-ignore
  const lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5,
    5, 5, 0];
  // deno-fmt-ignore
  const distBase = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049,
    3073, 4097, 6145, 8193, 12289, 16385, 24577,
  ];
  // deno-fmt-ignore
  const distExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11,
    11, 12, 12, 13, 13];
  for (const [length, distance] of matches) {
    let li = lengthBase.length - 1;
    while (lengthBase[li] > length) li--;
    const symbol = 257 + li;
    if (symbol <= 279) w.code(symbol - 256, 7);
    else w.code(0b11000000 + (symbol - 280), 8);
    w.bits(length - lengthBase[li], lengthExtra[li]);
    let di = distBase.length - 1;
    while (distBase[di] > distance) di--;
    w.code(di, 5);
    w.bits(distance - distBase[di], distExtra[di]);
  }
  w.code(0, 7); // end of block (256)
  w.bits(0, 3); // BFINAL 0, BTYPE 00: the stored block that 00 00 FF FF completes
  return w.finish();
}

function fixedMatch(length: number, distance: number): Uint8Array {
  return fixedMatches([[length, distance]]);
}

/** A stored block (BTYPE 00) holding `data`, final or not, byte-aligned. */
function storedBlock(data: Uint8Array, final: boolean): Uint8Array {
  const n = data.length;
  return concat(
    new Uint8Array([final ? 1 : 0, n & 0xff, n >>> 8, ~n & 0xff, (~n >>> 8) & 0xff]),
    data,
  );
}

/** Compresses one message on its own, as a peer would: sync flush, tail removed. */
function deflateAlone(data: Uint8Array, windowBits = 15): Uint8Array {
  const out = deflateRawSync(data, { windowBits, finishFlush: constants.Z_SYNC_FLUSH });
  assert.deepEqual(new Uint8Array(out.subarray(out.length - 4)), TAIL);
  return new Uint8Array(out.subarray(0, out.length - 4));
}

/** Inflates one server message on its own with an independent decoder. */
function inflateAlone(payload: Uint8Array, windowBits = 15): Uint8Array {
  return new Uint8Array(inflateRawSync(concat(payload, TAIL), {
    windowBits,
    chunkSize: 64,
    finishFlush: constants.Z_SYNC_FLUSH,
  }));
}

function randomLetters(n: number): Uint8Array {
  const bytes = crypto.getRandomValues(new Uint8Array(n));
  for (let i = 0; i < n; i++) bytes[i] = 97 + (bytes[i] % 26);
  return bytes;
}

// ---------------------------------------------------------------------------
// A Sluice echo server and raw clients.

interface Echo {
  server: Server;
  port: number;
  closes: { code: number; reason: string }[];
  errors: string[];
}

async function withEcho(
  options: { compression: boolean | DeflateOptions; maxMessageSize?: number },
  body: (echo: Echo) => Promise<void>,
): Promise<void> {
  const closes: { code: number; reason: string }[] = [];
  const errors: string[] = [];
  const server = await serve({
    hostname: "127.0.0.1",
    port: 0,
    maxMessageSize: options.maxMessageSize ?? 16 * MiB,
    compression: options.compression,
  }, {
    message(ws, data: Message) {
      ws.send(data);
    },
    error(_ws, error) {
      errors.push(error.message);
    },
    close(_ws, code, reason) {
      closes.push({ code, reason });
    },
  });
  try {
    await body({ server, port: server.addr.port, closes, errors });
  } finally {
    await within(server.shutdown(), 10_000, "server shutdown");
  }
}

async function openRaw(port: number, offer: string | string[] | null) {
  const client = await RawClient.connect(port);
  const headers: Record<string, string> = {};
  let request = upgradeRequest(`127.0.0.1:${port}`, { headers });
  if (offer !== null) {
    const lines = (typeof offer === "string" ? [offer] : offer)
      .map((value) => `Sec-WebSocket-Extensions: ${value}\r\n`).join("");
    request = request.replace(/\r\n\r\n$/, `\r\n${lines}\r\n`);
  }
  client.write(request);
  const response = await client.readResponse();
  assert.equal(response.status, 101, response.head + response.body);
  return { client, extensions: response.headers.get("sec-websocket-extensions") ?? "" };
}

function compressedFrame(payload: Uint8Array, opcode: number = Op.Binary): Uint8Array {
  return buildFrame({ opcode, payload, rsv1: true });
}

async function expectData(client: RawClient, ms = 5000): Promise<ServerFrame> {
  const frame = await client.expectFrame(ms);
  assert.ok(
    frame.opcode === Op.Text || frame.opcode === Op.Binary,
    `expected a data frame, got opcode ${frame.opcode}`,
  );
  return frame;
}

/** The payload a server data frame carries, inflated alone if RSV1 (server_no_context_takeover). */
function plain(frame: ServerFrame, windowBits = 15): Uint8Array {
  return frame.rsv1 ? inflateAlone(frame.payload, windowBits) : frame.payload;
}

// The server compresses each message alone, so its replies inflate on their own.
const SERVER_ALONE = { serverNoContextTakeover: true, threshold: 0 } as const;

// ---------------------------------------------------------------------------

describe("deflate bombs", () => {
  test("codec: a ~1 GiB bomb stops at the limit, fast and without allocating the output", () => {
    const bomb = deflateBomb(Math.ceil(2 ** 30 / 258));
    assert.ok(bomb.length < 1.1 * MiB);
    const codec = new PerMessageDeflate(TAKEOVER, "server");
    const before = process.memoryUsage().rss;
    const started = performance.now();
    assert.throws(() => codec.decompress(bomb, MiB), DecompressedTooBigError);
    const elapsed = performance.now() - started;
    const grown = process.memoryUsage().rss - before;
    // Inflating all of it would take seconds and a GiB.
    assert.ok(elapsed < 1000, `took ${elapsed.toFixed(0)} ms`);
    assert.ok(grown < 64 * MiB, `RSS grew by ${(grown / MiB).toFixed(1)} MiB`);
    // The takeover window is gone: the codec refuses to go on.
    assert.throws(() => codec.decompress(deflateAlone(utf8("x")), MiB), DecompressionError);
    codec.close();
  });

  test("server: 100 MiB of zeros in ~100 KiB, split over 400 fragments, closes with 1009", {
    timeout: 30_000,
  }, async () => {
    const bomb = deflateBomb(Math.ceil(100 * MiB / 258));
    assert.ok(bomb.length < 110 * KiB, `${bomb.length}`);
    const pieces: Uint8Array[] = [];
    const step = Math.ceil(bomb.length / 400);
    for (let at = 0, i = 0; at < bomb.length; at += step, i++) {
      pieces.push(buildFrame({
        opcode: i === 0 ? Op.Binary : Op.Continuation,
        rsv1: i === 0,
        fin: at + step >= bomb.length,
        payload: bomb.subarray(at, at + step),
      }));
    }
    await withEcho({ compression: true, maxMessageSize: MiB }, async (echo) => {
      const { client } = await openRaw(echo.port, "permessage-deflate");
      try {
        const before = process.memoryUsage().rss;
        let peak = before;
        const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 2);
        const started = performance.now();
        try {
          client.write(concat(...pieces));
          const close = await client.expectClose(10_000);
          assert.equal(close.code, 1009, close.reason);
          assert.equal(close.before.length, 0);
        } finally {
          clearInterval(sampler);
        }
        const elapsed = performance.now() - started;
        assert.ok(elapsed < 3000, `took ${elapsed.toFixed(0)} ms`);
        assert.ok(
          peak - before < 64 * MiB,
          `RSS grew by ${((peak - before) / MiB).toFixed(1)} MiB`,
        );
        assert.ok(await client.waitForEnd(5000), "the server kept the connection open");
      } finally {
        client.destroy();
      }
    });
  });

  test("server: a tiny message that expands the previous message's window past the limit (1009)", async () => {
    await withEcho({ compression: SERVER_ALONE, maxMessageSize: 64 * KiB }, async (echo) => {
      const { client } = await openRaw(echo.port, "permessage-deflate");
      try {
        // Message 1: 32 KiB of letters, stored, under the limit (echoed).
        const history = randomLetters(32 * KiB);
        client.write(compressedFrame(concat(storedBlock(history, false), new Uint8Array([0]))));
        assert.deepEqual(plain(await expectData(client)), history);
        // Message 2: one 258-byte copy from 32 KiB back, into message 1.
        const w = fixedMatch(258, 32 * KiB);
        client.write(compressedFrame(w));
        assert.deepEqual(plain(await expectData(client)), history.subarray(0, 258));
        // Message 3: 300 copies of 258 bytes from 30 KiB back: 77 KiB > 64 KiB.
        const bomb = fixedMatches(Array.from({ length: 300 }, () => [258, 30 * KiB] as const));
        assert.ok(bomb.length < 2 * KiB);
        client.write(compressedFrame(bomb));
        const close = await client.expectClose();
        assert.equal(close.code, 1009, close.reason);
      } finally {
        client.destroy();
      }
    });
  });
});

describe("corrupt, truncated and unusual DEFLATE streams", () => {
  for (
    const [what, payload] of [
      ["BTYPE 11 (reserved)", new Uint8Array([0x06, 0x00])],
      ["stored block with LEN != ~NLEN", new Uint8Array([0x00, 0x05, 0x00, 0x00, 0x00, 1, 2, 3])],
      ["distance beyond everything seen", fixedMatch(10, 100)],
    ] as const
  ) {
    test(`${what}: 1007, and a valid message sent right after is never delivered`, async () => {
      await withEcho({ compression: SERVER_ALONE }, async (echo) => {
        const { client } = await openRaw(echo.port, "permessage-deflate");
        try {
          client.write(concat(
            compressedFrame(payload),
            compressedFrame(deflateAlone(utf8("after")), Op.Text),
          ));
          const close = await client.expectClose();
          assert.equal(close.code, 1007, close.reason);
          assert.equal(close.before.length, 0, "a frame was echoed before the close");
        } finally {
          client.destroy();
        }
      });
    });
  }

  test("BFINAL then trailing garbage, zero bytes, 00 alone: pinned behaviour", async () => {
    await withEcho({ compression: SERVER_ALONE }, async (echo) => {
      const { client } = await openRaw(echo.port, "permessage-deflate");
      try {
        const cases: [Uint8Array, string][] = [
          // §7.2.3.4's final block then bytes after the end of the stream (ignored, as ws does).
          [new Uint8Array([0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xde, 0xad]), "Hello"],
          [new Uint8Array(0), ""],
          [new Uint8Array([0x00]), ""],
          // And the window still works after all of the above.
          [fixedMatch(5, 5), "Hello"],
        ];
        for (const [payload, expected] of cases) {
          client.write(compressedFrame(payload, Op.Text));
          const frame = await expectData(client);
          assert.equal(decoder.decode(plain(frame)), expected, `payload ${payload.join(",")}`);
        }
      } finally {
        client.destroy();
      }
    });
  });

  test("a payload ending inside a stored block (00 00 FF FF + tail) is invalid data (1007)", async () => {
    // 00 00 FF FF 00 00 FF FF is a stored block of LEN 0xFF00 cut after 3
    // bytes: not a complete DEFLATE stream. Accepting it delivers 00 FF FF,
    // bytes the peer never compressed, and leaves the inflater inside the
    // stored block, so the next message's raw bytes are delivered as its text.
    await withEcho({ compression: SERVER_ALONE }, async (echo) => {
      const { client } = await openRaw(echo.port, "permessage-deflate");
      try {
        client.write(compressedFrame(new Uint8Array([0x00, 0x00, 0xff, 0xff])));
        client.write(compressedFrame(utf8("not deflate at all")));
        const first = await client.expectFrame();
        const delivered: string[] = [];
        let frame: ServerFrame | null = first;
        while (frame !== null && frame.opcode !== Op.Close) {
          delivered.push(JSON.stringify(decoder.decode(plain(frame))));
          frame = await client.readFrame(500).catch(() => null);
        }
        assert.deepEqual(delivered, [], "messages were delivered from a broken stream");
        assert.equal(first.opcode, Op.Close);
        assert.equal((first.payload[0] << 8) | first.payload[1], 1007);
      } finally {
        client.destroy();
      }
    });
  });

  test("a peer that leaves the 00 00 FF FF tail on: that message reads, the stream then fails (1007), nothing garbled", async () => {
    await withEcho({ compression: SERVER_ALONE }, async (echo) => {
      const { client } = await openRaw(echo.port, "permessage-deflate");
      try {
        client.write(compressedFrame(concat(deflateAlone(utf8("Hello")), TAIL), Op.Text));
        assert.equal(decoder.decode(plain(await expectData(client))), "Hello");
        client.write(compressedFrame(concat(deflateAlone(utf8("World")), TAIL), Op.Text));
        const close = await client.expectClose();
        assert.equal(close.code, 1007, close.reason);
        assert.equal(close.before.length, 0);
      } finally {
        client.destroy();
      }
    });
  });
});

describe("context takeover", () => {
  test("codec: after a BFINAL message the window is primed with that message's output", () => {
    // A peer may end messages with BFINAL blocks (§7.2.3.4) and keep its LZ77
    // window (§7.2.2). The inflater must then restart, primed with the last
    // window of output: what Sluice keeps is the last message's output (a
    // copy of every message's window would cost 32 KiB per connection), so a
    // reference into it works and one past it is refused as invalid data.
    const codec = new PerMessageDeflate(TAKEOVER, "server");
    const first = randomLetters(1000);
    assert.deepEqual(codec.decompress(storedBlock(first, true), MiB), first);
    // 258 bytes from 1000 back: the start of the BFINAL message.
    assert.deepEqual(codec.decompress(fixedMatch(258, 1000), MiB), first.subarray(0, 258));
    assert.equal(decoder.decode(codec.decompress(storedBlock(utf8("hi"), true), MiB)), "hi");
    // Past "hi", into the messages before it: not in the primed window.
    assert.throws(
      () => codec.decompress(fixedMatch(258, 1002), MiB),
      (error: unknown) => error instanceof DecompressionError,
    );
    codec.close();
  });

  test(
    "random conversations (fast-check): every message survives the round trip, both directions keep context",
    {
      timeout: 60_000,
    },
    async () => {
      await withEcho({ compression: { threshold: 0 } }, async (echo) => {
        await fc.assert(
          fc.asyncProperty(
            fc.array(
              fc.oneof(
                fc.string({ unit: "grapheme", maxLength: 300 }),
                fc.string({ unit: "binary", minLength: 500, maxLength: 5000 }),
                fc.uint8Array({ maxLength: 3000 }).map((b) => new Uint8Array(b)),
              ),
              { minLength: 1, maxLength: 40 },
            ),
            async (messages) => {
              const ws = await connect(`ws://127.0.0.1:${echo.port}`, {
                compression: { threshold: 0 },
              });
              const reader = ws.readable.getReader();
              try {
                assert.match(ws.extensions, /^permessage-deflate/);
                for (const message of messages) ws.send(message);
                for (const message of messages) {
                  const got = (await within(reader.read(), 10_000, "an echo")).value;
                  if (typeof message === "string") assert.equal(got, message);
                  else assert.deepEqual(new Uint8Array(got as Uint8Array), message);
                }
              } finally {
                reader.releaseLock();
                await closeQuietly(ws);
              }
            },
          ),
          { numRuns: 25 },
        );
      });
    },
  );

  test("incompressible messages (bigger once compressed) round-trip and go out with RSV1", async () => {
    await withEcho({ compression: SERVER_ALONE }, async (echo) => {
      const { client } = await openRaw(echo.port, "permessage-deflate");
      try {
        for (const size of [1, 100, 70 * KiB, 300 * KiB]) {
          const data = crypto.getRandomValues(new Uint8Array(Math.min(size, 65536)));
          const message = size > 65536
            ? concat(
              ...Array.from({ length: Math.ceil(size / 65536) }, () =>
                crypto.getRandomValues(new Uint8Array(65536))),
            )
            : data;
          const payload = deflateAlone(message);
          assert.ok(payload.length > message.length, "random bytes grow under DEFLATE");
          client.write(compressedFrame(payload));
          const frame = await expectData(client);
          assert.ok(frame.rsv1);
          assert.deepEqual(plain(frame), message);
        }
      } finally {
        client.destroy();
      }
    });
  });
});

async function closeQuietly(ws: WebSocketConnection): Promise<void> {
  try {
    ws.close();
    await within(ws.closed, 5000, "closing");
  } catch {
    ws.terminate();
  }
}

// ---------------------------------------------------------------------------

const PARAM_NAMES = [
  "server_no_context_takeover",
  "client_no_context_takeover",
  "server_max_window_bits",
  "client_max_window_bits",
] as const;

/** A random offer: each parameter present or not, window bits 8..15 (client's possibly bare). */
const offerArb = fc.record({
  server_no_context_takeover: fc.boolean(),
  client_no_context_takeover: fc.boolean(),
  server_max_window_bits: fc.option(fc.integer({ min: 8, max: 15 }), { nil: undefined }),
  client_max_window_bits: fc.option(fc.oneof(fc.constant(true), fc.integer({ min: 8, max: 15 })), {
    nil: undefined,
  }),
});

const optionsArb = fc.record({
  serverNoContextTakeover: fc.boolean(),
  clientNoContextTakeover: fc.boolean(),
  serverMaxWindowBits: fc.integer({ min: 8, max: 15 }),
  clientMaxWindowBits: fc.integer({ min: 8, max: 15 }),
});

type Offer = {
  server_no_context_takeover: boolean;
  client_no_context_takeover: boolean;
  server_max_window_bits: number | undefined;
  client_max_window_bits: number | true | undefined;
};

function offerText(offer: Offer): string {
  const parts = ["permessage-deflate"];
  if (offer.server_no_context_takeover) parts.push("server_no_context_takeover");
  if (offer.client_no_context_takeover) parts.push("client_no_context_takeover");
  if (offer.server_max_window_bits !== undefined) {
    parts.push(`server_max_window_bits=${offer.server_max_window_bits}`);
  }
  if (offer.client_max_window_bits === true) parts.push("client_max_window_bits");
  else if (offer.client_max_window_bits !== undefined) {
    parts.push(`client_max_window_bits=${offer.client_max_window_bits}`);
  }
  return parts.join("; ");
}

function responseParams(response: string): Map<string, string | null> {
  const [name, ...params] = response.split(";").map((s) => s.trim());
  assert.equal(name, "permessage-deflate");
  const out = new Map<string, string | null>();
  for (const param of params) {
    const eq = param.indexOf("=");
    const key = eq === -1 ? param : param.slice(0, eq);
    assert.ok(!out.has(key), `duplicate ${key} in ${response}`);
    out.set(key, eq === -1 ? null : param.slice(eq + 1));
  }
  return out;
}

describe("negotiation", () => {
  test("property: the response only holds what RFC 7692 §7.1 lets the server send", () => {
    fc.assert(
      fc.property(offerArb, optionsArb, (offer, options) => {
        const header = offerText(offer);
        const selected = selectDeflateOffer(header, options);
        if (offer.client_max_window_bits === undefined && options.clientMaxWindowBits < 15) {
          assert.equal(selected, null, "cannot limit a client that did not offer the parameter");
          return;
        }
        assert.ok(selected !== null, `declined ${header}`);
        const params = responseParams(selected.response);
        for (const key of params.keys()) assert.ok(PARAM_NAMES.includes(key as never), key);
        // §7.1.1.1: offered server_no_context_takeover must be accepted.
        if (offer.server_no_context_takeover) assert.ok(params.has("server_no_context_takeover"));
        // §7.1.2.1: offered server_max_window_bits must be echoed, same or smaller.
        if (offer.server_max_window_bits !== undefined) {
          const v = Number(params.get("server_max_window_bits"));
          assert.ok(v >= 8 && v <= offer.server_max_window_bits, selected.response);
        }
        // §7.1.2.2: client_max_window_bits only if offered, with a value no larger.
        if (params.has("client_max_window_bits")) {
          assert.notEqual(offer.client_max_window_bits, undefined, selected.response);
          const v = Number(params.get("client_max_window_bits"));
          const cap = offer.client_max_window_bits === true ? 15 : offer.client_max_window_bits!;
          assert.ok(v >= 8 && v <= cap, selected.response);
        }
        for (const flag of ["server_no_context_takeover", "client_no_context_takeover"]) {
          if (params.has(flag)) assert.equal(params.get(flag), null);
        }
        // The agreed parameters are what the response says.
        const p = selected.params;
        assert.equal(p.serverNoContextTakeover, params.has("server_no_context_takeover"));
        assert.equal(p.clientNoContextTakeover, params.has("client_no_context_takeover"));
        assert.equal(p.serverMaxWindowBits, Number(params.get("server_max_window_bits") ?? 15));
        assert.ok(p.clientMaxWindowBits <= Number(params.get("client_max_window_bits") ?? 15));
      }),
      { numRuns: 2000 },
    );
  });

  test("property: a Sluice client reads every Sluice server response as the server agreed", () => {
    fc.assert(
      fc.property(optionsArb, optionsArb, (client, server) => {
        const offer = `permessage-deflate; ${
          [
            client.serverNoContextTakeover && "server_no_context_takeover",
            client.clientNoContextTakeover && "client_no_context_takeover",
            client.serverMaxWindowBits < 15 &&
            `server_max_window_bits=${client.serverMaxWindowBits}`,
            client.clientMaxWindowBits < 15
              ? `client_max_window_bits=${client.clientMaxWindowBits}`
              : "client_max_window_bits",
          ].filter(Boolean).join("; ")
        }`;
        const selected = selectDeflateOffer(offer, server);
        if (selected === null) return;
        const agreed = parseDeflateResponse(selected.response, client);
        // What each side compresses with must be what the other inflates with, or smaller.
        assert.ok(selected.params.serverMaxWindowBits <= agreed.serverMaxWindowBits);
        assert.ok(agreed.clientMaxWindowBits <= selected.params.clientMaxWindowBits);
        assert.ok(!selected.params.clientNoContextTakeover || agreed.clientNoContextTakeover);
        assert.ok(!agreed.serverNoContextTakeover || selected.params.serverNoContextTakeover);
      }),
      { numRuns: 2000 },
    );
  });

  for (
    const offer of [
      "permessage-deflate; server_max_window_bits=7",
      "permessage-deflate; server_max_window_bits=16",
      "permessage-deflate; server_max_window_bits=010",
      "permessage-deflate; server_max_window_bits",
      "permessage-deflate; client_max_window_bits=0",
      'permessage-deflate; client_max_window_bits="16"',
      "permessage-deflate; server_no_context_takeover=1",
      "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
      "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
      "permessage-deflate; x_unknown",
      "permessage-deflate; Server_No_Context_Takeover",
    ]
  ) {
    test(`declines ${JSON.stringify(offer)}, accepts the next offer in another header line`, async () => {
      assert.equal(selectDeflateOffer(offer), null);
      await withEcho({ compression: true }, async (echo) => {
        const { client, extensions } = await openRaw(echo.port, [
          offer,
          "permessage-deflate; server_max_window_bits=11",
        ]);
        try {
          assert.equal(extensions, "permessage-deflate; server_max_window_bits=11");
        } finally {
          client.destroy();
        }
      });
    });
  }

  test('a quoted value ("10") is accepted and echoed as a token', () => {
    assert.equal(
      selectDeflateOffer('permessage-deflate; server_max_window_bits="10"')?.response,
      "permessage-deflate; server_max_window_bits=10",
    );
    // A comma inside quotes does not split the list, but the value must be a token (§9.1).
    assert.throws(() => selectDeflateOffer('x; a="b,c", permessage-deflate'), SyntaxError);
    assert.equal(
      selectDeflateOffer('x; a="b" , permessage-deflate; client_max_window_bits="9"', {
        clientMaxWindowBits: 10,
      })?.response,
      "permessage-deflate; client_max_window_bits=9",
    );
  });

  test("server_max_window_bits=8: the server's output reads with a 256-byte window", async () => {
    await withEcho(
      { compression: { threshold: 0, serverNoContextTakeover: true } },
      async (echo) => {
        const { client, extensions } = await openRaw(
          echo.port,
          "permessage-deflate; server_max_window_bits=8",
        );
        try {
          assert.match(extensions, /server_max_window_bits=8/);
          // Repeats at distances 300 and 200: only the second may be used.
          const unit = randomLetters(200);
          const message = concat(unit, unit, randomLetters(100), unit, unit, unit);
          client.write(compressedFrame(deflateAlone(message)));
          const frame = await expectData(client);
          assert.deepEqual(inflateAlone(frame.payload, 8), message);
        } finally {
          client.destroy();
        }
      },
    );
  });

  for (
    const [why, answer, compression] of [
      ["an extension the client did not offer", "x-webkit-deflate-frame", true],
      ["permessage-deflate to a client that offered nothing", "permessage-deflate", false],
      ["two permessage-deflate entries", "permessage-deflate, permessage-deflate", true],
      ["a bare client_max_window_bits", "permessage-deflate; client_max_window_bits", true],
      [
        "a larger server window than offered",
        "permessage-deflate; server_max_window_bits=12",
        { serverMaxWindowBits: 10 },
      ],
    ] as const
  ) {
    test(`the client fails the connection on ${why}`, async () => {
      const fake = await FakeServer.start(() => ({ extensions: answer }));
      try {
        await assert.rejects(
          within(connect(fake.url, { compression }), 5000, "connect"),
          (error: Error) => {
            assert.doesNotMatch(error.message, /Timed out/);
            return true;
          },
        );
      } finally {
        await fake.close();
      }
    });
  }
});

describe("threshold and pub/sub", () => {
  test("below the threshold RSV1 is clear and the bytes are as sent; at it, compressed", async () => {
    await withEcho(
      { compression: { threshold: 100, serverNoContextTakeover: true } },
      async (echo) => {
        const { client } = await openRaw(echo.port, "permessage-deflate");
        try {
          for (
            const [size, compressed] of [[0, false], [99, false], [100, true], [
              5000,
              true,
            ]] as const
          ) {
            const message = new Uint8Array(size).fill(0x41);
            client.write(buildFrame({ opcode: Op.Binary, payload: message }));
            const frame = await expectData(client);
            assert.equal(frame.rsv1, compressed, `size ${size}`);
            assert.deepEqual(plain(frame), message);
          }
        } finally {
          client.destroy();
        }
      },
    );
  });

  test("publish: one compression per window size, each subscriber reads its own window", async () => {
    const server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      compression: { serverNoContextTakeover: true, threshold: 0 },
    }, {
      open(ws) {
        ws.subscribe("t");
      },
    });
    const clients: RawClient[] = [];
    try {
      const offers = [
        "permessage-deflate; server_max_window_bits=9",
        "permessage-deflate; server_max_window_bits=9",
        "permessage-deflate; server_max_window_bits=12",
        "permessage-deflate",
        null,
      ];
      for (const offer of offers) clients.push((await openRaw(server.addr.port, offer)).client);
      const deadline = Date.now() + 5000;
      while (server.subscriberCount("t") < offers.length && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.equal(server.subscriberCount("t"), offers.length);
      const unit = randomLetters(300);
      const message = concat(unit, randomLetters(1000), unit, unit);
      const before = server.stats().encodings;
      assert.equal(server.publish("t", message), offers.length);
      // One plain frame and three compressions (windows 9, 12, 15).
      assert.equal(server.stats().encodings - before, 4);
      const frames = await Promise.all(clients.map((c) => expectData(c)));
      assert.deepEqual(frames[0].payload, frames[1].payload, "same key, same bytes");
      const bits = [9, 9, 12, 15];
      for (let i = 0; i < 4; i++) {
        assert.ok(frames[i].rsv1);
        assert.deepEqual(inflateAlone(frames[i].payload, bits[i]), message, `subscriber ${i}`);
      }
      assert.ok(!frames[4].rsv1);
      assert.deepEqual(frames[4].payload, message);
    } finally {
      for (const client of clients) client.destroy();
      await within(server.shutdown(), 10_000, "server shutdown");
    }
  });
});
