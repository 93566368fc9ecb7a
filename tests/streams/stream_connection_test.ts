/**
 * A full connection over a pair of in-memory byte streams: the same driver
 * as over TCP, so messages, automatic pongs, the closing handshake,
 * compression and limits all work, and the bytes on the "wire" are real
 * frames (checked with a tap).
 *
 * @module
 */

import assert from "node:assert/strict";
import { describe, test as nodeTest } from "node:test";
import {
  type StreamConnectionOptions,
  type WebSocketConnection,
  webSocketFromStreams,
} from "../../mod.ts";
import { test, within } from "../_watch.ts";

interface Wire {
  server: WebSocketConnection;
  client: WebSocketConnection;
  /** First byte of every chunk the client wrote (frame headers at chunk starts). */
  clientFirstBytes: number[];
  clientBytes: () => number;
}

function pipe(
  serverOptions: Partial<StreamConnectionOptions<undefined>> = {},
  clientOptions: Partial<StreamConnectionOptions<undefined>> = {},
): Wire {
  const clientFirstBytes: number[] = [];
  let bytes = 0;
  const toServer = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      clientFirstBytes.push(chunk[0]);
      bytes += chunk.length;
      controller.enqueue(chunk.slice()); // the reader may keep it; the writer's buffer is not ours
    },
  });
  const toClient = new TransformStream<Uint8Array, Uint8Array>();
  const server = webSocketFromStreams(
    { readable: toServer.readable, writable: toClient.writable },
    { role: "server", ...serverOptions },
  );
  const client = webSocketFromStreams(
    { readable: toClient.readable, writable: toServer.writable },
    { role: "client", ...clientOptions },
  );
  return { server, client, clientFirstBytes, clientBytes: () => bytes };
}

function nextMessage(ws: WebSocketConnection): Promise<unknown> {
  return within(
    new Promise((resolve) => {
      ws.addEventListener("message", (e) => resolve((e as MessageEvent).data), { once: true });
    }),
    5000,
    "a message",
  );
}

describe("webSocketFromStreams", () => {
  test("messages both ways, text and binary, small and large", async () => {
    const { server, client } = pipe({
      handlers: { message: (ws, data) => ws.send(data) },
    });
    for (const data of ["hello", "", "ü".repeat(70_000)]) {
      const got = nextMessage(client);
      client.send(data);
      assert.equal(await got, data);
    }
    const big = new Uint8Array(1024 * 1024).map((_, i) => i % 251);
    const got = nextMessage(client);
    client.send(big);
    assert.deepEqual(new Uint8Array(await got as ArrayBuffer), big);
    client.close(1000, "done");
    const [c, s] = await within(Promise.all([client.closed, server.closed]), 5000, "closed");
    // The server's echo carries the code only (RFC 6455 §5.5.1).
    assert.deepEqual(c, { closeCode: 1000, reason: "", wasClean: true });
    assert.deepEqual(s, { closeCode: 1000, reason: "done", wasClean: true });
  });

  test("open fires for listeners attached after creation; pings are answered automatically", async () => {
    const pings: string[] = [];
    const { server, client } = pipe({
      handlers: { ping: (_ws, payload) => void pings.push(new TextDecoder().decode(payload)) },
    });
    await within(
      new Promise((resolve) => client.addEventListener("open", resolve, { once: true })),
      5000,
      "open",
    );
    const pong = Promise.withResolvers<string>();
    const { server: s2, client: c2 } = pipe({}, {
      handlers: { pong: (_ws, payload) => pong.resolve(new TextDecoder().decode(payload)) },
    });
    c2.ping("are you there");
    assert.equal(await within(pong.promise, 5000, "pong"), "are you there");
    client.ping("x");
    await within(
      (async () => {
        while (pings.length === 0) await new Promise((r) => setTimeout(r, 5));
      })(),
      5000,
      "ping seen by the server",
    );
    assert.deepEqual(pings, ["x"]);
    for (const ws of [client, server, c2, s2]) ws.close(1000);
    await within(Promise.all([client.closed, server.closed, c2.closed, s2.closed]), 5000, "closed");
  });

  test("client frames are masked, server frames are not (real frames on the wire)", async () => {
    const { server, client, clientBytes } = pipe({
      handlers: { message: (ws, data) => ws.send(data) },
    });
    const got = nextMessage(client);
    client.send("abc");
    assert.equal(await got, "abc");
    // 2 header bytes + 4 mask bytes + 3 payload bytes.
    assert.equal(clientBytes(), 9);
    client.close(1000);
    await within(Promise.all([client.closed, server.closed]), 5000, "closed");
  });

  test("permessage-deflate with agreed parameters compresses on the wire", async () => {
    const params = {
      serverNoContextTakeover: false,
      clientNoContextTakeover: false,
      serverMaxWindowBits: 15,
      clientMaxWindowBits: 15,
      threshold: 0,
    };
    const { server, client, clientFirstBytes, clientBytes } = pipe({
      compression: params,
      handlers: { message: (ws, data) => ws.send(data) },
    }, { compression: params });
    const text = "compress me ".repeat(1000);
    const got = nextMessage(client);
    client.send(text);
    assert.equal(await got, text);
    assert.equal(clientFirstBytes[0] & 0x40, 0x40, "RSV1 set on the client's frame");
    assert.ok(clientBytes() < text.length / 10, `sent ${clientBytes()} bytes for ${text.length}`);
    client.close(1000);
    await within(Promise.all([client.closed, server.closed]), 5000, "closed");
  });

  test("limits: a message over maxMessageSize closes with 1009", async () => {
    const { server, client } = pipe({ maxMessageSize: 100 });
    client.send("x".repeat(101));
    const info = await within(client.closed, 5000, "client closed");
    assert.equal(info.closeCode, 1009);
    assert.equal((await within(server.closed, 5000, "server closed")).closeCode, 1009);
  });

  test("a peer that never answers the close is dropped after closeTimeout", async () => {
    // The "peer" reads nothing and writes nothing.
    const silent = new TransformStream<Uint8Array, Uint8Array>();
    const sink = new WritableStream<Uint8Array>();
    const ws = webSocketFromStreams({ readable: silent.readable, writable: sink }, {
      role: "server",
      closeTimeout: 100,
    });
    ws.close(1000);
    const info = await within(ws.closed, 5000, "closed after the deadline");
    assert.equal(info.wasClean, false);
  });

  nodeTest("bad options throw before anything starts", () => {
    const a = new TransformStream<Uint8Array, Uint8Array>();
    assert.throws(
      () =>
        webSocketFromStreams(a, {
          role: "peer" as unknown as "server",
        }),
      TypeError,
    );
    assert.throws(() => webSocketFromStreams(a, { role: "server", closeTimeout: -1 }), RangeError);
    assert.throws(() => webSocketFromStreams(a, { role: "server", pingInterval: -1 }), RangeError);
  });
});
