import { describe, test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import fc from "fast-check";
import {
  applyMask,
  nextMaskKey,
  SIMD_THRESHOLD,
  unmaskCopySmall,
  unmaskInto,
} from "../../src/protocol/mask.ts";
import { SCRATCH_SIZE, SIMD_BLOCK, simdMask } from "../../src/protocol/mask_simd.ts";
import { bytes, hex, KEY, naiveMask, pattern } from "./_helpers.ts";

const MASKS = [
  KEY,
  bytes(0xff, 0x00, 0x80, 0x01),
  bytes(0x01, 0x02, 0x03, 0x04),
  // A single non-zero byte in each position: not to be mistaken for an all-zero mask.
  bytes(0x00, 0x00, 0x00, 0x01),
  bytes(0x00, 0x00, 0x80, 0x00),
  bytes(0x00, 0x40, 0x00, 0x00),
  bytes(0x20, 0x00, 0x00, 0x00),
];

describe("applyMask", () => {
  test("matches the §5.3 definition for every length 0..100 and offset 0..3", () => {
    for (const mask of MASKS) {
      for (let length = 0; length <= 100; length++) {
        const original = pattern(length, length);
        for (let offset = 0; offset < 4; offset++) {
          const data = original.slice();
          applyMask(data, mask, offset);
          assert.deepEqual(
            data,
            naiveMask(original, mask, offset),
            `mask ${hex(mask)}, length ${length}, offset ${offset}`,
          );
        }
      }
    }
  });

  test("handles offsets beyond 3 as position modulo 4", () => {
    const original = pattern(77);
    for (const offset of [4, 5, 6, 7, 125, 65537, 2 ** 32 + 3]) {
      const data = original.slice();
      applyMask(data, KEY, offset);
      assert.deepEqual(data, naiveMask(original, KEY, offset % 4), `offset ${offset}`);
    }
  });

  test("masks unaligned subarrays (byteOffset 1, 2, 3) and leaves bytes around them alone", () => {
    for (let byteOffset = 0; byteOffset < 4; byteOffset++) {
      for (const length of [0, 1, 3, 4, 5, 31, 32, 33, 64, 99, 100, 1000]) {
        for (let offset = 0; offset < 4; offset++) {
          const backing = pattern(byteOffset + length + 8, 3);
          const before = backing.slice();
          const view = backing.subarray(byteOffset, byteOffset + length);
          applyMask(view, KEY, offset);
          const expected = before.slice();
          expected.set(
            naiveMask(before.subarray(byteOffset, byteOffset + length), KEY, offset),
            byteOffset,
          );
          assert.deepEqual(
            backing,
            expected,
            `byteOffset ${byteOffset}, length ${length}, offset ${offset}`,
          );
        }
      }
    }
  });

  test("an all-zero mask leaves the data as it is", () => {
    for (const length of [0, 5, 32, 100, 4096]) {
      const data = pattern(length);
      applyMask(data, bytes(0, 0, 0, 0));
      assert.deepEqual(data, pattern(length));
    }
  });

  test("masking twice restores the original", () => {
    const original = pattern(1025);
    const data = original.slice();
    applyMask(data, KEY, 2);
    assert.notDeepEqual(data, original);
    applyMask(data, KEY, 2);
    assert.deepEqual(data, original);
  });

  test("masking a payload in pieces at their frame offsets equals masking it whole", () => {
    const original = pattern(200);
    const whole = original.slice();
    applyMask(whole, KEY);
    for (const cut of [1, 2, 3, 5, 33, 63, 101, 199]) {
      const pieces = original.slice();
      applyMask(pieces.subarray(0, cut), KEY, 0);
      applyMask(pieces.subarray(cut), KEY, cut);
      assert.deepEqual(pieces, whole, `cut at ${cut}`);
    }
  });

  test("the §5.7 masked 'Hello' payload", () => {
    const data = new TextEncoder().encode("Hello");
    applyMask(data, KEY);
    assert.deepEqual(data, bytes(0x7f, 0x9f, 0x4d, 0x51, 0x58));
  });
});

describe("unmaskInto", () => {
  test("writes the unmasked copy at dstOffset and never changes src", () => {
    for (const length of [0, 1, 7, 32, 33, 100, 300]) {
      for (let dstOffset = 0; dstOffset < 5; dstOffset++) {
        for (let offset = 0; offset < 4; offset++) {
          const src = pattern(length, 9);
          const srcBefore = src.slice();
          const dst = new Uint8Array(dstOffset + length + 3).fill(0xee);
          unmaskInto(src, dst, dstOffset, KEY, offset);
          assert.deepEqual(src, srcBefore, "src must not change");
          const expected = new Uint8Array(dst.length).fill(0xee);
          expected.set(naiveMask(srcBefore, KEY, offset), dstOffset);
          assert.deepEqual(
            dst,
            expected,
            `length ${length}, dstOffset ${dstOffset}, offset ${offset}`,
          );
        }
      }
    }
  });

  test("never changes src when src is an unaligned view", () => {
    const backing = pattern(130, 1);
    const src = backing.subarray(1, 129);
    const before = backing.slice();
    const dst = new Uint8Array(128);
    unmaskInto(src, dst, 0, KEY, 1);
    assert.deepEqual(backing, before);
    assert.deepEqual(dst, naiveMask(src, KEY, 1));
  });

  test("a null mask copies as is", () => {
    const src = pattern(50);
    const dst = new Uint8Array(52);
    unmaskInto(src, dst, 2, null);
    assert.deepEqual(dst.subarray(2), src);
    assert.deepEqual(dst.subarray(0, 2), bytes(0, 0));
  });
});

/**
 * `assert.deepEqual` for large byte arrays, failing fast with the first
 * difference (a diff of two 200 KB arrays takes minutes to format).
 */
function sameBytes(actual: Uint8Array, expected: Uint8Array, what = ""): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      assert.fail(
        `${what}: byte ${i} of ${actual.length} is ${actual[i]}, expected ${expected[i]}`,
      );
    }
  }
}

