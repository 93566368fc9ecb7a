import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { constants, deflateRawSync, inflateRawSync } from "node:zlib";
import {
  DecompressedTooBigError,
  DecompressionError,
  PerMessageDeflate,
} from "../../src/protocol/deflate_codec.ts";
import type { NegotiatedDeflate } from "../../src/protocol/permessage_deflate.ts";
import { WebSocketError } from "../../src/protocol/errors.ts";
import { bytes, concat, hex, pattern, utf8 } from "./_helpers.ts";

const TAKEOVER: NegotiatedDeflate = {
  serverNoContextTakeover: false,
  clientNoContextTakeover: false,
  serverMaxWindowBits: 15,
  clientMaxWindowBits: 15,
};
const NO_TAKEOVER: NegotiatedDeflate = {
  ...TAKEOVER,
  serverNoContextTakeover: true,
  clientNoContextTakeover: true,
};
const TAIL = bytes(0x00, 0x00, 0xff, 0xff);
const MiB = 1024 * 1024;
const decoder = new TextDecoder();

function pair(params: NegotiatedDeflate): { server: PerMessageDeflate; client: PerMessageDeflate } {
  return {
    server: new PerMessageDeflate(params, "server"),
    client: new PerMessageDeflate(params, "client"),
  };
}

/** A JSON-like message: repetitive structure, varying values. */
function jsonMessage(i: number): Uint8Array {
  return utf8(JSON.stringify({
    type: "update",
    seq: i,
    user: `user-${i % 17}`,
    items: [{ id: i * 3, price: (i * 7919) % 1000, tags: ["a", "b"] }],
  }));
}

/**
 * Inflates a whole sequence of messages with node:zlib in one go: an
 * independent decoder. Its 64-byte output chunks make nearly every
 * back-reference come from zlib's window, so a reference beyond `windowBits`
 * fails with "invalid distance too far back".
 */
function referenceInflate(messages: Uint8Array[], windowBits: number): Uint8Array {
  return new Uint8Array(inflateRawSync(concat(...messages.flatMap((m) => [m, TAIL])), {
    windowBits,
    chunkSize: 64,
    finishFlush: constants.Z_SYNC_FLUSH,
  }));
}

