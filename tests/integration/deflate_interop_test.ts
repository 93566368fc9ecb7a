/**
 * permessage-deflate (RFC 7692) against other implementations, both ways:
 *
 * - the Sluice client against npm `ws` (perMessageDeflate on), Bun's built-in
 *   server (`perMessageDeflate: true`) and Python `websockets` (compression
 *   on by default);
 * - the Sluice server against the `ws` client, Bun's and Deno's built-in
 *   clients and the Python `websockets` client.
 *
 * Each exchange echoes text of 1 KiB, 64 KiB and 1 MiB (compressible and
 * random), 1 MiB of random binary and 1 000 small messages in a row, with
 * context takeover on and off, and checks every echo byte for byte, what the
 * Sluice server received (by hash), that the extension was really negotiated
 * (both sides' view of the header) and, through a counting TCP relay, that the
 * compressible messages really crossed the wire compressed in each direction.
 *
 * Deno's built-in client offers no compression: it must simply interoperate,
 * uncompressed, with a server that has compression on.
 *
 * The other implementations run as subprocesses (see deflate_peers/).
 * Runs under `deno test --allow-all` and `bun test`.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { within } from "../_watch.ts";
import { connect, type DeflateOptions } from "../../mod.ts";
import {
  type CountingProxy,
  countingProxy,
  fingerprintsOf,
  startSluiceEcho,
} from "./deflate_peers/harness.ts";
import { type PeerName, peerSkipReason, runClient, startServer } from "./deflate_peers/peers.ts";
import { messagesFor, runCases } from "./deflate_peers/scenario.mjs";

const CASES = [
  "empty-text",
  "hello",
  "bytes-0-255",
  "text-1k",
  "text-64k",
  "text-1m",
  "random-text-1k",
  "random-text-64k",
  "random-text-1m",
  "random-binary-1m",
  "small-1000",
];

/** Payload bytes the cases send one way (UTF-8 for text). */
const PAYLOAD_BYTES = fingerprintsOf(CASES).reduce((sum, f) => sum + f.length, 0);
/** Of which the big compressible texts, which DEFLATE shrinks to almost nothing. */
const COMPRESSIBLE_BYTES = fingerprintsOf(["text-1k", "text-64k", "text-1m"])
  .reduce((sum, f) => sum + f.length, 0);

/**
 * Asserts that `bytes` crossed the wire (one direction, handshake and frame
 * headers included) for the whole scenario with compression at work: at
 * least 80% of the compressible text must have been saved. Uncompressed, the
 * total is above PAYLOAD_BYTES; compressed, the random parts still cost
 * nearly their size, so this is met only if the compressible messages were
 * compressed.
 */
function assertCompressed(bytes: number, direction: string): void {
  const limit = PAYLOAD_BYTES - 0.8 * COMPRESSIBLE_BYTES;
  assert.ok(
    bytes < limit,
    `${direction}: ${bytes} bytes on the wire for ${PAYLOAD_BYTES} bytes of payload, ` +
      `expected under ${limit}: the compressible messages were not compressed`,
  );
}

/** Asserts that the traffic was NOT compressed (for a peer that does not negotiate). */
function assertUncompressed(bytes: number, direction: string): void {
  assert.ok(
    bytes >= PAYLOAD_BYTES,
    `${direction}: ${bytes} bytes on the wire for ${PAYLOAD_BYTES} bytes of payload`,
  );
}

interface Mode {
  label: string;
  /** Sluice's options: the client's offer, or the server's configuration. */
  options: DeflateOptions;
  /** The agreed header must carry both `*_no_context_takeover`. */
  noTakeover: boolean;
}

const MODES: Mode[] = [
  { label: "with context takeover", options: { threshold: 0 }, noTakeover: false },
  {
    label: "without context takeover",
    options: { threshold: 0, serverNoContextTakeover: true, clientNoContextTakeover: true },
    noTakeover: true,
  },
];

/** Asserts an agreed `Sec-WebSocket-Extensions` value fits the mode. */
function assertAgreed(header: string, mode: Mode, who: string): void {
  assert.match(
    header,
    /^permessage-deflate\b/,
    `${who} did not negotiate: ${JSON.stringify(header)}`,
  );
  if (mode.noTakeover) {
    assert.match(header, /server_no_context_takeover/, `${who}: ${header}`);
    assert.match(header, /client_no_context_takeover/, `${who}: ${header}`);
  } else {
    assert.doesNotMatch(header, /no_context_takeover/, `${who}: ${header}`);
  }
}

let nextId = 0;

