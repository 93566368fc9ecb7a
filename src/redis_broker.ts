/**
 * A {@linkcode Broker} on Redis pub/sub, for `serve({ broker })`: every
 * Sluice process that points at the same Redis delivers every publish to its
 * own subscribers.
 *
 * ```ts ignore
 * import { serve } from "@sluice/ws";
 * import { RedisBroker } from "@sluice/ws/redis";
 *
 * const server = await serve({
 *   port: 8080,
 *   reusePort: true,
 *   broker: new RedisBroker({ url: "redis://127.0.0.1:6379" }),
 * }, (ws) => ws.subscribe("chat"));
 * ```
 *
 * This entry point is separate from `@sluice/ws` so that only applications
 * that use Redis need the client (npm `@redis/client`) installed.
 *
 * ## Why `@redis/client` (node-redis)
 *
 * Measured with `bench/redis_clients.ts` (50 000 PUBLISHes of 64-byte binary
 * payloads, 1 000 in flight, until a subscriber received all; redis-server 7
 * on loopback, a shared 2-core machine):
 *
 * | client            | Deno 2.9        | Bun 1.4         |
 * | ----------------- | --------------- | --------------- |
 * | `redis` 6.3       | 210 000 msg/s   | 126 000 msg/s   |
 * | `ioredis` 6.0     | 105 000 msg/s   | 80 000 msg/s    |
 * | `Bun.RedisClient` | —               | 187 000 msg/s   |
 *
 * Killing redis-server and starting it again on the same port: both npm
 * clients reconnect and resubscribe by themselves and deliver again about
 * 0.7 s after the restart (their backoff at that moment). Bun's built-in
 * client rejected publishes during the outage but never delivered to its
 * subscriber again after the restart, and it hands subscribers strings, so
 * binary payloads would need an encoding. node-redis is the fastest of the
 * two on both runtimes, and resubscribes before it reports `ready`, which
 * is what this broker reports as `"up"`.
 *
 * ## Behaviour
 *
 * - Two connections: one publishes, one is subscribed (Redis requires a
 *   connection in subscriber mode to do nothing else). Channels are named
 *   `prefix + topic` (`"sluice:"` by default).
 * - Unreachable at start: `start()` rejects with an error naming the URL,
 *   unless `startDegraded` is set: then the server starts with the broker
 *   `"down"`, and it comes up whenever Redis does.
 * - An outage (Redis restarted, the network cut): health goes `"down"` with
 *   the error, publishes are dropped (counted in {@linkcode RedisBroker.unsent};
 *   never queued, so memory stays bounded however long the outage), both
 *   connections reconnect with exponential backoff and jitter, the
 *   subscriber resubscribes every topic, and health goes back `"up"`.
 *
 * @module
 */

import { toError } from "./protocol/errors.ts";
import { Buffer } from "node:buffer";
import { createClient } from "@redis/client";
import type { Broker, BrokerHealth, BrokerReceiver } from "./broker.ts";

// The types RedisBroker's signatures name, for users of this entry point alone.
export type { Broker, BrokerHealth, BrokerReceiver } from "./broker.ts";

/**
 * Options of {@linkcode RedisBroker}.
 *
 * @example A broker that tolerates Redis being down at start
 * ```ts
 * import type { RedisBrokerOptions } from "@sluice/ws/redis";
 * const options: RedisBrokerOptions = {
 *   url: "redis://127.0.0.1:6379",
 *   startDegraded: true,
 *   maxReconnectDelay: 2_000,
 * };
 * console.log(options.url);
 * ```
 */
export interface RedisBrokerOptions {
  /** `redis://[[user]:password@]host[:port][/db]` or `rediss://` for TLS. @default {"redis://127.0.0.1:6379"} */
  url?: string;
  /** Prepended to every topic to make the Redis channel name. @default {"sluice:"} */
  prefix?: string;
  /**
   * Start even when Redis cannot be reached: the server serves its local
   * subscribers, reports the broker `"down"`, and keeps trying. @default {false}
   */
  startDegraded?: boolean;
  /** Milliseconds to wait for a TCP connection to Redis. @default {5000} */
  connectTimeout?: number;
  /** First reconnect delay in milliseconds; doubles per failed attempt. @default {100} */
  minReconnectDelay?: number;
  /** Longest reconnect delay in milliseconds. @default {5000} */
  maxReconnectDelay?: number;
}

type Listener = (message: Buffer) => void;

/** Publish bytes awaiting Redis's reply above which publishes are dropped (counted in `unsent`). */
const MAX_IN_FLIGHT_BYTES = 16 * 1024 * 1024;

