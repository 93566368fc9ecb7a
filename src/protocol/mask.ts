/**
 * Masking (RFC 6455 §5.3): `transformed[i] = original[i] ^ mask[i % 4]`.
 *
 * Large payloads go 16 bytes at a time through WebAssembly SIMD
 * (`mask_simd.ts`); where that is unavailable, or for mid-sized ones, the bulk
 * is done 32 bits at a time over the 4-byte aligned middle of the buffer; only
 * the unaligned head and the tail go byte by byte.
 *
 * @module
 */

import { SCRATCH_SIZE, SIMD_BLOCK, simdMask } from "./mask_simd.ts";

/**
 * Below this many bytes the word loop's setup (reaching `.buffer` and making
 * an Int32Array view, ~0.6 µs on Bun's JSC) costs more than it saves.
 */
const WORD_THRESHOLD = 512;

/**
 * From this many bytes the SIMD module (two copies through its scratch page
 * and the XOR) beats the word loop on both runtimes.
 */
export const SIMD_THRESHOLD = 4096;

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * XORs `data` in place with `mask`, where `data[0]` is payload byte number
 * `offset` of its frame (so a payload delivered in pieces is unmasked piece by
 * piece). Only call it on buffers Sluice owns: it never copies.
 */
export function applyMask(data: Uint8Array, mask: Uint8Array, offset = 0): void {
  const m0 = mask[0], m1 = mask[1], m2 = mask[2], m3 = mask[3];
  if ((m0 | m1 | m2 | m3) === 0) return;
  const length = data.length;
  let i = 0;
  if (length >= SIMD_THRESHOLD && simdMask !== null) {
    i = simdXor(data, data, 0, length, maskWord(mask, offset));
  } else if (length >= WORD_THRESHOLD) {
    // Bytes before the first 4-aligned address.
    const head = (4 - (data.byteOffset & 3)) & 3;
    for (; i < head; i++) data[i] ^= mask[(offset + i) & 3];
    const words = (length - i) >>> 2;
    const k = (offset + i) & 3;
    const b0 = mask[k], b1 = mask[(k + 1) & 3], b2 = mask[(k + 2) & 3], b3 = mask[(k + 3) & 3];
    // Int32Array, not Uint32Array: words above 2^31 would leave V8's and
    // JSC's integer fast path. Unrolled by 8: ~1.5-2x the plain loop.
    const word = littleEndian
      ? (b0 | (b1 << 8) | (b2 << 16) | (b3 << 24))
      : ((b0 << 24) | (b1 << 16) | (b2 << 8) | b3);
    const view = new Int32Array(data.buffer, data.byteOffset + i, words);
    let w = 0;
    const end8 = words - 8;
    for (; w <= end8; w += 8) {
      view[w] ^= word;
      view[w + 1] ^= word;
      view[w + 2] ^= word;
      view[w + 3] ^= word;
      view[w + 4] ^= word;
      view[w + 5] ^= word;
      view[w + 6] ^= word;
      view[w + 7] ^= word;
    }
    for (; w < words; w++) view[w] ^= word;
    i += words << 2;
  }
  // Small payloads and the tail: four bytes at a time with the mask rotated
  // to this position.
  const k = (offset + i) & 3;
  const r0 = mask[k], r1 = mask[(k + 1) & 3], r2 = mask[(k + 2) & 3], r3 = mask[(k + 3) & 3];
  const end4 = length - 3;
  for (; i < end4; i += 4) {
    data[i] ^= r0;
    data[i + 1] ^= r1;
    data[i + 2] ^= r2;
    data[i + 3] ^= r3;
  }
  if (i < length) data[i++] ^= r0;
  if (i < length) data[i++] ^= r1;
  if (i < length) data[i] ^= r2;
}

