import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { FrameParser } from "../../src/protocol/frame.ts";
import {
  DEFAULT_MAX_FRAGMENTS,
  type InflateFunction,
  MessageAssembler,
} from "../../src/protocol/message.ts";
import { WebSocketError } from "../../src/protocol/errors.ts";
import { Opcode } from "../../src/protocol/opcodes.ts";
import { seededRandom } from "../_bytes.ts";
import {
  bytes,
  clientFrame,
  closePayload,
  concat,
  KEY,
  type MessageEvent,
  MessageRecorder,
  pattern,
  serverFrame,
  splits,
  utf8,
} from "./_helpers.ts";

const MB = 1 << 20;

interface FeedOptions {
  role?: "server" | "client";
  maxMessageSize?: number;
  maxFrameSize?: number;
  inflate?: InflateFunction;
}

interface FeedResult {
  events: MessageEvent[];
  /** The error thrown, if any. */
  error: WebSocketError | null;
  /** Index of the chunk whose push threw, or -1. */
  failedAt: number;
}

/** Pushes chunks through a parser and an assembler, as the connection does. */
function feed(chunks: Uint8Array[], options: FeedOptions = {}): FeedResult {
  const recorder = new MessageRecorder();
  const assembler = new MessageAssembler(recorder, {
    maxMessageSize: options.maxMessageSize ?? MB,
    inflate: options.inflate,
  });
  const parser = new FrameParser(assembler, {
    role: options.role ?? "server",
    maxFrameSize: options.maxFrameSize ?? MB * 4,
    allowRsv1: options.inflate !== undefined,
  });
  for (let i = 0; i < chunks.length; i++) {
    try {
      parser.push(chunks[i]);
    } catch (err) {
      if (!(err instanceof WebSocketError)) throw err;
      return { events: recorder.events, error: err, failedAt: i };
    }
  }
  return { events: recorder.events, error: null, failedAt: -1 };
}

/** Masked client frame of a text or binary message; `fin` defaults to true. */
const text = (s: string | Uint8Array, fin = true) =>
  clientFrame({ opcode: Opcode.Text, payload: typeof s === "string" ? utf8(s) : s, fin });
const binary = (data: Uint8Array, fin = true) =>
  clientFrame({ opcode: Opcode.Binary, payload: data, fin });
const cont = (data: string | Uint8Array, fin = true) =>
  clientFrame({
    opcode: Opcode.Continuation,
    payload: typeof data === "string" ? utf8(data) : data,
    fin,
  });
const ping = (data: Uint8Array = bytes()) => clientFrame({ opcode: Opcode.Ping, payload: data });
const pong = (data: Uint8Array = bytes()) => clientFrame({ opcode: Opcode.Pong, payload: data });
const close = (data: Uint8Array = bytes()) => clientFrame({ opcode: Opcode.Close, payload: data });

function assertError(result: FeedResult, code: string, closeCode: number): void {
  assert.ok(result.error !== null, `no error; events: ${JSON.stringify(result.events)}`);
  assert.equal(result.error.code, code);
  assert.equal(result.error.closeCode, closeCode);
}

