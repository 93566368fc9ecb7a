/**
 * Test helpers for the example apps: the examples server on a free loopback
 * port, and a JSON client over Sluice's own `connect()` that keeps every
 * message and waits for the ones a test expects.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect, type WebSocketConnection } from "../../mod.ts";
import { type Examples, type ExamplesOptions, startExamples } from "../../examples/start.ts";

/** A server message, parsed. */
export type Json = Record<string, unknown>;

/** The examples server on 127.0.0.1, any free port. */
export function start(options: ExamplesOptions = {}): Promise<Examples> {
  return startExamples({ hostname: "127.0.0.1", port: 0, ...options });
}

/** The `ws:` URL of `path` on the examples server. */
export function wsUrl(examples: Examples, path: string): string {
  return new URL(path, examples.server.url).href;
}

/** A connection that parses every text message as JSON and keeps them all. */
export class JsonClient {
  readonly ws: WebSocketConnection<undefined>;
  readonly messages: Json[] = [];
  #cursor = 0;
  #wake: (() => void) | null = null;

  private constructor(ws: WebSocketConnection<undefined>) {
    this.ws = ws;
  }

  /** Connects; rejects as `connect()` does (a `HandshakeError` for a refused upgrade). */
  static async open(url: string): Promise<JsonClient> {
    let client: JsonClient | null = null;
    const early: Json[] = [];
    const ws = await connect(url, {
      handshakeTimeout: 5_000,
      handlers: {
        message: (_ws, data) => {
          assert.equal(typeof data, "string", "the apps send text");
          const message = JSON.parse(data as string) as Json;
          if (client === null) early.push(message);
          else client.#push(message);
        },
        close: () => {
          if (client !== null) client.#notify();
        },
      },
    });
    client = new JsonClient(ws);
    for (const message of early) client.#push(message);
    return client;
  }

  #push(message: Json): void {
    this.messages.push(message);
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** Sends an object as JSON text. */
  send(message: Json): void {
    this.ws.send(JSON.stringify(message));
  }

  /**
   * The next message (after those already taken) that `match` accepts;
   * messages skipped on the way are taken too. Fails after `ms`, or at once
   * if the connection closed first.
   */
  async next(match: (message: Json) => boolean, what: string, ms = 10_000): Promise<Json> {
    const deadline = performance.now() + ms;
    for (;;) {
      while (this.#cursor < this.messages.length) {
        const message = this.messages[this.#cursor++];
        if (match(message)) return message;
      }
      if (this.ws.readyState >= 2) {
        throw new Error(`Connection closed while waiting for ${what}`);
      }
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** The next message of `type`. */
  nextOfType(type: string, ms?: number): Promise<Json> {
    return this.next((m) => m.type === type, `a "${type}" message`, ms);
  }

  /** Closes and waits for the end. */
  async close(): Promise<void> {
    this.ws.close();
    await this.ws.closed;
  }
}