/** The mask as a little-endian word whose low byte applies at `offset`. */
function maskWord(mask: Uint8Array, offset: number): number {
  const k = offset & 3;
  return mask[k] | (mask[(k + 1) & 3] << 8) | (mask[(k + 2) & 3] << 16) | (mask[(k + 3) & 3] << 24);
}

/**
 * XORs `src[0..)` into `dst[at..)` through the SIMD module's scratch page, in
 * whole blocks, and returns how many bytes it did (the rest is under one
 * block). `src` and `dst` may be the same bytes.
 */
function simdXor(
  src: Uint8Array,
  dst: Uint8Array,
  at: number,
  length: number,
  word: number,
): number {
  const { scratch, xor } = simdMask!;
  const whole = length - (length % SIMD_BLOCK);
  for (let i = 0; i < whole; i += SCRATCH_SIZE) {
    const n = Math.min(SCRATCH_SIZE, whole - i);
    scratch.set(src.subarray(i, i + n));
    xor(n, word);
    dst.set(n === SCRATCH_SIZE ? scratch : scratch.subarray(0, n), at + i);
  }
  return whole;
}

/**
 * Copies `src` into `dst` at `dstOffset` and (un)masks the copy (the same XOR
 * either way), leaving `src` untouched. `offset` is the position of `src[0]`
 * within its frame payload.
 */
export function unmaskInto(
  src: Uint8Array,
  dst: Uint8Array,
  dstOffset: number,
  mask: Uint8Array | null,
  offset = 0,
): void {
  const length = src.length;
  if (mask === null || length < SIMD_THRESHOLD || simdMask === null) {
    dst.set(src, dstOffset);
    if (mask !== null) applyMask(dst.subarray(dstOffset, dstOffset + length), mask, offset);
    return;
  }
  const done = simdXor(src, dst, dstOffset, length, maskWord(mask, offset));
  if (done === length) return;
  dst.set(src.subarray(done), dstOffset + done);
  applyMask(dst.subarray(dstOffset + done, dstOffset + length), mask, offset + done);
}

/**
 * Copies `src[start..end)` into `dst` at `at`, unmasking as it goes, by a
 * byte loop that makes no views: for small pieces, where making a view and
 * calling `set()` costs more than the copy. `offset` is the position of
 * `src[start]` within its frame payload.
 */
export function unmaskCopySmall(
  src: Uint8Array,
  start: number,
  end: number,
  dst: Uint8Array,
  at: number,
  mask: Uint8Array | null,
  offset = 0,
): void {
  const n = end - start;
  if (mask === null) {
    for (let i = 0; i < n; i++) dst[at + i] = src[start + i];
    return;
  }
  const k = offset & 3;
  const m0 = mask[k], m1 = mask[(k + 1) & 3], m2 = mask[(k + 2) & 3], m3 = mask[(k + 3) & 3];
  let i = 0;
  for (; i + 3 < n; i += 4) {
    dst[at + i] = src[start + i] ^ m0;
    dst[at + i + 1] = src[start + i + 1] ^ m1;
    dst[at + i + 2] = src[start + i + 2] ^ m2;
    dst[at + i + 3] = src[start + i + 3] ^ m3;
  }
  for (; i < n; i++) dst[at + i] = src[start + i] ^ mask[(offset + i) & 3];
}

const POOL_SIZE = 4096;
let pool = new Uint8Array(0);
let poolOffset = POOL_SIZE;

/**
 * Returns a fresh 4-byte masking key (§5.3: unpredictable, from a strong
 * source). Random bytes are drawn from `crypto.getRandomValues` in 4 KiB
 * batches; the returned view is only valid until the next call, so callers
 * copy it into the frame at once.
 */
export function nextMaskKey(): Uint8Array {
  if (poolOffset >= POOL_SIZE) {
    pool = new Uint8Array(POOL_SIZE);
    crypto.getRandomValues(pool);
    poolOffset = 0;
  }
  const key = pool.subarray(poolOffset, poolOffset + 4);
  poolOffset += 4;
  return key;
}
