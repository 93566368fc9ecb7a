/**
 * The chat example's server over real loopback connections (Sluice's own
 * `connect()` clients and a raw client that stops reading), on Deno and Bun:
 * tokens checked in the handshake, join/leave notices, the last 50 messages
 * on join, rooms kept apart, and a stalled member of one room never holding
 * up another room.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe } from "node:test";
import assert from "node:assert/strict";
import { HandshakeError } from "../../mod.ts";
import { test } from "../_watch.ts";
import type { Examples } from "../../examples/start.ts";
import { type Json, JsonClient, start, wsUrl } from "./_client.ts";
import { RawClient } from "../integration/_raw_client.ts";

async function withServer(body: (examples: Examples) => Promise<void>): Promise<void> {
  const examples = await start({ ticker: { autoStart: false } });
  try {
    await body(examples);
  } finally {
    await examples.close();
  }
}

function chatUrl(examples: Examples, nick: string, room: string | null): string {
  const params = new URLSearchParams({ token: examples.chat.issueToken(nick) });
  if (room !== null) params.set("room", room);
  return wsUrl(examples, `/chat?${params}`);
}

const isLine = (text: string) => (m: Json) => m.type === "message" && m.text === text;

describe("examples: chat", () => {
  test("the handshake refuses a missing or unknown token with 401", () =>
    withServer(async (examples) => {
      for (const query of ["", "?token=nope", "?token="]) {
        await assert.rejects(
          JsonClient.open(wsUrl(examples, `/chat${query}`)),
          (err: unknown) => err instanceof HandshakeError && err.status === 401,
          `token query ${JSON.stringify(query)}`,
        );
      }
      assert.throws(() => examples.chat.issueToken("no spaces allowed"), RangeError);
    }));

  test("two members see each other's messages and join/leave notices", () =>
    withServer(async (examples) => {
      const ada = await JsonClient.open(chatUrl(examples, "ada", "lobby"));
      assert.deepEqual(await ada.nextOfType("welcome"), { type: "welcome", nick: "ada" });
      assert.deepEqual((await ada.nextOfType("history")).messages, []);
      await ada.next((m) => m.type === "join" && m.nick === "ada", "ada's own join");

      const bob = await JsonClient.open(chatUrl(examples, "bob", "lobby"));
      await bob.nextOfType("history");
      const joined = await ada.next((m) => m.type === "join" && m.nick === "bob", "bob joined");
      assert.equal(joined.members, 2);

      bob.send({ type: "say", room: "lobby", text: "hi ada" });
      const line = await ada.next(isLine("hi ada"), "bob's line at ada");
      assert.equal(line.nick, "bob", "the nickname comes from the token");
      assert.equal(line.id, 1);
      await bob.next(isLine("hi ada"), "bob's line echoed to bob");

      ada.send({ type: "typing", room: "lobby" });
      await bob.next((m) => m.type === "typing" && m.nick === "ada", "ada typing, at bob");
      ada.send({ type: "say", room: "lobby", text: "hello bob" });
      const adaLines = await ada.next(isLine("hello bob"), "ada's own line");
      assert.equal(adaLines.id, 2);
      assert.ok(
        !ada.messages.some((m) => m.type === "typing"),
        "the typist is not told about itself",
      );

      await ada.close();
      const left = await bob.next((m) => m.type === "leave" && m.nick === "ada", "ada left");
      assert.equal(left.members, 1);
      await bob.close();
    }));

  test("a member who joins gets the room's last 50 messages, in order", () =>
    withServer(async (examples) => {
      const ada = await JsonClient.open(chatUrl(examples, "ada", "history"));
      for (let i = 1; i <= 60; i++) ada.send({ type: "say", room: "history", text: `line ${i}` });
      await ada.next(isLine("line 60"), "the 60th line");

      const bob = await JsonClient.open(chatUrl(examples, "bob", "history"));
      const history = (await bob.nextOfType("history")).messages as Json[];
      assert.deepEqual(
        history.map((m) => m.text),
        Array.from({ length: 50 }, (_, i) => `line ${i + 11}`),
      );
      assert.deepEqual(history.map((m) => m.id), Array.from({ length: 50 }, (_, i) => i + 11));
      // Later lines follow the history, none missing.
      ada.send({ type: "say", room: "history", text: "line 61" });
      const next = await bob.next((m) => m.type === "message", "the line after the history");
      assert.equal(next.id, 61);
      await ada.close();
      await bob.close();
    }));

  test("rooms are apart, and one connection may be in several", () =>
    withServer(async (examples) => {
      const ada = await JsonClient.open(chatUrl(examples, "ada", "red"));
      const bob = await JsonClient.open(chatUrl(examples, "bob", "blue"));
      await ada.nextOfType("history");
      await bob.nextOfType("history");
      ada.send({ type: "say", room: "red", text: "in red" });
      ada.send({ type: "say", room: "blue", text: "not a member" });
      const error = await ada.nextOfType("error");
      assert.match(String(error.message), /Join room blue first/);
      bob.send({ type: "join", room: "red" });
      const history = await bob.next((m) => m.type === "history" && m.room === "red", "red");
      assert.deepEqual((history.messages as Json[]).map((m) => m.text), ["in red"]);
      bob.send({ type: "say", room: "blue", text: "blue only" });
      bob.send({ type: "say", room: "red", text: "red again" });
      await ada.next(isLine("red again"), "red again at ada");
      assert.ok(!ada.messages.some((m) => m.text === "blue only"), "blue stays in blue");
      ada.send({ type: "join", room: "Not A Room!" });
      assert.match(String((await ada.nextOfType("error")).message), /room name/);
      ada.send({ type: "dance", room: "red" });
      assert.match(String((await ada.nextOfType("error")).message), /Unknown message type/);
      await ada.close();
      await bob.close();
    }));

  test("a member that stops reading never holds up another room (and is closed, not skipped)", () =>
    withServer(async (examples) => {
      const { port } = examples.server.addr;
      // A raw member of "busy" that reads nothing: its TCP window fills.
      const params = new URLSearchParams({
        token: examples.chat.issueToken("stalled"),
        room: "busy",
      });
      const stalled = await RawClient.open(port, { path: `/chat?${params}` });
      stalled.socket.pause();
      const talker = await JsonClient.open(chatUrl(examples, "talker", "busy"));
      const quiet = await JsonClient.open(chatUrl(examples, "quiet", "calm"));
      await talker.nextOfType("history");
      await quiet.nextOfType("history");

      // Lines into "busy" until the stalled member is found 1 MiB behind (the
      // kernel's buffers take ~4 MiB on loopback first), in steps of 100
      // lines (200 KiB), each echoed to the talker before the next: the
      // talker, a reader, never falls behind.
      const text = "x".repeat(1900);
      let sent = 0;
      while (examples.server.stats().slowCloses === 0) {
        assert.ok(sent < 8000, "the stalled member is closed within 16 MiB of lines");
        for (let i = 0; i < 100; i++) {
          talker.send({ type: "say", room: "busy", text: `${++sent} ${text}` });
        }
        // The talker (a fast member) gets every line of the busy room, in order.
        for (let j = sent - 99; j <= sent; j++) {
          await talker.next(isLine(`${j} ${text}`), `busy line ${j}`, 20_000);
        }
      }
      console.log(`stalled member closed after ${sent} lines`);
      // The calm room was never held up, and the busy room goes on.
      quiet.send({ type: "say", room: "calm", text: "still here" });
      await quiet.next(isLine("still here"), "the calm room's line", 20_000);
      talker.send({ type: "say", room: "busy", text: "after" });
      await talker.next(isLine("after"), "the busy room's next line");
      // The stalled member was closed (1008) rather than silently skipped.
      assert.equal(examples.server.stats().slowCloses, 1);
      assert.equal(examples.server.subscriberCount("chat:busy"), 1, "only the talker is left");
      stalled.destroy();
      await talker.close();
      await quiet.close();
    }));
});
