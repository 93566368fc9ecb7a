/**
 * `cli.ts serve --workers 2` on the running runtime: two processes on one
 * port, a worker killed with SIGKILL is replaced (and logged), clients that
 * lost it can reconnect, and SIGTERM to the supervisor closes every client
 * with 1001 and stops every worker. Also `serve({ reusePort })` itself.
 */

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { after, describe } from "node:test";
import { connect, serve, type WebSocketConnection } from "../../mod.ts";
import { delay, test, within } from "../_watch.ts";
import { REPO_ROOT, RUNTIME } from "../_executables.ts";

const CLI = join(REPO_ROOT, "cli.ts");
const started: ChildProcess[] = [];

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(check: () => boolean, what: string, ms = 30_000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) assert.fail(`gave up waiting: ${what}`);
    await delay(20);
  }
}

describe("serve --workers", () => {
  after(() => {
    for (const child of started) if (child.exitCode === null) child.kill("SIGKILL");
  });

  test("a killed worker is replaced, clients reconnect, SIGTERM stops all with 1001", async () => {
    const args = [
      "serve",
      "--mode",
      "echo",
      "--port",
      "0",
      "--hostname",
      "127.0.0.1",
      "--workers",
      "2",
    ];
    const child = RUNTIME === "deno"
      ? spawn(process.execPath, ["run", "--allow-all", CLI, ...args], {
        stdio: ["ignore", "pipe", "pipe"],
      })
      : spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    started.push(child);
    let output = "";
    child.stdout!.on("data", (chunk: Uint8Array) => (output += new TextDecoder().decode(chunk)));
    child.stderr!.on("data", (chunk: Uint8Array) => (output += new TextDecoder().decode(chunk)));
    const workerPids = () =>
      [...output.matchAll(/\(worker (\d), pid (\d+)\)/g)].map((m) => Number(m[2]));
    await until(() => /listening on ws:\/\/\S+ with 2 workers/.test(output), "supervisor ready");
    const url = /listening on (ws:\/\/\S+) with/.exec(output)![1];
    const [first, second] = workerPids();
    assert.ok(first > 0 && second > 0 && first !== second, `two worker pids: ${output}`);

    // Connections spread over both workers (Linux hashes each connection to one).
    const clients: WebSocketConnection[] = [];
    for (let i = 0; i < 16; i++) clients.push(await connect(url));
    for (const ws of clients) {
      ws.send("ping");
      const reader = ws.readable.getReader();
      assert.equal((await within(reader.read(), 10_000, "echo")).value, "ping");
      reader.releaseLock();
    }

    process.kill(first, "SIGKILL");
    await until(
      () => /pid \d+ exited with signal SIGKILL.*restarting/.test(output),
      "restart logged",
    );
    await until(() => workerPids().length === 3, "a new worker listens");
    const replacement = workerPids()[2];
    assert.ok(isAlive(replacement) && isAlive(second));
    // Clients of the killed worker saw the connection drop; all can reconnect.
    const lost = (await Promise.all(
      clients.map((ws) =>
        Promise.race([ws.closed.then((info) => info.closeCode), delay(1000).then(() => 0)])
      ),
    )).filter((code) => code !== 0);
    assert.ok(lost.every((code) => code === 1006), `dropped connections: ${lost}`);
    for (let i = 0; i < 8; i++) {
      const ws = await within(connect(url), 10_000, "reconnect");
      ws.send("again");
      const reader = ws.readable.getReader();
      assert.equal((await within(reader.read(), 10_000, "echo after restart")).value, "again");
      reader.releaseLock();
      clients.push(ws);
    }

    const open = clients.filter((ws) => ws.readyState === ws.OPEN);
    child.kill("SIGTERM");
    const codes = await within(
      Promise.all(open.map((ws) => ws.closed.then((info) => info.closeCode))),
      20_000,
      "clients closed by the shutdown",
    );
    assert.deepEqual(new Set(codes), new Set([1001]), "every client got 1001");
    await within(
      new Promise((resolve) =>
        child.exitCode !== null ? resolve(null) : child.once("exit", resolve)
      ),
      20_000,
      "supervisor exit",
    );
    await until(() => !isAlive(second) && !isAlive(replacement), "workers stopped", 10_000);
  });

  test("serve({ reusePort: true }) lets two servers share a port", async () => {
    const a = await serve({ port: 0, hostname: "127.0.0.1", reusePort: true }, {
      message: (ws, d) => ws.send(d),
    })
      .catch((error: Error) => error);
    if (a instanceof Error) {
      // Deno without --unstable-net: the error must say what to do.
      assert.equal(RUNTIME, "deno");
      assert.match(a.message, /--unstable-net/);
      return;
    }
    const b = await serve({ port: a.addr.port, hostname: "127.0.0.1", reusePort: true }, () => {});
    try {
      assert.equal(b.addr.port, a.addr.port);
    } finally {
      await a.shutdown();
      await b.shutdown();
    }
  });
});