describe("masking large payloads through WebAssembly SIMD", () => {
  // Lengths around every edge of the SIMD path: the threshold, whole blocks,
  // one scratch page, and several pages with a tail.
  const LENGTHS = [
    SIMD_THRESHOLD - 1,
    SIMD_THRESHOLD,
    SIMD_THRESHOLD + 1,
    SIMD_THRESHOLD + SIMD_BLOCK - 1,
    4096,
    SCRATCH_SIZE - 1,
    SCRATCH_SIZE,
    SCRATCH_SIZE + 1,
    SCRATCH_SIZE + SIMD_BLOCK,
    3 * SCRATCH_SIZE + 17,
  ];

  test("the module loads on this runtime (a silent fall back to the word loop would hide a regression)", () => {
    assert.ok(simdMask !== null, "WebAssembly SIMD masking did not load");
    assert.equal(simdMask.scratch.length, SCRATCH_SIZE);
  });

  test("applyMask matches §5.3 at every edge, offset and alignment, touching nothing around", () => {
    for (const mask of MASKS) {
      for (const length of LENGTHS) {
        for (const [byteOffset, offset] of [[0, 0], [1, 1], [2, 3], [3, 2], [0, 5]]) {
          const backing = pattern(byteOffset + length + 5, length);
          const before = backing.slice();
          applyMask(backing.subarray(byteOffset, byteOffset + length), mask, offset);
          const expected = before.slice();
          expected.set(
            naiveMask(before.subarray(byteOffset, byteOffset + length), mask, offset),
            byteOffset,
          );
          sameBytes(
            backing,
            expected,
            `mask ${hex(mask)}, length ${length}, byteOffset ${byteOffset}, offset ${offset}`,
          );
        }
      }
    }
  });

  test("unmaskInto matches §5.3 at every edge, never changes src, touches nothing else in dst", () => {
    for (const length of LENGTHS) {
      for (const [dstOffset, offset] of [[0, 0], [1, 2], [3, 1], [6, 7]]) {
        const backing = pattern(length + 2, 11);
        const src = backing.subarray(1, 1 + length);
        const before = backing.slice();
        const dst = new Uint8Array(dstOffset + length + 3).fill(0xee);
        unmaskInto(src, dst, dstOffset, KEY, offset);
        sameBytes(backing, before, "src must not change");
        const expected = new Uint8Array(dst.length).fill(0xee);
        expected.set(naiveMask(src, KEY, offset), dstOffset);
        sameBytes(
          dst,
          expected,
          `length ${length}, dstOffset ${dstOffset}, offset ${offset}`,
        );
      }
    }
  });

  test("a large payload masked in pieces of any size at their offsets equals masking it whole", () => {
    const original = pattern(2 * SCRATCH_SIZE + 333, 5);
    const whole = naiveMask(original, KEY);
    for (const cut of [1, 63, SIMD_THRESHOLD + 3, SCRATCH_SIZE - 1, SCRATCH_SIZE + 65]) {
      const inPlace = original.slice();
      const copied = new Uint8Array(original.length);
      for (let at = 0; at < original.length; at += cut) {
        const end = Math.min(at + cut, original.length);
        applyMask(inPlace.subarray(at, end), KEY, at);
        unmaskInto(original.subarray(at, end), copied, at, KEY, at);
      }
      sameBytes(inPlace, whole, `in place, pieces of ${cut}`);
      sameBytes(copied, whole, `copied, pieces of ${cut}`);
    }
  });
});

