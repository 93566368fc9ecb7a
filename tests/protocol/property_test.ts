/**
 * Property-based tests of the protocol core (fast-check): the frame parser,
 * message assembly with its UTF-8 check, the HTTP head reader and parser, and
 * the inflater. For each: a byte stream split at arbitrary points gives the
 * same events as the whole; arbitrary bytes raise nothing but the project's
 * own errors; nothing delivered or buffered exceeds the configured limits.
 *
 * Runs are bounded (`numRuns`) and reproducible: the seed is fixed, and can be
 * changed with the environment variable `SLUICE_FC_SEED`; on failure
 * fast-check prints the seed and the path of the shrunk counterexample
 * (`{ seed, path }` replays it).
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import fc from "fast-check";
import { FrameParser } from "../../src/protocol/frame.ts";
import { MessageAssembler } from "../../src/protocol/message.ts";
import { Utf8Validator } from "../../src/protocol/utf8.ts";
import { HandshakeError, WebSocketError } from "../../src/protocol/errors.ts";
import { HeadReader, parseRequestHead } from "../../src/protocol/http.ts";
import { PerMessageDeflate } from "../../src/protocol/deflate_codec.ts";
import { Opcode } from "../../src/protocol/opcodes.ts";
import {
  closePayload,
  concat,
  frame,
  FrameRecorder,
  KEY,
  type MessageEvent,
  MessageRecorder,
  utf8,
} from "./_helpers.ts";

const SEED = Number(process.env.SLUICE_FC_SEED ?? 20_240_607);

/** Settings shared by every property: fixed seed, bounded run count. */
function settings(numRuns: number): fc.Parameters<unknown> {
  return { seed: SEED, numRuns, endOnFailure: false };
}

/** Cuts `data` at the given points (taken modulo its length), in order. */
function cut(data: Uint8Array, points: number[]): Uint8Array[] {
  const at = [...new Set(points.map((p) => p % (data.length + 1)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const p of at) {
    chunks.push(data.slice(from, p));
    from = p;
  }
  chunks.push(data.slice(from));
  return chunks;
}

/** Arbitrary cut points. */
const cutPoints = fc.array(fc.nat(), { maxLength: 24 });

/** A masking key, sometimes all zeros (the unmasking fast path skips those). */
const maskKey = fc.oneof(
  fc.uint8Array({ minLength: 4, maxLength: 4 }),
  fc.constant(new Uint8Array(4)),
);

/** Payload sizes around the length-encoding boundaries, and small ones. */
const payload = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 120, maxLength: 300 }) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 65_530, max: 65_540 }).map((n) => new Uint8Array(n).fill(0x61)),
  },
);

/** Description of the error a run ended with, comparable across runs. */
function errorOf(error: unknown): string {
  if (error instanceof WebSocketError) return `${error.code}/${error.closeCode}`;
  if (error instanceof HandshakeError) return `handshake/${error.status}`;
  throw error; // anything else fails the property, with its stack
}

// ---------------------------------------------------------------------------

