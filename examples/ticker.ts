/**
 * Stock ticker: a simulated feed of 500 symbols (5 000 updates/s in total
 * by default, in batches every 20 ms); each client picks its symbols.
 *
 * - One topic per symbol (`tick:<SYM>`): a price update is framed once for
 *   all its subscribers, and an update nobody subscribed to costs a map
 *   lookup, not a JSON string.
 * - Every subscription has the `"latest"` policy: while a client's
 *   connection holds more than `maxBuffered` unsent bytes it is slow, and
 *   only the newest price per symbol is held for it (the topic is the
 *   symbol, so the topic is the conflation key); a fast client is never
 *   slow and gets every tick. Memory per slow client is bounded by its
 *   number of symbols, never by the feed's rate.
 * - Every update carries the symbol's sequence number `n`, the same for
 *   every subscriber (so still encoded once). A client that sees `n` jump
 *   from 41 to 45 knows the server skipped 3 updates of that symbol for it:
 *   the page shows that count, exactly, without the server keeping a
 *   counter per client.
 *
 * Client → server (JSON text): `{type:"subscribe",symbols:[…]}` (or
 * `symbols:"all"`), `{type:"unsubscribe",symbols:[…]}`.
 * HTTP: `GET /api/ticker/quotes` (every symbol's price and sequence number),
 * `GET /api/ticker/stats` (feed and conflation counters).
 * Server → client: `{type:"symbols",symbols:[…]}` on open, `{type:"snapshot",
 * prices:[[sym,price,n],…]}` after each subscribe, then ticks
 * `{"s":"ACME","p":101.25,"n":42}`.
 *
 * @module
 */

import type { Message, Server, UpgradeRequestInfo } from "../mod.ts";
import {
  type ExampleApp,
  json,
  parseJson,
  sendError,
  type Session,
  type SessionSocket,
} from "./app.ts";

/** Options of {@linkcode TickerApp}. */
export interface TickerOptions {
  /** How many symbols the feed has. @default {500} */
  symbols?: number;
  /** Price updates per second, all symbols together. @default {5000} */
  updatesPerSecond?: number;
  /** Milliseconds between batches of updates. @default {20} */
  interval?: number;
  /** Unsent bytes above which a client is slow and gets only the latest prices. @default {65536} */
  maxBuffered?: number;
  /** Seed of the simulated feed (names and prices). @default {1} */
  seed?: number;
  /** Run the feed on a timer; `false` leaves it to whoever calls `tick()` (tests). @default {true} */
  autoStart?: boolean;
}

/** A deterministic pseudo-random generator (mulberry32): the same feed on every start. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Quote {
  symbol: string;
  topic: string;
  /** Price in cents, so that it prints without float noise. */
  cents: number;
  seq: number;
}

/** The ticker app; see the module documentation. */
export class TickerApp implements ExampleApp {
  readonly name = "ticker";
  readonly path = "/ticker";
  readonly page = "ticker.html";
  readonly description = "Stock ticker: 500 symbols, latest-price conflation for slow clients";

  readonly #quotes: Quote[] = [];
  readonly #bySymbol = new Map<string, Quote>();
  readonly #perBatch: number;
  readonly #interval: number;
  readonly #maxBuffered: number;
  readonly #random: () => number;
  readonly #autoStart: boolean;
  #server: Server | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;
  #published = 0;
  #updates = 0;