/**
 * The part of node-redis's client this broker uses. Its own generic type is
 * large (modules, scripts, RESP versions) and costly to check; this is all
 * we rely on.
 */
interface Client {
  readonly isReady: boolean;
  connect(): Promise<unknown>;
  publish(channel: string, message: Buffer): Promise<unknown>;
  subscribe(channel: string, listener: Listener, bufferMode: true): Promise<void>;
  unsubscribe(channel: string, listener: Listener, bufferMode: true): Promise<void>;
  close(): Promise<void>;
  destroy(): void;
  on(event: "error", listener: (error: unknown) => void): unknown;
  on(event: "ready" | "end", listener: () => void): unknown;
}

/** The URL without its password, for messages. */
function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== "") parsed.password = "***";
    return parsed.href;
  } catch {
    return url;
  }
}

function checkDelay(name: string, value: number): number {
  if (!(typeof value === "number" && value >= 0 && Number.isFinite(value))) {
    throw new RangeError(`RedisBrokerOptions.${name} must be a non-negative number, got ${value}`);
  }
  return value;
}

/**
 * Redis pub/sub as a Sluice {@linkcode Broker}. Give one to each server
 * (`serve({ broker: new RedisBroker({ url }) })`); the server starts and
 * closes it.
 *
 * Delivery across processes is at most once: Redis pub/sub keeps nothing,
 * so a message published while a process is disconnected from Redis never
 * reaches that process's subscribers. Order is kept per publisher and topic.
 *
 * @example Two servers, one topic
 * ```ts ignore
 * import { connect, serve } from "@sluice/ws";
 * import { RedisBroker } from "@sluice/ws/redis";
 *
 * const url = "redis://127.0.0.1:6379";
 * const a = await serve({ port: 0, broker: new RedisBroker({ url }) }, (ws) => ws.subscribe("t"));
 * const b = await serve({ port: 0, broker: new RedisBroker({ url }) }, () => {});
 * const ws = await connect(a.url);
 * // once a's subscription reached Redis:
 * b.publish("t", "hello"); // ws receives "hello"
 * ```
 */
export class RedisBroker implements Broker {
  readonly #url: string;
  readonly #prefix: string;
  readonly #startDegraded: boolean;
  readonly #connectTimeout: number;
  readonly #minDelay: number;
  readonly #maxDelay: number;
  #pub: Client | null = null;
  #sub: Client | null = null;
  #receiver: BrokerReceiver | null = null;
  readonly #listeners = new Map<string, Listener>();
  #health: BrokerHealth = "connecting";
  /** Whether both connections were ready at least once (then outages are retried forever). */
  #everUp = false;
  #closed = false;
  #unsent = 0;
  /** Bytes handed to the publishing connection and not yet acknowledged by Redis. */
  #inFlight = 0;

  /**
   * Checks the options; connects only when the server calls `start`.
   * Throws `TypeError`/`RangeError` for a bad URL or delay.
   */
  constructor(options: RedisBrokerOptions = {}) {
    if (options === null || typeof options !== "object") {
      throw new TypeError("RedisBroker options must be an object");
    }
    const url = options.url ?? "redis://127.0.0.1:6379";
    if (typeof url !== "string" || !/^rediss?:\/\//.test(url)) {
      throw new TypeError(`RedisBrokerOptions.url must be a redis:// or rediss:// URL, got ${url}`);
    }
    this.#url = url;
    this.#prefix = options.prefix ?? "sluice:";
    if (typeof this.#prefix !== "string") {
      throw new TypeError("RedisBrokerOptions.prefix must be a string");
    }
    this.#startDegraded = options.startDegraded === true;
    this.#connectTimeout = checkDelay("connectTimeout", options.connectTimeout ?? 5_000);
    this.#minDelay = checkDelay("minReconnectDelay", options.minReconnectDelay ?? 100);
    this.#maxDelay = checkDelay("maxReconnectDelay", options.maxReconnectDelay ?? 5_000);
  }

  /** The connection state: `"up"` only while both connections are ready. */
  get health(): BrokerHealth {
    return this.#health;
  }

  /** Publishes dropped because Redis was not reachable when they were made. */
  get unsent(): number {
    return this.#unsent;
  }

