import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Utf8Validator } from "../../src/protocol/utf8.ts";
import { bytes, concat, splits, utf8 } from "./_helpers.ts";

/** Feeds chunks; true when every piece was accepted and the stream ends on a character boundary. */
function validate(chunks: Uint8Array[]): boolean {
  const v = new Utf8Validator();
  for (const chunk of chunks) if (!v.push(chunk)) return false;
  return v.complete;
}

// RFC 3629 §4 and the WHATWG decoder, written out as byte sequences.
const VALID: [string, Uint8Array][] = [
  ["empty", bytes()],
  ["ASCII", utf8("hello")],
  ["2-byte lowest (U+0080)", bytes(0xc2, 0x80)],
  ["3-byte lowest (U+0800)", bytes(0xe0, 0xa0, 0x80)],
  ["last before surrogates (U+D7FF)", bytes(0xed, 0x9f, 0xbf)],
  ["first after surrogates (U+E000)", bytes(0xee, 0x80, 0x80)],
  ["BOM (U+FEFF)", bytes(0xef, 0xbb, 0xbf)],
  ["4-byte lowest (U+10000)", bytes(0xf0, 0x90, 0x80, 0x80)],
  ["highest (U+10FFFF)", bytes(0xf4, 0x8f, 0xbf, 0xbf)],
  ["mixed", utf8("κόσμε €𝄞 ok")],
];

const INVALID: [string, Uint8Array][] = [
  ["lone continuation", bytes(0x80)],
  ["overlong 2-byte (C0)", bytes(0xc0, 0xaf)],
  ["overlong 2-byte (C1)", bytes(0xc1, 0xbf)],
  ["overlong 3-byte", bytes(0xe0, 0x80, 0xaf)],
  ["overlong 4-byte", bytes(0xf0, 0x80, 0x80, 0xaf)],
  ["surrogate (U+D800)", bytes(0xed, 0xa0, 0x80)],
  ["surrogate (U+DFFF)", bytes(0xed, 0xbf, 0xbf)],
  ["beyond U+10FFFF (F4 90)", bytes(0xf4, 0x90, 0x80, 0x80)],
  ["F5 lead byte", bytes(0xf5, 0x80, 0x80, 0x80)],
  ["FF byte", bytes(0xff)],
  ["truncated 2-byte", bytes(0xc3)],
  ["truncated 3-byte", bytes(0xe2, 0x82)],
  ["truncated 4-byte", bytes(0xf0, 0x9d, 0x84)],
  ["lead byte then ASCII", bytes(0xe2, 0x28, 0xa1)],
  ["valid then bad", concat(utf8("ok"), bytes(0xc3, 0x28))],
];

describe("Utf8Validator", () => {
  test("valid sequences, whole and split at every offset", () => {
    for (const [name, data] of VALID) {
      assert.equal(validate([data]), true, name);
      for (const { name: how, chunks } of splits(data)) {
        assert.equal(validate(chunks), true, `${name}, ${how}`);
      }
    }
  });

  test("invalid sequences, whole and split at every offset", () => {
    for (const [name, data] of INVALID) {
      assert.equal(validate([data]), false, name);
      for (const { name: how, chunks } of splits(data)) {
        assert.equal(validate(chunks), false, `${name}, ${how}`);
      }
    }
  });

  test("a bad byte is refused in the piece that holds it, not later", () => {
    const v = new Utf8Validator();
    assert.equal(v.push(bytes(0xf0, 0x9d)), true);
    assert.equal(v.complete, false);
    assert.equal(v.push(bytes(0x28)), false);
  });

  test("long pieces (the native path) agree at every cut around a character", () => {
    // 300 ASCII bytes, then one character of each length, then more ASCII.
    for (const ch of ["é", "€", "𝄞"]) {
      const data = utf8("a".repeat(300) + ch + "b".repeat(300));
      for (let at = 295; at <= 306; at++) {
        assert.equal(
          validate([data.subarray(0, at), data.subarray(at)]),
          true,
          `${ch} cut at ${at}`,
        );
      }
    }
    for (const [name, bad] of INVALID) {
      const data = concat(utf8("a".repeat(300)), bad, utf8("b".repeat(300)));
      for (const at of [0, 299, 300, 301, 302, 303, data.length]) {
        const chunks = [data.subarray(0, at), data.subarray(at)];
        assert.equal(validate(chunks), false, `${name} cut at ${at}`);
      }
    }
  });

  test("reset() forgets a character in progress", () => {
    const v = new Utf8Validator();
    v.push(bytes(0xe2, 0x82));
    v.reset();
    assert.equal(v.complete, true);
    assert.equal(v.push(utf8("x")), true);
  });
});