  constructor(options: TickerOptions = {}) {
    const count = options.symbols ?? 500;
    this.#interval = options.interval ?? 20;
    const rate = options.updatesPerSecond ?? 5000;
    this.#perBatch = Math.max(1, Math.round(rate * this.#interval / 1000));
    this.#maxBuffered = options.maxBuffered ?? 64 * 1024;
    this.#random = random(options.seed ?? 1);
    this.#autoStart = options.autoStart ?? true;
    const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    while (this.#quotes.length < count) {
      const length = 3 + Math.floor(this.#random() * 2);
      let symbol = "";
      for (let i = 0; i < length; i++) symbol += letters[Math.floor(this.#random() * 26)];
      if (this.#bySymbol.has(symbol)) continue;
      const quote = {
        symbol,
        topic: `tick:${symbol}`,
        cents: 1000 + Math.floor(this.#random() * 50_000),
        seq: 0,
      };
      this.#quotes.push(quote);
      this.#bySymbol.set(symbol, quote);
    }
  }

  /** The symbols, in feed order. */
  get symbols(): string[] {
    return this.#quotes.map((q) => q.symbol);
  }

  /** Updates made so far, and how many of them were published (had a subscriber). */
  get counts(): { updates: number; published: number } {
    return { updates: this.#updates, published: this.#published };
  }

  attach(server: Server): void {
    this.#server = server;
    if (this.#autoStart) this.#timer = setInterval(() => this.tick(), this.#interval);
  }

  stop(): void {
    this.pause();
    this.#server = null;
  }

  /** Stops the feed's timer (connections stay); `resume()` starts it again. */
  pause(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Starts the feed's timer if it is not running. */
  resume(): void {
    if (this.#server !== null && this.#timer === null) {
      this.#timer = setInterval(() => this.tick(), this.#interval);
    }
  }

  /** One batch of updates (`updatesPerSecond * interval / 1000` of them): the timer calls it. */
  tick(): void {
    const server = this.#server;
    if (server === null) return;
    for (let i = 0; i < this.#perBatch; i++) {
      const quote = this.#quotes[Math.floor(this.#random() * this.#quotes.length)];
      // A random walk of at most ±0.5% that never goes below $1.
      const step = Math.round(quote.cents * (this.#random() - 0.5) / 100);
      quote.cents = Math.max(100, quote.cents + step);
      quote.seq++;
      this.#updates++;
      if (server.subscriberCount(quote.topic) === 0) continue;
      this.#published++;
      server.publish(
        quote.topic,
        `{"s":"${quote.symbol}","p":${quote.cents / 100},"n":${quote.seq}}`,
      );
    }
  }

  fetch(request: Request, url: URL): Response | null {
    if (url.pathname !== "/api/ticker/stats" && url.pathname !== "/api/ticker/quotes") return null;
    if (request.method !== "GET" && request.method !== "HEAD") {
      return json({ error: "Use GET" }, 405);
    }
    if (url.pathname === "/api/ticker/quotes") {
      // What a client gets on subscribing: [symbol, price, sequence number].
      return json(this.#quotes.map((q) => [q.symbol, q.cents / 100, q.seq]));
    }
    const stats = this.#server?.stats();
    return json({
      symbols: this.#quotes.length,
      updates: this.#updates,
      published: this.#published,
      messagesConflated: stats?.messagesConflated ?? 0,
    });
  }

  upgrade(_request: UpgradeRequestInfo): Session {
    return new TickerSession(this);
  }

  /** @internal */
  subscribe(ws: SessionSocket, symbols: unknown): void {
    const list = this.#pick(ws, symbols);
    if (list === null) return;
    const prices: [string, number, number][] = [];
    for (const quote of list) {
      ws.subscribe(quote.topic, { policy: "latest", maxBuffered: this.#maxBuffered });
      prices.push([quote.symbol, quote.cents / 100, quote.seq]);
    }
    // Sent after subscribing and before any later tick: the page starts
    // counting gaps from these sequence numbers.
    ws.send(JSON.stringify({ type: "snapshot", prices }));
  }

  /** @internal */
  unsubscribe(ws: SessionSocket, symbols: unknown): void {
    const list = this.#pick(ws, symbols);
    if (list === null) return;
    for (const quote of list) ws.unsubscribe(quote.topic);
  }

  #pick(ws: SessionSocket, symbols: unknown): Quote[] | null {
    if (symbols === "all") return this.#quotes;
    if (!Array.isArray(symbols) || symbols.length > this.#quotes.length) {
      sendError(ws, 'symbols must be "all" or a list of symbols');
      return null;
    }
    const list: Quote[] = [];
    for (const symbol of symbols) {
      const quote = typeof symbol === "string" ? this.#bySymbol.get(symbol) : undefined;
      if (quote === undefined) {
        sendError(ws, `Unknown symbol ${JSON.stringify(symbol)}`);
        return null;
      }
      list.push(quote);
    }
    return list;
  }
}

/** One ticker connection. */
class TickerSession implements Session {
  readonly #app: TickerApp;

  constructor(app: TickerApp) {
    this.#app = app;
  }

  open(ws: SessionSocket): void {
    ws.send(JSON.stringify({ type: "symbols", symbols: this.#app.symbols }));
  }

  message(ws: SessionSocket, data: Message): void {
    const msg = parseJson(data);
    if (msg?.type === "subscribe") return this.#app.subscribe(ws, msg.symbols);
    if (msg?.type === "unsubscribe") return this.#app.unsubscribe(ws, msg.symbols);
    sendError(
      ws,
      'Send {"type":"subscribe","symbols":["…"]} (or "symbols":"all") or "unsubscribe"',
    );
  }

  close(): void {}
}
