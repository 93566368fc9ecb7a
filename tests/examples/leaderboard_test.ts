/**
 * The leaderboard example's server over real loopback connections, on Deno
 * and Bun: a viewer gets the top 10 at once and again each time it changes,
 * and only then; a player's entry is their best score; bad posts get an
 * error, not a crash.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe } from "node:test";
import assert from "node:assert/strict";
import { test } from "../_watch.ts";
import type { Examples } from "../../examples/start.ts";
import { type Json, JsonClient, start, wsUrl } from "./_client.ts";

async function withServer(body: (examples: Examples) => Promise<void>): Promise<void> {
  const examples = await start({ ticker: { autoStart: false } });
  try {
    await body(examples);
  } finally {
    await examples.close();
  }
}

const names = (top: Json) => (top.entries as Json[]).map((e) => `${e.name}:${e.score}`);

describe("examples: leaderboard", () => {
  test("viewers get the top 10 on open and each time it changes, only then", () =>
    withServer(async (examples) => {
      const viewer = await JsonClient.open(wsUrl(examples, "/leaderboard"));
      assert.deepEqual(await viewer.nextOfType("top"), { type: "top", version: 0, entries: [] });
      const player = await JsonClient.open(wsUrl(examples, "/leaderboard"));
      await player.nextOfType("top");

      player.send({ type: "score", name: "ada", score: 120 });
      assert.deepEqual(await player.nextOfType("ack"), {
        type: "ack",
        name: "ada",
        best: 120,
        rank: 1,
      });
      const first = await viewer.nextOfType("top");
      assert.equal(first.version, 1);
      assert.deepEqual(names(first), ["ada:120"]);

      // Twelve more players: the list keeps the best ten, highest first.
      for (let i = 1; i <= 12; i++) player.send({ type: "score", name: `p${i}`, score: i * 10 });
      for (let i = 1; i <= 12; i++) await player.nextOfType("ack");
      // A lower score of a listed player, and a score below the 10th: no change.
      player.send({ type: "score", name: "ada", score: 5 });
      assert.deepEqual(await player.nextOfType("ack"), {
        type: "ack",
        name: "ada",
        best: 120,
        rank: 1,
      });
      player.send({ type: "score", name: "late", score: 15 });
      assert.equal((await player.nextOfType("ack")).rank, null);
      // A change again: p1 jumps to the top.
      player.send({ type: "score", name: "p1", score: 500 });
      await player.nextOfType("ack");
      const top = await viewer.next((m) => m.type === "top" && m.version === 14, "version 14");
      // Ties keep the earlier holder ahead (ada reached 120 before p12).
      assert.deepEqual(names(top), [
        "p1:500",
        "ada:120",
        "p12:120",
        "p11:110",
        "p10:100",
        "p9:90",
        "p8:80",
        "p7:70",
        "p6:60",
        "p5:50",
      ]);
      assert.deepEqual((top.entries as Json[]).map((e) => e.rank), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      // One push per change: versions 0 to 14, none twice, none for the
      // posts that changed nothing (ada's 5, late's 15).
      const versions = viewer.messages.filter((m) => m.type === "top").map((m) => m.version);
      assert.deepEqual(versions, Array.from({ length: 15 }, (_, i) => i));
      assert.deepEqual(examples.leaderboard.top.entries, top.entries, "the same list as /api/top");

      player.send({ type: "score", name: "ada", score: -1 });
      assert.match(String((await player.nextOfType("error")).message), /whole number/);
      player.send({ type: "score", name: "", score: 1 });
      assert.match(String((await player.nextOfType("error")).message), /name/);
      player.send({ type: "hello" });
      await player.nextOfType("error");
      await player.close();
      await viewer.close();
    }));
});
