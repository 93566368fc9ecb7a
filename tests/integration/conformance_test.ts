/**
 * An Autobahn-style conformance sweep of the server over real loopback
 * sockets: one table per Autobahn testsuite section (1 framing, 2 pings,
 * 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close, 9 limits,
 * 12/13 compression). Each row says which frames a client sends (possibly
 * chopped into chunks of a given size), which frames must come back in which
 * order, and whether the server must then fail the connection with which
 * close code. After every failing row, a control client on the same server
 * must still get its echo: one bad peer never disturbs the others.
 *
 * The Autobahn testsuite itself cannot run here; these rows follow its case
 * numbering so a reader can compare. `server_frames_test.ts` covers the
 * application-facing side of violations (error codes, callbacks); this file
 * covers the wire across the whole matrix.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import zlib from "node:zlib";
import { serve, type ServeOptions, type Server } from "../../mod.ts";
import {
  buildFrame,
  closeFrame,
  concat,
  Op,
  pattern,
  RawClient,
  type ServerFrame,
  sleep,
  upgradeRequest,
  utf8,
  watchUnhandledRejections,
  within,
} from "./_raw_client.ts";

const HOST = "127.0.0.1";
const fatal = new TextDecoder("utf-8", { fatal: true });

/** A frame we expect from the server: opcode and exact payload. */
interface Expected {
  op: number;
  payload: Uint8Array;
}

/** One conformance case. */
interface Row {
  /** Autobahn-style case id and a short description. */
  name: string;
  /** The frames to send, concatenated into one byte stream. */
  send: Uint8Array[];
  /** Chunk size to chop the stream into; each chunk is its own write. @default whole */
  chunk?: number;
  /** The frames that must come back, in order, before anything else. */
  expect?: Expected[];
  /**
   * `undefined`: the connection stays open (checked with a trailing ping).
   * A number: the server must then send a close frame with this code
   * (1005 means an empty close payload) and close TCP.
   */
  close?: number;
}

function text(payload: string | Uint8Array): Expected {
  return { op: Op.Text, payload: typeof payload === "string" ? utf8(payload) : payload };
}
function binary(payload: Uint8Array): Expected {
  return { op: Op.Binary, payload };
}
function pong(payload: string | Uint8Array): Expected {
  return { op: Op.Pong, payload: typeof payload === "string" ? utf8(payload) : payload };
}
function frame(
  opcode: number,
  payload: string | Uint8Array = new Uint8Array(0),
  extra: { fin?: boolean; rsv1?: boolean; rsv2?: boolean; rsv3?: boolean } = {},
): Uint8Array {
  return buildFrame({ opcode, payload, ...extra });
}
function describeFrame(f: ServerFrame): string {
  const shown = f.payload.length > 40
    ? `${f.payload.length} bytes`
    : JSON.stringify(Buffer.from(f.payload).toString("latin1"));
  return `op=${f.opcode} fin=${f.fin} payload=${shown}`;
}

/** Writes `bytes` in `chunk`-sized writes; small streams flush every write so reads split. */
async function sendChopped(client: RawClient, bytes: Uint8Array, chunk?: number): Promise<void> {
  if (chunk === undefined || chunk >= bytes.length) {
    await client.writeAndFlush(bytes);
    return;
  }
  const pieces = Math.ceil(bytes.length / chunk);
  for (let at = 0; at < bytes.length; at += chunk) {
    const piece = bytes.subarray(at, at + chunk);
    if (pieces <= 400) await client.writeAndFlush(piece);
    else client.write(piece);
  }
  await client.writeAndFlush(new Uint8Array(0));
}

/** A running echo server plus a control client that must keep working. */
interface Harness {
  server: Server;
  port: number;
  control: RawClient;
  controlRound: number;
}

async function startHarness(
  options: Omit<ServeOptions, "port" | "hostname"> = {},
): Promise<Harness> {
  const server = await serve({ closeTimeout: 2000, ...options, port: 0, hostname: HOST }, {
    message(ws, data) {
      ws.send(data);
    },
  });
  const port = server.addr.port;
  const control = await RawClient.open(port);
  return { server, port, control, controlRound: 0 };
}

async function stopHarness(h: Harness): Promise<void> {
  h.control.destroy();
  await within(h.server.shutdown(), 10_000, "server shutdown");
}

/** The control client still gets an echo: the server keeps serving others. */
async function assertControlEchoes(h: Harness, after: string): Promise<void> {
  const message = `control ${h.controlRound++}`;
  h.control.write(frame(Op.Text, message));
  const reply = await h.control.expectFrame(5000);
  assert.equal(reply.opcode, Op.Text, `control client after ${after}: opcode`);
  assert.equal(fatal.decode(reply.payload), message, `control client after ${after}`);
}

