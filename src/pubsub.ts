/**
 * Topics and fan-out: `subscribe`/`publish` with encode-once delivery and a
 * per-subscription policy for subscribers that fall behind.
 *
 * ## Encode once
 *
 * A publish frames its message a single time (`encodeFrame`, unmasked, as
 * every server frame is) and hands the same bytes to each subscriber's queue.
 * With permessage-deflate the payload is compressed once per distinct set of
 * sending parameters among the subscribers that agreed
 * `server_no_context_takeover` (their frames depend only on the message and
 * those parameters), and per connection only for connections that keep
 * compression context across messages: their bytes depend on everything they
 * were sent before, so no frame can be shared. Servers that publish to many
 * compressed connections should negotiate `serverNoContextTakeover: true`.
 * Measured (bench/README.md, 16 KiB JSON-like messages to 1000 subscribers on
 * a shared 2-core machine): 3.2-3.5 µs of server CPU per delivery with one
 * compression per publish, against 10.2 µs for Bun's native publish with
 * compression and 58 µs for npm `ws` deflating per subscriber. Without
 * compression: 0.5-0.6 µs per delivery (Deno's built-in server with a send
 * loop: 6.6 µs).
 *
 * ## Slow subscribers
 *
 * A subscriber is slow while its connection holds more than `maxBuffered`
 * unsent bytes (default 1 MiB). Each subscription picks what happens then:
 *
 * - `"drop"` (default): messages for that topic are skipped while it is slow
 *   and counted; `onDrop` is told the size of each gap just before the first
 *   message after it is queued, so an application can send a "you missed N"
 *   notice that arrives in order.
 * - `"close"`: the connection is closed with 1008 (Policy Violation) and a
 *   reason naming the topic. 1008 rather than 1013 (Try Again Later): the
 *   client, not the server, broke the delivery contract, and 1008 is defined
 *   in RFC 6455 itself, so every client accepts it.
 * - `"latest"`: conflation. `key(data)` names what a message updates (a stock
 *   symbol, a player id; by default the whole topic is one key). While slow
 *   only the newest message per key is held; when the connection drains it
 *   receives one message per key, the newest value, in the order the keys
 *   were first held back (they are also sent first by the next publish that
 *   finds the connection no longer slow). Memory per slow subscriber is
 *   bounded by its number of distinct keys, never by the publish rate, and
 *   by its `maxBuffered` (at least 1 MiB) of held frames: a message with a
 *   new key past that is dropped (counted as `"drop"` counts), so a key
 *   function that names every message anew cannot make a queue of it.
 *
 * There is never an unbounded queue, and publishing never waits.
 *
 * ## Why no wildcard topics
 *
 * Topics are matched exactly (a `Map` lookup), so a publish costs one lookup
 * plus one write per subscriber however many topics exist. Wildcards (`a.*`)
 * make every publish match patterns, make "which subscriptions see this
 * message" depend on every other subscription, and make a message reach a
 * subscriber twice when two patterns match. Instead, subscribe to each
 * concrete topic you need (a connection may hold many), or publish the same
 * message to a coarse and a fine topic (`"prices"` and `"prices:ACME"`).
 *
 * @module
 */

import type { FanOutHub, FanOutTarget } from "./pubsub_port.ts";
import type { BrokerStats } from "./broker.ts";
import type { WebSocketConnection } from "./websocket.ts";
import { encodeFrame } from "./protocol/frame.ts";
import { Opcode } from "./protocol/opcodes.ts";
import { PerMessageDeflate } from "./protocol/deflate_codec.ts";
import { type DeflateOptions, resolveDeflateOptions } from "./protocol/permessage_deflate.ts";
import { CloseCode } from "./protocol/close_codes.ts";

/**
 * What a subscription does once its connection holds more than
 * `maxBuffered` unsent bytes: `"drop"` skips messages (and counts them),
 * `"close"` closes the connection with 1008, `"latest"` keeps only the
 * newest message per key and sends those once the connection drains.
 *
 * @example Choosing a policy per subscription
 * ```ts
 * import type { SlowPolicy } from "@sluice/ws";
 * const policy: SlowPolicy = "latest";
 * console.log(policy);
 * ```
 */
export type SlowPolicy = "drop" | "close" | "latest";

/** The message as `key` functions and callbacks see it: text or bytes. */
export type PublishedData = string | Uint8Array;