describe("MessageAssembler: messages", () => {
  test("§5.7: a single-frame text message and a fragmented one", () => {
    const hello = bytes(0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f);
    const hel = bytes(0x01, 0x03, 0x48, 0x65, 0x6c);
    const lo = bytes(0x80, 0x02, 0x6c, 0x6f);
    const result = feed([hello, hel, lo], { role: "client" });
    assert.equal(result.error, null);
    assert.deepEqual(result.events, [
      { type: "text", data: "Hello" },
      { type: "text", data: "Hello" },
    ]);
  });

  test("text and binary, masked (server side) and unmasked (client side)", () => {
    const data = pattern(300);
    assert.deepEqual(feed([text("héllo"), binary(data)]).events, [
      { type: "text", data: "héllo" },
      { type: "binary", data },
    ]);
    assert.deepEqual(
      feed([
        serverFrame({ opcode: Opcode.Text, payload: utf8("héllo") }),
        serverFrame({ opcode: Opcode.Binary, payload: data }),
      ], { role: "client" }).events,
      [{ type: "text", data: "héllo" }, { type: "binary", data }],
    );
  });

  test("empty text and binary messages, single and fragmented", () => {
    assert.deepEqual(
      feed([
        text(""),
        binary(bytes()),
        text("", false),
        cont(""),
        binary(bytes(), false),
        cont(bytes()),
      ])
        .events,
      [
        { type: "text", data: "" },
        { type: "binary", data: bytes() },
        { type: "text", data: "" },
        { type: "binary", data: bytes() },
      ],
    );
  });

  test("payloads of 125, 126, 65535 and 65536 bytes", () => {
    for (const length of [125, 126, 65535, 65536]) {
      const data = pattern(length, length);
      const chars = "a".repeat(length - 2) + "é";
      for (const role of ["server", "client"] as const) {
        const build = role === "server" ? clientFrame : serverFrame;
        const result = feed([
          build({ opcode: Opcode.Binary, payload: data }),
          build({ opcode: Opcode.Text, payload: utf8(chars) }),
        ], { role });
        assert.equal(result.error, null, `${role} ${length}`);
        assert.equal(result.events.length, 2);
        assert.deepEqual(result.events[0], { type: "binary", data }, `${role} ${length}`);
        assert.ok(result.events[1].type === "text" && result.events[1].data === chars);
      }
    }
  });

  test("text with a UTF-8 BOM keeps the BOM (U+FEFF)", () => {
    const bom = "\ufeffHi";
    const wire = utf8(bom);
    assert.deepEqual(wire.subarray(0, 3), bytes(0xef, 0xbb, 0xbf));
    // Single frame, whole and cut inside the BOM; fragmented with the BOM split.
    const single = text(bom);
    for (const { name, chunks } of splits(single)) {
      assert.deepEqual(feed(chunks).events, [{ type: "text", data: bom }], name);
    }
    assert.deepEqual(
      feed([
        text(wire.subarray(0, 1), false),
        cont(wire.subarray(1, 2), false),
        cont(wire.subarray(2)),
      ])
        .events,
      [{ type: "text", data: bom }],
    );
    // A BOM on the second message too: the decoder's state must not drop it.
    assert.deepEqual(feed([text(bom), text("x", false), cont(bom)]).events, [
      { type: "text", data: bom },
      { type: "text", data: "x" + bom },
    ]);
  });

  test("multi-byte characters cut across fragments are joined", () => {
    const s = "a€𝄞é";
    const wire = utf8(s);
    for (let a = 0; a <= wire.length; a++) {
      for (let b = a; b <= wire.length; b++) {
        const result = feed([
          text(wire.subarray(0, a), false),
          cont(wire.subarray(a, b), false),
          cont(wire.subarray(b)),
        ]);
        assert.deepEqual(result.events, [{ type: "text", data: s }], `cuts at ${a}, ${b}`);
      }
    }
  });

  test("a binary message is exactly sized and owned: changing the input later does not change it", () => {
    const data = pattern(40);
    const frames = [binary(data.subarray(0, 10), false), cont(data.subarray(10))];
    const recorder = new MessageRecorder();
    const received: Uint8Array[] = [];
    const assembler = new MessageAssembler({
      ...recorder,
      text: () => {},
      ping: () => {},
      pong: () => {},
      close: () => {},
      binary: (d) => received.push(d),
    }, { maxMessageSize: MB });
    const parser = new FrameParser(assembler, { role: "server", maxFrameSize: MB });
    const single = binary(data);
    parser.push(single);
    for (const f of frames) parser.push(f);
    single.fill(0);
    for (const f of frames) f.fill(0);
    assert.equal(received.length, 2);
    for (const d of received) {
      assert.equal(d.byteLength, 40);
      assert.equal(d.buffer.byteLength, 40, "a view into a larger buffer");
      assert.deepEqual(d, data);
    }
  });

  test("control frames between fragments are reported in order and leave the message intact", () => {
    const result = feed([
      text("Hé", false),
      ping(utf8("p1")),
      cont(utf8("l").subarray(0), false),
      pong(utf8("p2")),
      ping(),
      cont("lo"),
      binary(bytes(1), false),
      ping(utf8("p3")),
      cont(bytes(2)),
    ]);
    assert.equal(result.error, null);
    assert.deepEqual(result.events, [
      { type: "ping", data: utf8("p1") },
      { type: "pong", data: utf8("p2") },
      { type: "ping", data: bytes() },
      { type: "text", data: "Hello".replace("e", "é") },
      { type: "ping", data: utf8("p3") },
      { type: "binary", data: bytes(1, 2) },
    ]);
  });

  test("a ping between fragments while a multi-byte character is cut", () => {
    const wire = utf8("€");
    assert.deepEqual(
      feed([text(wire.subarray(0, 2), false), ping(utf8("x")), cont(wire.subarray(2))]).events,
      [{ type: "ping", data: utf8("x") }, { type: "text", data: "€" }],
    );
  });

  test("close frames: code and reason, empty payload as 1005", () => {
    assert.deepEqual(feed([close(closePayload(1000, "bye"))]).events, [
      { type: "close", code: 1000, reason: "bye" },
    ]);
    assert.deepEqual(feed([close()]).events, [{ type: "close", code: 1005, reason: "" }]);
  });

  test("every input split anywhere gives the same messages", () => {
    const input = concat(
      text("Hé€", false),
      ping(utf8("ping")),
      cont(utf8("𝄞").subarray(0, 1), false),
      cont(concat(utf8("𝄞").subarray(1), utf8("!"))),
      binary(pattern(130)),
      text("\ufeff"),
      pong(),
      binary(bytes(), false),
      cont(pattern(3)),
      close(closePayload(4000, "done")),
    );
    const expected: MessageEvent[] = [
      { type: "ping", data: utf8("ping") },
      { type: "text", data: "Hé€𝄞!" },
      { type: "binary", data: pattern(130) },
      { type: "text", data: "\ufeff" },
      { type: "pong", data: bytes() },
      { type: "binary", data: pattern(3) },
      { type: "close", code: 4000, reason: "done" },
    ];
    assert.deepEqual(feed([input]).events, expected);
    for (const { name, chunks } of splits(input)) {
      const result = feed(chunks);
      assert.equal(result.error, null, name);
      assert.deepEqual(result.events, expected, name);
    }
  });

  test("midMessage is true between the first and the final fragment", () => {
    const assembler = new MessageAssembler(new MessageRecorder(), { maxMessageSize: MB });
    const parser = new FrameParser(assembler, { role: "server", maxFrameSize: MB });
    assert.equal(assembler.midMessage, false);
    parser.push(text("a", false));
    assert.equal(assembler.midMessage, true);
    parser.push(ping());
    assert.equal(assembler.midMessage, true);
    parser.push(cont("b"));
    assert.equal(assembler.midMessage, false);
  });
});