describe("PerMessageDeflate: RFC 7692 §7.2.3 examples", () => {
  test('§7.2.3.1: "Hello" compresses to f2 48 cd c9 c9 07 00 and back', () => {
    const { server, client } = pair(TAKEOVER);
    const compressed = client.compress(utf8("Hello"));
    assert.equal(hex(compressed), "f2 48 cd c9 c9 07 00");
    assert.equal(decoder.decode(server.decompress(compressed, 100)), "Hello");
  });

  test("§7.2.3.2: the second message shares the window (f2 00 11 00 00)", () => {
    const { server, client } = pair(TAKEOVER);
    assert.equal(hex(server.compress(utf8("Hello"))), "f2 48 cd c9 c9 07 00");
    assert.equal(hex(server.compress(utf8("Hello"))), "f2 00 11 00 00");
    assert.equal(
      decoder.decode(client.decompress(bytes(0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00), 5)),
      "Hello",
    );
    assert.equal(
      decoder.decode(client.decompress(bytes(0xf2, 0x00, 0x11, 0x00, 0x00), 5)),
      "Hello",
    );
  });

  test("§7.2.3.2 without context takeover: every message compresses alone", () => {
    const { server, client } = pair(NO_TAKEOVER);
    for (let i = 0; i < 3; i++) {
      assert.equal(hex(server.compress(utf8("Hello"))), "f2 48 cd c9 c9 07 00");
      assert.equal(hex(client.compress(utf8("Hello"))), "f2 48 cd c9 c9 07 00");
    }
    // The shared-window form cannot be read without the previous message.
    assert.throws(
      () => client.decompress(bytes(0xf2, 0x00, 0x11, 0x00, 0x00), 100),
      DecompressionError,
    );
  });

  test("§7.2.3.3: a DEFLATE block with no compression", () => {
    const { server } = pair(TAKEOVER);
    const payload = bytes(0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00);
    assert.equal(decoder.decode(server.decompress(payload, 5)), "Hello");
  });

  test("§7.2.3.4: a final (BFINAL = 1) block, then the window is still shared", () => {
    for (
      const payload of [
        bytes(0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00), // the RFC's form
        bytes(0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00), // no padding block
      ]
    ) {
      const { server } = pair(TAKEOVER);
      assert.equal(decoder.decode(server.decompress(payload, 5)), "Hello", hex(payload));
      // The next message starts a new DEFLATE stream that refers back to "Hello".
      assert.equal(
        decoder.decode(server.decompress(bytes(0xf2, 0x00, 0x11, 0x00, 0x00), 5)),
        "Hello",
      );
      assert.equal(
        decoder.decode(server.decompress(bytes(0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00), 5)),
        "Hello",
      );
    }
  });

  test("§7.2.3.4 without context takeover, and BFINAL messages in a row", () => {
    const { server } = pair(NO_TAKEOVER);
    for (let i = 0; i < 3; i++) {
      assert.equal(
        decoder.decode(server.decompress(bytes(0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00), 5)),
        "Hello",
      );
    }
    // What zlib's one-shot deflate (Z_FINISH) produces is read too, longer ones included.
    const { server: takeover } = pair(TAKEOVER);
    for (let i = 0; i < 5; i++) {
      const text = pattern(70_000, i);
      assert.deepEqual(takeover.decompress(deflateRawSync(text), 70_000), text);
    }
  });

  test("§7.2.3.5: two DEFLATE blocks in one message", () => {
    const { server } = pair(TAKEOVER);
    const payload = bytes(
      0xf2,
      0x48,
      0x05,
      0x00,
      0x00,
      0x00,
      0xff,
      0xff,
      0xca,
      0xc9,
      0xc9,
      0x07,
      0x00,
    );
    assert.equal(decoder.decode(server.decompress(payload, 5)), "Hello");
  });

  test("§7.2.3.6: an empty message is the single byte 00, in any state", () => {
    const { server, client } = pair(TAKEOVER);
    assert.equal(hex(client.compress(new Uint8Array(0))), "00");
    assert.deepEqual(server.decompress(bytes(0x00), 0), new Uint8Array(0));
    // In the middle of a shared window, too.
    const messages = ["Hello", "", "Hello", "", ""].map((text) => client.compress(utf8(text)));
    assert.deepEqual(messages.map(hex), [
      "f2 48 cd c9 c9 07 00",
      "00",
      "f2 00 11 00 00",
      "00",
      "00",
    ]);
    assert.deepEqual(
      messages.map((m) => decoder.decode(server.decompress(m, 5))),
      ["Hello", "", "Hello", "", ""],
    );
    // A zero-length payload is read as an empty message and leaves the window intact.
    assert.deepEqual(server.decompress(new Uint8Array(0), 0), new Uint8Array(0));
    assert.deepEqual(server.decompress([], 0), new Uint8Array(0));
    assert.equal(decoder.decode(server.decompress(client.compress(utf8("Hello")), 5)), "Hello");
  });
});