function assertFrame(got: ServerFrame, want: Expected, what: string): void {
  assert.equal(got.opcode, want.op, `${what}: opcode (got ${describeFrame(got)})`);
  assert.equal(got.fin, true, `${what}: FIN`);
  assert.ok(!got.rsv1 && !got.rsv2 && !got.rsv3, `${what}: no RSV bits`);
  assert.equal(got.masked, false, `${what}: server frames are unmasked`);
  assert.equal(got.payload.length, want.payload.length, `${what}: payload length`);
  assert.ok(Buffer.from(got.payload).equals(Buffer.from(want.payload)), `${what}: payload bytes`);
}

/** Runs one row on a fresh connection and checks every frame that comes back. */
async function runRow(h: Harness, row: Row): Promise<void> {
  const client = await RawClient.open(h.port);
  try {
    await sendChopped(client, concat(...row.send), row.chunk);
    const expect = row.expect ?? [];
    for (let i = 0; i < expect.length; i++) {
      const got = await client.readFrame(10_000);
      assert.ok(got !== null, `${row.name}: stream ended before expected frame ${i}`);
      assertFrame(got, expect[i], `${row.name}: frame ${i}`);
    }
    if (row.close === undefined) {
      // Nothing else may have come back: the next frame answers our marker ping.
      client.write(frame(Op.Ping, "marker"));
      const got = await client.expectFrame(5000);
      assertFrame(got, pong("marker"), `${row.name}: the next frame is the marker pong`);
      client.write(closeFrame(1000));
      const closing = await client.expectClose(5000);
      assert.equal(closing.code, 1000, `${row.name}: our close 1000 is echoed`);
      assert.deepEqual(closing.before, []);
    } else {
      const got = await client.readFrame(5000);
      assert.ok(got !== null, `${row.name}: stream ended without a close frame`);
      assert.equal(got.opcode, Op.Close, `${row.name}: expected close, got ${describeFrame(got)}`);
      const code = got.payload.length === 0 ? 1005 : (got.payload[0] << 8) | got.payload[1];
      assert.equal(code, row.close, `${row.name}: close code`);
      if (got.payload.length > 2) fatal.decode(got.payload.subarray(2));
    }
    assert.ok(await client.waitForEnd(3000), `${row.name}: the server closes TCP`);
    assert.equal(client.buffered, 0, `${row.name}: nothing after the close frame`);
  } finally {
    client.destroy();
  }
  if (row.close !== undefined && row.close !== 1000 && row.close !== 1005) {
    await assertControlEchoes(h, row.name);
  }
}

/** One `test()` per section: runs all rows on one server, no unhandled rejections. */
function section(
  name: string,
  rows: () => Row[],
  options: Omit<ServeOptions, "port" | "hostname"> = {},
): void {
  test(name, async () => {
    const rejections = watchUnhandledRejections();
    const h = await startHarness(options);
    try {
      for (const row of rows()) await runRow(h, row);
      await assertControlEchoes(h, "the section");
    } finally {
      await stopHarness(h);
      rejections.stop();
    }
    await sleep(10);
    assert.deepEqual(rejections.reasons, [], "no unhandled promise rejection");
  });
}

// ---------------------------------------------------------------------------
// 1.x framing
// ---------------------------------------------------------------------------

function framingRows(): Row[] {
  const rows: Row[] = [];
  const sizes = [0, 125, 126, 127, 128, 65535, 65536];
  for (const chunk of [undefined, 997, 1]) {
    for (const size of sizes) {
      // Byte-by-byte for the 64 KiB sizes is still only ~130k writes per row.
      const textPayload = utf8("*".repeat(size));
      const binPayload = pattern(size, size);
      const how = chunk === undefined ? "whole" : `in ${chunk}-byte chunks`;
      rows.push({
        name: `1.1 text ${size} bytes ${how}`,
        send: [frame(Op.Text, textPayload)],
        chunk,
        expect: [text(textPayload)],
      });
      rows.push({
        name: `1.2 binary ${size} bytes ${how}`,
        send: [frame(Op.Binary, binPayload)],
        chunk,
        expect: [binary(binPayload)],
      });
    }
  }
  // Lengths in a non-minimal encoding are still lengths (§5.2 asks for minimal, Autobahn accepts).
  return rows;
}

// ---------------------------------------------------------------------------
// 2.x pings
// ---------------------------------------------------------------------------