describe("MessageAssembler: fragmentation rules (§5.4)", () => {
  test("a continuation without a message: 1002", () => {
    assertError(feed([cont("x")]), "UNEXPECTED_CONTINUATION", 1002);
    assertError(feed([text("done"), cont("x")]), "UNEXPECTED_CONTINUATION", 1002);
    assertError(feed([cont("x", false)]), "UNEXPECTED_CONTINUATION", 1002);
  });

  test("a new data frame inside a fragmented message: 1002", () => {
    for (const next of [text("x"), binary(bytes(1)), text("x", false), binary(bytes(), false)]) {
      const result = feed([text("a", false), next]);
      assertError(result, "EXPECTED_CONTINUATION", 1002);
      assert.equal(result.failedAt, 1);
      assert.deepEqual(result.events, []);
    }
    assertError(feed([binary(bytes(1), false), ping(), text("x")]), "EXPECTED_CONTINUATION", 1002);
  });
});

describe("MessageAssembler: UTF-8 (§8.1)", () => {
  const BAD = [
    { name: "0xFF", bytes: bytes(0xff) },
    { name: "lone continuation byte", bytes: bytes(0x80) },
    { name: "overlong '/'", bytes: bytes(0xc0, 0xaf) },
    { name: "overlong 3-byte", bytes: bytes(0xe0, 0x80, 0xaf) },
    { name: "UTF-16 surrogate", bytes: bytes(0xed, 0xa0, 0x80) },
    { name: "beyond U+10FFFF", bytes: bytes(0xf4, 0x90, 0x80, 0x80) },
    { name: "0xF5 lead byte", bytes: bytes(0xf5, 0x80, 0x80, 0x80) },
    { name: "lead byte then ASCII", bytes: bytes(0xc3, 0x28) },
  ];

  test("invalid UTF-8 in a single-frame text message: 1007", () => {
    for (const bad of BAD) {
      const payload = concat(utf8("κόσμε"), bad.bytes, utf8("ok"));
      assertError(feed([text(payload)]), "INVALID_UTF8", 1007);
      assertError(
        feed([serverFrame({ opcode: Opcode.Text, payload })], { role: "client" }),
        "INVALID_UTF8",
        1007,
      );
    }
  });

  test("invalid UTF-8 fails as soon as the bad fragment arrives, before the message ends", () => {
    for (const bad of BAD) {
      const result = feed([
        text("good ", false),
        cont(concat(utf8("still"), bad.bytes), false),
        cont("never reached"),
      ]);
      assertError(result, "INVALID_UTF8", 1007);
      assert.equal(result.failedAt, 1, bad.name);
    }
  });

  test("an invalid sequence cut across fragments fails on the fragment with the bad byte", () => {
    // 0xE0 0x80: the second byte can never follow 0xE0.
    const result = feed([
      text(bytes(0x61, 0xe0), false),
      cont(bytes(0x80, 0x80), false),
      cont("z"),
    ]);
    assertError(result, "INVALID_UTF8", 1007);
    assert.equal(result.failedAt, 1);
    // 0xF4 0x90: beyond U+10FFFF, known at the second byte.
    const late = feed([text(bytes(0xf4), false), ping(), cont(bytes(0x90), false), cont("z")]);
    assertError(late, "INVALID_UTF8", 1007);
    assert.equal(late.failedAt, 2);
  });

  test("invalid UTF-8 in one frame fails when the chunk holding the bad byte arrives", () => {
    const payload = concat(utf8("a".repeat(20)), bytes(0xff), utf8("b".repeat(20)));
    const wire = text(payload);
    const badAt = 6 + 20; // header (2 + 4 mask) + 20 good bytes
    for (let at = 1; at < wire.length; at++) {
      const result = feed([wire.subarray(0, at), wire.subarray(at)]);
      assertError(result, "INVALID_UTF8", 1007);
      assert.equal(result.failedAt, at > badAt ? 0 : 1, `split at ${at}`);
    }
  });

  test("a message ending inside a UTF-8 sequence: 1007", () => {
    const truncated = [bytes(0xc3), bytes(0xe2, 0x82), bytes(0xf0, 0x9d, 0x84)];
    for (const t of truncated) {
      const payload = concat(utf8("abc"), t);
      assertError(feed([text(payload)]), "INVALID_UTF8", 1007);
      // Fed in pieces, the truncation is only known at the end.
      const wire = text(payload);
      assertError(feed([wire.subarray(0, 8), wire.subarray(8)]), "INVALID_UTF8", 1007);
      assertError(feed([text("abc", false), cont(t)]), "INVALID_UTF8", 1007);
      assertError(feed([text(t, false), cont(bytes())]), "INVALID_UTF8", 1007);
    }
  });

  test("a failed text message does not leak into the next connection's decoder", () => {
    // Each assembler has its own decoder: a cut sequence left in one must not
    // affect another.
    feed([text(bytes(0xe2), false)]);
    assert.deepEqual(feed([text("ok")]).events, [{ type: "text", data: "ok" }]);
  });

  test("valid text at the edges of the Unicode range", () => {
    const s = "\u0000\u007f\u0080\u07ff\u0800\ud7ff\ue000\uffff\u{10000}\u{10ffff}";
    for (const { name, chunks } of splits(text(s))) {
      assert.deepEqual(feed(chunks).events, [{ type: "text", data: s }], name);
    }
  });

  test("binary messages are not checked as UTF-8", () => {
    assert.deepEqual(feed([binary(bytes(0xff, 0xc0))]).events, [
      { type: "binary", data: bytes(0xff, 0xc0) },
    ]);
  });
});

