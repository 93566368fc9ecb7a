/**
 * The ticker example's server over real loopback connections, on Deno and
 * Bun: each client gets the symbols it picked and nothing else; a client
 * that keeps up gets every tick (no sequence gap); a client that stops
 * reading is held to the newest price per symbol (`"latest"`), and once it
 * reads again it gets the newest price of every symbol and can count exactly
 * what it skipped from the sequence numbers.
 *
 * The feed is driven by the test (`autoStart: false`, `tick()`), so the
 * amount of data is fixed, not timed.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe } from "node:test";
import assert from "node:assert/strict";
import { delay, test } from "../_watch.ts";
import type { Examples } from "../../examples/start.ts";
import type { TickerOptions } from "../../examples/ticker.ts";
import { type Json, JsonClient, start, wsUrl } from "./_client.ts";
import { buildFrame, Op, RawClient } from "../integration/_raw_client.ts";

async function withTicker(
  options: TickerOptions,
  body: (examples: Examples) => Promise<void>,
): Promise<void> {
  const examples = await start({ ticker: { autoStart: false, ...options } });
  try {
    await body(examples);
  } finally {
    await examples.close();
  }
}

interface Tick {
  s: string;
  p: number;
  n: number;
}

const isTick = (m: Json) => typeof m.s === "string";

/** Sequence numbers by symbol from a snapshot message. */
function seqs(snapshot: Json): Map<string, number> {
  return new Map((snapshot.prices as [string, number, number][]).map(([s, , n]) => [s, n]));
}

/** The current sequence number of every symbol, as a fresh client sees it. */
async function currentSeqs(examples: Examples, symbols: unknown): Promise<Map<string, number>> {
  const probe = await JsonClient.open(wsUrl(examples, "/ticker"));
  await probe.nextOfType("symbols");
  probe.send({ type: "subscribe", symbols });
  const snapshot = await probe.nextOfType("snapshot");
  await probe.close();
  return seqs(snapshot);
}

describe("examples: ticker", () => {
  test("a client gets the symbols it picked, every tick of them while it keeps up", () =>
    withTicker({ updatesPerSecond: 5000, interval: 20 }, async (examples) => {
      const client = await JsonClient.open(wsUrl(examples, "/ticker"));
      const all = (await client.nextOfType("symbols")).symbols as string[];
      assert.equal(all.length, 500);
      assert.equal(new Set(all).size, 500, "symbols are distinct");
      const picked = all.slice(0, 50);
      client.send({ type: "subscribe", symbols: picked });
      const before = seqs(await client.nextOfType("snapshot"));
      assert.deepEqual([...before.keys()], picked);

      for (let i = 0; i < 100; i++) {
        examples.ticker.tick(); // 100 updates over 500 symbols
        await delay(1);
      }
      const after = await currentSeqs(examples, picked);
      const expected = picked.reduce((sum, s) => sum + after.get(s)! - before.get(s)!, 0);
      assert.ok(expected > 300, `the picked symbols moved (${expected} updates)`);
      const last = new Map(before);
      let received = 0;
      while (received < expected) {
        const tick = await client.next(
          isTick,
          `tick ${received + 1} of ${expected}`,
        ) as unknown as Tick;
        assert.ok(last.has(tick.s), `${tick.s} was picked`);
        assert.equal(tick.n, last.get(tick.s)! + 1, `no gap for ${tick.s}`);
        assert.ok(tick.p >= 1, "a price");
        last.set(tick.s, tick.n);
        received++;
      }
      assert.deepEqual(last, after, "the newest price of every symbol arrived");
      client.send({ type: "subscribe", symbols: ["NOPE!"] });
      assert.match(String((await client.nextOfType("error")).message), /Unknown symbol/);
      await client.close();
    }));

  test("a client that stops reading gets the latest price per symbol, and its skipped count", () =>
    withTicker({ updatesPerSecond: 50_000, interval: 20 }, async (examples) => {
      const { port } = examples.server.addr;
      const slow = await RawClient.open(port, { path: "/ticker" });
      slow.write(buildFrame({ opcode: Op.Text, payload: '{"type":"subscribe","symbols":"all"}' }));
      const fast = await JsonClient.open(wsUrl(examples, "/ticker"));
      await fast.nextOfType("symbols");
      fast.send({ type: "subscribe", symbols: "all" });
      const fastStart = seqs(await fast.nextOfType("snapshot"));
      // Let the slow client's subscription land, then stop reading.
      const deadline = performance.now() + 10_000;
      while (examples.server.subscriberCount("tick:" + [...fastStart.keys()][0]) < 2) {
        assert.ok(performance.now() < deadline, "the slow client subscribed");
        await delay(5);
      }
      slow.socket.pause();

      // Batches of 1000 updates (~45 KiB, below the 64 KiB slow mark) until the
      // server has conflated plenty for the slow client (its kernel buffers
      // take a few MiB first); the fast client reads between batches.
      const fastLast = new Map(fastStart);
      let fastReceived = 0;
      let batches = 0;
      while (examples.server.stats().messagesConflated < 20_000) {
        assert.ok(++batches <= 3000, "conflation starts within 3 million updates");
        examples.ticker.tick();
        for (;;) {
          const m = fast.messages.at(-1);
          await delay(0);
          if (m === fast.messages.at(-1)) break; // nothing new arrived
        }
      }
      const final = await currentSeqs(examples, "all");
      // The fast client: every tick, no gap, up to the newest.
      let fastWanted = 0;
      for (const [s, n] of final) fastWanted += n - fastStart.get(s)!;
      while (fastReceived < fastWanted) {
        const tick = await fast.next(isTick, "a tick at the fast client") as unknown as Tick;
        assert.equal(tick.n, fastLast.get(tick.s)! + 1, `no gap for ${tick.s} at the fast client`);
        fastLast.set(tick.s, tick.n);
        fastReceived++;
      }
      assert.deepEqual(fastLast, final);

      // The slow client reads again: the backlog, then the held newest prices.
      slow.socket.resume();
      let slowStart: Map<string, number> | null = null;
      const slowLast = new Map<string, number>();
      let received = 0;
      let skipped = 0;
      const done = () => slowStart !== null && [...final].every(([s, n]) => slowLast.get(s) === n);
      while (!done()) {
        const frame = await slow.expectFrame(20_000);
        assert.equal(frame.opcode, Op.Text);
        const m = JSON.parse(new TextDecoder().decode(frame.payload)) as Json;
        if (m.type === "snapshot") {
          slowStart = seqs(m);
          for (const [s, n] of slowStart) slowLast.set(s, n);
        } else if (isTick(m)) {
          const tick = m as unknown as Tick;
          const previous = slowLast.get(tick.s)!;
          assert.ok(tick.n > previous, `${tick.s}: newer prices only (${previous} -> ${tick.n})`);
          skipped += tick.n - previous - 1;
          slowLast.set(tick.s, tick.n);
          received++;
        }
      }
      let published = 0;
      for (const [s, n] of final) published += n - slowStart!.get(s)!;
      console.log(
        `slow client: ${received} ticks received, ${skipped} skipped of ${published}; ` +
          `fast client: ${fastReceived} of ${fastWanted}`,
      );
      assert.ok(skipped > 0, "updates were skipped for the slow client");
      assert.equal(received + skipped, published, "every update is received or counted");
      assert.ok(
        received < published - 1000,
        `the slow client was spared most of the backlog (${received} of ${published})`,
      );
      slow.destroy();
      await fast.close();
    }));
});