describe("PerMessageDeflate: round trips", () => {
  test("1000 small messages in a row with context takeover, both directions", () => {
    const { server, client } = pair(TAKEOVER);
    const sent: Uint8Array[] = [];
    for (let i = 0; i < 1000; i++) {
      const message = jsonMessage(i);
      const toClient = server.compress(message);
      const toServer = client.compress(message);
      sent.push(toClient);
      assert.deepEqual(client.decompress(toClient, 1000), message, `message ${i} to client`);
      assert.deepEqual(server.decompress(toServer, 1000), message, `message ${i} to server`);
    }
    // node:zlib reads the same bytes as one stream.
    assert.deepEqual(
      referenceInflate(sent, 15),
      concat(...Array.from({ length: 1000 }, (_, i) => jsonMessage(i))),
    );
  });

  test("1000 small messages without context takeover, each readable on its own", () => {
    const { server, client } = pair(NO_TAKEOVER);
    for (let i = 0; i < 1000; i++) {
      const message = jsonMessage(i);
      const toClient = server.compress(message);
      assert.deepEqual(client.decompress(toClient, 1000), message);
      assert.deepEqual(server.decompress(client.compress(message), 1000), message);
      // A fresh decoder reads it: it does not refer to earlier messages.
      assert.deepEqual(referenceInflate([toClient], 15), message);
    }
  });

  test("context takeover makes repetitive messages much smaller", () => {
    const takeover = pair(TAKEOVER).server;
    const alone = pair(NO_TAKEOVER).server;
    let withTakeover = 0;
    let without = 0;
    for (let i = 0; i < 1000; i++) {
      const message = jsonMessage(i);
      const a = takeover.compress(message);
      const b = alone.compress(message);
      withTakeover += a.length;
      without += b.length;
      if (i > 0) assert.ok(a.length < b.length, `message ${i}: ${a.length} >= ${b.length}`);
    }
    assert.ok(withTakeover < without * 0.6, `${withTakeover} vs ${without}`);
  });

  test("the same message sent again costs a few bytes with takeover", () => {
    const { server, client } = pair(TAKEOVER);
    const message = pattern(10_000);
    const first = server.compress(message);
    const second = server.compress(message);
    assert.ok(second.length < first.length / 5, `${second.length} vs ${first.length} bytes`);
    assert.deepEqual(client.decompress(first, 10_000), message);
    assert.deepEqual(client.decompress(second, 10_000), message);
  });

  test("large and incompressible messages (several 64 KiB output chunks)", () => {
    const { server, client } = pair(TAKEOVER);
    let seed = 12345;
    const random = new Uint8Array(300_000).map(() => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed >>> 24;
    });
    for (const message of [random, pattern(3 * MiB), new Uint8Array(2 * MiB)]) {
      const compressed = client.compress(message);
      assert.deepEqual(server.decompress(compressed, message.length), message);
    }
  });

  test("every window size 8..15, checked by an independent decoder with that window", () => {
    for (let bits = 8; bits <= 15; bits++) {
      const params = { ...TAKEOVER, serverMaxWindowBits: bits, clientMaxWindowBits: bits };
      const { server, client } = pair(params);
      const messages: Uint8Array[] = [];
      const sent: Uint8Array[] = [];
      for (let i = 0; i < 20; i++) {
        // Repeats at short and long distances.
        const message = concat(pattern(200, i % 3), pattern(5000, i % 2), pattern(200, i % 3));
        messages.push(message);
        sent.push(server.compress(message));
        assert.deepEqual(server.decompress(client.compress(message), message.length), message);
      }
      // zlib compresses with 9 when asked for 8; its longest distance (250) still fits 8.
      assert.deepEqual(referenceInflate(sent, bits), concat(...messages), `window bits ${bits}`);
      assert.deepEqual(
        sent.map((m) => client.decompress(m, 5400)),
        messages,
        `window bits ${bits}`,
      );
    }
  });

  test("a smaller window compresses long-distance repeats less", () => {
    const message = concat(pattern(4000, 1), pattern(4000, 1));
    const sizes = [9, 15].map((bits) =>
      new PerMessageDeflate({ ...TAKEOVER, serverMaxWindowBits: bits }, "server").compress(message)
        .length
    );
    assert.ok(sizes[0] > sizes[1] * 1.5, `window 9: ${sizes[0]}, window 15: ${sizes[1]}`);
  });

  test("rejects references to earlier messages beyond the negotiated window", () => {
    let seed = 7;
    const block = new Uint8Array(8192).map(() => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24);
    // A peer that ignores client_max_window_bits=10: its second message refers 8 KiB back.
    const peer = new PerMessageDeflate(TAKEOVER, "client");
    const first = peer.compress(block);
    const second = peer.compress(block);
    assert.ok(second.length < 100);
    const narrow = new PerMessageDeflate({ ...TAKEOVER, clientMaxWindowBits: 10 }, "server");
    assert.deepEqual(narrow.decompress(first, MiB), block);
    assert.throws(() => narrow.decompress(second, MiB), (error: unknown) => {
      assert.ok(error instanceof DecompressionError);
      assert.match(error.message, /too far back/);
      return true;
    });
    const wide = new PerMessageDeflate({ ...TAKEOVER, clientMaxWindowBits: 14 }, "server");
    assert.deepEqual(wide.decompress(first, MiB), block);
    assert.deepEqual(wide.decompress(second, MiB), block);
  });

  test("only the sending direction's no_context_takeover resets it", () => {
    const params = { ...TAKEOVER, serverNoContextTakeover: true };
    const { server, client } = pair(params);
    const message = pattern(3000);
    const s1 = server.compress(message);
    const s2 = server.compress(message);
    const c1 = client.compress(message);
    const c2 = client.compress(message);
    assert.deepEqual(s1, s2, "server resets");
    assert.ok(c2.length < c1.length / 4, `client keeps its window: ${c2.length} vs ${c1.length}`);
    for (const m of [s1, s2]) assert.deepEqual(client.decompress(m, 3000), message);
    for (const m of [c1, c2]) assert.deepEqual(server.decompress(m, 3000), message);
  });

  test("connections sharing the no-takeover engine do not leak state into each other", () => {
    const a = pair(NO_TAKEOVER);
    const b = pair(NO_TAKEOVER);
    const t1 = pair(TAKEOVER);
    const t2 = pair(TAKEOVER);
    for (let i = 0; i < 50; i++) {
      const message = jsonMessage(i);
      const fromA = a.server.compress(message);
      const fromB = b.server.compress(message);
      assert.deepEqual(fromA, fromB);
      assert.deepEqual(b.client.decompress(fromA, 1000), message);
      assert.deepEqual(a.client.decompress(fromB, 1000), message);
      // Interleaved takeover connections keep separate windows.
      assert.deepEqual(t1.client.decompress(t1.server.compress(message), 1000), message);
      assert.deepEqual(t2.client.decompress(t2.server.compress(message), 1000), message);
    }
  });

  test("accepts the message as a list of frame payloads, split at every offset", () => {
    const { server, client } = pair(TAKEOVER);
    const message = utf8("A fragmented message, compressed once, split anywhere. ".repeat(4));
    const compressed = client.compress(message);
    const reader = pair(NO_TAKEOVER).server;
    assert.deepEqual(server.decompress(compressed, 1000), message);
    for (let i = 0; i <= compressed.length; i++) {
      for (const j of [i, Math.min(compressed.length, i + 3)]) {
        const parts = [
          compressed.subarray(0, i),
          compressed.subarray(i, j),
          compressed.subarray(j),
        ];
        assert.deepEqual(reader.decompress(parts, 1000), message, `split at ${i}, ${j}`);
      }
    }
    // With takeover, fragments of consecutive messages too.
    for (let n = 0; n < 20; n++) {
      const m = client.compress(message);
      const at = n % m.length;
      assert.deepEqual(server.decompress([m.subarray(0, at), m.subarray(at)], 1000), message);
    }
  });

  test("reads views with a byte offset and never modifies the input", () => {
    const { server, client } = pair(TAKEOVER);
    const message = pattern(5000);
    const original = message.slice();
    const compressed = client.compress(message);
    assert.deepEqual(message, original);
    const padded = new Uint8Array(compressed.length + 7);
    padded.set(compressed, 3);
    const view = padded.subarray(3, 3 + compressed.length);
    const before = view.slice();
    assert.deepEqual(server.decompress(view, 5000), message);
    assert.deepEqual(view, before);
  });

  test("returned arrays are not overwritten by later calls", () => {
    const { server, client } = pair(TAKEOVER);
    const a = server.compress(pattern(2000, 1));
    const aCopy = a.slice();
    const outA = client.decompress(a, 2000);
    const outACopy = outA.slice();
    const b = server.compress(pattern(2000, 2));
    client.decompress(b, 2000);
    assert.deepEqual(a, aCopy);
    assert.deepEqual(outA, outACopy);
  });

  test("methods work when passed around as plain functions", () => {
    const { server, client } = pair(TAKEOVER);
    const { compress } = client;
    const { decompress } = server;
    assert.equal(decoder.decode(decompress(compress(utf8("Hello")), 5)), "Hello");
  });

  test("level and threshold options", () => {
    const text = utf8("abcabcabc".repeat(1000));
    const stored = new PerMessageDeflate(TAKEOVER, "server", { level: 0 }).compress(text);
    const best = new PerMessageDeflate(TAKEOVER, "server", { level: 9 }).compress(text);
    assert.ok(stored.length > text.length, "level 0 stores");
    assert.ok(best.length < 100);
    assert.equal(new PerMessageDeflate(TAKEOVER, "server").threshold, 1024);
    assert.equal(new PerMessageDeflate(TAKEOVER, "server", { threshold: 0 }).threshold, 0);
    const reader = new PerMessageDeflate(TAKEOVER, "client");
    assert.deepEqual(reader.decompress(stored, text.length), text);
  });
});