describe("MessageAssembler: close frames (§5.5.1)", () => {
  test("a 1-byte close payload: 1002", () => {
    assertError(feed([close(bytes(0x03))]), "INVALID_CLOSE_PAYLOAD", 1002);
  });

  test("a close code that may not be sent: 1002", () => {
    for (const code of [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000]) {
      assertError(feed([close(closePayload(code))]), "INVALID_CLOSE_CODE", 1002);
    }
  });

  test("a close reason that is not UTF-8: 1007", () => {
    assertError(
      feed([close(concat(closePayload(1000), bytes(0xc3, 0x28)))]),
      "INVALID_UTF8",
      1007,
    );
  });

  test("a close frame inside a fragmented message is fine", () => {
    assert.deepEqual(feed([text("a", false), close(closePayload(1001))]).events, [
      { type: "close", code: 1001, reason: "" },
    ]);
  });
});

describe("MessageAssembler: maxMessageSize", () => {
  test("a single frame over the limit fails at its header, before any payload arrives (1009)", () => {
    for (const length of [11, 126, 70000]) {
      const wire = binary(pattern(length));
      const headerSize = length < 126 ? 6 : length < 65536 ? 8 : 14;
      const result = feed([wire.subarray(0, headerSize)], { maxMessageSize: 10 });
      assertError(result, "MESSAGE_TOO_BIG", 1009);
      assert.equal(result.failedAt, 0);
    }
    assertError(feed([text("x".repeat(11))], { maxMessageSize: 10 }), "MESSAGE_TOO_BIG", 1009);
  });

  test("exactly the limit is fine", () => {
    assert.deepEqual(feed([binary(pattern(10))], { maxMessageSize: 10 }).events, [
      { type: "binary", data: pattern(10) },
    ]);
    assert.deepEqual(
      feed([text("12345", false), cont("67890")], { maxMessageSize: 10 }).events,
      [{ type: "text", data: "1234567890" }],
    );
  });

  test("fragments adding up to more than the limit fail at the header of the one that crosses it", () => {
    const chunks = [
      text("1234", false),
      cont("5678", false),
      ping(pattern(100)),
      cont("9ab").subarray(0, 2 + 4),
    ];
    const result = feed(chunks, { maxMessageSize: 10 });
    assertError(result, "MESSAGE_TOO_BIG", 1009);
    assert.equal(result.failedAt, 3);
    assertError(
      feed([binary(pattern(6), false), cont(pattern(5))], { maxMessageSize: 10 }),
      "MESSAGE_TOO_BIG",
      1009,
    );
  });

  test("control frames do not count towards the message size", () => {
    const result = feed([text("12345", false), ping(pattern(125)), cont("67890")], {
      maxMessageSize: 10,
    });
    assert.equal(result.error, null);
    assert.equal(result.events.length, 2);
  });

  test("the size is counted afresh for each message", () => {
    const result = feed([text("1234567890"), binary(pattern(6), false), cont(pattern(4))], {
      maxMessageSize: 10,
    });
    assert.equal(result.error, null);
    assert.equal(result.events.length, 2);
  });

  test("maxFrameSize below maxMessageSize limits each frame (1009)", () => {
    const options = { maxMessageSize: 100, maxFrameSize: 10 };
    assert.equal(feed([text("12345678", false), cont("12345678")], options).events.length, 1);
    assertError(feed([text("12345678901")], options), "FRAME_TOO_BIG", 1009);
  });
});

