/**
 * Attacks on the opening handshake, against a real `serve()` echo server on
 * loopback: slowloris (hundreds of connections dribbling a request one byte
 * at a time, which `handshakeTimeout` must end with 408 or a close) and a
 * handshake flood (hundreds of complete handshakes at once, held, then
 * closed). After each: `server.connections` is back to 0, no promise
 * rejection went unhandled, a control client kept getting echoes while the
 * attack ran, and RSS came back near its baseline.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import assert from "node:assert/strict";
import type net from "node:net";
import { test } from "../_watch.ts";
import {
  assertAftermath,
  connectSocket,
  type EchoServer,
  handshakeBytes,
  report,
  sampleRss,
  settledRss,
  startControl,
  startEchoServer,
} from "./_attack.ts";
import { closeFrame, RawClient, sleep } from "./_raw_client.ts";
import { utf8 } from "../_bytes.ts";

const SLOWLORIS_SOCKETS = 200;
const SLOWLORIS_TOTAL = 1200;
const SLOWLORIS_MS = 2500;
const DRIBBLE_MS = 100;
const HANDSHAKE_TIMEOUT = 500;

let echo: EchoServer | null = null;
const cleanup = async () => {
  await echo?.stop();
  echo = null;
};

interface Loris {
  socket: net.Socket;
  response: string;
  closed: boolean;
}

/** One slowloris connection: a valid request, minus its last byte, one byte per `DRIBBLE_MS`. */
async function loris(port: number, all: Loris[]): Promise<void> {
  const socket = await connectSocket(port);
  const me: Loris = { socket, response: "", closed: false };
  all.push(me);
  const request = utf8(handshakeBytes(port));
  let at = 0;
  const timer = setInterval(() => {
    if (socket.destroyed || at >= request.length - 1) return;
    socket.write(request.subarray(at, at + 1));
    at++;
  }, DRIBBLE_MS);
  socket.on("data", (chunk: Uint8Array) => {
    if (me.response.length < 64) me.response += new TextDecoder().decode(chunk);
  });
  socket.on("close", () => {
    clearInterval(timer);
    me.closed = true;
  });
}

test("slowloris: hundreds of dribbled handshakes get 408 or are closed", async () => {
  echo = await startEchoServer({ handshakeTimeout: HANDSHAKE_TIMEOUT, closeTimeout: 1000 });
  const baselineRss = await settledRss();
  const rss = sampleRss();
  const control = startControl(echo.port);
  const all: Loris[] = [];
  const start = performance.now();
  let connectErrors = 0;
  // Keep SLOWLORIS_SOCKETS dribbling at once, replacing those the server ends.
  while (performance.now() - start < SLOWLORIS_MS && all.length < SLOWLORIS_TOTAL) {
    const open = all.filter((l) => !l.closed).length;
    const wanted = Math.min(SLOWLORIS_SOCKETS - open, SLOWLORIS_TOTAL - all.length);
    const batch: Promise<void>[] = [];
    for (let i = 0; i < wanted; i++) {
      batch.push(loris(echo.port, all).catch(() => void connectErrors++));
    }
    await Promise.all(batch);
    await sleep(50);
  }
  const duringAttack = control.roundTrips;
  await control.reached(duringAttack + 5, 10_000);
  const result = await control.stop();
  // Every dribbler must be ended by the server well within 10 handshake timeouts.
  const deadline = performance.now() + 10 * HANDSHAKE_TIMEOUT;
  while (all.some((l) => !l.closed) && performance.now() < deadline) await sleep(50);
  const stillOpen = all.filter((l) => !l.closed);
  for (const l of all) l.socket.destroy();
  const statuses = new Map<string, number>();
  for (const l of all) {
    const status = l.response === "" ? "closed" : l.response.slice(0, 12);
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
  }
  report("slowloris", {
    sockets: all.length,
    connectErrors,
    outcomes: JSON.stringify(Object.fromEntries(statuses)),
    controlRoundTrips: result.roundTrips,
    slowestControlMs: result.slowestMs.toFixed(0),
    peakRssGrowth: `${((rss.stop() - baselineRss) / 2 ** 20).toFixed(1)}MiB`,
  });
  assert.equal(stillOpen.length, 0, `${stillOpen.length} dribbling connections were never ended`);
  for (const [status, count] of statuses) {
    assert.ok(
      status === "closed" || status.startsWith("HTTP/1.1 408"),
      `${count} dribbling connections got ${JSON.stringify(status)}, not 408 or a close`,
    );
  }
  assert.ok(all.length >= SLOWLORIS_SOCKETS, `only ${all.length} dribbling connections were made`);
  await assertAftermath(echo, { baselineRss, control: result, minRoundTrips: 5 });
}, { cleanup });

const FLOOD_WAVES = 3;
const FLOOD_PER_WAVE = 200;

test("handshake flood: hundreds of complete handshakes at once, held, then closed", async () => {
  echo = await startEchoServer({ closeTimeout: 1000 });
  const baselineRss = await settledRss();
  const rss = sampleRss();
  const control = startControl(echo.port);
  const failures: string[] = [];
  const held: RawClient[] = [];
  let peakConnections = 0;
  try {
    for (let wave = 0; wave < FLOOD_WAVES; wave++) {
      const opened = await Promise.allSettled(
        Array.from({ length: FLOOD_PER_WAVE }, () => RawClient.open(echo!.port)),
      );
      for (const o of opened) {
        if (o.status === "fulfilled") held.push(o.value);
        else failures.push(String(o.reason));
      }
      peakConnections = Math.max(peakConnections, echo.server.connections.size);
    }
    // The control client must get through while all of them are held open.
    await control.reached(control.roundTrips + 5, 10_000);
  } finally {
    // Half close cleanly, half just drop the socket.
    await Promise.allSettled(held.map(async (client, i) => {
      if (i % 2 === 0) {
        client.write(closeFrame(1000));
        await client.expectClose(10_000);
      }
      client.destroy();
    }));
  }
  const result = await control.stop();
  report("handshake flood", {
    handshakes: held.length,
    failures: failures.length,
    peakConnections,
    controlRoundTrips: result.roundTrips,
    slowestControlMs: result.slowestMs.toFixed(0),
    peakRssGrowth: `${((rss.stop() - baselineRss) / 2 ** 20).toFixed(1)}MiB`,
  });
  assert.deepEqual(failures.slice(0, 5), [], `${failures.length} handshakes failed`);
  assert.equal(held.length, FLOOD_WAVES * FLOOD_PER_WAVE);
  await assertAftermath(echo, { baselineRss, control: result, minRoundTrips: 5 });
}, { cleanup });