describe("PerMessageDeflate: interop with npm ws", () => {
  // ws's own permessage-deflate class, driving node:zlib streams asynchronously.
  interface WsDeflate {
    params: Record<string, boolean | number>;
    compress(
      data: Uint8Array,
      fin: boolean,
      cb: (err: Error | null, out: Uint8Array) => void,
    ): void;
    decompress(
      data: Uint8Array,
      fin: boolean,
      cb: (err: Error | null, out: Uint8Array) => void,
    ): void;
    cleanup(): void;
  }
  const require = createRequire(import.meta.url);
  const WsPerMessageDeflate = require("../../node_modules/ws/lib/permessage-deflate.js") as new (
    options: { isServer: boolean; maxPayload: number },
  ) => WsDeflate;
  function call(
    fn: (cb: (err: Error | null, out: Uint8Array) => void) => void,
  ): Promise<Uint8Array> {
    return new Promise((resolve, reject) => fn((err, out) => err ? reject(err) : resolve(out)));
  }

  const configs: [string, NegotiatedDeflate, Record<string, boolean | number>][] = [
    ["context takeover", TAKEOVER, {}],
    [
      "window bits 10/8, server without takeover",
      {
        ...TAKEOVER,
        serverMaxWindowBits: 10,
        clientMaxWindowBits: 8,
        serverNoContextTakeover: true,
      },
      { server_max_window_bits: 10, client_max_window_bits: 8, server_no_context_takeover: true },
    ],
  ];
  for (const [name, params, wsParams] of configs) {
    for (const role of ["server", "client"] as const) {
      test(`${name}: 1000 messages each way, we are the ${role}`, async () => {
        const ws = new WsPerMessageDeflate({ isServer: role === "client", maxPayload: 0 });
        ws.params = wsParams;
        const ours = new PerMessageDeflate(params, role, { threshold: 0 });
        try {
          for (let i = 0; i < 1000; i++) {
            const message = i % 10 === 9 ? pattern(20_000 + i, i) : jsonMessage(i);
            const fromWs = await call((cb) => ws.compress(message, true, cb));
            assert.deepEqual(
              ours.decompress(new Uint8Array(fromWs), MiB),
              message,
              `ws -> us ${i}`,
            );
            const fromUs = ours.compress(message);
            assert.deepEqual(
              new Uint8Array(await call((cb) => ws.decompress(fromUs, true, cb))),
              message,
              `us -> ws ${i}`,
            );
          }
        } finally {
          ours.close();
          ws.cleanup();
        }
      });
    }
  }
});

