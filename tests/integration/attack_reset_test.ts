/**
 * Abrupt resets at every stage of a connection's life, against a real
 * `serve()` echo server on loopback: clients that send a TCP RST (via
 * `socket.resetAndDestroy()` where the runtime has it, else `destroy()`)
 * in the middle of the handshake, right after the 101, in the middle of a
 * frame, in the middle of the close handshake, and while the server is
 * writing a large reply. After each: `server.connections` is back to 0,
 * every connection that opened got its `close` callback, no promise rejection
 * went unhandled, a control client kept getting echoes, and RSS came back
 * near its baseline.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import assert from "node:assert/strict";
import { test } from "../_watch.ts";
import process from "node:process";
import {
  assertAftermath,
  type EchoServer,
  eventually,
  HOST,
  knownFailure,
  MiB,
  mib,
  report,
  resetSocket,
  settledRss,
  startControl,
  startEchoServer,
} from "./_attack.ts";
import { buildFrame, closeFrame, Op, RawClient, sleep, upgradeRequest } from "./_raw_client.ts";

const PER_STAGE = 30;
/** Fewer for mid-reply: each moves 8 MiB each way (more than loopback's kernel buffers). */
const MID_REPLY_CLIENTS = 15;
/** The mid-reply stage's messages: few and reused, so the test's own buffers stay small. */
const REPLY_MESSAGES = 8;
const replyFrame = buildFrame({ opcode: Op.Binary, payload: new Uint8Array(MiB) });
/** The most unsent output the server held at once in the mid-reply stage. */
let midReplyBuffered = 0;

function serverBuffered(): number {
  let total = 0;
  for (const ws of echo?.server.connections ?? []) total += ws.bufferedAmount;
  return total;
}

let echo: EchoServer | null = null;
const cleanup = async () => {
  await echo?.stop();
  echo = null;
};

/** Brings a client to the stage, then resets it. */
type Stage = (port: number) => Promise<void>;

/** Gives the server a moment to read what was sent before the reset hits. */
const SETTLE_MS = 30;

const stages: Record<string, Stage> = {
  async "mid-handshake"(port) {
    const client = await RawClient.connect(port, HOST);
    const request = upgradeRequest(`${HOST}:${port}`);
    await client.writeAndFlush(request.slice(0, request.length >> 1));
    await sleep(SETTLE_MS);
    resetSocket(client.socket);
  },
  async "before the 101"(port) {
    // The whole request, then a reset at once: the server is between reading
    // the request and writing its 101.
    const client = await RawClient.connect(port, HOST);
    await client.writeAndFlush(upgradeRequest(`${HOST}:${port}`));
    resetSocket(client.socket);
  },
  async "right after 101"(port) {
    const client = await RawClient.open(port, { host: HOST });
    resetSocket(client.socket);
  },
  async "mid-frame"(port) {
    const client = await RawClient.open(port, { host: HOST });
    // A header announcing 64 KiB, then only 100 bytes of it.
    const frame = buildFrame({ opcode: Op.Binary, payload: new Uint8Array(64 * 1024) });
    await client.writeAndFlush(frame.subarray(0, 114));
    await sleep(SETTLE_MS);
    resetSocket(client.socket);
  },
  async "mid-close"(port) {
    const client = await RawClient.open(port, { host: HOST });
    await client.writeAndFlush(closeFrame(1000, "bye"));
    resetSocket(client.socket);
  },
  async "mid-reply"(port) {
    const client = await RawClient.open(port, { host: HOST });
    // Stop reading, send 8 MiB to be echoed, and reset while the server still
    // holds the part of the echo that the kernel buffers could not take.
    client.socket.pause();
    for (let i = 0; i < REPLY_MESSAGES; i++) client.write(replyFrame);
    // A server that stops reading this peer (its output is backed up) never
    // takes it all: give the writes a second at most.
    const deadline = performance.now() + 1000;
    while (client.socket.writableLength > 0 && performance.now() < deadline) await sleep(10);
    await sleep(100);
    midReplyBuffered = Math.max(midReplyBuffered, serverBuffered());
    resetSocket(client.socket);
  },
};

/** Known failures, by stage (see issue 7, fault 3). */
const todo: Record<string, string | undefined> = {};

for (const [name, stage] of Object.entries(stages)) {
  test(`resets ${name}: the server drops every connection`, async () => {
    echo = await startEchoServer({ closeTimeout: 1000, handshakeTimeout: 2000 });
    const baselineRss = await settledRss();
    const control = startControl(echo.port);
    const outcomes = await Promise.allSettled(
      Array.from(
        { length: name === "mid-reply" ? MID_REPLY_CLIENTS : PER_STAGE },
        () => stage(echo!.port),
      ),
    );
    const failures = outcomes.filter((o) => o.status === "rejected").map((o) =>
      String((o as PromiseRejectedResult).reason)
    );
    await control.reached(control.roundTrips + 5, 10_000);
    const result = await control.stop();
    const { stats } = echo;
    // The control client's own connections open and close too.
    await eventually(() => stats.closeCodes.length >= stats.opened, 5000);
    report(`reset ${name}`, {
      clients: outcomes.length,
      failures: failures.length,
      opened: stats.opened,
      closed: stats.closeCodes.length,
      left: echo.server.connections.size,
      ...(name === "mid-reply" ? { serverBufferedAtReset: mib(midReplyBuffered) } : {}),
      controlRoundTrips: result.roundTrips,
    });
    assert.deepEqual(failures.slice(0, 3), [], "every attacker reached its stage");
    if (name === "mid-reply") {
      assert.ok(midReplyBuffered > 0, "the server was still writing replies when the resets hit");
    }
    await assertAftermath(echo, { baselineRss, control: result, minRoundTrips: 5, drainMs: 5000 });
    assert.equal(
      stats.closeCodes.length,
      stats.opened,
      `${stats.opened} connections opened, but only ${stats.closeCodes.length} got close`,
    );
  }, { cleanup, ...knownFailure(todo[name]) });
}

const LEAK_ROUNDS = 5;
/** Growth of `external` memory allowed from the first round's end to the last one's. */
const LEAK_ALLOWANCE = 4 * MiB;

test(
  "abrupt ends leave nothing behind: memory does not grow round after round",
  async () => {
    echo = await startEchoServer({ closeTimeout: 1000 });
    const baselineRss = await settledRss();
    const control = startControl(echo.port);
    const external: number[] = [];
    for (let round = 0; round < LEAK_ROUNDS; round++) {
      await Promise.all(
        Array.from({ length: MID_REPLY_CLIENTS }, () => stages["mid-reply"](echo!.port)),
      );
      await eventually(() => echo!.server.connections.size <= 1, 5000);
      await settledRss();
      external.push(process.memoryUsage().external);
    }
    const result = await control.stop();
    const growth = external[external.length - 1] - external[0];
    report("reset leak check", {
      rounds: LEAK_ROUNDS,
      connectionsPerRound: MID_REPLY_CLIENTS,
      externalGrowth: mib(growth),
      perConnection: `${(growth / ((LEAK_ROUNDS - 1) * MID_REPLY_CLIENTS) / 1024).toFixed(0)}KiB`,
    });
    assert.ok(
      growth <= LEAK_ALLOWANCE,
      `external memory grew by ${mib(growth)} over ${LEAK_ROUNDS - 1} rounds of ` +
        `${MID_REPLY_CLIENTS} ` +
        "connections reset while the server was replying: closed connections are kept alive",
    );
    await assertAftermath(echo, { baselineRss, control: result, minRoundTrips: 5, drainMs: 5000 });
  },
  { cleanup },
);