/**
 * Names what a message updates, for the `"latest"` policy: messages with
 * equal keys replace each other while a subscriber is slow.
 */
export type ConflationKey = (data: PublishedData) => string | number;

/**
 * Options of one subscription (`ws.subscribe(topic, options)`); unset fields
 * take the server's {@linkcode PubSubOptions}.
 *
 * @example A ticker client that skips to the newest price per symbol
 * ```ts
 * import { serve, type SubscribeOptions } from "@sluice/ws";
 * const ticker: SubscribeOptions = {
 *   policy: "latest",
 *   key: (data) => typeof data === "string" ? data.split(" ")[0] : "",
 *   maxBuffered: 64 * 1024,
 * };
 * const server = await serve({ port: 0 }, (ws) => ws.subscribe("prices", ticker));
 * server.publish("prices", "ACME 12.5");
 * await server.shutdown();
 * ```
 */
export interface SubscribeOptions {
  /** What to do while the subscriber is slow. @default {"drop"} */
  policy?: SlowPolicy;
  /**
   * For `"latest"`: what a message updates. Called at most once per
   * publish, and only when a slow subscriber needs it. If it throws, that
   * subscriber's connection is closed with 1011 and the error reported.
   * @default the whole topic is one key
   */
  key?: ConflationKey;
  /**
   * Unsent bytes on the connection above which the subscriber is slow.
   * @default {1048576}
   */
  maxBuffered?: number;
}

/**
 * Server-wide pub/sub settings (`serve({ pubsub })`): defaults for every
 * subscription, and where the layer reports what it did.
 *
 * @example Close subscribers that fall 256 KiB behind, and log drops
 * ```ts
 * import { serve } from "@sluice/ws";
 * const server = await serve({
 *   port: 0,
 *   pubsub: {
 *     policy: "close",
 *     maxBuffered: 256 * 1024,
 *     onDrop: (ws, topic, skipped) => console.log(`${topic}: ${skipped} skipped`),
 *   },
 * }, (ws) => ws.subscribe("news"));
 * await server.shutdown();
 * ```
 */
export interface PubSubOptions<Target = WebSocketConnection> extends SubscribeOptions {
  /**
   * Called (policy `"drop"`) when a subscriber that skipped messages gets its
   * next one, just before that message is queued, with the number skipped:
   * a message sent from here arrives before it. If it throws, the connection
   * is closed with 1011 and the error reported.
   */
  onDrop?: (ws: Target, topic: string, skipped: number) => void;
  /**
   * Receives exceptions thrown by `key` and `onDrop` (the connection they
   * concerned is closed with 1011). @default console.error
   */
  onError?: (error: Error, ws: Target) => void;
}

/**
 * Options of `server.publish(topic, data, options)`.
 *
 * @example Publish to everyone but the sender
 * ```ts
 * import { serve } from "@sluice/ws";
 * const server = await serve({ port: 0 }, {
 *   open: (ws) => ws.subscribe("chat"),
 *   message: (ws, data) => void server.publish("chat", data, { exclude: ws }),
 * });
 * await server.shutdown();
 * ```
 */
export interface PublishOptions<Target = WebSocketConnection> {
  /** A connection that should not receive this message (usually its sender). */
  exclude?: Target;
}

/**
 * Counters of a running server, from `server.stats()`: cheap to keep (plain
 * additions on paths that already run), render them with
 * {@linkcode formatPrometheus}.
 *
 * @example Reading the counters
 * ```ts
 * import { serve } from "@sluice/ws";
 * const server = await serve({ port: 0 }, (ws) => ws.subscribe("t"));
 * const stats = server.stats();
 * console.log(stats.connections, stats.messagesPublished, stats.closes);
 * await server.shutdown();
 * ```
 */
