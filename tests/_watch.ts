/**
 * Watching over async tests, on both runtimes: a timeout for any promise so
 * no test hangs, and a check that a test left no promise rejected without a
 * handler (a bug users would see as a crash).
 *
 * Importing this module installs nothing: the rejection listeners go in only
 * when {@linkcode watchUnhandledRejections} or {@linkcode test} is called.
 *
 * @module
 */

import { test as nodeTest } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";

/** Rejects if `promise` has not settled within `ms`, so no test hangs. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Collects unhandled promise rejections while installed, on both runtimes:
 * `process.on("unhandledRejection")` where there is a `process` (Deno's Node
 * compatibility and Bun) and the `unhandledrejection` event where the global
 * scope is an event target (Deno).
 */
export function watchUnhandledRejections(): { reasons: unknown[]; stop(): void } {
  const reasons: unknown[] = [];
  const onProcess = (reason: unknown) => reasons.push(reason);
  const onEvent = (event: Event) => {
    reasons.push((event as PromiseRejectionEvent).reason);
    event.preventDefault();
  };
  process.on("unhandledRejection", onProcess);
  const target = globalThis as unknown as Partial<EventTarget>;
  const hasEvents = typeof target.addEventListener === "function" &&
    typeof (globalThis as { Deno?: unknown }).Deno === "object";
  if (hasEvents) target.addEventListener!("unhandledrejection", onEvent);
  return {
    reasons,
    stop() {
      process.off("unhandledRejection", onProcess);
      if (hasEvents) target.removeEventListener!("unhandledrejection", onEvent);
    },
  };
}

/** Options of {@linkcode test}. */
export interface WatchedTestOptions {
  /** Passed to `node:test`: the test runs, but a failure is not counted. */
  todo?: string;
  /** Runs after the body, even when it threw, before the rejection check. */
  cleanup?: () => Promise<void> | void;
}

/** The file-wide watcher behind {@linkcode test}, installed at its first use. */
let watcher: { reasons: unknown[] } | null = null;

/**
 * `node:test`'s `test`, plus: fails if the body (or `cleanup`) left an
 * unhandled rejection behind. The check is inside the test itself because
 * Deno's node:test ignores `afterEach` failures.
 */
export function test(
  name: string,
  body: () => Promise<void>,
  options: WatchedTestOptions = {},
): void {
  const { cleanup, ...nodeOptions } = options;
  watcher ??= watchUnhandledRejections();
  const watched = watcher;
  nodeTest(name, nodeOptions, async () => {
    watched.reasons.length = 0;
    try {
      await body();
    } finally {
      await cleanup?.();
    }
    await delay(20); // Let stray rejections surface.
    assert.deepEqual([...watched.reasons], [], "no unhandled promise rejection");
  });
}

/**
 * One waiter's wake-up call, for polling loops over sockets: `sleep(ms)`
 * resolves at the next `wake()` or after `ms`, whichever comes first, and
 * never rejects (the loop checks its own deadline).
 */
export class Waker {
  #wake: (() => void) | null = null;

  /** Wakes the waiter, if one sleeps. */
  wake(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  /** Resolves at the next {@linkcode wake} or after `ms`. */
  sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#wake = null;
        resolve();
      }, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}