function pingRows(): Row[] {
  const bin = new Uint8Array([0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff]);
  const tenPings = Array.from({ length: 10 }, (_, i) => `ping ${i}`);
  return [
    { name: "2.1 ping without payload", send: [frame(Op.Ping)], expect: [pong("")] },
    {
      name: "2.2 ping with text payload",
      send: [frame(Op.Ping, "Hello, world!")],
      expect: [pong("Hello, world!")],
    },
    { name: "2.3 ping with binary payload", send: [frame(Op.Ping, bin)], expect: [pong(bin)] },
    {
      name: "2.4 ping with 125 bytes",
      send: [frame(Op.Ping, pattern(125))],
      expect: [pong(pattern(125))],
    },
    { name: "2.5 ping with 126 bytes", send: [frame(Op.Ping, pattern(126))], close: 1002 },
    {
      name: "2.6 ping with 125 bytes, byte by byte",
      send: [frame(Op.Ping, pattern(125, 3))],
      chunk: 1,
      expect: [pong(pattern(125, 3))],
    },
    { name: "2.7 unsolicited pong without payload", send: [frame(Op.Pong)] },
    { name: "2.8 unsolicited pong with payload", send: [frame(Op.Pong, "unsolicited")] },
    {
      name: "2.9 unsolicited pong, then ping",
      send: [frame(Op.Pong, "unsolicited"), frame(Op.Ping, "solicited")],
      expect: [pong("solicited")],
    },
    {
      name: "2.10 ten pings in one write, answered in order",
      send: tenPings.map((p) => frame(Op.Ping, p)),
      expect: tenPings.map((p) => pong(p)),
    },
    {
      name: "2.11 ten pings byte by byte, answered in order",
      send: tenPings.map((p) => frame(Op.Ping, p)),
      chunk: 1,
      expect: tenPings.map((p) => pong(p)),
    },
    {
      name: "2.x ping with 126 bytes in a 16-bit length header, chopped",
      send: [frame(Op.Ping, pattern(126))],
      chunk: 1,
      close: 1002,
    },
  ];
}

// ---------------------------------------------------------------------------
// 3.x reserved bits
// ---------------------------------------------------------------------------

function rsvRows(): Row[] {
  const rows: Row[] = [];
  for (let bits = 1; bits <= 7; bits++) {
    const rsv = { rsv1: (bits & 4) !== 0, rsv2: (bits & 2) !== 0, rsv3: (bits & 1) !== 0 };
    rows.push({
      name: `3.x RSV=${bits} on text`,
      send: [frame(Op.Text, "hello", rsv)],
      close: 1002,
    });
    rows.push({
      name: `3.x RSV=${bits} on binary`,
      send: [frame(Op.Binary, pattern(10), rsv)],
      close: 1002,
    });
    rows.push({ name: `3.x RSV=${bits} on ping`, send: [frame(Op.Ping, "p", rsv)], close: 1002 });
    rows.push({
      name: `3.x RSV=${bits} on text after a valid text, one write`,
      send: [frame(Op.Text, "valid"), frame(Op.Text, "bad", rsv), frame(Op.Ping, "never")],
      expect: [text("valid")],
      close: 1002,
    });
    rows.push({
      name: `3.x RSV=${bits} on a close frame`,
      send: [buildFrame({ opcode: Op.Close, payload: new Uint8Array([3, 232]), ...rsv })],
      close: 1002,
    });
  }
  rows.push({
    name: "3.x RSV=2 on a continuation frame",
    send: [frame(Op.Text, "frag", { fin: false }), frame(Op.Continuation, "ment", { rsv2: true })],
    close: 1002,
  });
  rows.push({
    name: "3.x RSV=1 on text, byte by byte, after a valid text",
    send: [frame(Op.Text, "valid"), frame(Op.Text, "bad", { rsv1: true })],
    chunk: 1,
    expect: [text("valid")],
    close: 1002,
  });
  return rows;
}

// ---------------------------------------------------------------------------
// 4.x opcodes
// ---------------------------------------------------------------------------

function opcodeRows(): Row[] {
  const rows: Row[] = [];
  for (const opcode of [0x3, 0x4, 0x5, 0x6, 0x7, 0xb, 0xc, 0xd, 0xe, 0xf]) {
    const hex = opcode.toString(16).toUpperCase();
    rows.push({
      name: `4.x opcode ${hex} between the fragments of a message`,
      send: [
        frame(Op.Text, "frag", { fin: false }),
        frame(opcode, "x"),
        frame(Op.Continuation, "ment"),
      ],
      close: 1002,
    });
    rows.push({ name: `4.x opcode ${hex} alone`, send: [frame(opcode)], close: 1002 });
    rows.push({
      name: `4.x opcode ${hex} with payload after a valid text, then a ping`,
      send: [frame(Op.Text, "reserved opcode ahead"), frame(opcode, pattern(7)), frame(Op.Ping)],
      expect: [text("reserved opcode ahead")],
      close: 1002,
    });
  }
  return rows;
}