describe("property: frame parser", () => {
  const MAX_FRAME = 70_000;

  /** Feeds chunks; returns merged events, the error (if any), and checks limits on the way. */
  function parse(chunks: Uint8Array[], role: "server" | "client") {
    const recorder = new FrameRecorder();
    const parser = new FrameParser(recorder, { role, maxFrameSize: MAX_FRAME, allowRsv1: true });
    let error: string | null = null;
    try {
      for (const chunk of chunks) parser.push(chunk);
    } catch (e) {
      error = errorOf(e);
    }
    const events = recorder.merged();
    for (const event of events) {
      if (event.type === "start") assert.ok(event.length <= MAX_FRAME, "frame over the limit");
    }
    return { events, error };
  }

  const frameSpec = fc.record({
    opcode: fc.constantFrom(0x0, 0x1, 0x2, 0x8, 0x9, 0xa),
    fin: fc.boolean(),
    rsv1: fc.boolean(),
    payload,
    mask: maskKey,
  });

  test("valid frames split anywhere give the same events as whole", () => {
    fc.assert(
      fc.property(fc.array(frameSpec, { maxLength: 6 }), cutPoints, (specs, points) => {
        const frames = specs.map((s) => {
          const control = s.opcode >= 8;
          return frame({
            opcode: s.opcode,
            fin: control ? true : s.fin,
            rsv1: control || s.opcode === 0 ? false : s.rsv1,
            payload: control ? s.payload.subarray(0, 125) : s.payload,
            mask: s.mask,
          });
        });
        const wire = concat(...frames);
        const whole = parse([wire], "server");
        assert.equal(whole.error, null);
        assert.equal(whole.events.filter((e) => e.type === "end").length, specs.length);
        assert.deepEqual(parse(cut(wire, points), "server"), whole);
      }),
      settings(1000),
    );
  });

  test("arbitrary bytes, split anywhere: only WebSocketError, same outcome as whole", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 200 }),
        cutPoints,
        fc.constantFrom<"server" | "client">("server", "client"),
        (wire, points, role) => {
          const whole = parse([wire], role);
          assert.deepEqual(parse(cut(wire, points), role), whole);
          // Payload delivered never exceeds what the header announced.
          let announced = 0, got = 0;
          for (const e of whole.events) {
            if (e.type === "start") (announced = e.length), (got = 0);
            if (e.type === "payload") got += e.data.length;
            assert.ok(got <= announced);
          }
        },
      ),
      settings(5000),
    );
  });

  test("a length over maxFrameSize is refused at the header, before any payload", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        fc.constantFrom<7 | 16 | 64>(7, 16, 64),
        fc.uint8Array({ maxLength: 64 }),
        cutPoints,
        (length, bits, body, points) => {
          if (bits === 7 && length > 125n) length %= 126n;
          if (bits === 16 && length > 0xffffn) length %= 0x10000n;
          const head = frame({ opcode: Opcode.Binary, length, lengthBits: bits, mask: KEY });
          const run = parse(cut(concat(head, body), points), "server");
          if (length > BigInt(MAX_FRAME) && run.error !== "INVALID_LENGTH/1002") {
            assert.equal(run.error, "FRAME_TOO_BIG/1009");
            assert.deepEqual(run.events, []);
          }
        },
      ),
      settings(2000),
    );
  });
});

// ---------------------------------------------------------------------------

