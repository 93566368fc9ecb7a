/**
 * Pub/sub across processes: the {@linkcode Broker} interface a message bus
 * implements (Redis: `@sluice/ws/redis`), and the link that connects a
 * server's pub/sub hub to it.
 *
 * ## How a publish travels
 *
 * `server.publish` and `ws.publish` first deliver to this process's own
 * subscribers (the hub's encode-once fan-out, unchanged), then hand the
 * message to the broker. Each process subscribes the broker only to the
 * topics it has local subscribers for. A message arriving from the broker is
 * delivered through the same fan-out, with the same slow-subscriber policies.
 *
 * The broker carries an envelope, not the bare payload:
 *
 * ```text
 * byte 0      kind: 1 = text, 2 = binary (text/binary survives the trip)
 * bytes 1-8   origin: 8 random bytes naming the publishing server
 * bytes 9-    the payload (UTF-8 for text)
 * ```
 *
 * A process receives its own publishes back from the broker (it subscribes
 * to the topics its subscribers want): the origin lets it skip them, since
 * they were delivered locally already. So each subscriber gets each message
 * once.
 *
 * ## Guarantee
 *
 * At most once across processes, in publish order per publisher and topic
 * (as far as the broker keeps order: Redis pub/sub does, per connection).
 * While the broker is down, local delivery goes on; messages published
 * during the outage reach only the publishing process's own subscribers,
 * and messages other processes published then are never seen here.
 *
 * @module
 */

import { toError } from "./protocol/errors.ts";
import type { PublishedData, PubSubRelay } from "./pubsub.ts";

/** What the link needs of a hub (`PubSub`, whatever its connection type). */
interface RelayHub {
  setRelay(relay: PubSubRelay | null): void;
  deliverRemote(topic: string, data: PublishedData, payload: Uint8Array): number;
}

/**
 * The state of a process's link to its broker: `"connecting"` before the
 * first connection, `"up"` while messages flow both ways, `"down"` during an
 * outage (reconnecting), `"closed"` once closed.
 *
 * @example Reacting to outages
 * ```ts
 * import type { BrokerHealth } from "@sluice/ws";
 * const onBrokerHealth = (health: BrokerHealth, error: Error | null) => {
 *   if (health === "down") console.warn("cross-process delivery paused:", error?.message);
 * };
 * onBrokerHealth("up", null);
 * ```
 */
export type BrokerHealth = "connecting" | "up" | "down" | "closed";

/**
 * What a broker tells the server it serves: each message on a subscribed
 * topic, and each change of its health.
 *
 * @example A receiver that logs (a server passes its own)
 * ```ts
 * import type { BrokerReceiver } from "@sluice/ws";
 * const receiver: BrokerReceiver = {
 *   message: (topic, payload) => console.log(topic, payload.length),
 *   health: (health, error) => console.log(health, error?.message),
 * };
 * receiver.health("up", null);
 * ```
 */
export interface BrokerReceiver {
  /**
   * A message published (by any process) on a topic this broker is
   * subscribed to. `payload` is the exact bytes given to `publish`; it may
   * be a view of a buffer the broker reuses after the call returns.
   */
  message(topic: string, payload: Uint8Array): void;
  /** The broker's health changed; `error` says why when it went down. */
  health(health: BrokerHealth, error: Error | null): void;
}