// ---------------------------------------------------------------------------
// 5.x fragmentation
// ---------------------------------------------------------------------------

function fragmentRows(): Row[] {
  const many = Array.from({ length: 20 }, (_, i) => `f${i};`);
  const manyFrames = many.map((part, i) =>
    frame(i === 0 ? Op.Text : Op.Continuation, part, { fin: i === many.length - 1 })
  );
  const frag = (op: number, payload: string, fin: boolean) => frame(op, payload, { fin });
  return [
    {
      name: "5.1 ping in 2 fragments",
      send: [frag(Op.Ping, "frag", false), frag(Op.Continuation, "ment", true)],
      close: 1002,
    },
    {
      name: "5.2 pong in 2 fragments",
      send: [frag(Op.Pong, "frag", false), frag(Op.Continuation, "ment", true)],
      close: 1002,
    },
    {
      name: "5.2b close in 2 fragments",
      send: [buildFrame({ opcode: Op.Close, payload: new Uint8Array([3, 232]), fin: false })],
      close: 1002,
    },
    {
      name: "5.3 text in 2 fragments",
      send: [frag(Op.Text, "fragment1", false), frag(Op.Continuation, "fragment2", true)],
      expect: [text("fragment1fragment2")],
    },
    {
      name: "5.4 text in 2 fragments, byte by byte",
      send: [frag(Op.Text, "fragment1", false), frag(Op.Continuation, "fragment2", true)],
      chunk: 1,
      expect: [text("fragment1fragment2")],
    },
    {
      name: "5.5 binary in 2 fragments",
      send: [frame(Op.Binary, pattern(5), { fin: false }), frame(Op.Continuation, pattern(6, 1))],
      expect: [binary(concat(pattern(5), pattern(6, 1)))],
    },
    { name: "5.x text in 20 fragments", send: manyFrames, expect: [text(many.join(""))] },
    {
      name: "5.x text in 20 fragments, byte by byte",
      send: manyFrames,
      chunk: 1,
      expect: [text(many.join(""))],
    },
    {
      name: "5.x text with empty fragments",
      send: [
        frag(Op.Text, "", false),
        frag(Op.Continuation, "", false),
        frag(Op.Continuation, "", true),
      ],
      expect: [text("")],
    },
    {
      name: "5.6 text in 2 fragments with a ping between",
      send: [
        frag(Op.Text, "fragment1", false),
        frame(Op.Ping, "pongme!"),
        frag(Op.Continuation, "fragment2", true),
      ],
      expect: [pong("pongme!"), text("fragment1fragment2")],
    },
    {
      name: "5.7 same, byte by byte",
      send: [
        frag(Op.Text, "fragment1", false),
        frame(Op.Ping, "pongme!"),
        frag(Op.Continuation, "fragment2", true),
      ],
      chunk: 1,
      expect: [pong("pongme!"), text("fragment1fragment2")],
    },
    {
      name: "5.8 text in 3 fragments with pings and pongs between",
      send: [
        frag(Op.Text, "a", false),
        frame(Op.Ping, "1"),
        frame(Op.Pong, "ignored"),
        frag(Op.Continuation, "b", false),
        frame(Op.Ping, "2"),
        frame(Op.Ping, "3"),
        frag(Op.Continuation, "c", true),
        frame(Op.Ping, "4"),
      ],
      expect: [pong("1"), pong("2"), pong("3"), text("abc"), pong("4")],
    },
    {
      name: "5.9 continuation with FIN, no message started",
      send: [frag(Op.Continuation, "fragment2", true), frag(Op.Text, "x", true)],
      close: 1002,
    },
    {
      name: "5.10 same, byte by byte",
      send: [frag(Op.Continuation, "fragment2", true)],
      chunk: 1,
      close: 1002,
    },
    {
      name: "5.12 continuation without FIN, no message started",
      send: [frag(Op.Continuation, "fragment1", false)],
      close: 1002,
    },
    {
      name: "5.15 text, continuation, continuation(FIN), then a continuation",
      send: [
        frag(Op.Text, "fragment1", false),
        frag(Op.Continuation, "fragment2", false),
        frag(Op.Continuation, "fragment3", true),
        frag(Op.Continuation, "fragment4", false),
      ],
      expect: [text("fragment1fragment2fragment3")],
      close: 1002,
    },
    {
      name: "5.18 text fragment interrupted by a new text start",
      send: [frag(Op.Text, "fragment1", false), frag(Op.Text, "fragment2", true)],
      close: 1002,
    },
    {
      name: "5.x text fragment interrupted by a binary start, after a valid message",
      send: [frame(Op.Text, "ok"), frag(Op.Text, "fragment1", false), frame(Op.Binary, pattern(3))],
      expect: [text("ok")],
      close: 1002,
    },
    {
      name: "5.19 fragments with pings between, each in its own chunk",
      send: [
        frag(Op.Text, "f1", false),
        frag(Op.Continuation, "f2", false),
        frame(Op.Ping, "pongme 1!"),
        frag(Op.Continuation, "f3", false),
        frag(Op.Continuation, "f4", false),
        frame(Op.Ping, "pongme 2!"),
        frag(Op.Continuation, "f5", true),
      ],
      chunk: 9,
      expect: [pong("pongme 1!"), pong("pongme 2!"), text("f1f2f3f4f5")],
    },
  ];
}