describe("property: message assembly and UTF-8", () => {
  const MAX_MESSAGE = 4000;
  const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

  /** Bytes biased towards the interesting parts of UTF-8: valid text with bad bytes mixed in. */
  const utf8ish = fc.oneof(
    fc.string({ unit: "binary", maxLength: 30 }).map(utf8),
    // Long enough for the native check of pieces of 256 bytes and more.
    fc.tuple(
      fc.string({ unit: "binary", minLength: 100, maxLength: 500 }),
      fc.uint8Array({ maxLength: 2 }),
      fc.nat(),
    ).map(([text, bad, at]) => {
      const bytes = utf8(text);
      const i = at % (bytes.length + 1);
      return concat(bytes.subarray(0, i), bad, bytes.subarray(i));
    }),
    fc.array(
      fc.oneof(
        fc.string({ unit: "binary", maxLength: 4 }).map(utf8),
        fc.uint8Array({ maxLength: 3 }),
        fc.constantFrom(
          [0xc0, 0x80],
          [0xed, 0xa0, 0x80],
          [0xf4, 0x90, 0x80, 0x80],
          [0xe2, 0x82],
          [0xf0, 0x9d],
          [0xef, 0xbb, 0xbf],
        ).map((b) => new Uint8Array(b)),
      ),
      { maxLength: 12 },
    ).map((parts) => concat(...parts)),
  );

  interface Run {
    events: MessageEvent[];
    error: string | null;
  }

  /** Pushes chunks through a parser and an assembler, checking limits after each push. */
  function assemble(chunks: Uint8Array[], maxFragments?: number): Run {
    const recorder = new MessageRecorder();
    const assembler = new MessageAssembler(recorder, { maxMessageSize: MAX_MESSAGE, maxFragments });
    const parser = new FrameParser(assembler, { role: "server", maxFrameSize: MAX_MESSAGE });
    let error: string | null = null;
    try {
      for (const chunk of chunks) {
        parser.push(chunk);
        assert.ok(assembler.bufferedBytes <= MAX_MESSAGE + 125, "buffered past the limit");
      }
    } catch (e) {
      error = errorOf(e);
    }
    for (const event of recorder.events) {
      if (event.type === "text") assert.ok(utf8(event.data).length <= MAX_MESSAGE);
      if (event.type === "binary") assert.ok(event.data.length <= MAX_MESSAGE);
    }
    return { events: recorder.events, error };
  }

  /** Splits `data` into fragments at the given points. */
  function fragments(data: Uint8Array, points: number[]): Uint8Array[] {
    return points.length === 0 ? [data] : cut(data, points);
  }

  test("text in any fragments, split anywhere: the events a strict decoder predicts", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            text: utf8ish,
            fragmentAt: fc.array(fc.nat(), { maxLength: 5 }),
            pingBetween: fc.boolean(),
          }),
          { minLength: 1, maxLength: 4 },
        ),
        maskKey,
        cutPoints,
        (messages, mask, points) => {
          const frames: Uint8Array[] = [];
          const expected: MessageEvent[] = [];
          let expectedError: string | null = null;
          for (const m of messages) {
            const pieces = fragments(m.text, m.fragmentAt);
            pieces.forEach((piece, i) => {
              frames.push(frame({
                opcode: i === 0 ? Opcode.Text : Opcode.Continuation,
                fin: i === pieces.length - 1,
                payload: piece,
                mask,
              }));
              if (m.pingBetween && i < pieces.length - 1) {
                frames.push(frame({ opcode: Opcode.Ping, payload: utf8("p"), mask }));
              }
            });
            if (expectedError !== null) continue;
            // The oracle: a fatal TextDecoder on the whole message, and the
            // pings that come before the fragment holding the first bad byte.
            let ok = true;
            try {
              strictDecoder.decode(m.text);
            } catch {
              ok = false;
            }
            if (ok) {
              if (m.pingBetween) {
                for (let i = 1; i < pieces.length; i++) {
                  expected.push({ type: "ping", data: utf8("p") });
                }
              }
              expected.push({ type: "text", data: strictDecoder.decode(m.text) });
            } else {
              expectedError = "INVALID_UTF8/1007";
            }
          }
          const wire = concat(...frames);
          const whole = assemble([wire]);
          const split = assemble(cut(wire, points));
          assert.equal(whole.error, expectedError);
          assert.deepEqual(split, whole);
          // Before a failure, only pings of the failing message may be extra.
          const prefix = whole.events.filter((e) => e.type !== "ping");
          assert.deepEqual(prefix, expected.filter((e) => e.type !== "ping"));
          if (expectedError === null) assert.deepEqual(whole.events, expected);
        },
      ),
      settings(3000),
    );
  });

  test("binary in any fragments, split anywhere, arrives whole", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: MAX_MESSAGE }),
        fc.array(fc.nat(), { maxLength: 40 }),
        fc.nat({ max: 30 }),
        maskKey,
        cutPoints,
        (data, fragmentAt, empties, mask, points) => {
          const pieces = fragments(data, fragmentAt);
          // Empty continuations in the middle cost nothing and change nothing.
          pieces.splice(1, 0, ...Array(empties).fill(new Uint8Array(0)));
          const wire = concat(...pieces.map((piece, i) =>
            frame({
              opcode: i === 0 ? Opcode.Binary : Opcode.Continuation,
              fin: i === pieces.length - 1,
              payload: piece,
              mask,
            })
          ));
          const expected = pieces.length > 64 ? "TOO_MANY_FRAGMENTS/1009" : null;
          const run = assemble(cut(wire, points), 64);
          assert.equal(run.error, expected);
          if (expected === null) assert.deepEqual(run.events, [{ type: "binary", data }]);
        },
      ),
      settings(2000),
    );
  });

  test("arbitrary frames and bytes: only WebSocketError, limits held, split-invariant", () => {
    const anyFrame = fc.record({
      opcode: fc.integer({ min: 0, max: 15 }),
      fin: fc.boolean(),
      rsv1: fc.boolean(),
      payload: fc.oneof(utf8ish, fc.uint8Array({ maxLength: 1200 })),
      closeCode: fc.integer({ min: 0, max: 5000 }),
    });
    fc.assert(
      fc.property(
        fc.array(anyFrame, { maxLength: 8 }),
        fc.uint8Array({ maxLength: 20 }),
        maskKey,
        cutPoints,
        (specs, garbage, mask, points) => {
          const wire = concat(
            ...specs.map((s) =>
              frame({
                opcode: s.opcode,
                fin: s.fin,
                rsv1: s.rsv1,
                payload: s.opcode === Opcode.Close
                  ? closePayload(s.closeCode, "").subarray(0, s.payload.length % 3 === 0 ? 0 : 2)
                  : s.payload,
                mask,
              })
            ),
            garbage,
          );
          const whole = assemble([wire]);
          assert.deepEqual(assemble(cut(wire, points)), whole);
        },
      ),
      settings(3000),
    );
  });
});