/**
 * A message bus between processes: what `serve({ broker })` needs. Sluice
 * ships a Redis implementation (`RedisBroker` from `@sluice/ws/redis`);
 * anything that can publish bytes to a named topic and deliver them to
 * every process subscribed to it fits.
 *
 * A broker serves one server: `serve()` calls `start` once, before
 * listening, and `close` once the server has shut down. `publish`,
 * `subscribe` and `unsubscribe` must not throw and must not block: they are
 * called on the publish path. A broker that is down drops publishes (and
 * counts them if it likes) and resubscribes its topics once it is back.
 *
 * @example A broker that only loops back (one process)
 * ```ts
 * import { type Broker, type BrokerHealth, type BrokerReceiver, serve } from "@sluice/ws";
 *
 * class LoopbackBroker implements Broker {
 *   health: BrokerHealth = "connecting";
 *   #receiver: BrokerReceiver | null = null;
 *   #topics = new Set<string>();
 *   start(receiver: BrokerReceiver): Promise<void> {
 *     this.#receiver = receiver;
 *     this.health = "up";
 *     return Promise.resolve();
 *   }
 *   publish(topic: string, payload: Uint8Array): void {
 *     if (this.#topics.has(topic)) this.#receiver?.message(topic, payload.slice());
 *   }
 *   subscribe(topic: string): void {
 *     this.#topics.add(topic);
 *   }
 *   unsubscribe(topic: string): void {
 *     this.#topics.delete(topic);
 *   }
 *   close(): Promise<void> {
 *     this.health = "closed";
 *     return Promise.resolve();
 *   }
 * }
 *
 * const server = await serve({ port: 0, broker: new LoopbackBroker() }, (ws) => {
 *   ws.subscribe("news");
 * });
 * server.publish("news", "hello"); // local subscribers get it once
 * await server.shutdown(); // closes the broker too
 * ```
 */
export interface Broker {
  /**
   * Connects, and from then on reports to `receiver`. Rejects with an error
   * that says what failed when the broker cannot be reached (unless the
   * implementation was asked to start degraded: then it resolves with
   * `health` `"down"` and keeps trying).
   */
  start(receiver: BrokerReceiver): Promise<void>;
  /** Sends `payload` to every process subscribed to `topic`, this one included. */
  publish(topic: string, payload: Uint8Array): void;
  /** Starts receiving `topic` (idempotent). */
  subscribe(topic: string): void;
  /** Stops receiving `topic`. */
  unsubscribe(topic: string): void;
  /** The current state of the connection to the broker. */
  readonly health: BrokerHealth;
  /** Disconnects; no receiver call follows. */
  close(): Promise<void>;
}

/**
 * Counters of a server's broker link, in `server.stats().broker`.
 *
 * @example Watching for outages
 * ```ts
 * import type { BrokerStats } from "@sluice/ws";
 * function report(stats: BrokerStats | undefined) {
 *   if (stats !== undefined && stats.health !== "up") {
 *     console.warn(`broker ${stats.health}: ${stats.lastError}`);
 *   }
 * }
 * report(undefined);
 * ```
 */
export interface BrokerStats {
  /** The broker's health now. */
  health: BrokerHealth;
  /** Times the broker went down after having been up or connecting. */
  outages: number;
  /** Local publishes handed to the broker. */
  messagesSent: number;
  /** Messages from other processes delivered to local subscribers. */
  messagesReceived: number;
  /** Own messages that came back from the broker and were skipped (already delivered). */
  ownEchoesSkipped: number;
  /** Messages from the broker that were not Sluice envelopes (ignored). */
  malformed: number;
  /** Topics this process has asked the broker for. */
  topics: number;
  /** The last error the broker reported, or `null`. */
  lastError: string | null;
}

/** Envelope kinds (byte 0). */
const KIND_TEXT = 1;
const KIND_BINARY = 2;
const ORIGIN_BYTES = 8;
const HEADER_BYTES = 1 + ORIGIN_BYTES;

const decoder = new TextDecoder("utf-8", { fatal: true });

/** Options of {@linkcode BrokerLink}. */
export interface BrokerLinkOptions {
  /** Health changes, after the link's own bookkeeping. */
  onHealth?: (health: BrokerHealth, error: Error | null) => void;
  /** Errors thrown by the broker's methods (they must not reach the publish path). */
  onError(error: Error): void;
}

/**
 * The glue between one server's hub and its broker: the hub's relay (local
 * publishes out, topic interest out) and the broker's receiver (remote
 * messages in, health). Internal: `serve({ broker })` builds one.
 *
 * @internal
 */