// ---------------------------------------------------------------------------
// 6.x UTF-8
// ---------------------------------------------------------------------------

const validUtf8: [string, Uint8Array][] = [
  ["1-byte", utf8("Hello-µ@ßöäüàá-UTF-8!!")],
  ["2-byte U+0080 and U+07FF", new Uint8Array([0xc2, 0x80, 0xdf, 0xbf])],
  [
    "3-byte U+0800, U+D7FF, U+E000",
    new Uint8Array([0xe0, 0xa0, 0x80, 0xed, 0x9f, 0xbf, 0xee, 0x80, 0x80]),
  ],
  ["U+FFFD and U+FFFF", new Uint8Array([0xef, 0xbf, 0xbd, 0xef, 0xbf, 0xbf])],
  ["4-byte U+10000 and U+10FFFF", new Uint8Array([0xf0, 0x90, 0x80, 0x80, 0xf4, 0x8f, 0xbf, 0xbf])],
  ["a BOM first is kept", new Uint8Array([0xef, 0xbb, 0xbf, 0x61])],
  ["κόσμε", utf8("κόσμε")],
  ["emoji", utf8("😀🚀🇩🇪")],
];

const invalidUtf8: [string, number[]][] = [
  ["lone continuation 0x80", [0x80]],
  ["lone continuation 0xBF after ASCII", [0x61, 0xbf]],
  ["overlong '/' C0 AF", [0xc0, 0xaf]],
  ["overlong NUL C1 80", [0xc1, 0x80]],
  ["overlong 3-byte E0 80 AF", [0xe0, 0x80, 0xaf]],
  ["overlong 4-byte F0 80 80 AF", [0xf0, 0x80, 0x80, 0xaf]],
  ["overlong U+FFFF F0 8F BF BF", [0xf0, 0x8f, 0xbf, 0xbf]],
  ["5-byte form F8 88 80 80 80", [0xf8, 0x88, 0x80, 0x80, 0x80]],
  ["FE", [0xfe]],
  ["FF", [0xff]],
  ["surrogate ED A0 80", [0xed, 0xa0, 0x80]],
  ["surrogate ED BF BF", [0xed, 0xbf, 0xbf]],
  ["surrogate pair ED A0 80 ED B0 80", [0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80]],
  ["above U+10FFFF F4 90 80 80", [0xf4, 0x90, 0x80, 0x80]],
  ["F5 80 80 80", [0xf5, 0x80, 0x80, 0x80]],
  ["truncated 2-byte C2 at end", [0x61, 0xc2]],
  ["truncated 3-byte E2 82 at end", [0x61, 0xe2, 0x82]],
  ["truncated 4-byte F0 9F 98 at end", [0x61, 0xf0, 0x9f, 0x98]],
  ["start byte followed by ASCII C2 41", [0xc2, 0x41]],
  ["κόσμε with an invalid tail", [
    0xce,
    0xba,
    0xe1,
    0xbd,
    0xb9,
    0xcf,
    0x83,
    0xce,
    0xbc,
    0xce,
    0xb5,
    0xed,
    0xa0,
    0x80,
    0x65,
    0x64,
    0x69,
    0x74,
    0x65,
    0x64,
  ]],
];