describe("PerMessageDeflate: limits and errors", () => {
  /**
   * About 1 MiB of DEFLATE that inflates to 1 GiB of zeros, built without
   * ever holding the gigabyte: 64 sync-flushed copies of a 16 MiB piece.
   */
  function bomb(): Uint8Array {
    const piece = deflateRawSync(new Uint8Array(16 * MiB), {
      level: 9,
      finishFlush: constants.Z_SYNC_FLUSH,
    });
    const all = concat(...Array.from({ length: 64 }, () => piece));
    return all.subarray(0, all.length - 4);
  }

  test("a deflate bomb fails fast with bounded memory", () => {
    const payload = bomb();
    assert.ok(payload.length < 1.1 * MiB, `bomb is ${payload.length} bytes`);
    for (const params of [TAKEOVER, NO_TAKEOVER]) {
      const codec = new PerMessageDeflate(params, "server");
      const rssBefore = process.memoryUsage().rss;
      const start = performance.now();
      assert.throws(() => codec.decompress(payload, MiB), (error: unknown) => {
        assert.ok(error instanceof DecompressedTooBigError);
        assert.ok(error instanceof WebSocketError);
        assert.ok(error instanceof Error);
        assert.equal(error.code, "MESSAGE_TOO_BIG");
        assert.equal(error.closeCode, 1009);
        assert.equal(error.maxSize, MiB);
        assert.match(error.message, /exceeds the 1048576-byte limit/);
        return true;
      });
      const elapsed = performance.now() - start;
      const grown = process.memoryUsage().rss - rssBefore;
      // Inflating the whole gigabyte takes seconds and a gigabyte.
      assert.ok(elapsed < 500, `took ${elapsed.toFixed(1)} ms`);
      assert.ok(grown < 64 * MiB, `RSS grew by ${(grown / MiB).toFixed(1)} MiB`);
    }
  });

  test("the limit is exact: maxSize bytes pass, one more fails", () => {
    for (const size of [0, 1, 1000, 65_536, 65_537, 200_000]) {
      const message = pattern(size);
      const compressed = pair(NO_TAKEOVER).client.compress(message);
      const { server } = pair(NO_TAKEOVER);
      assert.deepEqual(server.decompress(compressed, size), message);
      if (size > 0) {
        assert.throws(() => server.decompress(compressed, size - 1), DecompressedTooBigError);
      }
      assert.deepEqual(server.decompress(compressed, Infinity), message);
    }
  });

  test("invalid data throws DecompressionError (close 1007)", () => {
    for (const payload of [bytes(0xff, 0xff, 0xff), bytes(0x01, 0x05, 0x00, 0x00, 0x00, 0x41)]) {
      const codec = new PerMessageDeflate(NO_TAKEOVER, "server");
      assert.throws(() => codec.decompress(payload, MiB), (error: unknown) => {
        assert.ok(error instanceof DecompressionError);
        assert.ok(error instanceof WebSocketError);
        assert.equal(error.code, "INVALID_COMPRESSED_DATA");
        assert.equal(error.closeCode, 1007);
        assert.match(error.message, /^Invalid compressed data: /);
        return true;
      });
      // Without takeover the next message starts clean.
      assert.equal(
        decoder.decode(codec.decompress(bytes(0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00), 5)),
        "Hello",
      );
    }
  });

  test("after an error, a takeover inflater refuses further messages", () => {
    const codec = new PerMessageDeflate(TAKEOVER, "server");
    assert.throws(() => codec.decompress(bytes(0xff, 0xff), MiB), DecompressionError);
    assert.throws(
      () => codec.decompress(bytes(0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00), 5),
      /shared LZ77 window was lost/,
    );
    const big = new PerMessageDeflate(TAKEOVER, "server");
    const message = pair(TAKEOVER).client.compress(pattern(1000));
    assert.throws(() => big.decompress(message, 10), DecompressedTooBigError);
    assert.throws(() => big.decompress(message, 1000), DecompressionError);
    // Compressing is unaffected.
    assert.equal(hex(big.compress(utf8("Hello"))), "f2 48 cd c9 c9 07 00");
  });

  test("close() frees the engines; later calls throw", () => {
    const { server, client } = pair(TAKEOVER);
    server.decompress(client.compress(utf8("Hello")), 5);
    server.compress(utf8("Hello"));
    server.close();
    server.close();
    assert.throws(() => server.compress(utf8("x")), { name: "TypeError", message: /closed/ });
    assert.throws(() => server.decompress(bytes(0x00), 5), TypeError);
  });

  test("rejects invalid arguments", () => {
    assert.throws(
      () => new PerMessageDeflate({ ...TAKEOVER, serverMaxWindowBits: 16 }, "server"),
      RangeError,
    );
    assert.throws(
      () => new PerMessageDeflate({ ...TAKEOVER, clientMaxWindowBits: 7 }, "client"),
      RangeError,
    );
    assert.throws(
      () => new PerMessageDeflate(TAKEOVER, "peer" as unknown as "server"),
      TypeError,
    );
    assert.throws(() => new PerMessageDeflate(TAKEOVER, "server", { level: 11 }), RangeError);
    const codec = new PerMessageDeflate(TAKEOVER, "server");
    assert.throws(() => codec.decompress(bytes(0x00), -1), RangeError);
    assert.throws(() => codec.decompress(bytes(0x00), Number.NaN), RangeError);
    assert.equal(codec.role, "server");
  });
});
