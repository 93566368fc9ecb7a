/**
 * Real WebSocket clients against a Sluice server on loopback: Deno's and
 * Bun's built-in `WebSocket` (in this process when the test runs on that
 * runtime, in a child process otherwise) and npm `ws` on Node (always a child
 * process). Each runs `peers/echo_scenario.mjs`: text and binary messages of
 * 0 B, 125 B, 126 B, 64 KiB and 16 MiB must come back byte-exact, and close
 * codes and reasons must travel both ways.
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { type Message, serve, type Server } from "../../mod.ts";
import { within } from "./_raw_client.ts";
import { binaryOfSize, runScenario, sha256, SIZES, textOfBytes } from "./peers/echo_scenario.mjs";
import { commandFor, currentRuntimeName, missing, peerPath, runPeer } from "./peers/spawn.ts";

const HOST = "127.0.0.1";
const encoder = new TextEncoder();

type Report = {
  echoes: { kind: string; size: number; ok: boolean; detail?: string }[];
  clientClose: { code: number; reason: string; wasClean: boolean };
  serverClose: { code: number; reason: string; wasClean: boolean };
  errors: string[];
  failed?: string;
};

/** What the server saw, per connection path. */
interface ServerLog {
  received: Promise<{ kind: string; size: number; sha: string }>[];
  closes: { path: string; code: number; reason: string }[];
  errors: Error[];
}

/**
 * An echo server for the scenario: records a hash of each message received
 * on `/echo`, and closes `/server-close` connections at once with 4001 "srv".
 */
async function scenarioServer(): Promise<{ server: Server; log: ServerLog }> {
  const log: ServerLog = { received: [], closes: [], errors: [] };
  const server = await serve({ port: 0, hostname: HOST, closeTimeout: 3000 }, {
    open(ws) {
      if (new URL(ws.url).pathname === "/server-close") ws.close(4001, "srv");
    },
    message(ws, data: Message) {
      const bytes = typeof data === "string" ? encoder.encode(data) : data;
      log.received.push(
        sha256(bytes).then((sha) => ({
          kind: typeof data === "string" ? "text" : "binary",
          size: bytes.length,
          sha,
        })),
      );
      ws.send(data);
    },
    close(ws, code, reason) {
      log.closes.push({ path: new URL(ws.url).pathname, code, reason });
    },
    error(_ws, error) {
      log.errors.push(error);
    },
  });
  return { server, log };
}

/** What the server must have received from the scenario, in order. */
async function expectedReceived(): Promise<{ kind: string; size: number; sha: string }[]> {
  const out = [];
  for (const size of SIZES) {
    out.push({ kind: "text", size, sha: await sha256(encoder.encode(textOfBytes(size))) });
    out.push({ kind: "binary", size, sha: await sha256(binaryOfSize(size, size)) });
  }
  return out;
}

type ClientKind = "deno" | "bun" | "node-ws";

const clientScript = peerPath("ws_client.mjs");
const commands: Record<ClientKind, string[] | null> = {
  deno: commandFor("deno", clientScript),
  bun: commandFor("bun", clientScript),
  "node-ws": commandFor("node", clientScript),
};
const skips: Record<ClientKind, string | false> = {
  deno: commands.deno === null && missing("The deno executable"),
  bun: commands.bun === null && missing("The bun executable"),
  "node-ws": commands["node-ws"] === null && missing("The node executable (for npm ws)"),
};

/** Runs the scenario with one kind of client: in this process if it is ours, else in a child. */
async function runClient(kind: ClientKind, url: string): Promise<Report> {
  if (kind === currentRuntimeName) {
    return await within(runScenario(globalThis.WebSocket, url), 50_000, `${kind} scenario`);
  }
  const mode = kind === "node-ws" ? "ws" : "global";
  const { result, stderr } = await runPeer([...commands[kind]!, mode, url], 50_000);
  const report = result as unknown as Report;
  if (report.failed !== undefined) {
    assert.fail(`${kind} client failed: ${report.failed}\n${stderr.slice(-2000)}`);
  }
  return report;
}

/** Runs the scenario against a fresh server and checks both sides. */
async function checkInterop(kind: ClientKind): Promise<void> {
  const { server, log } = await scenarioServer();
  try {
    const report = await runClient(kind, server.url);
    const failed = report.echoes.filter((echo) => !echo.ok);
    assert.deepEqual(failed, [], `${kind}: echoes that differ`);
    assert.deepEqual(
      report.echoes.map((echo) => `${echo.kind}:${echo.size}`),
      SIZES.flatMap((size) => [`text:${size}`, `binary:${size}`]),
      "every message was echoed",
    );
    // Client → server was byte-exact too.
    assert.deepEqual(await Promise.all(log.received), await expectedReceived());

    // The client closed with 4000 "bye": the server saw exactly that.
    await within(server.shutdown(), 10_000, "shutdown");
    assert.deepEqual(
      log.closes.find((close) => close.path === "/echo"),
      { path: "/echo", code: 4000, reason: "bye" },
    );
    assert.equal(report.clientClose.code, 4000, "the server echoed the client's close code");
    assert.equal(report.clientClose.wasClean, true);
    // The server closed with 4001 "srv": the client saw exactly that.
    assert.deepEqual(
      report.serverClose,
      { code: 4001, reason: "srv", wasClean: true },
      `${kind}: the server's close`,
    );
    assert.deepEqual(report.errors, []);
    assert.deepEqual(log.errors, []);
  } finally {
    await within(server.shutdown(), 10_000, "shutdown");
  }
}

describe("server interop with real clients", () => {
  test("Deno's built-in WebSocket", { timeout: 60_000, skip: skips.deno }, async () => {
    await checkInterop("deno");
  });

  test("Bun's built-in WebSocket", { timeout: 60_000, skip: skips.bun }, async () => {
    await checkInterop("bun");
  });

  test("npm ws on Node", { timeout: 60_000, skip: skips["node-ws"] }, async () => {
    await checkInterop("node-ws");
  });
});
