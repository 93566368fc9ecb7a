// The messages the wss:// and permessage-deflate interop tests exchange, by
// case name. Written in plain JavaScript so that the Deno and Bun tests, the
// Deno/Bun client peer (whatwg_client.ts) and the npm `ws` peers on Node all
// import the same definitions; `python_client.py` mirrors them exactly (same
// names, same bytes), which the tests check by hashing what the Sluice server
// received against what this module generates.
//
// Pseudo-random bytes are SHA-256 in counter mode, because every language has
// SHA-256 and it is fast enough for a few MiB:
//   block i = sha256(`${seed}:${i}`), concatenated, truncated.
// Random text maps each such byte to the 64-character alphabet below, so it is
// ASCII (valid UTF-8) with ~6 bits of entropy per byte: DEFLATE cannot shrink
// it much, unlike the repeated sentence of the compressible cases.

import { createHash } from "node:crypto";

const KiB = 1024;
const MiB = 1024 * KiB;

/** The 64-character alphabet of random text. */
export const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/** The sentence compressible text repeats (86 ASCII bytes). */
export const SENTENCE =
  "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. ";

/** Every case name, for `messagesFor()`. */
export const CASES = [
  "hello",
  "unicode",
  "empty-text",
  "bytes-0-255",
  "text-1k",
  "text-64k",
  "text-1m",
  "random-text-1k",
  "random-text-64k",
  "random-text-1m",
  "random-binary-1m",
  "small-1000",
];

/** `n` pseudo-random bytes for `seed` (SHA-256 counter mode). */
export function randomBytes(seed, n) {
  const out = new Uint8Array(n);
  let at = 0;
  for (let i = 0; at < n; i++) {
    const block = createHash("sha256").update(`${seed}:${i}`).digest();
    const take = Math.min(block.length, n - at);
    out.set(block.subarray(0, take), at);
    at += take;
  }
  return out;
}

/** `n` bytes of the repeated sentence. */
export function compressibleText(n) {
  return SENTENCE.repeat(Math.ceil(n / SENTENCE.length)).slice(0, n);
}

/** `n` ASCII characters drawn from the alphabet by `randomBytes(seed, n)`. */
export function randomText(seed, n) {
  const bytes = randomBytes(seed, n);
  let out = "";
  for (let i = 0; i < n; i += 8192) {
    const chunk = bytes.subarray(i, i + 8192);
    out += String.fromCharCode(...Array.from(chunk, (b) => ALPHABET.charCodeAt(b & 63)));
  }
  return out;
}

/** The i-th of the small messages: a ~150-byte JSON record, each a little different. */
export function smallMessage(i) {
  return `{"seq":${i},"topic":"prices","symbol":"SLC","bid":${1000 + (i % 97)},"ask":${
    1001 + (i % 89)
  },"note":"the quick brown fox jumps over the lazy dog"}`;
}

/**
 * The messages of a case, in sending order: strings are text messages,
 * `Uint8Array`s binary ones.
 *
 * @param {string} name
 * @returns {(string | Uint8Array)[]}
 */
export function messagesFor(name) {
  switch (name) {
    case "hello":
      return ["hello"];
    case "unicode":
      return ["h\u00e9llo w\u00f6rld \u2713 \ud83c\udf89 \u4e2d\u6587"];
    case "empty-text":
      return [""];
    case "bytes-0-255":
      return [Uint8Array.from({ length: 256 }, (_, i) => i)];
    case "text-1k":
      return [compressibleText(KiB)];
    case "text-64k":
      return [compressibleText(64 * KiB)];
    case "text-1m":
      return [compressibleText(MiB)];
    case "random-text-1k":
      return [randomText(name, KiB)];
    case "random-text-64k":
      return [randomText(name, 64 * KiB)];
    case "random-text-1m":
      return [randomText(name, MiB)];
    case "random-binary-1m":
      return [randomBytes(name, MiB)];
    case "small-1000":
      return Array.from({ length: 1000 }, (_, i) => smallMessage(i));
    default:
      throw new Error(`Unknown case ${name}`);
  }
}

/** Whether a received message (string or bytes) is exactly the expected one. */
export function sameMessage(expected, received) {
  if (typeof expected === "string") return typeof received === "string" && received === expected;
  if (typeof received === "string") return false;
  const bytes = received instanceof Uint8Array ? received : new Uint8Array(received);
  if (bytes.byteLength !== expected.byteLength) return false;
  for (let i = 0; i < bytes.byteLength; i++) if (bytes[i] !== expected[i]) return false;
  return true;
}

/** Describes a message for error reports without printing a MiB of it. */
export function describeMessage(message) {
  if (message === undefined) return "nothing";
  if (typeof message === "string") {
    return `text(${message.length} chars: ${JSON.stringify(message.slice(0, 40))})`;
  }
  const bytes = message instanceof Uint8Array ? message : new Uint8Array(message);
  return `binary(${bytes.byteLength} bytes)`;
}

/**
 * `{kind, length, sha256}` of a message as it crosses the wire (UTF-8 for
 * text): what the Sluice server records, and what the tests expect.
 */
export function fingerprint(message) {
  const bytes = typeof message === "string"
    ? new TextEncoder().encode(message)
    : message instanceof Uint8Array
    ? message
    : new Uint8Array(message);
  return {
    kind: typeof message === "string" ? "text" : "binary",
    length: bytes.byteLength,
    sha256: createHash("sha256").update(bytes).digest("hex"),
  };
}

/**
 * Sends the messages of each case in turn (all of a case at once, then waits
 * for as many echoes) and compares each echo with what was sent.
 *
 * @param {string[]} cases
 * @param {(message: string | Uint8Array) => void} send
 * @param {(ms: number) => Promise<string | Uint8Array | ArrayBuffer>} receive
 *   the next echoed message, rejecting after `ms`
 * @returns {Promise<{ name: string, ok: boolean, count: number, error?: string }[]>}
 */
export async function runCases(cases, send, receive) {
  const results = [];
  for (const name of cases) {
    const messages = messagesFor(name);
    for (const message of messages) send(message);
    let error;
    for (let i = 0; i < messages.length; i++) {
      let echoed;
      try {
        echoed = await receive(15_000);
      } catch (err) {
        error = `echo ${i} of ${messages.length}: ${err.message}`;
        break;
      }
      if (error === undefined && !sameMessage(messages[i], echoed)) {
        error = `echo ${i} differs: sent ${describeMessage(messages[i])}, got ${
          describeMessage(echoed)
        }`;
      }
    }
    results.push({ name, ok: error === undefined, count: messages.length, error });
    if (error !== undefined && error.includes("Timed out")) break;
  }
  return results;
}

/** A queue of received messages with a timed `next()`, ended by `fail()`. */
export class Inbox {
  #items = [];
  #waiters = [];
  #failure = null;

  push(item) {
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(item);
    else this.#items.push(item);
  }

  fail(error) {
    this.#failure ??= error;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
  }

  next(ms) {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift());
    if (this.#failure !== null) return Promise.reject(this.#failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const index = this.#waiters.indexOf(waiter);
        if (index !== -1) this.#waiters.splice(index, 1);
        reject(new Error(`Timed out after ${ms} ms waiting for a message`));
      }, ms);
      const waiter = {
        resolve: (item) => {
          clearTimeout(timer);
          resolve(item);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.#waiters.push(waiter);
    });
  }
}