function utf8Rows(): Row[] {
  const rows: Row[] = [];
  for (const [name, bytes] of validUtf8) {
    rows.push({ name: `6.x valid ${name}`, send: [frame(Op.Text, bytes)], expect: [text(bytes)] });
    rows.push({
      name: `6.x valid ${name}, 1-byte fragments`,
      send: Array.from(
        bytes,
        (b, i) =>
          frame(i === 0 ? Op.Text : Op.Continuation, new Uint8Array([b]), {
            fin: i === bytes.length - 1,
          }),
      ),
      expect: [text(bytes)],
    });
  }
  // A code point split across two fragments at every position is accepted.
  for (const char of ["ß", "€", "\uffff", "😀", "\u{10ffff}"]) {
    const bytes = concat(utf8("a"), utf8(char), utf8("z"));
    for (let cut = 1; cut < bytes.length; cut++) {
      rows.push({
        name: `6.x ${JSON.stringify(char)} split at byte ${cut}`,
        send: [
          frame(Op.Text, bytes.subarray(0, cut), { fin: false }),
          frame(Op.Continuation, bytes.subarray(cut)),
        ],
        expect: [text(bytes)],
      });
    }
  }
  for (const [name, bytes] of invalidUtf8) {
    const payload = new Uint8Array(bytes);
    rows.push({ name: `6.x invalid ${name}`, send: [frame(Op.Text, payload)], close: 1007 });
    rows.push({
      name: `6.x invalid ${name}, byte by byte`,
      send: [frame(Op.Text, payload)],
      chunk: 1,
      close: 1007,
    });
    rows.push({
      name: `6.x invalid ${name}, 1-byte fragments after a valid message`,
      send: [
        frame(Op.Text, "ok"),
        ...bytes.map((b, i) =>
          frame(i === 0 ? Op.Text : Op.Continuation, new Uint8Array([b]), {
            fin: i === bytes.length - 1,
          })
        ),
      ],
      expect: [text("ok")],
      close: 1007,
    });
  }
  return rows;
}

// ---------------------------------------------------------------------------
// 7.x close
// ---------------------------------------------------------------------------

function closeRows(): Row[] {
  const rows: Row[] = [
    {
      name: "7.1.1 text, then close",
      send: [frame(Op.Text, "Hello"), closeFrame(1000)],
      expect: [text("Hello")],
      close: 1000,
    },
    { name: "7.1.2 close without payload", send: [closeFrame()], close: 1005 },
    {
      name: "7.1.3 close, then a ping is ignored",
      send: [closeFrame(1000), frame(Op.Ping, "ignored")],
      close: 1000,
    },
    {
      name: "7.1.4 close, then a text is ignored",
      send: [closeFrame(1000), frame(Op.Text, "ignored")],
      close: 1000,
    },
    {
      name: "7.1.5 fragment, close, then the continuation is ignored",
      send: [
        frame(Op.Text, "frag", { fin: false }),
        closeFrame(1000),
        frame(Op.Continuation, "ment"),
      ],
      close: 1000,
    },
    {
      name: "7.1.6 a big text, a ping and a close in one write",
      send: [
        frame(Op.Text, utf8("BAsd7&jh23".repeat(26_214))),
        frame(Op.Ping, "ping"),
        closeFrame(1000),
      ],
      expect: [text(utf8("BAsd7&jh23".repeat(26_214))), pong("ping")],
      close: 1000,
    },
    {
      name: "7.3.2 close with a 1-byte payload",
      send: [buildFrame({ opcode: Op.Close, payload: new Uint8Array([0x03]) })],
      close: 1002,
    },
    {
      name: "7.3.4 close with a 123-byte reason",
      send: [closeFrame(1000, "*".repeat(123))],
      close: 1000,
    },
    {
      name: "7.3.5 close with a 124-byte reason",
      send: [closeFrame(1000, "*".repeat(124))],
      close: 1002,
    },
    {
      name: "7.5.1 close reason with invalid UTF-8",
      send: [
        closeFrame(
          1000,
          new Uint8Array([
            0xce,
            0xba,
            0xe1,
            0xbd,
            0xb9,
            0xcf,
            0x83,
            0xce,
            0xbc,
            0xce,
            0xb5,
            0xed,
            0xa0,
            0x80,
            0x65,
            0x64,
          ]),
        ),
      ],
      close: 1007,
    },
    { name: "7.x close byte by byte", send: [closeFrame(1001, "bye")], chunk: 1, close: 1001 },
  ];
  for (
    const code of [
      1000,
      1001,
      1002,
      1003,
      1007,
      1008,
      1009,
      1010,
      1011,
      1012,
      1013,
      1014,
      3000,
      3999,
      4000,
      4999,
    ]
  ) {
    rows.push({ name: `7.7 valid close code ${code}`, send: [closeFrame(code)], close: code });
  }
  for (
    const code of [
      0,
      999,
      1004,
      1005,
      1006,
      1015,
      1016,
      1100,
      2000,
      2999,
      5000,
      65535,
    ]
  ) {
    rows.push({ name: `7.9 invalid close code ${code}`, send: [closeFrame(code)], close: 1002 });
  }
  return rows;
}