/**
 * Masked frames carrying `payload` in pieces of `pieceSize` bytes; pieces up
 * to 125 bytes are written straight into one buffer, since millions of frames
 * through `clientFrame` would take longer than the code under test.
 */
function tinyFragments(opcode: number, payload: Uint8Array, pieceSize = 1): Uint8Array {
  if (pieceSize > 125) {
    const frames: Uint8Array[] = [];
    for (let from = 0; from < payload.length; from += pieceSize) {
      const fin = from + pieceSize >= payload.length;
      const piece = payload.subarray(from, from + pieceSize);
      frames.push(from === 0 ? clientFrame({ opcode, payload: piece, fin }) : cont(piece, fin));
    }
    return concat(...frames);
  }
  const key = KEY;
  const count = Math.max(1, Math.ceil(payload.length / pieceSize));
  const out = new Uint8Array(count * 6 + payload.length);
  let at = 0;
  for (let f = 0; f < count; f++) {
    const from = f * pieceSize;
    const n = Math.min(pieceSize, payload.length - from);
    out[at++] = (f === count - 1 ? 0x80 : 0) | (f === 0 ? opcode : Opcode.Continuation);
    out[at++] = 0x80 | n;
    out.set(key, at);
    at += 4;
    for (let i = 0; i < n; i++) out[at++] = payload[from + i] ^ key[i & 3];
  }
  return out;
}

/** `count` masked empty continuation frames. */
function emptyContinuations(count: number, fin = false): Uint8Array {
  const one = cont(bytes(), false);
  const out = new Uint8Array(one.length * count);
  for (let i = 0; i < count; i++) out.set(one, i * one.length);
  if (fin && count > 0) out[out.length - one.length] |= 0x80;
  return out;
}

/** A parser and assembler pair, as the connection drives them, with the recorder. */
function pipeline(options: { maxMessageSize?: number; maxFragments?: number } = {}) {
  const recorder = new MessageRecorder();
  const assembler = new MessageAssembler(recorder, {
    maxMessageSize: options.maxMessageSize ?? MB,
    maxFragments: options.maxFragments,
  });
  const parser = new FrameParser(assembler, { role: "server", maxFrameSize: MB });
  return { recorder, assembler, parser };
}

/** Pushes `wire` in chunks of `chunk` bytes, calling `after` after each push. */
function pushInChunks(
  parser: FrameParser,
  wire: Uint8Array,
  chunk: number,
  after: () => void,
): void {
  for (let i = 0; i < wire.length; i += chunk) {
    parser.push(wire.subarray(i, i + chunk));
    after();
  }
}