export interface ServerStats {
  /** Connections open now. */
  connections: number;
  /** Topics with at least one subscriber. */
  topics: number;
  /** Subscriptions now (a connection subscribed to 3 topics counts 3). */
  subscriptions: number;
  /** `publish` calls that had a valid topic (whether or not anyone subscribed). */
  messagesPublished: number;
  /** Payload bytes of those messages (text as UTF-8), counted once each. */
  bytesPublished: number;
  /** Messages queued to subscribers (one per subscriber reached). */
  messagesDelivered: number;
  /** Frame bytes queued to subscribers, headers included. */
  bytesDelivered: number;
  /** Messages skipped for slow subscribers under `"drop"`. */
  messagesDropped: number;
  /** Messages replaced by a newer one with the same key under `"latest"`. */
  messagesConflated: number;
  /** Connections closed because they were slow under `"close"`. */
  slowCloses: number;
  /** Times a message was framed or compressed (once per publish, plus per-key and per-connection compression). */
  encodings: number;
  /** Closed connections by close code (1006 when the connection dropped). */
  closes: Record<number, number>;
  /** The broker link's health and counters, when the server has a broker (`serve({ broker })`). */
  broker?: BrokerStats;
}

/**
 * Where a hub sends what must cross process boundaries (a broker link, see
 * `broker.ts`): each local publish after its local fan-out, and the topics
 * that gain their first or lose their last local subscriber.
 *
 * @internal
 */
export interface PubSubRelay {
  /** A local publish, already delivered locally: `text` says how to frame it elsewhere. */
  published(topic: string, payload: Uint8Array, text: boolean): void;
  /** `topic` has its first local subscriber. */
  topicAdded(topic: string): void;
  /** `topic` lost its last local subscriber. */
  topicRemoved(topic: string): void;
}

/** The default `maxBuffered`: 1 MiB. */
export const DEFAULT_MAX_BUFFERED = 1024 * 1024;
const POLICIES: readonly SlowPolicy[] = ["drop", "close", "latest"];
const MAX_REASON_BYTES = 123;
const textEncoder = new TextEncoder();

/** The key of connections that must compress every message themselves. */
const CONTEXT_TAKEOVER = "context-takeover";

/**
 * The sending window bits a shared compression key names: connections build
 * it as `no-context-takeover:<server_max_window_bits>`; the level, memory
 * level and threshold are server-wide. A key without a number means 15.
 */
function windowBitsOf(key: string): number {
  const match = /(\d+)\D*$/.exec(key);
  return match === null ? 15 : Number(match[1]);
}

function toPayload(
  data: string | Uint8Array | ArrayBufferView | ArrayBuffer,
): PublishedData {
  if (typeof data === "string" || data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  throw new TypeError(
    `publish() takes a string, an ArrayBuffer or a view of one, got ${describe(data)}`,
  );
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "object") return value.constructor?.name ?? "object";
  return typeof value;
}

function checkTopic(topic: unknown): asserts topic is string {
  if (typeof topic !== "string") {
    throw new TypeError(`A topic must be a string, got ${describe(topic)}`);
  }
}

/** `text` cut to at most `max` UTF-8 bytes, never inside a character. */
function truncateUtf8(text: string, max: number): string {
  if (text.length * 3 <= max || textEncoder.encode(text).length <= max) return text;
  let out = "";
  let bytes = 0;
  for (const ch of text) {
    const n = textEncoder.encode(ch).length;
    if (bytes + n > max - 3) break;
    out += ch;
    bytes += n;
  }
  return out + "…";
}

/** One publish, encoded lazily: the plain frame at once, compressed ones per key on demand. */
class Encoded {
  readonly data: PublishedData;
  readonly payload: Uint8Array;
  readonly opcode: number;
  readonly frame: Uint8Array;
  /** Compressed frames by compression key (only keys that asked). */
  compressed: Map<string, Uint8Array> | null = null;
  /** Conflation keys computed for this message, by key function. */
  keys: Map<ConflationKey | null, string | number> | null = null;

  constructor(data: PublishedData, payload: Uint8Array, opcode: number, frame: Uint8Array) {
    this.data = data;
    this.payload = payload;
    this.opcode = opcode;
    this.frame = frame;
  }
}

/** One connection's subscription to one topic. */
class Subscription {
  readonly id: number;
  readonly topic: string;
  policy: SlowPolicy;
  key: ConflationKey | null;
  maxBuffered: number;
  /** Messages skipped since the last one delivered (`"drop"`). */
  gap = 0;

  constructor(
    id: number,
    topic: string,
    policy: SlowPolicy,
    key: ConflationKey | null,
    max: number,
  ) {
    this.id = id;
    this.topic = topic;
    this.policy = policy;
    this.key = key;
    this.maxBuffered = max;
  }
}