  async start(receiver: BrokerReceiver): Promise<void> {
    if (this.#receiver !== null) throw new Error("This RedisBroker was started already");
    this.#receiver = receiver;
    const pub = this.#client();
    const sub = this.#client();
    this.#pub = pub;
    this.#sub = sub;
    const connecting = Promise.all([pub.connect(), sub.connect()]);
    if (this.#startDegraded) {
      // Retried forever by the reconnect strategy; failures are reported as health.
      connecting.catch(() => {});
      return;
    }
    try {
      await connecting;
    } catch (error) {
      this.#closed = true;
      pub.destroy();
      sub.destroy();
      this.#health = "closed";
      throw new Error(
        `Cannot reach the Redis broker at ${redact(this.#url)}: ${toError(error).message}. ` +
          "Start Redis there, or pass startDegraded: true to serve local subscribers until it is up.",
        { cause: error },
      );
    }
  }

  publish(topic: string, payload: Uint8Array): void {
    const pub = this.#pub;
    // Not queued while down: at most once, and bounded memory in an outage.
    // A Redis that stops reading (stalled, a dead path) leaves the connection
    // "ready": bound what waits for its acknowledgement too.
    const size = payload.byteLength;
    if (pub === null || !pub.isReady || this.#inFlight + size > MAX_IN_FLIGHT_BYTES) {
      this.#unsent++;
      return;
    }
    this.#inFlight += size;
    pub.publish(
      this.#channel(topic),
      Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength),
    ).then(() => {
      this.#inFlight -= size;
    }, () => {
      // The connection broke with this publish in flight: health reports it.
      this.#inFlight -= size;
      this.#unsent++;
    });
  }

  subscribe(topic: string): void {
    if (this.#closed || this.#sub === null || this.#listeners.has(topic)) return;
    const listener: Listener = (message) => this.#receiver?.message(topic, message);
    this.#listeners.set(topic, listener);
    // While down this waits in the client's queue; the reconnect resubscribes anyway.
    this.#sub.subscribe(this.#channel(topic), listener, true).catch(() => {});
  }

  unsubscribe(topic: string): void {
    const listener = this.#listeners.get(topic);
    if (this.#closed || this.#sub === null || listener === undefined) return;
    this.#listeners.delete(topic);
    this.#sub.unsubscribe(this.#channel(topic), listener, true).catch(() => {});
  }

  async close(): Promise<void> {
    if (this.#closed) {
      this.#health = "closed";
      return;
    }
    this.#closed = true;
    this.#health = "closed";
    const clients = [this.#pub, this.#sub].filter((c): c is Client => c !== null);
    // A graceful QUIT sends publishes still in flight; an unreachable Redis gets 1 s.
    await Promise.all(clients.map(async (client) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        if (client.isReady) {
          await Promise.race([
            client.close(),
            new Promise((resolve) => (timer = setTimeout(resolve, 1_000))),
          ]);
        }
      } catch {
        // Already gone.
      } finally {
        clearTimeout(timer);
        try {
          client.destroy();
        } catch {
          // Already destroyed.
        }
      }
    }));
  }

  #client(): Client {
    const client = createClient({
      url: this.#url,
      // The offline queue stays on: SUBSCRIBE made during an outage must
      // register its listener. Publishes never reach it (see publish()).
      socket: {
        connectTimeout: this.#connectTimeout,
        reconnectStrategy: (retries: number, cause: Error) => this.#retryDelay(retries, cause),
      },
    }) as unknown as Client;
    client.on("error", (error: unknown) => this.#update(toError(error)));
    client.on("ready", () => this.#update(null));
    client.on("end", () => this.#update(null));
    return client;
  }

  /**
   * The Redis channel of `topic`. node-redis sends channel names as UTF-8,
   * which cannot carry lone surrogates: such a topic (and, to keep the
   * mapping one-to-one, one starting with NUL) is escaped as NUL + its JSON.
   */
  #channel(topic: string): string {
    return topic.isWellFormed() && !topic.startsWith("\u0000")
      ? this.#prefix + topic
      : this.#prefix + "\u0000" + JSON.stringify(topic);
  }

  /** The reconnect strategy: give up only before the first success, unless degraded starts are allowed. */
  #retryDelay(retries: number, cause: Error): number | Error | false {
    if (this.#closed) return false;
    if (!this.#everUp && !this.#startDegraded) return cause;
    const base = Math.min(this.#minDelay * 2 ** Math.min(retries, 20), this.#maxDelay);
    // Jitter (±25%): processes that lost Redis together do not all come back at once.
    return Math.round(base * (0.75 + Math.random() * 0.5));
  }

  /** Recomputes health from both connections and reports a change (or a new error). */
  #update(error: Error | null): void {
    if (this.#closed) return;
    const ready = this.#pub?.isReady === true && this.#sub?.isReady === true;
    const next: BrokerHealth = ready
      ? "up"
      : error !== null || this.#everUp
      ? "down"
      : "connecting";
    if (ready) this.#everUp = true;
    const previous = this.#health;
    this.#health = next;
    // Repeated errors during one outage are reported once, with the first cause.
    if (next !== previous) this.#receiver?.health(next, next === "up" ? null : error);
  }
}