describe("property: masking matches §5.3 for any length, alignment, offset and cuts", () => {
  const SEED = Number(process.env.SLUICE_FC_SEED ?? 20_240_607);
  const cases = fc.record({
    // Mostly around the SIMD path (whole pages and tails), some small ones.
    length: fc.oneof(
      fc.integer({ min: 0, max: 600 }),
      fc.integer({ min: SIMD_THRESHOLD - 70, max: 3 * SCRATCH_SIZE + 200 }),
    ),
    byteOffset: fc.integer({ min: 0, max: 7 }),
    offset: fc.nat({ max: 1 << 20 }),
    mask: fc.uint8Array({ minLength: 4, maxLength: 4 }),
    cuts: fc.array(fc.nat(), { maxLength: 4 }),
    seed: fc.nat(),
  });

  test("in place and copied, whole and in pieces", () => {
    fc.assert(
      fc.property(cases, ({ length, byteOffset, offset, mask, cuts, seed }) => {
        const backing = new Uint8Array(byteOffset + length + 3);
        for (let i = 0; i < backing.length; i++) backing[i] = (i * 31 + seed) & 0xff;
        const original = backing.slice();
        const data = original.subarray(byteOffset, byteOffset + length);
        const expected = naiveMask(data, mask, offset);
        // In place, in pieces at the given cuts.
        const inPlace = original.slice();
        const points = [...new Set(cuts.map((c) => c % (length + 1)))].sort((a, b) => a - b);
        let from = 0;
        for (const to of [...points, length]) {
          applyMask(inPlace.subarray(byteOffset + from, byteOffset + to), mask, offset + from);
          from = to;
        }
        sameBytes(inPlace.subarray(byteOffset, byteOffset + length), expected, "in place");
        sameBytes(inPlace.subarray(0, byteOffset), original.subarray(0, byteOffset), "before");
        sameBytes(
          inPlace.subarray(byteOffset + length),
          original.subarray(byteOffset + length),
          "after",
        );
        // Copied, whole, at an odd destination offset; the source never changes.
        const dst = new Uint8Array(length + 5).fill(0xee);
        unmaskInto(data, dst, 3, mask, offset);
        sameBytes(dst.subarray(3, 3 + length), expected, "copied");
        assert.ok(
          dst.subarray(0, 3).every((b) => b === 0xee) &&
            dst.subarray(3 + length).every((b) => b === 0xee),
        );
        sameBytes(original, backing, "source");
      }),
      { seed: SEED, numRuns: 150, endOnFailure: false },
    );
  });
});

describe("nextMaskKey", () => {
  test("returns 4-byte keys that vary from call to call", () => {
    const seen = new Set<string>();
    // Enough calls to cross the 4 KiB random pool more than once.
    for (let i = 0; i < 3000; i++) {
      const key = nextMaskKey();
      assert.equal(key.length, 4);
      seen.add(hex(key));
    }
    // 3000 draws from 2^32 keys: a handful of collisions at most.
    assert.ok(seen.size > 2990, `only ${seen.size} distinct keys in 3000`);
  });

  test("a key taken earlier keeps its value after later calls", () => {
    const key = nextMaskKey();
    const copy = key.slice();
    for (let i = 0; i < 2000; i++) nextMaskKey();
    assert.deepEqual(key, copy);
  });
});

describe("unmaskCopySmall", () => {
  test("copies and unmasks any range at any offset, touching nothing else", () => {
    const src = pattern(80, 9);
    for (const mask of [...MASKS, null]) {
      for (let start = 0; start < 6; start++) {
        for (let n = 0; n <= 40; n++) {
          for (let offset = 0; offset < 6; offset++) {
            const dst = new Uint8Array(60).fill(0xee);
            unmaskCopySmall(src, start, start + n, dst, 7, mask, offset);
            const piece = src.slice(start, start + n);
            const expected = mask === null ? piece : naiveMask(piece, mask, offset);
            assert.deepEqual(dst.subarray(7, 7 + n), expected, `n ${n} offset ${offset}`);
            assert.ok(dst.subarray(0, 7).every((b) => b === 0xee), "bytes before untouched");
            assert.ok(dst.subarray(7 + n).every((b) => b === 0xee), "bytes after untouched");
          }
        }
      }
    }
    assert.deepEqual(src, pattern(80, 9), "src never changes");
  });
});
