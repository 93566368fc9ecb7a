/**
 * The Sluice client (`connect()` and the `WebSocket` class) against real
 * servers from other implementations: Deno's and Bun's built-in servers, npm
 * `ws` on Node, Python `websockets`, and Sluice's own server. What users rely
 * on: any RFC 6455 server works, messages of every length encoding (7-bit,
 * 16-bit, 64-bit) arrive byte-exact both ways, close codes and reasons cross
 * in both directions, and subprotocol selection is honoured.
 *
 * Peers are described in `client_peers/peers.ts`; the runtime's own server
 * runs in-process, the other runtime's as a subprocess.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { within } from "../_watch.ts";
import { connect, WebSocket } from "../../src/client.ts";
import type { WebSocketConnection } from "../../src/websocket.ts";
import { type Peer, type PeerName, startPeer, unavailable } from "./client_peers/peers.ts";

const KiB = 1024;
const MiB = 1024 * 1024;
/** One size per length encoding and its boundaries (RFC 6455 §5.2), and a large one. */
const SIZES = [0, 125, 126, 64 * KiB, 16 * MiB];
const PEERS: PeerName[] = ["sluice", "deno", "bun", "node-ws", "python-websockets"];

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

const encoder = new TextEncoder();

/**
 * Text of exactly `bytes` UTF-8 bytes mixing 1-, 2-, 3- and 4-byte
 * characters, so a frame or chunk boundary falls inside characters.
 */
function textOfBytes(bytes: number): string {
  const unit = "Sluice é ✓ 😀 ";
  const unitBytes = encoder.encode(unit).length;
  const text = unit.repeat(Math.floor(bytes / unitBytes));
  return text + "x".repeat(bytes - encoder.encode(text).length);
}

/** Bytes with every value, in an order no aligned copy reproduces by accident. */
function binaryOfBytes(bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let x = 0x9e3779b9 ^ bytes;
  for (let i = 0; i < bytes; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const payloads = new Map<string, string | Uint8Array>();
function payload(kind: "text" | "binary", size: number): string | Uint8Array {
  const key = `${kind}:${size}`;
  let value = payloads.get(key);
  if (value === undefined) {
    value = kind === "text" ? textOfBytes(size) : binaryOfBytes(size);
    payloads.set(key, value);
  }
  return value;
}

function bytesOf(message: string | Uint8Array | ArrayBuffer): Uint8Array {
  if (typeof message === "string") return encoder.encode(message);
  return message instanceof Uint8Array ? message : new Uint8Array(message);
}

interface Report {
  kind: string;
  length: number;
  sha256: string;
}

/** Checks an echo and the peer's report of what it received against what was sent. */
async function checkEcho(
  sent: string | Uint8Array,
  echo: string | Uint8Array | ArrayBuffer,
  reportText: string | Uint8Array | ArrayBuffer,
): Promise<void> {
  const kind = typeof sent === "string" ? "text" : "binary";
  assert.equal(typeof echo === "string" ? "text" : "binary", kind, "echo has the sent type");
  const sentBytes = bytesOf(sent);
  const echoBytes = bytesOf(echo);
  assert.equal(echoBytes.byteLength, sentBytes.byteLength, "echo length");
  const sentHash = await sha256Hex(sentBytes);
  if (sentBytes.byteLength <= 64 * KiB) {
    assert.deepEqual(echoBytes, sentBytes, "echo is byte-exact");
  } else {
    assert.equal(await sha256Hex(echoBytes), sentHash, "echo SHA-256");
  }
  assert.equal(typeof reportText, "string", "the peer's report is a text message");
  const report: Report = JSON.parse(reportText as string);
  assert.deepEqual(report, { kind, length: sentBytes.byteLength, sha256: sentHash });
}

let nextId = 0;
function freshId(): string {
  return `c${++nextId}`;
}

/** Reads the next `n` messages from a connection's readable. */
async function readMessages(
  ws: WebSocketConnection<undefined>,
  n: number,
  what: string,
): Promise<(string | Uint8Array)[]> {
  const reader = ws.readable.getReader();
  try {
    const out: (string | Uint8Array)[] = [];
    while (out.length < n) {
      const { value, done } = await within(reader.read(), 30_000, what);
      if (done) throw new Error(`Connection ended after ${out.length} of ${n} messages: ${what}`);
      out.push(value);
    }
    return out;
  } finally {
    reader.releaseLock();
  }
}

/** Collects `message` events of a `WebSocket` until `n` arrived. */
function nextEvents(ws: WebSocket, n: number, what: string): Promise<MessageEvent[]> {
  const events: MessageEvent[] = [];
  return within(
    new Promise<MessageEvent[]>((resolve) => {
      const onMessage = (event: Event) => {
        events.push(event as MessageEvent);
        if (events.length === n) {
          ws.removeEventListener("message", onMessage);
          resolve(events);
        }
      };
      ws.addEventListener("message", onMessage);
    }),
    30_000,
    what,
  );
}

function opened(ws: WebSocket): Promise<void> {
  return within(
    new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("close", () => reject(new Error("closed before opening")), {
        once: true,
      });
    }),
    10_000,
    "open event",
  );
}

