/**
 * The examples server's plain HTTP side, with the runtime's own `fetch`, on
 * Deno and Bun: the index and the three pages, the browser entry point
 * bundled as a module, the JSON API next to the sockets on the same port,
 * and 404/405 for anything else.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe } from "node:test";
import assert from "node:assert/strict";
import { test } from "../_watch.ts";
import type { Examples } from "../../examples/start.ts";
import { JsonClient, start, wsUrl } from "./_client.ts";

async function withServer(body: (examples: Examples, base: string) => Promise<void>) {
  const examples = await start({ ticker: { autoStart: false } });
  try {
    await body(examples, examples.url);
  } finally {
    await examples.close();
  }
}

describe("examples: HTTP on the socket's port", () => {
  test("the index and each app's page, at the app's socket path", () =>
    withServer(async (_examples, base) => {
      const index = await fetch(base);
      assert.equal(index.status, 200);
      assert.match(index.headers.get("content-type")!, /^text\/html/);
      const html = await index.text();
      for (const path of ["/chat", "/ticker", "/leaderboard"]) {
        assert.ok(html.includes(`href="${path}"`), `the index links ${path}`);
        const page = await fetch(new URL(path, base));
        assert.equal(page.status, 200, path);
        const text = await page.text();
        assert.match(text, /import \{ ReconnectingWebSocket \} from "\/sluice\.js"/, path);
      }
      const module = await fetch(new URL("/sluice.js", base));
      assert.equal(module.status, 200);
      assert.match(module.headers.get("content-type")!, /^text\/javascript/);
      assert.match(await module.text(), /export\s*\{[^}]*ReconnectingWebSocket/s);
      const missing = await fetch(new URL("/nope", base));
      assert.equal(missing.status, 404);
      await missing.body?.cancel();
      const post = await fetch(new URL("/chat", base), { method: "POST", body: "x" });
      assert.equal(post.status, 405);
      await post.body?.cancel();
    }));

  test("a chat token from GET /api/chat/token opens the socket; GET /api/top lists scores", () =>
    withServer(async (examples, base) => {
      const bad = await fetch(new URL("/api/chat/token?nick=", base));
      assert.equal(bad.status, 400);
      assert.match((await bad.json()).error, /nickname/);
      const answer = await fetch(new URL("/api/chat/token?nick=ada", base));
      assert.equal(answer.status, 200);
      const { token } = await answer.json();
      const ada = await JsonClient.open(wsUrl(examples, `/chat?token=${token}&room=lobby`));
      assert.equal((await ada.nextOfType("welcome")).nick, "ada");

      const player = await JsonClient.open(wsUrl(examples, "/leaderboard"));
      player.send({ type: "score", name: "ada", score: 7 });
      await player.nextOfType("ack");
      const top = await fetch(new URL("/api/top", base));
      assert.match(top.headers.get("content-type")!, /^application\/json/);
      assert.deepEqual(await top.json(), {
        version: 1,
        entries: [{ rank: 1, name: "ada", score: 7 }],
      });

      examples.ticker.tick();
      const quotes = await (await fetch(new URL("/api/ticker/quotes", base))).json();
      assert.equal(quotes.length, 500);
      const stats = await (await fetch(new URL("/api/ticker/stats", base))).json();
      assert.equal(stats.updates, 100);
      await ada.close();
      await player.close();
    }));
});