/** A message held back for a slow `"latest"` subscriber. */
interface Held {
  sub: Subscription;
  message: Encoded;
}

/** What the hub knows about one connection. */
class Peer {
  readonly subs = new Map<string, Subscription>();
  /** Held messages by `${subscription id}:${key}`, in first-held-back order. */
  held: Map<string, Held> | null = null;
  /** Frame bytes of the held messages. */
  heldBytes = 0;
  /** Messages skipped for this connection (all topics, `"drop"`). */
  dropped = 0;
}

/**
 * The pub/sub layer of one server: topics, their subscribers, and the
 * fan-out of each publish. Connections call into it through their
 * `subscribe`/`publish` methods, and report `drained`/`finished`.
 *
 * Internal: servers build one from {@linkcode PubSubOptions}; users reach it
 * through `server.publish` and the connection methods.
 *
 * @example Driving it directly (as a connection would)
 * ```ts
 * import { PubSub } from "./pubsub.ts";
 * const hub = new PubSub();
 * const frames: Uint8Array[] = [];
 * const ws = {
 *   _writeFrame: (frame: Uint8Array) => frames.push(frame) > 0,
 *   _writeMessage: () => true,
 *   _compressionKey: null,
 *   bufferedAmount: 0,
 *   _closeWith() {},
 * };
 * hub.subscribe(ws, "t");
 * hub.publish("t", "hello"); // 1
 * ```
 */
export class PubSub<Target extends FanOutTarget = FanOutTarget> implements FanOutHub<Target> {
  readonly #topics = new Map<string, Map<Target, Subscription>>();
  readonly #peers = new Map<Target, Peer>();
  /** Connections that finished: a late `subscribe` on them is ignored. */
  readonly #gone = new WeakSet<Target>();
  readonly #policy: SlowPolicy;
  readonly #key: ConflationKey | null;
  readonly #maxBuffered: number;
  readonly #onDrop: ((ws: Target, topic: string, skipped: number) => void) | null;
  readonly #onError: (error: Error, ws: Target) => void;
  readonly #deflate: DeflateOptions;
  readonly #compressors = new Map<string, PerMessageDeflate>();
  #nextId = 1;
  #subscriptions = 0;
  #relay: PubSubRelay | null = null;
  // Counters (see ServerStats).
  #published = 0;
  #publishedBytes = 0;
  #delivered = 0;
  #deliveredBytes = 0;
  #dropped = 0;
  #conflated = 0;
  #slowCloses = 0;
  #encodings = 0;
  readonly #closes = new Map<number, number>();

  /**
   * @param options Defaults for every subscription and the callbacks.
   * @param compression The server's permessage-deflate options (level,
   * memory level, threshold) used for shared compressed frames.
   */
  constructor(options: PubSubOptions<Target> = {}, compression: DeflateOptions | null = null) {
    const defaults = checkSubscribeOptions(options, "PubSubOptions");
    this.#policy = defaults.policy ?? "drop";
    this.#key = defaults.key ?? null;
    this.#maxBuffered = defaults.maxBuffered ?? DEFAULT_MAX_BUFFERED;
    if (options.onDrop !== undefined && typeof options.onDrop !== "function") {
      throw new TypeError("PubSubOptions.onDrop must be a function");
    }
    if (options.onError !== undefined && typeof options.onError !== "function") {
      throw new TypeError("PubSubOptions.onError must be a function");
    }
    this.#onDrop = options.onDrop ?? null;
    this.#onError = options.onError ?? ((error) => console.error("sluice pub/sub:", error));
    this.#deflate = compression ?? {};
    if (compression !== null) resolveDeflateOptions(compression);
  }