describe("MessageAssembler: fragment bookkeeping", () => {
  test("empty continuation frames hold no memory, however many there are", () => {
    const { recorder, assembler, parser } = pipeline({ maxFragments: Infinity });
    parser.push(binary(bytes(1, 2, 3), false));
    const held = assembler.bufferedBytes;
    assert.ok(held >= 3 && held <= 256, `held ${held} bytes for 3`);
    const flood = emptyContinuations(10_000);
    for (let round = 0; round < 20; round++) {
      parser.push(flood);
      assert.equal(assembler.bufferedBytes, held, `after ${(round + 1) * 10_000} empty frames`);
      assert.equal(assembler.bufferedParts, 1);
    }
    parser.push(cont(bytes(4)));
    assert.deepEqual(recorder.events, [{ type: "binary", data: bytes(1, 2, 3, 4) }]);
    assert.equal(assembler.bufferedBytes, 0, "nothing held after the message");
    assert.equal(assembler.bufferedParts, 0);
  });

  test("by default a message of more than 65536 fragments fails with 1009", () => {
    assert.equal(DEFAULT_MAX_FRAGMENTS, 65_536);
    const { recorder, parser } = pipeline();
    parser.push(binary(bytes(), false));
    // The first frame and 65535 continuations are fine...
    parser.push(emptyContinuations(DEFAULT_MAX_FRAGMENTS - 1));
    // ...one more is not, even though it carries no bytes.
    assert.throws(
      () => parser.push(cont(bytes(), false)),
      (err: unknown) =>
        err instanceof WebSocketError && err.code === "TOO_MANY_FRAGMENTS" &&
        err.closeCode === 1009 && /65536 fragments/.test(err.message),
    );
    assert.deepEqual(recorder.events, []);
  });

  test("maxFragments counts data frames of one message only, not control frames or other messages", () => {
    const result = (() => {
      const { recorder, parser } = pipeline({ maxFragments: 3 });
      for (let m = 0; m < 3; m++) {
        parser.push(text("a", false));
        parser.push(ping());
        parser.push(cont("b", false));
        parser.push(pong());
        parser.push(cont("c"));
      }
      return recorder.events.filter((e) => e.type === "text");
    })();
    assert.deepEqual(result, Array(3).fill({ type: "text", data: "abc" }));
    const { parser } = pipeline({ maxFragments: 3 });
    parser.push(concat(text("a", false), cont("b", false), cont("c", false)));
    assert.throws(() => parser.push(cont("d")), /more than 3 fragments/);
  });

  test("maxFragments must be at least 1", () => {
    for (const bad of [0, -1, NaN]) {
      assert.throws(
        () =>
          new MessageAssembler(new MessageRecorder(), { maxMessageSize: MB, maxFragments: bad }),
        RangeError,
      );
    }
  });

  test("a 2 MB binary message in 1-byte fragments arrives whole, holding at most twice what came", () => {
    const size = 2 * MB;
    const message = pattern(size);
    const wire = tinyFragments(Opcode.Binary, message);
    const { recorder, assembler, parser } = pipeline({
      maxMessageSize: 4 * MB,
      maxFragments: size,
    });
    let received = 0;
    let peak = 0;
    // 64 KiB reads hold about 9362 fragments each.
    pushInChunks(parser, wire, 64 * 1024, () => {
      received = Math.min(size, received + Math.floor(64 * 1024 / 7));
      peak = Math.max(peak, assembler.bufferedBytes);
      if (recorder.events.length === 0) {
        assert.ok(
          assembler.bufferedBytes <= 256 + 2 * (received + 1),
          `${assembler.bufferedBytes} bytes held after about ${received} received`,
        );
        // Not one buffer per fragment: a few per 64 KiB.
        assert.ok(
          assembler.bufferedParts <= 2 + received / 32_768,
          `${assembler.bufferedParts} buffers held for about ${received} fragments`,
        );
      }
    });
    assert.equal(recorder.events.length, 1);
    const event = recorder.events[0];
    assert.equal(event.type, "binary");
    assert.ok(event.type === "binary" && event.data.length === size);
    assert.ok(event.type === "binary" && Buffer.compare(event.data, message) === 0);
    assert.ok(peak <= 4 * MB, `peak ${peak}`);
    assert.equal(assembler.bufferedBytes, 0);
  });

  test("the message buffer never grows past maxMessageSize", () => {
    const max = 100_000;
    const message = pattern(max);
    for (const piece of [1, 7, 1000, 33_333]) {
      const { recorder, assembler, parser } = pipeline({ maxMessageSize: max, maxFragments: max });
      pushInChunks(parser, tinyFragments(Opcode.Binary, message, piece), 4096, () => {
        assert.ok(assembler.bufferedBytes <= max, `${assembler.bufferedBytes} > ${max}`);
      });
      assert.equal(recorder.events.length, 1, `pieces of ${piece}`);
      const event = recorder.events[0];
      assert.ok(event.type === "binary" && Buffer.compare(event.data, message) === 0);
    }
  });

  test("the binary message handed over is exactly sized, whatever the buffer grew to", () => {
    const { recorder, parser } = pipeline();
    parser.push(concat(binary(pattern(300), false), cont(pattern(5), false), cont(pattern(1))));
    const event = recorder.events[0];
    assert.ok(event.type === "binary");
    assert.equal(event.data.length, 306);
    // MessageRecorder copies; check the original through a handler of our own.
    let original: Uint8Array | null = null;
    const assembler = new MessageAssembler({
      ...new MessageRecorder(),
      text() {},
      ping() {},
      pong() {},
      close() {},
      binary(data) {
        original = data;
      },
    }, { maxMessageSize: MB });
    new FrameParser(assembler, { role: "server", maxFrameSize: MB }).push(
      concat(binary(pattern(300), false), cont(pattern(5), false), cont(pattern(1))),
    );
    assert.ok(original !== null);
    const data: Uint8Array = original;
    assert.equal(data.byteOffset, 0);
    assert.equal(data.buffer.byteLength, 306);
  });

  test("small and large fragments mixed keep their order, binary and text", () => {
    const sizes = [1, 5000, 3, 3, 70_000, 2, 4096, 0, 4095, 65_536, 1, 0];
    const total = sizes.reduce((a, b) => a + b, 0);
    // Exactly `total` bytes of text: cut at a character boundary, padded with ASCII.
    const long = utf8("é€𝄞x".repeat(total));
    let cut = total;
    while ((long[cut] & 0xc0) === 0x80) cut--;
    const textBytes = concat(long.subarray(0, cut), utf8("x".repeat(total - cut)));
    const pairs = [[Opcode.Binary, pattern(total)], [Opcode.Text, textBytes]] as const;
    for (const [opcode, payload] of pairs) {
      const frames: Uint8Array[] = [];
      let at = 0;
      sizes.forEach((size, i) => {
        const end = i === sizes.length - 1 ? payload.length : at + size;
        const piece = payload.subarray(at, end);
        const fin = i === sizes.length - 1;
        frames.push(i === 0 ? clientFrame({ opcode, payload: piece, fin }) : cont(piece, fin));
        at = end;
      });
      for (const chunk of [1 << 20, 1000, 7]) {
        const { recorder, assembler, parser } = pipeline({ maxMessageSize: total });
        pushInChunks(parser, concat(...frames), chunk, () => {
          assert.ok(assembler.bufferedBytes <= total);
        });
        if (opcode === Opcode.Binary) {
          assert.deepEqual(recorder.events, [{ type: "binary", data: payload }]);
        } else {
          const expected = new TextDecoder().decode(payload);
          assert.deepEqual(recorder.events, [{ type: "text", data: expected }]);
        }
      }
    }
  });

  test("text in 1-byte fragments, characters cut everywhere, is decoded whole", () => {
    const message = "a€𝄞ü\u{10FFFF}\uFEFFz".repeat(5_000);
    const wire = tinyFragments(Opcode.Text, utf8(message));
    const { recorder, assembler, parser } = pipeline({ maxFragments: Infinity });
    let peak = 0;
    pushInChunks(parser, wire, 1000, () => {
      peak = Math.max(peak, assembler.bufferedBytes);
    });
    assert.deepEqual(recorder.events, [{ type: "text", data: message }]);
    assert.ok(peak <= 2 * utf8(message).length, `peak ${peak}`);
  });

  test("invalid UTF-8 in 1-byte fragments fails on the fragment with the bad byte", () => {
    const good = utf8("ok € ");
    const wire = tinyFragments(Opcode.Text, concat(good, bytes(0xe2, 0x28, 0x41, 0x41)));
    const { parser } = pipeline();
    const perFrame = 7;
    // Every frame up to the good bytes and the lead byte E2 is accepted.
    parser.push(wire.subarray(0, (good.length + 1) * perFrame));
    assert.throws(
      () => parser.push(wire.subarray((good.length + 1) * perFrame, (good.length + 2) * perFrame)),
      (err: unknown) => err instanceof WebSocketError && err.closeCode === 1007,
    );
  });

  test("a compressed message in 1-byte fragments is joined once and inflated", () => {
    const calls: Uint8Array[] = [];
    const inflate: InflateFunction = (data) => {
      calls.push(data.slice());
      return data.slice().reverse();
    };
    const payload = utf8("olleh".repeat(1000));
    const wire = tinyFragments(Opcode.Text, payload);
    wire[0] |= 0x40; // RSV1 on the first frame
    const recorder = new MessageRecorder();
    const assembler = new MessageAssembler(recorder, {
      maxMessageSize: MB,
      maxFragments: Infinity,
      inflate,
    });
    const parser = new FrameParser(assembler, {
      role: "server",
      maxFrameSize: MB,
      allowRsv1: true,
    });
    pushInChunks(parser, wire, 333, () => {
      assert.ok(assembler.bufferedBytes <= 2 * payload.length);
    });
    assert.deepEqual(recorder.events, [{ type: "text", data: "hello".repeat(1000) }]);
    assert.equal(calls.length, 1);
    assert.deepEqual(calls[0], payload);
  });
});