export class BrokerLink implements PubSubRelay, BrokerReceiver {
  readonly #broker: Broker;
  readonly #options: BrokerLinkOptions;
  readonly #origin: Uint8Array;
  #hub: RelayHub | null = null;
  readonly #topics = new Set<string>();
  #health: BrokerHealth = "connecting";
  #outages = 0;
  #sent = 0;
  #received = 0;
  #echoes = 0;
  #malformed = 0;
  #lastError: string | null = null;
  #closed = false;

  constructor(broker: Broker, options: BrokerLinkOptions) {
    this.#broker = broker;
    this.#options = options;
    this.#origin = crypto.getRandomValues(new Uint8Array(ORIGIN_BYTES));
  }

  /** Connects the broker (rejects as `broker.start` does). */
  async start(): Promise<void> {
    await this.#broker.start(this);
    this.#health = this.#broker.health;
  }

  /** From now on, local publishes go out and remote ones are delivered to `hub`. */
  attach(hub: RelayHub): void {
    this.#hub = hub;
    hub.setRelay(this);
  }

  /** Closes the broker; nothing is relayed any more. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#hub?.setRelay(null);
    try {
      await this.#broker.close();
    } catch (error) {
      this.#options.onError(toError(error));
    }
    this.#health = "closed";
  }

  stats(): BrokerStats {
    return {
      health: this.#health,
      outages: this.#outages,
      messagesSent: this.#sent,
      messagesReceived: this.#received,
      ownEchoesSkipped: this.#echoes,
      malformed: this.#malformed,
      topics: this.#topics.size,
      lastError: this.#lastError,
    };
  }

  // PubSubRelay: from the hub.

  published(topic: string, payload: Uint8Array, text: boolean): void {
    if (this.#closed) return;
    const envelope = new Uint8Array(HEADER_BYTES + payload.length);
    envelope[0] = text ? KIND_TEXT : KIND_BINARY;
    envelope.set(this.#origin, 1);
    envelope.set(payload, HEADER_BYTES);
    this.#sent++;
    this.#call(() => this.#broker.publish(topic, envelope));
  }

  topicAdded(topic: string): void {
    if (this.#closed || this.#topics.has(topic)) return;
    this.#topics.add(topic);
    this.#call(() => this.#broker.subscribe(topic));
  }

  topicRemoved(topic: string): void {
    if (this.#closed || !this.#topics.delete(topic)) return;
    this.#call(() => this.#broker.unsubscribe(topic));
  }

  // BrokerReceiver: from the broker.

  message(topic: string, payload: Uint8Array): void {
    if (this.#closed || this.#hub === null) return;
    const kind = payload[0];
    if (payload.length < HEADER_BYTES || (kind !== KIND_TEXT && kind !== KIND_BINARY)) {
      this.#malformed++;
      return;
    }
    if (this.#isOwn(payload)) {
      this.#echoes++;
      return;
    }
    // A copy: the broker may reuse its buffer, and subscribers keep frames.
    const body = payload.slice(HEADER_BYTES);
    let data: PublishedData = body;
    if (kind === KIND_TEXT) {
      try {
        data = decoder.decode(body);
      } catch {
        this.#malformed++;
        return;
      }
    }
    this.#received++;
    this.#hub.deliverRemote(topic, data, body);
  }

  health(health: BrokerHealth, error: Error | null): void {
    if (this.#closed) return;
    const previous = this.#health;
    this.#health = health;
    if (error !== null) this.#lastError = error.message;
    if (health === "down" && previous !== "down") this.#outages++;
    if (health === previous && error === null) return;
    try {
      this.#options.onHealth?.(health, error);
    } catch (thrown) {
      this.#options.onError(toError(thrown));
    }
  }

  #isOwn(payload: Uint8Array): boolean {
    const origin = this.#origin;
    for (let i = 0; i < ORIGIN_BYTES; i++) if (payload[1 + i] !== origin[i]) return false;
    return true;
  }

  #call(fn: () => void): void {
    try {
      fn();
    } catch (error) {
      this.#options.onError(toError(error));
    }
  }
}
