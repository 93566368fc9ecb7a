/**
 * A churn soak against a real `serve()` echo server on loopback: thousands
 * of connect / echo / close cycles, 32 at a time; most end with a clean close
 * handshake, every fourth just drops its socket. Every cycle must succeed,
 * and afterwards `server.connections` is back to 0, every connection that
 * opened got its `close` callback, no promise rejection went unhandled, a
 * control client kept getting echoes, and RSS came back near its baseline.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import assert from "node:assert/strict";
import process from "node:process";
import { test } from "../_watch.ts";
import {
  assertAftermath,
  type EchoServer,
  eventually,
  HOST,
  KiB,
  mib,
  report,
  sampleRss,
  settledRss,
  startControl,
  startEchoServer,
} from "./_attack.ts";
import { buildFrame, closeFrame, Op, pattern, RawClient } from "./_raw_client.ts";

const CYCLES = 2000;
const CONCURRENCY = 32;
const MAX_MS = 40_000;

let echo: EchoServer | null = null;
const cleanup = async () => {
  await echo?.stop();
  echo = null;
};

/** One cycle: connect, echo a text and a binary message, then close (or drop). */
async function cycle(port: number, n: number): Promise<void> {
  const client = await RawClient.open(port, { host: HOST });
  try {
    const text = `churn ${n}`;
    client.write(buildFrame({ opcode: Op.Text, payload: text }));
    const binary = pattern(1 * KiB + (n % 512), n);
    client.write(buildFrame({ opcode: Op.Binary, payload: binary }));
    const first = await client.expectFrame(10_000);
    assert.equal(new TextDecoder().decode(first.payload), text);
    const second = await client.expectFrame(10_000);
    assert.deepEqual(second.payload, binary);
    if (n % 4 !== 3) {
      client.write(closeFrame(1000));
      const { code } = await client.expectClose(10_000);
      assert.equal(code, 1000);
      await client.waitForEnd(5000);
    }
  } finally {
    client.destroy();
  }
}

test(`churn soak: ${CYCLES} connect/echo/close cycles, ${CONCURRENCY} at a time`, async () => {
  echo = await startEchoServer({ closeTimeout: 1000 });
  const baselineRss = await settledRss();
  const baselineExternal = process.memoryUsage().external;
  const rss = sampleRss();
  const control = startControl(echo.port);
  const failures: string[] = [];
  let next = 0;
  let done = 0;
  const start = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next < CYCLES && performance.now() - start < MAX_MS && failures.length < 20) {
      const n = next++;
      try {
        await cycle(echo!.port, n);
        done++;
      } catch (error) {
        failures.push(`cycle ${n}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  }));
  const seconds = (performance.now() - start) / 1000;
  await control.reached(control.roundTrips + 5, 10_000);
  const result = await control.stop();
  const { stats } = echo;
  await eventually(() => stats.closeCodes.length >= stats.opened, 5000);
  const peak = rss.stop();
  const afterRss = await settledRss();
  report("churn", {
    cycles: done,
    failures: failures.length,
    seconds: seconds.toFixed(1),
    cyclesPerSecond: (done / seconds).toFixed(0),
    opened: stats.opened,
    closed: stats.closeCodes.length,
    peakRssGrowth: mib(peak - baselineRss),
    rssGrowthAfterGc: mib(afterRss - baselineRss),
    externalGrowth: mib(process.memoryUsage().external - baselineExternal),
    controlRoundTrips: result.roundTrips,
    slowestControlMs: result.slowestMs.toFixed(0),
  });
  assert.deepEqual(failures.slice(0, 5), [], `${failures.length} cycles failed`);
  assert.equal(done, CYCLES, `only ${done} of ${CYCLES} cycles ran within ${MAX_MS} ms`);
  await assertAftermath(echo, { baselineRss, control: result, minRoundTrips: 5 });
  assert.equal(
    stats.closeCodes.length,
    stats.opened,
    `${stats.opened} connections opened, but only ${stats.closeCodes.length} got close`,
  );
}, { cleanup });