describe("property: Utf8Validator agrees with a fatal TextDecoder", () => {
  const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

  function valid(bytes: Uint8Array): boolean {
    try {
      decoder.decode(bytes);
      return true;
    } catch {
      return false;
    }
  }

  // Long pieces too, so that both the byte loop and the native check run.
  const text = fc.oneof(
    fc.string({ unit: "binary", maxLength: 400 }).map(utf8),
    fc.tuple(
      fc.string({ unit: "binary", minLength: 100, maxLength: 400 }),
      fc.uint8Array({ maxLength: 4 }),
      fc.nat(),
      fc.string({ unit: "binary", maxLength: 200 }),
    ).map(([a, bad, at, b]) => {
      const head = utf8(a);
      const i = at % (head.length + 1);
      return concat(head.subarray(0, i), bad, head.subarray(i), utf8(b));
    }),
    fc.uint8Array({ maxLength: 600 }),
  );

  test("whole and split anywhere", () => {
    fc.assert(
      fc.property(text, cutPoints, (bytes, points) => {
        const expected = valid(bytes);
        const v = new Utf8Validator();
        let ok = true;
        for (const chunk of cut(bytes, points)) {
          if (!v.push(chunk)) {
            ok = false;
            break;
          }
        }
        assert.equal(ok && v.complete, expected);
        // A piece is rejected exactly when no valid text starts with the bytes so far.
        const w = new Utf8Validator();
        assert.equal(w.push(bytes) && w.complete, expected);
      }),
      settings(10_000),
    );
  });
});

// ---------------------------------------------------------------------------

describe("property: HTTP head reader and request parser", () => {
  const MAX_HEAD = 512;

  interface HeadRun {
    head: string | null;
    rest: number[] | null;
    parsed: unknown;
    error: string | null;
  }

  function read(chunks: Uint8Array[]): HeadRun {
    const reader = new HeadReader(MAX_HEAD);
    try {
      for (let i = 0; i < chunks.length; i++) {
        const result = reader.push(chunks[i]);
        if (result === null) continue;
        const rest = concat(result.rest, ...chunks.slice(i + 1));
        assert.ok(result.head.length <= MAX_HEAD, "head past maxHandshakeSize");
        let parsed: unknown = null;
        try {
          const req = parseRequestHead(result.head);
          parsed = { ...req, headers: [...req.headers] };
        } catch (e) {
          parsed = errorOf(e);
        }
        // Bytes after the head are what followed it, whatever the chunking.
        return {
          head: new TextDecoder("latin1").decode(result.head),
          rest: Array.from(rest),
          parsed,
          error: null,
        };
      }
      return { head: null, rest: null, parsed: null, error: null };
    } catch (e) {
      return { head: null, rest: null, parsed: null, error: errorOf(e) };
    }
  }

  /** Heads built from plausible and hostile lines. */
  const headText = fc.tuple(
    fc.oneof(
      fc.constant("GET /chat HTTP/1.1"),
      fc.constant("GET / HTTP/9.9"),
      fc.string({ maxLength: 40 }),
    ),
    fc.array(
      fc.oneof(
        fc.constantFrom(
          "Host: example.com",
          "Upgrade: websocket",
          "Connection: Upgrade",
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
          "Sec-WebSocket-Version: 13",
          " folded",
          "NoColon",
          ": empty name",
        ),
        fc.tuple(fc.string({ maxLength: 12 }), fc.string({ unit: "binary", maxLength: 30 }))
          .map(([n, v]) => `${n}: ${v}`),
      ),
      { maxLength: 8 },
    ),
    fc.uint8Array({ maxLength: 20 }),
  ).map(([start, lines, after]) => {
    const text = [start, ...lines].join("\r\n") + "\r\n\r\n";
    // Latin-1 bytes for code units up to 0xFF, UTF-8 for the rest.
    const head = Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff);
    return concat(head, after);
  });

  test("split anywhere: the same head, rest and verdict as whole; only HandshakeError", () => {
    fc.assert(
      fc.property(
        fc.oneof(headText, fc.uint8Array({ maxLength: 700 })),
        cutPoints,
        (wire, points) => {
          const whole = read([wire]);
          assert.deepEqual(read(cut(wire, points)), whole);
          if (whole.head !== null) {
            assert.deepEqual(whole.rest, Array.from(wire.subarray(whole.head.length)));
          }
        },
      ),
      settings(4000),
    );
  });

  test("a head longer than the limit is refused with 431 however it arrives", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: MAX_HEAD - 3, max: MAX_HEAD * 2 }),
        cutPoints,
        (length, points) => {
          const line = "GET / HTTP/1.1\r\nX: ";
          const wire = utf8(line + "a".repeat(Math.max(0, length - line.length - 4)) + "\r\n\r\n");
          const run = read(cut(wire, points));
          if (wire.length <= MAX_HEAD) assert.equal(run.error, null);
          else assert.equal(run.error, "handshake/431");
        },
      ),
      settings(300),
    );
  });
});

