/**
 * Incremental UTF-8 validation (RFC 3629 §4, as the WHATWG Encoding
 * Standard's UTF-8 decoder applies it): bytes go in piece by piece, and the
 * first byte that cannot be part of valid UTF-8 is reported at once. RFC 6455
 * §8.1 lets an endpoint fail a text message as soon as it sees invalid UTF-8,
 * without waiting for the rest of the message; this keeps no decoded text
 * while doing so, so a fragmented text message costs one byte buffer.
 *
 * @module
 */

import { isUtf8 } from "node:buffer";

/**
 * Pieces at least this long are checked by the runtime's native `isUtf8`
 * (simdutf on Bun, Rust on Deno: 20-100x the byte loop on ASCII, measured on
 * 1 MiB); shorter ones, and the at most 3 bytes of a character cut at either
 * end of a piece, go through the byte loop, which keeps the state across
 * pieces.
 */
const NATIVE_MIN = 256;
const nativeIsUtf8: ((bytes: Uint8Array) => boolean) | null = typeof isUtf8 === "function"
  ? isUtf8
  : null;

/**
 * Checks a byte stream for UTF-8 validity across arbitrary splits. Rejects
 * what a fatal `TextDecoder("utf-8")` rejects: stray continuation bytes,
 * overlong forms (C0, C1, E0 80-9F, F0 80-8F), surrogates (ED A0-BF), code
 * points above U+10FFFF (F4 90-BF, F5-FF) and truncated sequences.
 *
 * @example Split inside a character
 * ```ts
 * import { Utf8Validator } from "./utf8.ts";
 *
 * const v = new Utf8Validator();
 * const euro = new Uint8Array([0xe2, 0x82, 0xac]);
 * v.push(euro, 0, 2); // true: a valid prefix
 * v.push(euro, 2, 3); // true
 * v.complete; // true: not inside a character
 * ```
 */
export class Utf8Validator {
  /** Continuation bytes still needed by the character in progress. */
  #needed = 0;
  /** Bounds for the next continuation byte (narrower after E0, ED, F0, F4). */
  #lower = 0x80;
  #upper = 0xbf;

  /**
   * Checks `bytes[start..end)` as the next piece of the stream. Returns
   * false at the first invalid byte; the validator must then be reset.
   */
  push(bytes: Uint8Array, start = 0, end = bytes.length): boolean {
    if (end - start < NATIVE_MIN || nativeIsUtf8 === null) return this.#scan(bytes, start, end);
    let i = start;
    if (this.#needed > 0) {
      // Finish the character the previous piece cut.
      const stop = i + this.#needed;
      if (!this.#scan(bytes, i, stop)) return false;
      i = stop;
    }
    const cut = lastBoundary(bytes, i, end);
    if (!nativeIsUtf8(bytes.subarray(i, cut))) {
      this.reset();
      return false;
    }
    // A character cut at the end of the piece: keep its state for the next.
    return this.#scan(bytes, cut, end);
  }

  /** The byte loop: WHATWG's UTF-8 decoder, keeping only what it needs to validate. */
  #scan(bytes: Uint8Array, start: number, end: number): boolean {
    let needed = this.#needed, lower = this.#lower, upper = this.#upper;
    let i = start;
    while (i < end) {
      if (needed === 0) {
        // ASCII runs are the common case: skip them without state changes.
        while (i < end && bytes[i] < 0x80) i++;
        if (i === end) break;
        const b = bytes[i++];
        if (b >= 0xc2 && b <= 0xdf) {
          needed = 1;
        } else if (b >= 0xe0 && b <= 0xef) {
          if (b === 0xe0) lower = 0xa0;
          else if (b === 0xed) upper = 0x9f;
          needed = 2;
        } else if (b >= 0xf0 && b <= 0xf4) {
          if (b === 0xf0) lower = 0x90;
          else if (b === 0xf4) upper = 0x8f;
          needed = 3;
        } else {
          this.reset();
          return false;
        }
      } else {
        const b = bytes[i++];
        if (b < lower || b > upper) {
          this.reset();
          return false;
        }
        lower = 0x80;
        upper = 0xbf;
        needed--;
      }
    }
    this.#needed = needed;
    this.#lower = lower;
    this.#upper = upper;
    return true;
  }

  /** Whether the bytes so far end on a character boundary (valid as a whole). */
  get complete(): boolean {
    return this.#needed === 0;
  }

  /** Forgets any character in progress. */
  reset(): void {
    this.#needed = 0;
    this.#lower = 0x80;
    this.#upper = 0xbf;
  }
}

/**
 * Index in `bytes[from..end)` where a character cut by `end` starts, or `end`
 * if the piece ends on a boundary. Looks at most 3 bytes back: no character
 * is longer than 4. Invalid bytes are left where they are; whichever side
 * they fall on rejects them.
 */
function lastBoundary(bytes: Uint8Array, from: number, end: number): number {
  const stop = Math.max(from, end - 3);
  for (let k = end - 1; k >= stop; k--) {
    const b = bytes[k];
    if ((b & 0xc0) === 0x80) continue; // a continuation byte: look further back
    if (b < 0xc0) return end; // ASCII ends a character
    const length = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
    return k + length > end ? k : end;
  }
  return end;
}
