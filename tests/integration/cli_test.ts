import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { connect } from "../../mod.ts";

const root = new URL("../../", import.meta.url).pathname;
const isDeno = "Deno" in globalThis;
const runtime = process.execPath;

/** The command that runs cli.ts from source under the current runtime. */
function sourceCommand(args: string[]): [string, string[]] {
  return isDeno
    ? [runtime, ["run", "--allow-all", join(root, "cli.ts"), ...args]]
    : [runtime, ["run", join(root, "cli.ts"), ...args]];
}

/** Starts a server command and resolves with its URL once it prints it. */
function startServer(
  command: string,
  args: string[],
): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`server did not print its URL in time; output: ${out}`));
    }, 20_000);
    child.stdout!.on("data", (chunk: Uint8Array) => {
      out += new TextDecoder().decode(chunk);
      const match = /(wss?:\/\/\S+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve({ child, url: match[1] });
      }
    });
    child.stderr!.on("data", (chunk: Uint8Array) => (out += new TextDecoder().decode(chunk)));
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited early with ${code}: ${out}`));
    });
  });
}

function exited(child: ChildProcess, timeoutMs: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null) return resolve(child.exitCode);
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error("process did not exit in time"));
    }, timeoutMs);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

async function checkEcho(url: string): Promise<void> {
  const ws = await connect(url + "any/path?x=1");
  const reader = ws.readable.getReader();
  ws.send("hello");
  ws.send(new Uint8Array([0, 1, 2, 255]));
  ws.send("");
  // Large enough for the WebAssembly masking path on both sides (it must load
  // in a compiled binary too), with an odd length for the tail.
  const large = new Uint8Array(200_003).map((_, i) => (i * 7 + (i >> 9)) & 0xff);
  ws.send(large);
  assert.equal((await reader.read()).value, "hello");
  assert.deepEqual((await reader.read()).value, new Uint8Array([0, 1, 2, 255]));
  assert.equal((await reader.read()).value, "");
  assert.deepEqual((await reader.read()).value, large);
  reader.releaseLock();
  ws.close(1000);
  assert.equal((await ws.closed).closeCode, 1000);
}

async function checkShutdown(child: ChildProcess, url: string): Promise<void> {
  const ws = await connect(url);
  child.kill("SIGINT");
  const info = await ws.closed;
  assert.equal(info.closeCode, 1001, "Ctrl-C closes connections with 1001 (going away)");
  const code = await exited(child, 10_000);
  // Deno's node:child_process reports a child that was sent a signal as killed by it
  // (code null) even when it handled the signal and exited 0; Bun reports the real code.
  if (!isDeno) assert.equal(code, 0);
}

describe("cli.ts from source", () => {
  test("--help documents every flag", () => {
    const [command, args] = sourceCommand(["--help"]);
    const result = spawnSync(command, args, { encoding: "utf8", timeout: 30_000 });
    assert.equal(result.status, 0, result.stderr);
    for (
      const flag of [
        "serve",
        "connect",
        "--port",
        "--hostname",
        "--mode",
        "--max-message-size",
        "--allow-origin",
        "--cert",
        "--key",
        "--header",
        "--protocol",
        "--static",
      ]
    ) {
      assert.match(result.stdout, new RegExp(flag), `help mentions ${flag}`);
    }
  });

  test("unknown flags and commands fail with status 2 and a message", () => {
    const [command, args] = sourceCommand(["serve", "--bogus"]);
    const result = spawnSync(command, args, { encoding: "utf8", timeout: 30_000 });
    assert.notEqual(result.status, 0);
    const [command2, args2] = sourceCommand(["frobnicate"]);
    const result2 = spawnSync(command2, args2, { encoding: "utf8", timeout: 30_000 });
    assert.equal(result2.status, 2);
    assert.match(result2.stderr, /unknown command/);
  });

  test("serve --mode echo echoes with types on any path and stops on Ctrl-C with 1001", async () => {
    const [command, args] = sourceCommand(["serve", "--port", "0", "--hostname", "127.0.0.1"]);
    const { child, url } = await startServer(command, args);
    try {
      await checkEcho(url);
      await checkShutdown(child, url);
    } finally {
      child.kill("SIGKILL");
    }
  });

  test("serve --mode broadcast: /echo echoes, /pub reaches every /sub but itself, others 404", async () => {
    const [command, args] = sourceCommand([
      "serve",
      "--port",
      "0",
      "--hostname",
      "127.0.0.1",
      "--mode",
      "broadcast",
    ]);
    const { child, url } = await startServer(command, args);
    try {
      const subs = await Promise.all([1, 2, 3].map(() => connect(url + "sub")));
      const publisher = await connect(url + "pub");
      const received: (string | Uint8Array)[][] = subs.map(() => []);
      const done = subs.map((ws, i) =>
        (async () => {
          for await (const message of ws.readable) {
            received[i].push(message);
            if (received[i].length === 101) break;
          }
        })()
      );
      const published: (string | Uint8Array)[] = [];
      for (let i = 0; i < 100; i++) published.push(`message ${i}`);
      published.push(new Uint8Array([1, 2, 3]));
      const fromPublisher: (string | Uint8Array)[] = [];
      publisher.addEventListener(
        "message",
        (event) => fromPublisher.push((event as MessageEvent).data),
      );
      // The server subscribes /sub connections as they open; wait for the handshakes only.
      for (const message of published) publisher.send(message);
      await Promise.race([
        Promise.all(done),
        new Promise((_, reject) => setTimeout(() => reject(new Error("timed out")), 15_000)),
      ]);
      for (const messages of received) {
        assert.equal(messages.length, published.length);
        assert.deepEqual(
          messages.slice(0, 100),
          published.slice(0, 100),
          "every message, in order",
        );
        assert.deepEqual(messages[100], new Uint8Array([1, 2, 3]), "bytes stay binary");
      }
      // Echo on /echo, and a round trip on the publisher shows nothing came back to it.
      const echo = await connect(url + "echo");
      const reader = echo.readable.getReader();
      echo.send("ping");
      assert.equal((await reader.read()).value, "ping");
      assert.deepEqual(fromPublisher, [], "the publisher does not receive its own messages");
      await assert.rejects(connect(url + "elsewhere"), (error: Error & { status?: number }) => {
        assert.equal(error.status, 404);
        return true;
      });
      for (const ws of [...subs, publisher, echo]) ws.close(1000);
      await checkShutdown(child, url + "echo");
    } finally {
      child.kill("SIGKILL");
    }
  });

  test("connect sends stdin lines, prints messages and exits 0 on a normal close", async () => {
    const [command, args] = sourceCommand(["serve", "--port", "0", "--hostname", "127.0.0.1"]);
    const server = await startServer(command, args);
    try {
      const [c, a] = sourceCommand(["connect", server.url, "--header", "X-Test: 1"]);
      const client = spawn(c, a, { stdio: ["pipe", "pipe", "pipe"] });
      let out = "";
      let err = "";
      client.stdout!.on("data", (d: Uint8Array) => (out += new TextDecoder().decode(d)));
      client.stderr!.on("data", (d: Uint8Array) => (err += new TextDecoder().decode(d)));
      client.stdin!.write("first line\nsecond line\n");
      // Wait for both echoes before ending input, so the close does not race them.
      const deadline = Date.now() + 15_000;
      while (!out.includes("second line") && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      client.stdin!.end();
      const code = await exited(client, 15_000);
      assert.equal(out, "first line\nsecond line\n");
      assert.equal(code, 0, err);
      assert.match(err, /1000 normal closure/);
    } finally {
      server.child.kill("SIGKILL");
    }
  });

  test("connect reports a failed handshake with status 2", () => {
    const [c, a] = sourceCommand(["connect", "ws://127.0.0.1:1/"]);
    const result = spawnSync(c, a, { encoding: "utf8", timeout: 30_000, input: "" });
    assert.equal(result.status, 2);
    assert.match(result.stderr, /connection failed/);
  });
});

describe("single binary built with bun build --compile", () => {
  let dir = "";
  let binary = "";
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "sluice-bin-"));
    binary = join(dir, "sluice");
    const bun = isDeno ? "bun" : runtime;
    const result = spawnSync(
      bun,
      ["build", "--compile", join(root, "cli.ts"), "--outfile", binary],
      {
        encoding: "utf8",
        timeout: 120_000,
      },
    );
    assert.equal(result.status, 0, `bun build --compile failed: ${result.stderr}`);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("the binary's echo server works and stops on Ctrl-C", async () => {
    const { child, url } = await startServer(binary, [
      "serve",
      "--port",
      "0",
      "--hostname",
      "127.0.0.1",
    ]);
    try {
      await checkEcho(url);
      await checkShutdown(child, url);
    } finally {
      child.kill("SIGKILL");
    }
  });

  test("the binary supervises --workers 2: both serve, Ctrl-C stops all with 1001", async () => {
    const { child, url } = await startServer(binary, [
      "serve",
      "--port",
      "0",
      "--hostname",
      "127.0.0.1",
      "--workers",
      "2",
    ]);
    try {
      // Linux spreads connections over the two workers: several echo round trips.
      for (let i = 0; i < 4; i++) await checkEcho(url);
      await checkShutdown(child, url);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