  /**
   * Subscribes `ws` to `topic` (again: updates the options). Throws
   * `TypeError` for a topic that is not a string or bad options.
   */
  subscribe(ws: Target, topic: string, options?: SubscribeOptions): void {
    checkTopic(topic);
    const opts = options === undefined ? {} : checkSubscribeOptions(options, "SubscribeOptions");
    if (this.#gone.has(ws)) return;
    let peer = this.#peers.get(ws);
    if (peer === undefined) {
      peer = new Peer();
      this.#peers.set(ws, peer);
    }
    const policy = opts.policy ?? this.#policy;
    const key = opts.key ?? this.#key;
    const maxBuffered = opts.maxBuffered ?? this.#maxBuffered;
    const existing = peer.subs.get(topic);
    if (existing !== undefined) {
      existing.policy = policy;
      existing.key = key;
      existing.maxBuffered = maxBuffered;
      return;
    }
    const sub = new Subscription(this.#nextId++, topic, policy, key, maxBuffered);
    peer.subs.set(topic, sub);
    let subscribers = this.#topics.get(topic);
    if (subscribers === undefined) {
      subscribers = new Map();
      this.#topics.set(topic, subscribers);
      this.#relay?.topicAdded(topic);
    }
    subscribers.set(ws, sub);
    this.#subscriptions++;
  }

  /** Unsubscribes `ws` from `topic`; `false` if it was not subscribed. */
  unsubscribe(ws: Target, topic: string): boolean {
    checkTopic(topic);
    const peer = this.#peers.get(ws);
    const sub = peer?.subs.get(topic);
    if (peer === undefined || sub === undefined) return false;
    this.#remove(ws, peer, sub);
    if (peer.subs.size === 0 && peer.held === null) this.#peers.delete(ws);
    return true;
  }

  /** Whether `ws` is subscribed to `topic`. */
  isSubscribed(ws: Target, topic: string): boolean {
    checkTopic(topic);
    return this.#peers.get(ws)?.subs.has(topic) ?? false;
  }

  /** The topics `ws` is subscribed to, in subscription order. */
  topicsOf(ws: Target): readonly string[] {
    const peer = this.#peers.get(ws);
    return peer === undefined ? [] : [...peer.subs.keys()];
  }

  /** How many connections are subscribed to `topic`. */
  subscriberCount(topic: string): number {
    checkTopic(topic);
    return this.#topics.get(topic)?.size ?? 0;
  }

  /** Topics with at least one subscriber. */
  get topics(): readonly string[] {
    return [...this.#topics.keys()];
  }

  /** Messages skipped so far for `ws` under `"drop"`, all topics together. */
  droppedFor(ws: Target): number {
    return this.#peers.get(ws)?.dropped ?? 0;
  }

  /**
   * Sends `data` to every subscriber of `topic` but `options.exclude`:
   * strings as text, bytes as binary, framed once. Never waits. Returns how
   * many subscribers it was queued for (or, under `"latest"`, held for);
   * slow `"drop"` and `"close"` subscribers are not counted.
   */
  publish(
    topic: string,
    data: string | Uint8Array | ArrayBufferView | ArrayBuffer,
    options?: PublishOptions<Target>,
  ): number {
    checkTopic(topic);
    const message = toPayload(data);
    const payload = typeof message === "string" ? textEncoder.encode(message) : message;
    this.#published++;
    this.#publishedBytes += payload.length;
    const count = this.#fanOut(topic, message, payload, options?.exclude);
    // After the local fan-out, so that local subscribers never wait on a broker.
    this.#relay?.published(topic, payload, typeof message === "string");
    return count;
  }

  /**
   * Routes local publishes, and topics gaining or losing local subscribers,
   * to `relay` (a broker link); `null` stops that. Topics that already have
   * subscribers are announced to the new relay at once.
   */
  setRelay(relay: PubSubRelay | null): void {
    this.#relay = relay;
    if (relay !== null) { for (const topic of this.#topics.keys()) relay.topicAdded(topic); }
  }

  /**
   * Delivers a message that was published in another process to this
   * process's subscribers of `topic` (same encode-once fan-out and slow
   * policies as {@linkcode publish}), without relaying it again. `payload`
   * is `data` as bytes (its UTF-8 for text).
   */
  deliverRemote(topic: string, data: PublishedData, payload: Uint8Array): number {
    return this.#fanOut(topic, data, payload, undefined);
  }

  #fanOut(
    topic: string,
    message: PublishedData,
    payload: Uint8Array,
    exclude: Target | undefined,
  ): number {
    const subscribers = this.#topics.get(topic);
    if (subscribers === undefined) return 0;
    const opcode = typeof message === "string" ? Opcode.Text : Opcode.Binary;
    this.#encodings++;
    const frame = encodeFrame(opcode, payload);
    // The frame holds its own copy of the payload: what is encoded later (a
    // held "latest" message, a compressed one) is made from it, not from the
    // publisher's buffer, which may be reused as soon as publish() returns.
    const own = frame.subarray(frame.length - payload.length);
    const encoded = new Encoded(typeof message === "string" ? message : own, own, opcode, frame);
    let count = 0;
    // Map iteration tolerates subscribers leaving mid-loop (a "close" policy
    // finishing a connection synchronously).
    for (const [ws, sub] of subscribers) {
      if (ws === exclude) continue;
      if (this.#deliver(ws, sub, encoded)) count++;
    }
    return count;
  }

  /** The connection's queued output was written: send what `"latest"` held. */
  drained(ws: Target): void {
    const peer = this.#peers.get(ws);
    if (peer === undefined || peer.held === null) return;
    this.#flushHeld(ws, peer);
  }

  /** The connection closed: forget its subscriptions and held messages. */
  finished(ws: Target): void {
    this.#forget(ws);
  }

  #forget(ws: Target): void {
    this.#gone.add(ws);
    const peer = this.#peers.get(ws);
    if (peer === undefined) return;
    for (const sub of [...peer.subs.values()]) this.#remove(ws, peer, sub);
    peer.held = null;
    this.#peers.delete(ws);
  }

  /** Counts a closed connection by its close code (the server calls this once per connection). */
  recordClose(code: number): void {
    this.#closes.set(code, (this.#closes.get(code) ?? 0) + 1);
  }

  /** The counters; `connections` is supplied by the server, which knows them. */
  stats(connections: number = this.#peers.size): ServerStats {
    const closes: Record<number, number> = {};
    for (const [code, n] of [...this.#closes].sort((a, b) => a[0] - b[0])) closes[code] = n;
    return {
      connections,
      topics: this.#topics.size,
      subscriptions: this.#subscriptions,
      messagesPublished: this.#published,
      bytesPublished: this.#publishedBytes,
      messagesDelivered: this.#delivered,
      bytesDelivered: this.#deliveredBytes,
      messagesDropped: this.#dropped,
      messagesConflated: this.#conflated,
      slowCloses: this.#slowCloses,
      encodings: this.#encodings,
      closes,
    };
  }

  /** Frames or compressions done so far (tests check that a publish costs one). */
  get _encodings(): number {
    return this.#encodings;
  }

  #remove(ws: Target, peer: Peer, sub: Subscription): void {
    peer.subs.delete(sub.topic);
    const subscribers = this.#topics.get(sub.topic);
    if (subscribers !== undefined && subscribers.get(ws) === sub) {
      subscribers.delete(ws);
      if (subscribers.size === 0) {
        this.#topics.delete(sub.topic);
        this.#relay?.topicRemoved(sub.topic);
      }
    }
    this.#subscriptions--;
    if (peer.held !== null) {
      for (const [k, held] of peer.held) {
        if (held.sub !== sub) continue;
        peer.held.delete(k);
        peer.heldBytes -= held.message.frame.length;
      }
      if (peer.held.size === 0) peer.held = null;
    }
  }

  /** One subscriber's share of a publish; true when queued or held. */
  #deliver(ws: Target, sub: Subscription, message: Encoded): boolean {
    const slow = ws.bufferedAmount > sub.maxBuffered;
    switch (sub.policy) {
      case "drop": {
        if (slow) {
          sub.gap++;
          this.#countDrop(this.#peers.get(ws));
          return false;
        }
        if (sub.gap !== 0) {
          const skipped = sub.gap;
          sub.gap = 0;
          if (
            this.#onDrop !== null &&
            !this.#callUser(ws, () => this.#onDrop!(ws, sub.topic, skipped))
          ) {
            return false;
          }
        }
        return this.#write(ws, message);
      }
      case "close": {
        if (slow) {
          this.#slowCloses++;
          // It is leaving: no later publish should try to close it again.
          this.#forget(ws);
          ws._closeWith(
            CloseCode.PolicyViolation,
            truncateUtf8(`Subscriber too slow for topic ${sub.topic}`, MAX_REASON_BYTES),
          );
          return false;
        }
        return this.#write(ws, message);
      }
      case "latest": {
        const peer = this.#peers.get(ws);
        if (peer === undefined) return false;
        if (!slow && peer.held !== null) {
          // Older values first, so that this one is not overtaken by them.
          this.#flushHeld(ws, peer);
          if (ws.bufferedAmount > sub.maxBuffered) return this.#hold(ws, peer, sub, message);
          if (!this.#peers.has(ws)) return false;
        }
        if (slow) return this.#hold(ws, peer, sub, message);
        return this.#write(ws, message);
      }
    }
  }

  #hold(ws: Target, peer: Peer, sub: Subscription, message: Encoded): boolean {
    let key: string | number;
    if (sub.key === null) {
      key = "";
    } else {
      const fn = sub.key;
      const cached = message.keys?.get(fn);
      if (cached !== undefined) {
        key = cached;
      } else {
        let result: string | number = "";
        if (!this.#callUser(ws, () => (result = fn(message.data)))) return false;
        key = result;
        (message.keys ??= new Map()).set(fn, key);
      }
    }
    const slot = `${sub.id}:${key}`;
    const previous = peer.held?.get(slot);
    if (previous !== undefined) {
      // Replacing keeps the slot's place: first-held-back order.
      peer.heldBytes += message.frame.length - previous.message.frame.length;
      previous.message = message;
      this.#conflated++;
      return true;
    }
    // A new key is held only within max(maxBuffered, 1 MiB) (one always), so
    // a key per message cannot turn conflation into an unbounded queue.
    if (
      peer.held !== null &&
      peer.heldBytes + message.frame.length > Math.max(sub.maxBuffered, DEFAULT_MAX_BUFFERED)
    ) {
      this.#countDrop(peer);
      return false;
    }
    (peer.held ??= new Map()).set(slot, { sub, message });
    peer.heldBytes += message.frame.length;
    return true;
  }

  /** A message skipped for a slow subscriber: in the stats and in the connection's `droppedFor`. */
  #countDrop(peer: Peer | undefined): void {
    this.#dropped++;
    if (peer !== undefined) peer.dropped++;
  }

  /** Sends held messages in first-held-back order until the connection is slow again. */
  #flushHeld(ws: Target, peer: Peer): void {
    const held = peer.held;
    if (held === null) return;
    for (const [slot, entry] of held) {
      // Entries of a subscription that is still slow wait; others' go on. A
      // subscription left with held entries is therefore slow, so #deliver
      // holds its next message behind them instead of overtaking them.
      if (ws.bufferedAmount > entry.sub.maxBuffered) continue;
      held.delete(slot);
      peer.heldBytes -= entry.message.frame.length;
      this.#write(ws, entry.message);
    }
    if (held.size === 0 && peer.held === held) peer.held = null;
  }

  #write(ws: Target, message: Encoded): boolean {
    const key = ws._compressionKey;
    let ok: boolean;
    let bytes: number;
    if (key === null) {
      bytes = message.frame.length;
      ok = ws._writeFrame(message.frame);
    } else if (key === CONTEXT_TAKEOVER) {
      this.#encodings++;
      bytes = message.payload.length; // the compressed size is the connection's business
      ok = ws._writeMessage(message.data);
    } else {
      const frame = this.#compressedFrame(message, key);
      bytes = frame.length;
      ok = ws._writeFrame(frame);
    }
    if (ok) {
      this.#delivered++;
      this.#deliveredBytes += bytes;
    }
    return ok;
  }

  /** The message's frame for connections sharing compression `key`, made once. */
  #compressedFrame(message: Encoded, key: string): Uint8Array {
    const cached = message.compressed?.get(key);
    if (cached !== undefined) return cached;
    let compressor = this.#compressors.get(key);
    if (compressor === undefined) {
      compressor = new PerMessageDeflate(
        {
          serverNoContextTakeover: true,
          clientNoContextTakeover: true,
          serverMaxWindowBits: windowBitsOf(key),
          clientMaxWindowBits: 15,
        },
        "server",
        this.#deflate,
      );
      this.#compressors.set(key, compressor);
    }
    let frame: Uint8Array;
    if (message.payload.length < compressor.threshold) {
      frame = message.frame;
    } else {
      this.#encodings++;
      frame = encodeFrame(message.opcode, compressor.compress(message.payload), { rsv1: true });
    }
    (message.compressed ??= new Map()).set(key, frame);
    return frame;
  }

  /**
   * Runs user code for `ws`: an exception closes that connection with 1011
   * and goes to `onError` (itself guarded). Returns false when it threw.
   */
  #callUser(ws: Target, fn: () => void): boolean {
    try {
      fn();
      return true;
    } catch (err) {
      const error = err instanceof Error ? err : new Error(String(err));
      this.#forget(ws);
      try {
        ws._closeWith(CloseCode.InternalError, "Internal error in a pub/sub callback");
      } catch {
        // Already closing.
      }
      try {
        this.#onError(error, ws);
      } catch {
        // An error reporter must not break the publish loop.
      }
      return false;
    }
  }
}