// ---------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------

describe("conformance: Autobahn-style sections against an echo server", () => {
  section(
    "1.x framing: text and binary echo at every length boundary, whole and chopped",
    framingRows,
  );
  section("2.x pings: answered exactly and in order, oversized ones fail", pingRows);
  section("3.x reserved bits: any RSV bit fails with 1002, after earlier echoes", rsvRows);
  section("4.x reserved opcodes: fail with 1002, after earlier echoes", opcodeRows);
  section("5.x fragmentation: reassembly, interleaved control frames, misuse", fragmentRows);
  section("6.x UTF-8: valid text echoed, every invalid form fails with 1007", utf8Rows);
  section("7.x closing handshake: codes echoed, invalid ones fail, nothing after close", closeRows);

  test("6.x fail-fast: a bad byte in the first fragment closes 1007 before the rest is sent", async () => {
    const h = await startHarness();
    const client = await RawClient.open(h.port);
    try {
      const first = concat(
        utf8("κόσμε".repeat(100)),
        new Uint8Array([0xf4, 0x90, 0x80, 0x80]),
        utf8("x"),
      );
      await client.writeAndFlush(frame(Op.Text, first, { fin: false }));
      const { code, before } = await client.expectClose(3000);
      assert.equal(code, 1007);
      assert.deepEqual(before, []);
      // The rest of the message (64 KiB more) is never needed for the verdict.
      client.write(frame(Op.Continuation, utf8("a".repeat(65_536))));
      assert.ok(await client.waitForEnd(3000), "the server closes TCP");
      await assertControlEchoes(h, "fail-fast");
    } finally {
      client.destroy();
      await stopHarness(h);
    }
  });

  test("7.x close reasons up to 123 bytes reach the application; the code is echoed", async () => {
    // §5.5.1: the endpoint "typically echos the status code it received"; the
    // reason is for the application, so that is where it must arrive intact.
    const seen: { code: number; reason: string }[] = [];
    const server = await serve({ port: 0, hostname: HOST, closeTimeout: 2000 }, {
      close(_ws, code, reason) {
        seen.push({ code, reason });
      },
    });
    const reasons = ["", "x", "é".repeat(61) + "x", "*".repeat(123)];
    try {
      for (const reason of reasons) {
        const client = await RawClient.open(server.addr.port);
        try {
          client.write(closeFrame(3123, reason));
          const reply = await client.expectClose(3000);
          assert.equal(reply.code, 3123);
          assert.ok(await client.waitForEnd(3000));
        } finally {
          client.destroy();
        }
      }
      await sleep(20);
      assert.deepEqual(seen, reasons.map((reason) => ({ code: 3123, reason })));
    } finally {
      await within(server.shutdown(), 10_000, "server shutdown");
    }
  });

  test("7.x after the close exchange the server closes TCP without waiting for the client", async () => {
    const h = await startHarness({ closeTimeout: 10_000 });
    const client = await RawClient.open(h.port);
    try {
      const sentAt = performance.now();
      client.write(concat(closeFrame(1000), frame(Op.Text, "after close")));
      const reply = await client.expectClose(3000);
      assert.equal(reply.code, 1000);
      assert.deepEqual(reply.before, []);
      assert.ok(await client.waitForEnd(3000), "TCP closed");
      assert.ok(client.endedAt! - sentAt < 2000, `TCP closed after ${client.endedAt! - sentAt} ms`);
      assert.equal(client.buffered, 0, "no echo of the text sent after close");
    } finally {
      client.destroy();
      await stopHarness(h);
    }
  });

  section("9.x limits: a message over maxMessageSize fails with 1009", () => [
    { name: "9.x one frame of 64 KiB + 1", send: [frame(Op.Binary, pattern(65_537))], close: 1009 },
    {
      name: "9.x fragments adding up to 64 KiB + 1",
      send: [frame(Op.Text, utf8("a".repeat(65_536)), { fin: false }), frame(Op.Continuation, "b")],
      close: 1009,
    },
    {
      name: "9.x exactly 64 KiB is fine",
      send: [frame(Op.Binary, pattern(65_536, 9))],
      expect: [binary(pattern(65_536, 9))],
    },
  ], { maxMessageSize: 65_536 });

  test("9.x a header announcing more than maxMessageSize gets 1009 quickly", async () => {
    const h = await startHarness({ maxMessageSize: 65_536 });
    const client = await RawClient.open(h.port);
    try {
      const sentAt = performance.now();
      client.write(buildFrame({ opcode: Op.Binary, announce: 16 * 1024 * 1024 }));
      const { code } = await client.expectClose(2000);
      assert.equal(code, 1009);
      assert.ok(performance.now() - sentAt < 1000, "1009 without waiting for the payload");
      await assertControlEchoes(h, "9.x header");
    } finally {
      client.destroy();
      await stopHarness(h);
    }
  });

  for (const size of [1 << 20, 4 << 20]) {
    test(`9.x a ${size >> 20} MiB binary message in 64 KiB frames is echoed whole`, async () => {
      const h = await startHarness();
      const client = await RawClient.open(h.port);
      try {
        const payload = pattern(size, 5);
        const frameSize = 65_536;
        const frames: Uint8Array[] = [];
        for (let at = 0; at < size; at += frameSize) {
          frames.push(
            frame(at === 0 ? Op.Binary : Op.Continuation, payload.subarray(at, at + frameSize), {
              fin: at + frameSize >= size,
            }),
          );
        }
        const started = performance.now();
        for (const f of frames) client.write(f);
        // The server may send the echo in any number of frames; reassemble.
        const parts: Uint8Array[] = [];
        let first = true;
        for (;;) {
          const got = await client.expectFrame(10_000);
          assert.equal(got.opcode, first ? Op.Binary : Op.Continuation);
          first = false;
          parts.push(got.payload);
          if (got.fin) break;
        }
        const echoed = concat(...parts);
        assert.equal(echoed.length, size);
        assert.ok(Buffer.from(echoed).equals(Buffer.from(payload)), "echo bytes equal");
        console.log(`9.x ${size >> 20} MiB echo in ${(performance.now() - started).toFixed(0)} ms`);
      } finally {
        client.destroy();
        await stopHarness(h);
      }
    });
  }

  test("12/13 permessage-deflate: a compressed text is echoed and inflates to the same text", async () => {
    const server = await serve({ port: 0, hostname: HOST, compression: true, closeTimeout: 2000 }, {
      message(ws, data) {
        ws.send(data);
      },
    });
    const port = server.addr.port;
    const client = await RawClient.connect(port);
    try {
      client.write(upgradeRequest(`${HOST}:${port}`, {
        headers: {
          "Sec-WebSocket-Extensions":
            "permessage-deflate; server_no_context_takeover; client_max_window_bits",
        },
      }));
      const response = await client.readResponse();
      assert.equal(response.status, 101, response.head);
      assert.match(response.headers.get("sec-websocket-extensions") ?? "", /^permessage-deflate/);
      const message = "Hello, compressed world! ".repeat(40) + "κόσμε 😀";
      for (let round = 0; round < 3; round++) {
        const deflated = zlib.deflateRawSync(Buffer.from(utf8(message)), {
          finishFlush: zlib.constants.Z_SYNC_FLUSH,
        });
        const tail = deflated.subarray(deflated.length - 4);
        assert.deepEqual([...tail], [0x00, 0x00, 0xff, 0xff]);
        client.write(
          buildFrame({
            opcode: Op.Text,
            rsv1: true,
            payload: new Uint8Array(deflated.subarray(0, -4)),
          }),
        );
        const got = await client.expectFrame(5000);
        assert.equal(got.opcode, Op.Text);
        assert.equal(got.fin, true);
        const body = got.rsv1
          ? zlib.inflateRawSync(
            Buffer.concat([Buffer.from(got.payload), Buffer.from([0, 0, 0xff, 0xff])]),
          )
          : Buffer.from(got.payload);
        assert.equal(fatal.decode(body), message, `round ${round}: the echo inflates to the text`);
      }
      // An uncompressed frame is still fine on a deflate connection.
      client.write(frame(Op.Text, "plain"));
      const plain = await client.expectFrame(5000);
      const plainBody = plain.rsv1
        ? zlib.inflateRawSync(
          Buffer.concat([Buffer.from(plain.payload), Buffer.from([0, 0, 0xff, 0xff])]),
        )
        : Buffer.from(plain.payload);
      assert.equal(fatal.decode(plainBody), "plain");
    } finally {
      client.destroy();
      await within(server.shutdown(), 10_000, "server shutdown");
    }
  });
});