// ---------------------------------------------------------------------------

/**
 * The field rules written the plain way (split, regular expressions), to
 * check the one-pass parser against: the same fields, or a 400 for the
 * same heads.
 */
function referenceFields(text: string): [string, string][] | "400" {
  const lines = text.split("\r\n").slice(1, -2);
  const out: [string, string][] = [];
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) return "400";
    const name = line.slice(0, colon);
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) return "400";
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (!/^[\t\x20-\x7e\x80-\xff]*$/.test(value)) return "400";
    out.push([name.toLowerCase(), value]);
  }
  return out;
}

describe("property: header field lines", () => {
  const fieldChar = fc.constantFrom(
    ...'aZ09-_!~:; \t\r\n\x00\x7f\x80\xff\u0100é"(),/',
  );
  const line = fc.string({ unit: fieldChar, maxLength: 24 });

  test("the one-pass parser agrees with the plain rules on any field lines", () => {
    fc.assert(
      fc.property(fc.array(line, { maxLength: 6 }), (lines) => {
        const text = ["GET / HTTP/1.1", ...lines].join("\r\n") + "\r\n\r\n";
        const reference = referenceFields(text);
        let expected: [string, string][] | "400" = "400";
        if (reference !== "400") {
          // As Headers lists them: names sorted, repeated ones joined with ", ".
          const joined = new Map<string, string>();
          for (const [name, value] of reference) {
            joined.set(name, joined.has(name) ? `${joined.get(name)}, ${value}` : value);
          }
          expected = [...joined].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
        }
        let got: [string, string][] | "400";
        try {
          const head = parseRequestHead(text);
          got = [...head.headers];
          for (const [name, value] of got) assert.equal(head.fields.get(name), value);
        } catch (err) {
          assert.ok(err instanceof HandshakeError, `not a HandshakeError: ${err}`);
          assert.equal(err.status, 400);
          got = "400";
        }
        assert.deepEqual(got, expected, JSON.stringify(text));
      }),
      settings(3000),
    );
  });

  test("known field names in any case, and near misses, read as their lowercase", () => {
    const names = [
      "Host",
      "Upgrade",
      "Connection",
      "Origin",
      "Sec-WebSocket-Key",
      "Sec-WebSocket-Version",
      "Sec-WebSocket-Extensions",
      "Sec-WebSocket-Protocol",
      "User-Agent",
      "Cookie",
      "Accept",
      // Same lengths, one character off.
      "Hosts",
      "Upgradf",
      "Sec-WebSocket-Kez",
      "Origim",
      "X-Other",
    ];
    const name = fc.tuple(fc.constantFrom(...names), fc.array(fc.boolean(), { maxLength: 30 }))
      .map(([n, flips]) =>
        [...n].map((c, i) =>
          flips[i] ? (c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase()) : c
        )
          .join("")
      );
    const fieldLine = fc.tuple(name, fc.constantFrom("a", " b ", "", "v, w")).map(([n, v]) =>
      `${n}:${v}`
    );
    fc.assert(
      fc.property(fc.array(fieldLine, { maxLength: 8 }), (lines) => {
        const text = ["GET / HTTP/1.1", ...lines].join("\r\n") + "\r\n\r\n";
        const reference = referenceFields(text);
        assert.notEqual(reference, "400");
        const head = parseRequestHead(text);
        for (const [n] of reference as [string, string][]) {
          const joined = (reference as [string, string][]).filter(([m]) => m === n).map(([, v]) =>
            v
          )
            .join(", ");
          assert.equal(head.fields.get(n), joined, JSON.stringify(text));
        }
      }),
      settings(2000),
    );
  });
});