function checkSubscribeOptions(options: SubscribeOptions, what: string): SubscribeOptions {
  if (options === null || typeof options !== "object") {
    throw new TypeError(`${what} must be an object, got ${describe(options)}`);
  }
  const { policy, key, maxBuffered } = options;
  if (policy !== undefined && !POLICIES.includes(policy)) {
    throw new TypeError(
      `${what}.policy must be "drop", "close" or "latest", got ${JSON.stringify(policy)}`,
    );
  }
  if (key !== undefined && typeof key !== "function") {
    throw new TypeError(`${what}.key must be a function, got ${describe(key)}`);
  }
  if (
    maxBuffered !== undefined &&
    !(typeof maxBuffered === "number" && maxBuffered >= 0 && !Number.isNaN(maxBuffered))
  ) {
    throw new RangeError(`${what}.maxBuffered must be a non-negative number, got ${maxBuffered}`);
  }
  return options;
}

/**
 * Renders {@linkcode ServerStats} in the Prometheus text exposition format
 * (version 0.0.4), every metric prefixed `sluice_`.
 *
 * @example Serving the metrics
 * ```ts
 * import { formatPrometheus, serve } from "@sluice/ws";
 * const server = await serve({ port: 0 }, () => {});
 * const text = formatPrometheus(server.stats());
 * console.log(text.split("\n")[0]); // # HELP sluice_connections ...
 * await server.shutdown();
 * ```
 */
