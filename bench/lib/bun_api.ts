/**
 * The few Bun APIs the benchmark uses, declared by hand: `@types/bun` is not a
 * dependency, and every bench file must pass `deno check`.
 *
 * @module
 */

/** A Bun TCP socket (the part the load generator uses). */
export interface BunSocket<T = unknown> {
  data: T;
  /** Bytes taken by the kernel (may be fewer than asked), or -1 when closed. */
  write(data: Uint8Array): number;
  end(): void;
  terminate(): void;
  setNoDelay(noDelay?: boolean): boolean;
}

/** Callbacks shared by every socket of one `Bun.connect`/`Bun.listen` call. */
export interface BunSocketHandler<T> {
  open?(socket: BunSocket<T>): void;
  data?(socket: BunSocket<T>, data: Uint8Array): void;
  drain?(socket: BunSocket<T>): void;
  close?(socket: BunSocket<T>, error?: Error): void;
  error?(socket: BunSocket<T>, error: Error): void;
  connectError?(socket: BunSocket<T>, error: Error): void;
}

/** A Bun server-side WebSocket. */
export interface BunServerWebSocket {
  send(data: string | Uint8Array | ArrayBuffer): number;
}

/** The `Bun` global, as far as the benchmark uses it. */
export interface BunApi {
  version: string;
  connect<T>(options: {
    hostname: string;
    port: number;
    data?: T;
    socket: BunSocketHandler<T>;
  }): Promise<BunSocket<T>>;
  listen<T>(options: {
    hostname: string;
    port: number;
    socket: BunSocketHandler<T>;
  }): { port: number };
  serve(options: {
    hostname: string;
    port: number;
    fetch(request: Request, server: { upgrade(request: Request): boolean }): Response | undefined;
    websocket: {
      maxPayloadLength?: number;
      backpressureLimit?: number;
      idleTimeout?: number;
      perMessageDeflate?: boolean;
      message(ws: BunServerWebSocket, message: string | Uint8Array): void;
    };
  }): { port: number };
}

/** The `Bun` global; only call this on Bun. */
export function bun(): BunApi {
  const api = (globalThis as unknown as { Bun?: BunApi }).Bun;
  if (api === undefined) throw new Error("This script must run on Bun");
  return api;
}
