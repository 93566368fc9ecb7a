import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  encodeFrame,
  frameHeaderSize,
  FrameParser,
  type FrameParserOptions,
  writeFrameHeader,
} from "../../src/protocol/frame.ts";
import { WebSocketError } from "../../src/protocol/errors.ts";
import { Opcode } from "../../src/protocol/opcodes.ts";
import {
  bytes,
  clientFrame,
  concat,
  decodeFrames,
  type FrameEvent,
  FrameRecorder,
  hex,
  KEY,
  naiveMask,
  pattern,
  serverFrame,
  splits,
  utf8,
} from "./_helpers.ts";

// RFC 6455 §5.7, verbatim.
const HELLO_UNMASKED = bytes(0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f);
const HELLO_MASKED = bytes(0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58);
const HEL = bytes(0x01, 0x03, 0x48, 0x65, 0x6c);
const LO = bytes(0x80, 0x02, 0x6c, 0x6f);
const PING_HELLO = bytes(0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f);
const PONG_HELLO_MASKED = bytes(0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58);
const HEADER_256 = bytes(0x82, 0x7e, 0x01, 0x00);
const HEADER_64K = bytes(0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00);

const MB = 1 << 20;

function parse(
  chunks: Uint8Array[],
  options: Partial<FrameParserOptions> = {},
): FrameRecorder {
  const recorder = new FrameRecorder();
  const parser = new FrameParser(recorder, { role: "client", maxFrameSize: MB, ...options });
  for (const chunk of chunks) parser.push(chunk);
  return recorder;
}

function start(
  opcode: number,
  length: number,
  fin = true,
  mask: Uint8Array | null = null,
  rsv1 = false,
): FrameEvent {
  return { type: "start", fin, rsv1, opcode, mask: mask && Array.from(mask), length };
}

function payload(data: Uint8Array | string, offset = 0): FrameEvent {
  return {
    type: "payload",
    data: Array.from(typeof data === "string" ? utf8(data) : data),
    offset,
  };
}

const END: FrameEvent = { type: "end" };

/** Asserts that the parser rejects `input` with the given error before reporting its frame. */
function assertRejects(
  input: Uint8Array,
  code: string,
  closeCode: number,
  options: Partial<FrameParserOptions> = {},
): void {
  // Header rules are checked from the header alone: cut it (at most 14
  // bytes) every way; cuts later in the payload would add nothing.
  const head = input.subarray(0, 16);
  const ways = [...splits(head)].map(({ name, chunks }) => ({
    name,
    chunks: [...chunks, input.subarray(head.length)],
  }));
  for (const { name, chunks } of [{ name: "whole", chunks: [input] }, ...ways]) {
    const recorder = new FrameRecorder();
    const parser = new FrameParser(recorder, { role: "client", maxFrameSize: MB, ...options });
    assert.throws(
      () => {
        for (const chunk of chunks) parser.push(chunk);
      },
      (err: unknown) => {
        assert.ok(err instanceof WebSocketError, `${name}: not a WebSocketError: ${err}`);
        assert.equal(err.code, code, name);
        assert.equal(err.closeCode, closeCode, name);
        return true;
      },
      `${name}: ${hex(input.subarray(0, 16))} was accepted`,
    );
    assert.equal(
      recorder.events.filter((e) => e.type === "start").length,
      0,
      `${name}: the bad frame was reported`,
    );
  }
}

describe("frameHeaderSize", () => {
  test("uses 7, 16 or 64-bit lengths at the §5.2 boundaries, plus 4 bytes for a mask", () => {
    const cases: [number, number][] = [
      [0, 2],
      [125, 2],
      [126, 4],
      [65535, 4],
      [65536, 10],
      [2 ** 32, 10],
      [Number.MAX_SAFE_INTEGER, 10],
    ];
    for (const [length, size] of cases) {
      assert.equal(frameHeaderSize(length, false), size, `length ${length}`);
      assert.equal(frameHeaderSize(length, true), size + 4, `masked length ${length}`);
    }
  });
});