const REASON_123 = "r".repeat(120) + "✓"; // 123 bytes: the most a close frame can hold.

for (const name of PEERS) {
  const missing = unavailable(name);
  if (missing !== null && process.env.CI) {
    test(`client interop: ${name} peer is available`, () => {
      assert.fail(`The ${name} peer cannot run under CI: ${missing}`);
    });
    continue;
  }
  if (missing !== null) {
    console.warn(
      `\n!!! SKIPPING client interop against ${name}: ${missing}. ` +
        "Set CI=1 to make this a failure.\n",
    );
  }

  describe(`client interop: ${name}`, { skip: missing ?? false }, () => {
    let peer: Peer;
    before(async () => {
      peer = await startPeer(name);
    });
    after(async () => {
      await peer?.stop();
    });

    for (const kind of ["text", "binary"] as const) {
      for (const size of SIZES) {
        test(`connect(): a ${size} B ${kind} message reaches the peer and comes back byte-exact`, async () => {
          const ws = await within(connect(`${peer.url}?id=${freshId()}`), 10_000, "connect");
          try {
            const sent = payload(kind, size);
            ws.send(sent);
            const [echo, report] = await readMessages(ws, 2, `echo of ${size} B ${kind}`);
            await checkEcho(sent, echo, report);
          } finally {
            ws.close(1000);
            await within(ws.closed, 10_000, "close");
          }
        });
      }
    }

    test("WebSocket class: every size arrives byte-exact as text and ArrayBuffer", async () => {
      const ws = new WebSocket(`${peer.url}?id=${freshId()}`, undefined, {
        binaryType: "arraybuffer",
      });
      assert.equal(ws.readyState, WebSocket.CONNECTING);
      await opened(ws);
      assert.equal(ws.readyState, WebSocket.OPEN);
      for (const kind of ["text", "binary"] as const) {
        for (const size of SIZES) {
          const sent = payload(kind, size);
          const events = nextEvents(ws, 2, `echo of ${size} B ${kind}`);
          ws.send(sent);
          const [echo, report] = await events;
          if (kind === "binary") assert.ok(echo.data instanceof ArrayBuffer, "binaryType honoured");
          await checkEcho(sent, echo.data, report.data);
        }
      }
      const closeEvent = new Promise<CloseEvent>((resolve) =>
        ws.addEventListener("close", (e) => resolve(e as CloseEvent), { once: true })
      );
      ws.close(1000, "done");
      const event = await within(closeEvent, 10_000, "close event");
      assert.equal(event.code, 1000);
      assert.equal(event.wasClean, true);
      assert.equal(ws.readyState, WebSocket.CLOSED);
    });

    test("WebSocket class: binaryType blob delivers a Blob with the exact bytes", async () => {
      const ws = new WebSocket(`${peer.url}?id=${freshId()}`);
      assert.equal(ws.binaryType, "blob", "browser default");
      await opened(ws);
      const sent = payload("binary", 64 * KiB) as Uint8Array;
      const events = nextEvents(ws, 2, "blob echo");
      ws.send(sent);
      const [echo, report] = await events;
      assert.ok(echo.data instanceof Blob);
      await checkEcho(sent, new Uint8Array(await (echo.data as Blob).arrayBuffer()), report.data);
      ws.close();
      await within(ws.closed, 10_000, "close");
    });

    test("subprotocol: the first offered one the server supports is selected", async () => {
      const id = freshId();
      const ws = await connect(`${peer.url}?id=${id}`, { protocols: ["x-unknown", "sluice.v2"] });
      assert.equal(ws.protocol, "sluice.v2");
      assert.deepEqual(await peer.waitFor("open", id), {
        event: "open",
        id,
        protocol: "sluice.v2",
      });
      ws.close(1000);
      await within(ws.closed, 10_000, "close");
    });

    test("subprotocol: none is selected when the server supports none offered", async () => {
      const ws = await connect(`${peer.url}?id=${freshId()}`, { protocols: ["x-unknown"] });
      assert.equal(ws.protocol, "");
      ws.close(1000);
      await within(ws.closed, 10_000, "close");
      const plain = await connect(`${peer.url}?id=${freshId()}`);
      assert.equal(plain.protocol, "");
      plain.close(1000);
      await within(plain.closed, 10_000, "close");
    });

    test("subprotocol: the WebSocket class exposes the selected one at open", async () => {
      const ws = new WebSocket(`${peer.url}?id=${freshId()}`, ["sluice.v1", "sluice.v2"]);
      assert.equal(ws.protocol, "", "empty while connecting");
      await opened(ws);
      assert.equal(ws.protocol, "sluice.v1");
      ws.close();
      await within(ws.closed, 10_000, "close");
    });

    test("client close: the peer receives the code and reason, the close is clean", async () => {
      for (
        const [code, reason] of [[4001, "client bye ✓"], [1000, ""], [3999, REASON_123]] as const
      ) {
        const id = freshId();
        const ws = await connect(`${peer.url}?id=${id}`);
        ws.close(code, reason);
        assert.equal(ws.readyState, WebSocket.CLOSING);
        const info = await within(ws.closed, 10_000, "closed");
        assert.equal(info.wasClean, true, `close ${code} is clean`);
        assert.equal(info.closeCode, code, "the peer echoes the code");
        assert.deepEqual(await peer.waitFor("close", id), { event: "close", id, code, reason });
      }
    });

    test("client close() without a code: the peer sees no status (1005)", async () => {
      const id = freshId();
      const ws = await connect(`${peer.url}?id=${id}`);
      ws.close();
      const info = await within(ws.closed, 10_000, "closed");
      assert.equal(info.wasClean, true);
      const seen = await peer.waitFor("close", id);
      assert.equal("code" in seen && seen.code, 1005);
    });

    test("server close: the client gets the code and reason, and echoes the code", async () => {
      for (
        const [code, reason] of [[4002, "server bye ✓"], [1000, ""], [4999, REASON_123]] as const
      ) {
        const id = freshId();
        const ws = await connect(`${peer.url}?id=${id}`);
        ws.send(`CMD close ${code} ${reason}`);
        const info = await within(ws.closed, 10_000, "closed");
        assert.deepEqual(info, { closeCode: code, reason, wasClean: true });
        const seen = await peer.waitFor("close", id);
        assert.equal("code" in seen && seen.code, code, "the client echoed the code");
      }
    });

    test("server close: the WebSocket class fires close with code, reason and wasClean", async () => {
      const ws = new WebSocket(`${peer.url}?id=${freshId()}`);
      await opened(ws);
      const closeEvent = new Promise<CloseEvent>((resolve) => {
        ws.onclose = (event) => resolve(event);
      });
      ws.send("CMD close 4003 going ✓");
      const event = await within(closeEvent, 10_000, "close event");
      assert.equal(event.code, 4003);
      assert.equal(event.reason, "going ✓");
      assert.equal(event.wasClean, true);
      assert.equal(ws.readyState, WebSocket.CLOSED);
    });
  });
}