// ---------------------------------------------------------------------------

describe("property: inflater", () => {
  const params = {
    serverNoContextTakeover: false,
    clientNoContextTakeover: false,
    serverMaxWindowBits: 15,
    clientMaxWindowBits: 15,
  };

  /** Compressible data: runs and repeats as well as noise. */
  const data = fc.oneof(
    fc.uint8Array({ maxLength: 300 }),
    fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 20 }), fc.integer({ min: 1, max: 400 }))
      .map(([unit, times]) => concat(...Array(times).fill(unit))),
  );

  function inflateRun(codec: PerMessageDeflate, payload: Uint8Array | Uint8Array[], max: number) {
    try {
      const out = codec.decompress(payload, max);
      assert.ok(out.length <= max, `inflated ${out.length} bytes past ${max}`);
      return { out: Array.from(out), error: null };
    } catch (e) {
      return { out: null, error: errorOf(e) };
    }
  }

  test("messages with context takeover, split into frames anywhere: the bytes sent", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(data, cutPoints), { minLength: 1, maxLength: 5 }),
        (messages) => {
          const client = new PerMessageDeflate(params, "client");
          const server = new PerMessageDeflate(params, "server");
          try {
            for (const [message, points] of messages) {
              const compressed = client.compress(message);
              const run = inflateRun(server, cut(compressed, points), 1 << 20);
              assert.deepEqual(run, { out: Array.from(message), error: null });
            }
          } finally {
            client.close();
            server.close();
          }
        },
      ),
      settings(1000),
    );
  });

  test("the output limit holds: past maxSize is a 1009, never a bigger buffer", () => {
    fc.assert(
      fc.property(data, fc.nat({ max: 4000 }), cutPoints, (message, max, points) => {
        const client = new PerMessageDeflate(params, "client");
        const server = new PerMessageDeflate(
          { ...params, clientNoContextTakeover: true },
          "server",
        );
        try {
          const compressed = client.compress(message);
          const run = inflateRun(server, cut(compressed, points), max);
          if (message.length <= max) assert.deepEqual(run.out, Array.from(message));
          else assert.equal(run.error, "MESSAGE_TOO_BIG/1009");
        } finally {
          client.close();
          server.close();
        }
      }),
      settings(2000),
    );
  });

  test("arbitrary bytes, whole or in pieces: only WebSocketError, output within maxSize", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }),
          // Valid DEFLATE with bytes flipped.
          fc.tuple(data, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })))).map(
            ([message, flips]) => {
              const c = new PerMessageDeflate(params, "client");
              const out = c.compress(message);
              c.close();
              for (const [at, x] of flips) if (out.length > 0) out[at % out.length] ^= x;
              return out;
            },
          ),
        ),
        fc.nat({ max: 2000 }),
        cutPoints,
        (bytes, max, points) => {
          const noTakeover = { ...params, clientNoContextTakeover: true };
          const a = new PerMessageDeflate(noTakeover, "server");
          const b = new PerMessageDeflate(noTakeover, "server");
          try {
            const whole = inflateRun(a, bytes, max);
            const split = inflateRun(b, cut(bytes, points), max);
            if (whole.error === null || split.error === null) {
              assert.deepEqual(split, whole);
            } else {
              // Input that is both invalid and inflates past maxSize fails
              // either way, but which is found first depends on where zlib
              // stops: with the whole input it reports the bad code in the
              // same call that produced the byte too many. (The assembler
              // joins a message's frames before inflating, so this never
              // depends on how the wire was cut.)
              const either = ["INVALID_COMPRESSED_DATA/1007", "MESSAGE_TOO_BIG/1009"];
              if (whole.error !== split.error) {
                assert.ok(either.includes(whole.error) && either.includes(split.error));
              }
            }
          } finally {
            a.close();
            b.close();
          }
        },
      ),
      settings(3000),
    );
  });
});