describe("MessageAssembler: compressed messages (RSV1)", () => {
  test("RSV1 without an inflater is a protocol error (1002)", () => {
    const recorder = new MessageRecorder();
    const assembler = new MessageAssembler(recorder, { maxMessageSize: MB });
    const parser = new FrameParser(assembler, {
      role: "server",
      maxFrameSize: MB,
      allowRsv1: true,
    });
    assert.throws(
      () => parser.push(clientFrame({ opcode: Opcode.Text, rsv1: true, payload: bytes(1) })),
      (err: unknown) =>
        err instanceof WebSocketError && err.code === "RESERVED_BITS" && err.closeCode === 1002,
    );
  });

  test("the inflater gets the joined payload and the limit; its output is the message", () => {
    const calls: { data: Uint8Array; max: number }[] = [];
    // A stand-in codec: "inflating" reverses the bytes.
    const inflate: InflateFunction = (data, max) => {
      calls.push({ data: data.slice(), max });
      return data.slice().reverse();
    };
    const result = feed([
      clientFrame({ opcode: Opcode.Text, rsv1: true, fin: false, payload: utf8("ol") }),
      cont("leh"),
      clientFrame({ opcode: Opcode.Binary, rsv1: true, payload: bytes(1, 2, 3) }),
      text("plain"),
    ], { inflate, maxMessageSize: 1000 });
    assert.equal(result.error, null);
    assert.deepEqual(result.events, [
      { type: "text", data: "hello" },
      { type: "binary", data: bytes(3, 2, 1) },
      { type: "text", data: "plain" },
    ]);
    assert.deepEqual(calls, [{ data: utf8("olleh"), max: 1000 }, {
      data: bytes(1, 2, 3),
      max: 1000,
    }]);
  });

  test("inflated text that is not UTF-8: 1007", () => {
    const result = feed(
      [clientFrame({ opcode: Opcode.Text, rsv1: true, payload: bytes(1) })],
      { inflate: () => bytes(0xff) },
    );
    assertError(result, "INVALID_UTF8", 1007);
  });
});

