import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  CloseCode,
  encodeClosePayload,
  isValidWireCloseCode,
  parseClosePayload,
} from "../../src/protocol/close_codes.ts";
import { WebSocketError } from "../../src/protocol/errors.ts";
import { bytes, closePayload, concat, IANA_CLOSE_CODES, utf8, validOnWire } from "./_helpers.ts";

function assertWebSocketError(fn: () => unknown, code: string, closeCode: number): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof WebSocketError, `not a WebSocketError: ${err}`);
    assert.equal(err.code, code);
    assert.equal(err.closeCode, closeCode);
    return true;
  });
}

describe("isValidWireCloseCode", () => {
  test("classifies every code 0..5000 and a few beyond", () => {
    for (let code = 0; code <= 5000; code++) {
      assert.equal(isValidWireCloseCode(code), validOnWire(code), `code ${code}`);
    }
    for (const code of [65535, 10000, -1]) assert.equal(isValidWireCloseCode(code), false);
  });

  test("accepts the registered codes that implementations send: 1012, 1013, 1014", () => {
    for (const { code, name } of IANA_CLOSE_CODES.filter((e) => e.code >= 1012 && e.onWire)) {
      assert.equal(isValidWireCloseCode(code), true, `${code} ${name}`);
    }
  });

  test("spot checks at every boundary", () => {
    const valid = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999];
    const invalid = [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000];
    for (const code of valid) assert.equal(isValidWireCloseCode(code), true, `${code}`);
    for (const code of invalid) assert.equal(isValidWireCloseCode(code), false, `${code}`);
  });
});

describe("parseClosePayload", () => {
  test("an empty payload means no status: 1005 and no reason", () => {
    assert.deepEqual(parseClosePayload(bytes()), { code: CloseCode.NoStatus, reason: "" });
  });

  test("a code alone, and a code with a UTF-8 reason", () => {
    assert.deepEqual(parseClosePayload(bytes(0x03, 0xe8)), { code: 1000, reason: "" });
    assert.deepEqual(parseClosePayload(closePayload(4001, "bye ✓ 𝄞")), {
      code: 4001,
      reason: "bye ✓ 𝄞",
    });
  });

  test("a reason starting with a BOM keeps it", () => {
    assert.deepEqual(parseClosePayload(closePayload(1000, "\ufeffok")), {
      code: 1000,
      reason: "\ufeffok",
    });
  });

  test("a 1-byte payload: 1002", () => {
    for (const b of [0x00, 0x03, 0xe8, 0xff]) {
      assertWebSocketError(() => parseClosePayload(bytes(b)), "INVALID_CLOSE_PAYLOAD", 1002);
    }
  });

  test("every code 0..5000: valid ones parse, the others fail with 1002", () => {
    for (let code = 0; code <= 5000; code++) {
      const payload = closePayload(code, "r");
      if (validOnWire(code)) {
        assert.deepEqual(parseClosePayload(payload), { code, reason: "r" }, `code ${code}`);
      } else {
        assertWebSocketError(() => parseClosePayload(payload), "INVALID_CLOSE_CODE", 1002);
      }
    }
    assertWebSocketError(
      () => parseClosePayload(bytes(0xff, 0xff)),
      "INVALID_CLOSE_CODE",
      1002,
    );
  });

  test("a reason that is not UTF-8: 1007", () => {
    const bad = [
      bytes(0xff),
      bytes(0xc0, 0xaf), // overlong
      bytes(0xed, 0xa0, 0x80), // surrogate
      bytes(0xf4, 0x90, 0x80, 0x80), // beyond U+10FFFF
      bytes(0xe2, 0x82), // truncated
      concat(utf8("ok"), bytes(0x80)),
    ];
    for (const reason of bad) {
      assertWebSocketError(
        () => parseClosePayload(concat(bytes(0x03, 0xe8), reason)),
        "INVALID_UTF8",
        1007,
      );
    }
  });

  test("reads the payload of a subarray at its own offset", () => {
    const backing = concat(bytes(0xaa, 0xbb), closePayload(3000, "x"));
    assert.deepEqual(parseClosePayload(backing.subarray(2)), { code: 3000, reason: "x" });
  });
});

describe("encodeClosePayload", () => {
  test("no code, or 1005, gives an empty payload", () => {
    assert.deepEqual(encodeClosePayload(), bytes());
    assert.deepEqual(encodeClosePayload(1005), bytes());
  });

  test("a reason without a code is a RangeError", () => {
    assert.throws(() => encodeClosePayload(undefined, "why"), RangeError);
    assert.throws(() => encodeClosePayload(1005, "why"), RangeError);
  });

  test("code in network byte order, then the UTF-8 reason", () => {
    assert.deepEqual(encodeClosePayload(1000), bytes(0x03, 0xe8));
    assert.deepEqual(encodeClosePayload(4999, "é"), bytes(0x13, 0x87, 0xc3, 0xa9));
    assert.deepEqual(encodeClosePayload(1001, "bye"), closePayload(1001, "bye"));
  });

  test("1012-1014 are sent as they are", () => {
    assert.deepEqual(encodeClosePayload(1012), bytes(0x03, 0xf4));
    assert.deepEqual(encodeClosePayload(1013, "busy"), closePayload(1013, "busy"));
    assert.deepEqual(encodeClosePayload(1014), bytes(0x03, 0xf6));
  });

  test("round-trips through parseClosePayload for every sendable code", () => {
    for (let code = 0; code <= 5000; code++) {
      if (!validOnWire(code)) continue;
      assert.deepEqual(parseClosePayload(encodeClosePayload(code, "∑")), { code, reason: "∑" });
    }
  });

  test("codes that may not be sent are a RangeError", () => {
    for (const code of [0, 999, 1004, 1006, 1015, 1016, 2999, 5000, 1000.5, NaN]) {
      assert.throws(() => encodeClosePayload(code), RangeError, `code ${code}`);
    }
  });

  test("the reason may take 123 bytes of UTF-8 and no more (§5.5)", () => {
    assert.equal(encodeClosePayload(1000, "a".repeat(123)).length, 125);
    assert.throws(() => encodeClosePayload(1000, "a".repeat(124)), RangeError);
    // 41 three-byte characters are 123 bytes; 42 are 126.
    assert.equal(encodeClosePayload(1000, "€".repeat(41)).length, 125);
    assert.throws(() => encodeClosePayload(1000, "€".repeat(42)), RangeError);
    // 31 four-byte characters are 124 bytes.
    assert.throws(() => encodeClosePayload(1000, "𝄞".repeat(31)), RangeError);
    assert.equal(encodeClosePayload(1000, "𝄞".repeat(30)).length, 122);
  });
});