export function formatPrometheus(stats: ServerStats): string {
  const lines: string[] = [];
  const metric = (name: string, type: "gauge" | "counter", help: string, value: number) => {
    lines.push(`# HELP sluice_${name} ${help}`, `# TYPE sluice_${name} ${type}`);
    lines.push(`sluice_${name} ${value}`);
  };
  metric("connections", "gauge", "Open WebSocket connections.", stats.connections);
  metric("topics", "gauge", "Topics with at least one subscriber.", stats.topics);
  metric("subscriptions", "gauge", "Topic subscriptions.", stats.subscriptions);
  metric(
    "messages_published_total",
    "counter",
    "Messages published.",
    stats.messagesPublished,
  );
  metric("bytes_published_total", "counter", "Payload bytes published.", stats.bytesPublished);
  metric(
    "messages_delivered_total",
    "counter",
    "Messages queued to subscribers.",
    stats.messagesDelivered,
  );
  metric(
    "bytes_delivered_total",
    "counter",
    "Frame bytes queued to subscribers.",
    stats.bytesDelivered,
  );
  metric(
    "messages_dropped_total",
    "counter",
    "Messages skipped for slow subscribers.",
    stats.messagesDropped,
  );
  metric(
    "messages_conflated_total",
    "counter",
    "Messages replaced by a newer one for slow subscribers.",
    stats.messagesConflated,
  );
  metric("slow_closes_total", "counter", "Connections closed for being slow.", stats.slowCloses);
  metric("encodings_total", "counter", "Messages framed or compressed.", stats.encodings);
  lines.push(
    "# HELP sluice_closes_total Closed connections by close code.",
    "# TYPE sluice_closes_total counter",
  );
  for (const [code, n] of Object.entries(stats.closes)) {
    lines.push(`sluice_closes_total{code="${code}"} ${n}`);
  }
  const broker = stats.broker;
  if (broker !== undefined) {
    metric(
      "broker_up",
      "gauge",
      "1 while the broker link is up, else 0.",
      broker.health === "up" ? 1 : 0,
    );
    metric("broker_outages_total", "counter", "Times the broker link went down.", broker.outages);
    metric(
      "broker_messages_sent_total",
      "counter",
      "Local publishes handed to the broker.",
      broker.messagesSent,
    );
    metric(
      "broker_messages_received_total",
      "counter",
      "Messages from other processes delivered locally.",
      broker.messagesReceived,
    );
    metric("broker_topics", "gauge", "Topics subscribed at the broker.", broker.topics);
  }
  return lines.join("\n") + "\n";
}