describe("MessageAssembler: random streams", () => {
  /** A seeded PRNG, so a failure can be replayed. */
  const random = seededRandom;

  const CHARS = [
    "a",
    "Z",
    " ",
    "é",
    "€",
    "𝄞",
    "\ufeff",
    "\u0000",
    "\u07ff",
    "\uffff",
    "\u{10ffff}",
  ];

  for (const role of ["server", "client"] as const) {
    test(`${role}: fragmented messages, interleaved control frames, random cuts`, () => {
      for (let seed = 1; seed <= 150; seed++) {
        const rand = random(seed);
        const int = (n: number) => Math.floor(rand() * n);
        const build = (parts: Parameters<typeof clientFrame>[0]) =>
          role === "server"
            ? clientFrame({ ...parts, mask: bytes(int(256), int(256), int(256), int(256)) })
            : serverFrame(parts);
        const frames: Uint8Array[] = [];
        const expected: MessageEvent[] = [];
        const control = () => {
          const data = pattern(int(4) === 0 ? 125 : int(6), int(100));
          const isPing = int(2) === 0;
          frames.push(build({ opcode: isPing ? Opcode.Ping : Opcode.Pong, payload: data }));
          expected.push({ type: isPing ? "ping" : "pong", data });
        };
        for (let m = int(6) + 1; m > 0; m--) {
          const isText = int(2) === 0;
          let payload: Uint8Array;
          let str = "";
          if (isText) {
            for (let n = int(int(5) === 0 ? 3000 : 40); n > 0; n--) str += CHARS[int(CHARS.length)];
            payload = utf8(str);
          } else {
            payload = pattern(int(int(5) === 0 ? 70_000 : 300), seed);
          }
          // Cut the payload into fragments, some empty, anywhere (inside characters too).
          const cuts = [0];
          for (let n = int(4); n > 0; n--) cuts.push(int(payload.length + 1));
          cuts.push(payload.length);
          cuts.sort((a, b) => a - b);
          for (let f = 0; f + 1 < cuts.length; f++) {
            if (f > 0 && int(3) === 0) control();
            frames.push(build({
              opcode: f === 0 ? (isText ? Opcode.Text : Opcode.Binary) : Opcode.Continuation,
              fin: f + 2 === cuts.length,
              payload: payload.subarray(cuts[f], cuts[f + 1]),
            }));
          }
          expected.push(isText ? { type: "text", data: str } : { type: "binary", data: payload });
          if (int(4) === 0) control();
        }
        const input = concat(...frames);
        const chunks: Uint8Array[] = [];
        for (let at = 0; at < input.length;) {
          const size = int(4) === 0 ? int(3) + 1 : int(int(3) === 0 ? 5000 : 200) + 1;
          chunks.push(input.subarray(at, at + size));
          at += size;
        }
        const result = feed(chunks, { role });
        assert.equal(result.error, null, `seed ${seed}: ${result.error?.message}`);
        assert.deepEqual(result.events, expected, `seed ${seed}`);
      }
    });
  }
});