describe("the Sluice client against other servers, compressed", () => {
  const servers: { name: PeerName; label: string }[] = [
    { name: "node-ws", label: "npm ws server (perMessageDeflate)" },
    {
      name: "bun",
      label: "Bun's built-in server (perMessageDeflate: true, or dedicated compressors)",
    },
    { name: "python-websockets", label: "Python websockets server" },
  ];
  for (const { name, label } of servers) {
    describe(label, { skip: peerSkipReason(name, "server") || false }, () => {
      for (const mode of MODES) {
        test(`echoes every case byte for byte ${mode.label}`, { timeout: 60_000 }, async () => {
          const id = `c${++nextId}`;
          // Bun keeps the context only with dedicated compressors (see bun_server.ts).
          const peer = await startServer(name, { compression: true, takeover: !mode.noTakeover });
          let proxy: CountingProxy | null = null;
          try {
            proxy = await countingProxy(peer.port);
            const ws = await within(
              connect(`ws://127.0.0.1:${proxy.port}/?id=${id}`, {
                compression: mode.options,
                maxMessageSize: 64 * 1024 * 1024,
              }),
              10_000,
              `connect to ${name}`,
            );
            try {
              assertAgreed(ws.extensions, mode, "the Sluice client");
              const agreedByServer = (await peer.waitFor("open", id)).extensions;
              if (agreedByServer !== undefined) assert.equal(agreedByServer, ws.extensions);
              const reader = ws.readable.getReader();
              const results = await runCases(
                CASES,
                (message: string | Uint8Array) => ws.send(message),
                (ms: number) => within(reader.read(), ms, "an echo").then((r) => r.value!),
              );
              for (const result of results) assert.ok(result.ok, `${result.name}: ${result.error}`);
              assert.equal(results.length, CASES.length);
              reader.releaseLock();
              ws.close(1000);
              assert.equal((await within(ws.closed, 10_000, "close")).closeCode, 1000);
            } finally {
              ws.terminate();
            }
            assert.equal((await peer.waitFor("close", id)).code, 1000);
            assertCompressed(proxy.up, "client to server");
            assertCompressed(proxy.down, "server to client");
          } finally {
            await proxy?.close();
            await peer.stop();
          }
        });
      }
    });
  }
});

describe("the Sluice server against other clients, compressed", () => {
  const clients: { name: PeerName; label: string; compresses: boolean }[] = [
    { name: "node-ws", label: "npm ws client (perMessageDeflate)", compresses: true },
    { name: "bun", label: "Bun's built-in client", compresses: true },
    { name: "python-websockets", label: "Python websockets client", compresses: true },
    // Deno's WebSocket offers no extensions (checked below): it must still
    // work, uncompressed, with a server that has compression on.
    { name: "deno", label: "Deno's built-in client", compresses: false },
  ];
  for (const { name, label, compresses } of clients) {
    describe(label, { skip: peerSkipReason(name, "client") || false }, () => {
      for (const mode of MODES) {
        test(`echoes every case byte for byte ${mode.label}`, { timeout: 60_000 }, async () => {
          const echo = await startSluiceEcho({ compression: mode.options });
          let proxy: CountingProxy | null = null;
          try {
            proxy = await countingProxy(echo.port);
            const id = `s${++nextId}`;
            const report = await runClient(name, {
              url: `ws://127.0.0.1:${proxy.port}/?id=${id}`,
              cases: CASES,
              close: { by: "client", code: 1000, reason: "done" },
            });
            assert.equal(report.opened, true, `${name} did not open: ${report.error}`);
            for (const result of report.cases ?? []) {
              assert.ok(result.ok, `${name} ${result.name}: ${result.error}`);
            }
            assert.deepEqual(report.cases?.map((c) => c.name), CASES, JSON.stringify(report));
            assert.equal(report.close?.code, 1000);
            const record = await echo.closed(id);
            assert.deepEqual(record.close, { code: 1000, reason: "done" });
            assert.deepEqual(
              record.received,
              fingerprintsOf(CASES),
              "the server received other bytes than the client sent",
            );
            if (compresses) {
              assertAgreed(record.extensions, mode, "the Sluice server");
              // Clients show either the whole header or just the name (Bun).
              assert.match(
                report.extensions ?? "",
                /^permessage-deflate\b/,
                JSON.stringify(report),
              );
              assertCompressed(proxy.up, "client to server");
              assertCompressed(proxy.down, "server to client");
            } else {
              assert.equal(record.offered, null, `${name} offered ${record.offered}`);
              assert.equal(record.extensions, "");
              assert.equal(report.extensions, "");
              assertUncompressed(proxy.up, "client to server");
              assertUncompressed(proxy.down, "server to client");
            }
          } finally {
            await proxy?.close();
            await echo.stop();
          }
        });
      }
    });
  }
});

test("the scenario's payloads are what the tests assume", () => {
  // A guard for the byte accounting above: if the cases changed size, the
  // wire-size assertions would no longer mean what they say.
  assert.equal(COMPRESSIBLE_BYTES, 1024 + 64 * 1024 + 1024 * 1024);
  assert.ok(PAYLOAD_BYTES > 3 * 1024 * 1024);
  assert.equal(messagesFor("small-1000").length, 1000);
});