describe("writeFrameHeader", () => {
  function header(
    opcode: number,
    length: number,
    fin = true,
    rsv1 = false,
    mask: Uint8Array | null = null,
  ): Uint8Array {
    const dst = new Uint8Array(20).fill(0xee);
    const written = writeFrameHeader(dst, 3, opcode, length, fin, rsv1, mask);
    assert.equal(written, frameHeaderSize(length, mask !== null));
    assert.deepEqual(dst.subarray(0, 3), bytes(0xee, 0xee, 0xee), "wrote before offset");
    assert.ok(dst.subarray(3 + written).every((b) => b === 0xee), "wrote past the header");
    return dst.slice(3, 3 + written);
  }

  test("§5.7 headers: unmasked and masked 'Hello', fragments, ping, pong", () => {
    assert.deepEqual(header(Opcode.Text, 5), HELLO_UNMASKED.subarray(0, 2));
    assert.deepEqual(header(Opcode.Text, 5, true, false, KEY), HELLO_MASKED.subarray(0, 6));
    assert.deepEqual(header(Opcode.Text, 3, false), HEL.subarray(0, 2));
    assert.deepEqual(header(Opcode.Continuation, 2, true), LO.subarray(0, 2));
    assert.deepEqual(header(Opcode.Ping, 5), PING_HELLO.subarray(0, 2));
    assert.deepEqual(header(Opcode.Pong, 5, true, false, KEY), PONG_HELLO_MASKED.subarray(0, 6));
  });

  test("§5.7 headers: 256 bytes and 64 KiB of binary", () => {
    assert.deepEqual(header(Opcode.Binary, 256), HEADER_256);
    assert.deepEqual(header(Opcode.Binary, 65536), HEADER_64K);
  });

  test("length boundaries and large lengths", () => {
    assert.deepEqual(header(Opcode.Binary, 125), bytes(0x82, 0x7d));
    assert.deepEqual(header(Opcode.Binary, 126), bytes(0x82, 0x7e, 0x00, 0x7e));
    assert.deepEqual(header(Opcode.Binary, 65535), bytes(0x82, 0x7e, 0xff, 0xff));
    assert.deepEqual(
      header(Opcode.Binary, 2 ** 32 + 5),
      bytes(0x82, 0x7f, 0, 0, 0, 0x01, 0, 0, 0, 0x05),
    );
    assert.deepEqual(
      header(Opcode.Binary, Number.MAX_SAFE_INTEGER),
      bytes(0x82, 0x7f, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
    );
  });

  test("FIN, RSV1 and the mask bit", () => {
    assert.deepEqual(header(Opcode.Binary, 0, false, true), bytes(0x42, 0x00));
    assert.deepEqual(header(Opcode.Text, 0, true, true), bytes(0xc1, 0x00));
    assert.deepEqual(
      header(Opcode.Binary, 300, true, false, KEY),
      bytes(0x82, 0xfe, 0x01, 0x2c, ...KEY),
    );
    assert.deepEqual(
      header(Opcode.Binary, 65536, true, false, KEY),
      bytes(0x82, 0xff, 0, 0, 0, 0, 0, 0x01, 0, 0, ...KEY),
    );
  });
});

describe("encodeFrame", () => {
  test("§5.7 unmasked frames, byte for byte", () => {
    assert.deepEqual(encodeFrame(Opcode.Text, utf8("Hello")), HELLO_UNMASKED);
    assert.deepEqual(encodeFrame(Opcode.Text, utf8("Hel"), { fin: false }), HEL);
    assert.deepEqual(encodeFrame(Opcode.Continuation, utf8("lo")), LO);
    assert.deepEqual(encodeFrame(Opcode.Ping, utf8("Hello")), PING_HELLO);
  });

  test("§5.7 256-byte and 64 KiB binary frames: header then the payload as is", () => {
    for (const [length, head] of [[256, HEADER_256], [65536, HEADER_64K]] as const) {
      const data = pattern(length);
      assert.deepEqual(encodeFrame(Opcode.Binary, data), concat(head, data));
    }
  });

  test("masked frames carry a key and decode back to the payload, which is not modified", () => {
    for (const length of [0, 1, 5, 125, 126, 65535, 65536]) {
      const data = pattern(length, 1);
      const out = encodeFrame(Opcode.Binary, data, { mask: true });
      assert.deepEqual(data, pattern(length, 1), "payload was modified");
      assert.equal(out.length, frameHeaderSize(length, true) + length);
      const [decoded, ...more] = decodeFrames(out);
      assert.equal(more.length, 0);
      assert.ok(decoded.mask !== null, "no mask bit");
      assert.equal(decoded.opcode, Opcode.Binary);
      assert.deepEqual(decoded.payload, data, `length ${length}`);
    }
  });

  test("masked 'Hello' differs on the wire from the plain text", () => {
    const out = encodeFrame(Opcode.Text, utf8("Hello"), { mask: true });
    const [decoded] = decodeFrames(out);
    assert.deepEqual(out.subarray(6), naiveMask(utf8("Hello"), decoded.mask!));
    assert.deepEqual(decoded.payload, utf8("Hello"));
  });

  test("consecutive masked frames use different keys", () => {
    const keys = new Set<string>();
    for (let i = 0; i < 50; i++) {
      keys.add(hex(decodeFrames(encodeFrame(Opcode.Text, utf8("x"), { mask: true }))[0].mask!));
    }
    assert.ok(keys.size > 45, `only ${keys.size} distinct keys`);
  });

  test("fin and rsv1 options", () => {
    assert.deepEqual(
      encodeFrame(Opcode.Binary, bytes(1), { fin: false, rsv1: true }),
      bytes(0x42, 0x01, 0x01),
    );
    assert.deepEqual(encodeFrame(Opcode.Text, bytes(), { rsv1: true }), bytes(0xc1, 0x00));
  });
});

describe("FrameParser: §5.7 examples", () => {
  test("a single-frame unmasked text message (client side)", () => {
    assert.deepEqual(parse([HELLO_UNMASKED]).events, [
      start(Opcode.Text, 5),
      payload("Hello"),
      END,
    ]);
  });

  test("a single-frame masked text message (server side) reports the key and masked bytes", () => {
    assert.deepEqual(parse([HELLO_MASKED], { role: "server" }).events, [
      start(Opcode.Text, 5, true, KEY),
      payload(HELLO_MASKED.subarray(6)),
      END,
    ]);
  });

  test("a fragmented unmasked text message", () => {
    assert.deepEqual(parse([concat(HEL, LO)]).events, [
      start(Opcode.Text, 3, false),
      payload("Hel"),
      END,
      start(Opcode.Continuation, 2),
      payload("lo"),
      END,
    ]);
  });

  test("an unmasked ping and a masked pong", () => {
    assert.deepEqual(parse([PING_HELLO]).events, [start(Opcode.Ping, 5), payload("Hello"), END]);
    assert.deepEqual(parse([PONG_HELLO_MASKED], { role: "server" }).events, [
      start(Opcode.Pong, 5, true, KEY),
      payload(PONG_HELLO_MASKED.subarray(6)),
      END,
    ]);
  });

  test("256 bytes and 64 KiB of binary in a single unmasked frame", () => {
    for (const [length, head] of [[256, HEADER_256], [65536, HEADER_64K]] as const) {
      const data = pattern(length);
      assert.deepEqual(parse([concat(head, data)]).merged(), [
        start(Opcode.Binary, length),
        payload(data),
        END,
      ]);
    }
  });
});

describe("FrameParser: input split anywhere", () => {
  const inputs: { name: string; role: "client" | "server"; input: Uint8Array }[] = [
    {
      name: "§5.7 unmasked frames, 7-bit lengths",
      role: "client",
      input: concat(HELLO_UNMASKED, HEL, PING_HELLO, LO, serverFrame({ opcode: Opcode.Pong })),
    },
    {
      name: "masked frames, 7-bit lengths, empty payloads",
      role: "server",
      input: concat(
        HELLO_MASKED,
        clientFrame({ opcode: Opcode.Binary }),
        PONG_HELLO_MASKED,
        clientFrame({ opcode: Opcode.Text, payload: pattern(125), fin: false }),
        clientFrame({ opcode: Opcode.Continuation, payload: bytes(7) }),
      ),
    },
    {
      name: "unmasked frames, 16-bit lengths",
      role: "client",
      input: concat(
        serverFrame({ opcode: Opcode.Binary, payload: pattern(126) }),
        HEADER_256,
        pattern(256),
        serverFrame({ opcode: Opcode.Text, payload: pattern(300, 2) }),
      ),
    },
    {
      name: "masked frames, 16-bit lengths",
      role: "server",
      input: concat(
        clientFrame({ opcode: Opcode.Binary, payload: pattern(126) }),
        clientFrame({ opcode: Opcode.Binary, payload: pattern(257), mask: bytes(1, 2, 3, 4) }),
        clientFrame({ opcode: Opcode.Ping, payload: pattern(125) }),
      ),
    },
  ];

  for (const { name, role, input } of inputs) {
    test(`${name}: every split and byte by byte give the same events`, () => {
      const expected = parse([input], { role }).merged();
      assert.ok(expected.length >= 9, "the input should hold several frames");
      for (const split of splits(input)) {
        assert.deepEqual(parse(split.chunks, { role }).merged(), expected, split.name);
      }
    });
  }

  test("the merged events are the frames the input was built from", () => {
    const a = pattern(126), b = pattern(257);
    const input = concat(
      clientFrame({ opcode: Opcode.Binary, payload: a }),
      clientFrame({ opcode: Opcode.Binary, payload: b, mask: bytes(1, 2, 3, 4), fin: false }),
    );
    for (const split of splits(input)) {
      assert.deepEqual(parse(split.chunks, { role: "server" }).merged(), [
        start(Opcode.Binary, 126, true, KEY),
        payload(naiveMask(a, KEY)),
        END,
        start(Opcode.Binary, 257, false, bytes(1, 2, 3, 4)),
        payload(naiveMask(b, bytes(1, 2, 3, 4))),
        END,
      ], split.name);
    }
  });

  /**
   * 64-bit lengths start at 64 KiB, so the payload is big: for every split
   * the payload pieces are checked for contiguous offsets and their first
   * and last bytes (an off-by-one at a boundary shows there), and byte by
   * byte checks every byte.
   */
  for (const masked of [false, true]) {
    test(`64-bit length ${masked ? "masked" : "unmasked"}: every split gives the same frames`, () => {
      const length = 65536 + 3;
      const data = pattern(length, 5);
      const wire = masked ? naiveMask(data, KEY) : data;
      const frames = concat(
        masked ? clientFrame({ opcode: Opcode.Binary, payload: data }) : serverFrame({
          opcode: Opcode.Binary,
          payload: data,
        }),
        masked ? HELLO_MASKED : HELLO_UNMASKED,
      );
      const headerSize = masked ? 14 : 10;
      const role = masked ? "server" : "client";
      const check = (chunks: Uint8Array[], name: string, everyByte: boolean) => {
        let starts = 0, ends = 0, next = 0;
        const parser = new FrameParser({
          frameStart(header) {
            starts++;
            if (starts === 1) {
              assert.equal(header.length, length, name);
              assert.equal(header.opcode, Opcode.Binary, name);
              assert.deepEqual(header.mask, masked ? KEY : null, name);
            } else {
              assert.equal(header.length, 5, name);
            }
          },
          framePayload(chunk, start, end, offset) {
            const piece = chunk.subarray(start, end);
            if (starts !== 1) return;
            assert.equal(offset, next, `${name}: offset`);
            assert.ok(piece.length > 0, `${name}: empty piece`);
            const last = piece.length - 1;
            if (piece[0] !== wire[offset] || piece[last] !== wire[offset + last]) {
              assert.fail(`${name}: wrong bytes at ${offset}`);
            }
            if (everyByte) {
              for (let i = 0; i < piece.length; i++) {
                if (piece[i] !== wire[offset + i]) assert.fail(`${name}: byte ${offset + i}`);
              }
            }
            next += piece.length;
          },
          frameEnd() {
            ends++;
          },
        }, { role, maxFrameSize: MB });
        for (const chunk of chunks) parser.push(chunk);
        assert.equal(next, length, `${name}: payload length`);
        assert.equal(starts, 2, `${name}: frames`);
        assert.equal(ends, 2, `${name}: frame ends`);
      };
      check([frames], "whole", true);
      for (let at = 0; at <= frames.length; at++) {
        check([frames.subarray(0, at), frames.subarray(at)], `split at ${at}`, at <= headerSize);
      }
      // Three pieces, both cuts inside the header.
      for (let a = 0; a <= headerSize; a++) {
        for (let b = a; b <= headerSize; b++) {
          check(
            [frames.subarray(0, a), frames.subarray(a, b), frames.subarray(b)],
            `cuts at ${a} and ${b}`,
            false,
          );
        }
      }
      check(Array.from(frames, (b) => bytes(b)), "byte by byte", true);
    });
  }

  test("push never changes the chunk it is given", () => {
    const input = concat(
      HELLO_MASKED,
      clientFrame({ opcode: Opcode.Binary, payload: pattern(300) }),
    );
    const before = input.slice();
    parse([input.subarray(0, 3), input.subarray(3, 40), input.subarray(40)], { role: "server" });
    assert.deepEqual(input, before);
  });

  test("an empty chunk changes nothing", () => {
    assert.deepEqual(
      parse([bytes(), HELLO_UNMASKED.subarray(0, 1), bytes(), HELLO_UNMASKED.subarray(1), bytes()])
        .events,
      [start(Opcode.Text, 5), payload("Hello"), END],
    );
  });
});

describe("FrameParser: header rules (each fails before the frame is reported)", () => {
  test("a server rejects an unmasked frame (§5.1): 1002", () => {
    assertRejects(HELLO_UNMASKED, "UNMASKED_FRAME", 1002, { role: "server" });
    assertRejects(serverFrame({ opcode: Opcode.Ping }), "UNMASKED_FRAME", 1002, { role: "server" });
  });

  test("a client rejects a masked frame (§5.1): 1002", () => {
    assertRejects(HELLO_MASKED, "MASKED_FRAME", 1002, { role: "client" });
    assertRejects(PONG_HELLO_MASKED, "MASKED_FRAME", 1002, { role: "client" });
  });

  test("RSV1, RSV2 and RSV3 without a negotiated extension: 1002", () => {
    for (const rsv of ["rsv1", "rsv2", "rsv3"] as const) {
      for (const opcode of [Opcode.Text, Opcode.Binary, Opcode.Ping]) {
        assertRejects(serverFrame({ opcode, [rsv]: true }), "RESERVED_BITS", 1002);
        assertRejects(clientFrame({ opcode, [rsv]: true }), "RESERVED_BITS", 1002, {
          role: "server",
        });
      }
    }
  });

  test("with RSV1 allowed: on the first data frame only, never RSV2/RSV3", () => {
    assert.deepEqual(
      parse([serverFrame({ opcode: Opcode.Text, rsv1: true, fin: false, payload: bytes(1) })], {
        allowRsv1: true,
      }).events,
      [start(Opcode.Text, 1, false, null, true), payload(bytes(1)), END],
    );
    assert.deepEqual(
      parse([serverFrame({ opcode: Opcode.Binary, rsv1: true })], { allowRsv1: true }).events,
      [start(Opcode.Binary, 0, true, null, true), END],
    );
    const options = { allowRsv1: true };
    assertRejects(
      serverFrame({ opcode: Opcode.Continuation, rsv1: true }),
      "RESERVED_BITS",
      1002,
      options,
    );
    assertRejects(serverFrame({ opcode: Opcode.Ping, rsv1: true }), "RESERVED_BITS", 1002, options);
    assertRejects(
      serverFrame({ opcode: Opcode.Close, rsv1: true }),
      "RESERVED_BITS",
      1002,
      options,
    );
    assertRejects(serverFrame({ opcode: Opcode.Text, rsv2: true }), "RESERVED_BITS", 1002, options);
    assertRejects(serverFrame({ opcode: Opcode.Text, rsv3: true }), "RESERVED_BITS", 1002, options);
  });

  test("the allowRsv1 setter turns RSV1 on for later frames", () => {
    const recorder = new FrameRecorder();
    const parser = new FrameParser(recorder, { role: "client", maxFrameSize: MB });
    parser.allowRsv1 = true;
    parser.push(serverFrame({ opcode: Opcode.Binary, rsv1: true }));
    assert.deepEqual(recorder.events, [start(Opcode.Binary, 0, true, null, true), END]);
  });

  test("reserved opcodes 0x3-0x7 and 0xB-0xF: 1002", () => {
    for (const opcode of [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf]) {
      assertRejects(serverFrame({ opcode }), "RESERVED_OPCODE", 1002);
      assertRejects(clientFrame({ opcode, payload: bytes(1, 2) }), "RESERVED_OPCODE", 1002, {
        role: "server",
      });
    }
  });

  test("every defined opcode is accepted", () => {
    for (const opcode of [0x0, 0x1, 0x2, 0x8, 0x9, 0xa]) {
      assert.deepEqual(parse([serverFrame({ opcode })]).events, [start(opcode, 0), END]);
    }
  });

  test("a control frame with more than 125 bytes of payload (§5.5): 1002", () => {
    for (const opcode of [Opcode.Close, Opcode.Ping, Opcode.Pong]) {
      assertRejects(
        serverFrame({ opcode, payload: pattern(126) }),
        "CONTROL_FRAME_TOO_LONG",
        1002,
      );
      assertRejects(
        clientFrame({ opcode, payload: pattern(65536) }),
        "CONTROL_FRAME_TOO_LONG",
        1002,
        { role: "server" },
      );
      // 125 bytes is the limit, and is fine.
      assert.equal(parse([serverFrame({ opcode, payload: pattern(125) })]).merged().length, 3);
    }
  });

  test("a fragmented control frame (§5.5): 1002", () => {
    for (const opcode of [Opcode.Close, Opcode.Ping, Opcode.Pong]) {
      assertRejects(serverFrame({ opcode, fin: false }), "FRAGMENTED_CONTROL_FRAME", 1002);
    }
  });

  test("a 64-bit length with the most significant bit set (§5.2): 1002", () => {
    assertRejects(
      serverFrame({ opcode: Opcode.Binary, length: 0x8000000000000000n }),
      "INVALID_LENGTH",
      1002,
    );
    assertRejects(
      serverFrame({ opcode: Opcode.Binary, length: 0xffffffffffffffffn }),
      "INVALID_LENGTH",
      1002,
    );
  });

  test("a 64-bit length beyond the safe integer range: 1009", () => {
    assertRejects(
      serverFrame({ opcode: Opcode.Binary, length: 2n ** 53n }),
      "FRAME_TOO_BIG",
      1009,
      { maxFrameSize: Infinity },
    );
  });

  test("lengths not minimally encoded (§5.2): 1002", () => {
    for (const length of [0, 5, 125]) {
      assertRejects(
        serverFrame({ opcode: Opcode.Binary, payload: pattern(length), lengthBits: 16 }),
        "INVALID_LENGTH",
        1002,
      );
    }
    for (const length of [0, 125, 126, 65535]) {
      assertRejects(
        clientFrame({ opcode: Opcode.Binary, payload: pattern(length), lengthBits: 64 }),
        "INVALID_LENGTH",
        1002,
        { role: "server" },
      );
    }
  });

  test("a frame over maxFrameSize: 1009 from the header, before any payload", () => {
    for (const [length, max] of [[11, 10], [126, 125], [65536, 65535], [70000, 65536]]) {
      const whole = serverFrame({ opcode: Opcode.Binary, payload: pattern(length) });
      const headerOnly = whole.subarray(0, frameHeaderSize(length, false));
      assertRejects(headerOnly, "FRAME_TOO_BIG", 1009, { maxFrameSize: max });
      assertRejects(whole, "FRAME_TOO_BIG", 1009, { maxFrameSize: max });
      // Exactly at the limit is fine.
      assert.equal(
        parse([serverFrame({ opcode: Opcode.Binary, payload: pattern(max) })], {
          maxFrameSize: max,
        }).merged().length,
        3,
      );
    }
    assertRejects(serverFrame({ opcode: Opcode.Text, length: 2 ** 40 }), "FRAME_TOO_BIG", 1009);
  });

  test("frames before the bad one are reported in full", () => {
    const recorder = new FrameRecorder();
    const parser = new FrameParser(recorder, { role: "client", maxFrameSize: MB });
    assert.throws(() => parser.push(concat(HELLO_UNMASKED, serverFrame({ opcode: 3 }))));
    assert.deepEqual(recorder.events, [start(Opcode.Text, 5), payload("Hello"), END]);
  });
});

describe("FrameParser: stop and midFrame", () => {
  test("after stop() every byte is ignored, even the rest of the same chunk", () => {
    const recorder = new FrameRecorder();
    const parser = new FrameParser({
      frameStart: (h) => recorder.frameStart(h),
      framePayload: (c, s, e, o) => recorder.framePayload(c, s, e, o),
      frameEnd: () => {
        recorder.frameEnd();
        parser.stop();
      },
    }, { role: "client", maxFrameSize: MB });
    parser.push(concat(HELLO_UNMASKED, PING_HELLO));
    parser.push(PING_HELLO);
    // Not even a header error is raised once stopped.
    parser.push(bytes(0xff, 0xff, 0xff));
    assert.deepEqual(recorder.events, [start(Opcode.Text, 5), payload("Hello"), END]);
  });

  test("midFrame is true while a header or payload is partly received", () => {
    const parser = new FrameParser(new FrameRecorder(), { role: "client", maxFrameSize: MB });
    assert.equal(parser.midFrame, false);
    parser.push(HELLO_UNMASKED.subarray(0, 1));
    assert.equal(parser.midFrame, true);
    parser.push(HELLO_UNMASKED.subarray(1, 4));
    assert.equal(parser.midFrame, true);
    parser.push(HELLO_UNMASKED.subarray(4));
    assert.equal(parser.midFrame, false);
  });
});
