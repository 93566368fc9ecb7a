/**
 * `wss://` end to end: a Sluice server with a certificate from a throwaway CA
 * (PEM strings and the file form), and as its clients the Sluice client
 * (`caCerts`), Deno's and Bun's built-in `WebSocket` (trusting the CA through
 * `DENO_CERT` and `NODE_EXTRA_CA_CERTS`), npm `ws` on Node (`ca`) and Python
 * `websockets` (`ssl` context). Each echoes text and binary (1 MiB included)
 * byte for byte and closes with the code either side chose. A client that
 * does not trust the CA fails with a certificate error. The CLI serves and
 * connects over `wss://` too.
 *
 * Runs under `deno test --allow-all` and `bun test`.
 *
 * @module
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import process from "node:process";
import { connect, HandshakeError, WebSocket } from "../../mod.ts";
import { within } from "../_watch.ts";
import { makeTestCerts, opensslSkipReason, type TestCerts } from "../_certs.ts";
import { fingerprintsOf, type SluiceEcho, startSluiceEcho } from "./deflate_peers/harness.ts";
import {
  type ClientReport,
  type ClientSpec,
  type PeerName,
  peerSkipReason,
  REPO_ROOT,
  runClient,
} from "./deflate_peers/peers.ts";
import { messagesFor, sameMessage } from "./deflate_peers/scenario.mjs";

const skipTls = opensslSkipReason();
const isDeno = "Deno" in globalThis;

let nextId = 0;
/** A fresh connection id, for the `?id=` the echo server files records under. */
function newId(label: string): string {
  return `${label}-${++nextId}`;
}

/** The cases every client echoes over TLS: text, empty, Unicode, binary, 1 MiB of each. */
const TLS_CASES = [
  "hello",
  "unicode",
  "empty-text",
  "bytes-0-255",
  "text-1m",
  "random-binary-1m",
];

/** Asserts a client peer's report: opened, every case echoed exactly. */
function assertEchoed(report: ClientReport, cases: string[]): void {
  assert.equal(report.opened, true, `the client did not open: ${report.error}`);
  assert.deepEqual(
    report.cases?.map((c) => c.name),
    cases,
    `not every case ran: ${JSON.stringify(report)}`,
  );
  for (const result of report.cases!) {
    assert.ok(result.ok, `${report.runtime} ${result.name}: ${result.error}`);
  }
}

describe("wss:// server", { skip: skipTls || false }, () => {
  let certs: TestCerts;
  let other: TestCerts;
  let pemServer: SluiceEcho;
  let fileServer: SluiceEcho;

  before(async () => {
    certs = makeTestCerts();
    other = makeTestCerts("Another CA");
    pemServer = await startSluiceEcho({ tls: { cert: certs.cert, key: certs.key } });
    fileServer = await startSluiceEcho({
      tls: { certFile: certs.certFile, keyFile: certs.keyFile },
    });
  });

  after(async () => {
    await pemServer?.stop();
    await fileServer?.stop();
    certs?.cleanup();
    other?.cleanup();
  });

  test("serve() with tls gives a wss:// URL, from PEM strings and from files", () => {
    assert.match(pemServer.url, /^wss:\/\/127\.0\.0\.1:\d+\/$/);
    assert.match(fileServer.url, /^wss:\/\/127\.0\.0\.1:\d+\/$/);
  });

  describe("the Sluice client", () => {
    for (
      const [form, server] of [["PEM strings", () => pemServer], [
        "files",
        () => fileServer,
      ]] as const
    ) {
      test(`trusts the CA through caCerts and echoes byte for byte (${form})`, async () => {
        const id = newId("sluice");
        const ws = await within(
          connect(`${server().url}?id=${id}`, { caCerts: [certs.ca] }),
          10_000,
          "wss:// connect",
        );
        try {
          const reader = ws.readable.getReader();
          for (const name of TLS_CASES) {
            for (const message of messagesFor(name)) {
              ws.send(message);
              const { value } = await within(reader.read(), 15_000, `echo of ${name}`);
              assert.ok(sameMessage(message, value), `${name} came back different`);
            }
          }
          reader.releaseLock();
          ws.close(4001, "bye from client");
          const info = await within(ws.closed, 10_000, "close");
          assert.equal(info.closeCode, 4001);
          assert.equal(info.wasClean, true);
        } finally {
          ws.terminate();
        }
        const record = await server().closed(id);
        assert.deepEqual(record.close, { code: 4001, reason: "bye from client" });
        assert.deepEqual(record.received, fingerprintsOf(TLS_CASES));
      });
    }

    test("sees the server's close code and reason", async () => {
      const id = newId("sluice-server-close");
      const ws = await connect(`${fileServer.url}?id=${id}`, { caCerts: [certs.ca] });
      ws.send("CLOSE 4002 bye from server");
      const info = await within(ws.closed, 10_000, "server close");
      assert.deepEqual(info, { closeCode: 4002, reason: "bye from server", wasClean: true });
      assert.equal((await fileServer.closed(id)).close?.code, 4002);
    });

    test("the WebSocket class takes caCerts in its options", async () => {
      const ws = new WebSocket(`${pemServer.url}?id=${newId("class")}`, [], {
        caCerts: [certs.ca],
      });
      const echoed = await within(
        new Promise<unknown>((resolve, reject) => {
          ws.onopen = () => ws.send("over wss");
          ws.onmessage = (event) => resolve(event.data);
          ws.onerror = (event) => reject(new Error((event as ErrorEvent).message));
        }),
        10_000,
        "WebSocket class echo",
      );
      assert.equal(echoed, "over wss");
      ws.close(1000);
      assert.equal((await within(ws.closed, 10_000, "close")).closeCode, 1000);
    });

    test("without the CA, connect() rejects with a certificate error", async () => {
      const error = await within(
        connect(pemServer.url).then(
          () => assert.fail("connected to a server whose CA is not trusted"),
          (err: Error) => err,
        ),
        10_000,
        "untrusted connect",
      );
      assert.ok(!(error instanceof HandshakeError), "a TLS failure is not an HTTP handshake error");
      assert.match(error.message, /certificate/i, `unclear error: ${error.message}`);
    });

    test("trusting a different CA is not enough", async () => {
      const error = await within(
        connect(pemServer.url, { caCerts: [other.ca] }).then(
          () => assert.fail("connected with the wrong CA"),
          (err: Error) => err,
        ),
        10_000,
        "wrong-CA connect",
      );
      assert.match(error.message, /certificate/i, `unclear error: ${error.message}`);
    });

    test("wss://localhost works too: the certificate names localhost as well as 127.0.0.1", async () => {
      const port = pemServer.port;
      const ws = await connect(`wss://localhost:${port}/?id=${newId("localhost")}`, {
        caCerts: [certs.ca],
      });
      ws.close(1000);
      assert.equal((await within(ws.closed, 10_000, "close")).closeCode, 1000);
    });
  });

  /**
   * Foreign clients, each trusting the CA its own way. `trust` gives the spec
   * fields and environment that make it trust `ca`; the same run without them
   * must fail on the certificate.
   */
  const foreign: {
    name: PeerName;
    label: string;
    trust: (ca: string) => { spec?: Partial<ClientSpec>; env?: Record<string, string> };
  }[] = [
    {
      name: "deno",
      label: "Deno's built-in WebSocket (DENO_CERT)",
      trust: (ca) => ({ env: { DENO_CERT: ca } }),
    },
    {
      name: "bun",
      label: "Bun's built-in WebSocket (NODE_EXTRA_CA_CERTS)",
      trust: (ca) => ({ env: { NODE_EXTRA_CA_CERTS: ca } }),
    },
    { name: "node-ws", label: "npm ws on Node (ca option)", trust: (ca) => ({ spec: { ca } }) },
    {
      name: "python-websockets",
      label: "Python websockets (ssl cafile)",
      trust: (ca) => ({ spec: { ca } }),
    },
  ];

  for (const peer of foreign) {
    describe(peer.label, { skip: peerSkipReason(peer.name, "client") || false }, () => {
      test(
        "echoes text and binary byte for byte and closes with its code",
        { timeout: 60_000 },
        async () => {
          const id = newId(peer.name);
          const trust = peer.trust(certs.caFile);
          const report = await runClient(peer.name, {
            url: `${pemServer.url}?id=${id}`,
            cases: TLS_CASES,
            close: { by: "client", code: 4001, reason: "bye from client" },
            ...trust.spec,
          }, { env: trust.env });
          assertEchoed(report, TLS_CASES);
          assert.equal(report.close?.code, 4001, JSON.stringify(report.close));
          const record = await pemServer.closed(id);
          assert.deepEqual(record.close, { code: 4001, reason: "bye from client" });
          assert.deepEqual(
            record.received,
            fingerprintsOf(TLS_CASES),
            "the server got other bytes",
          );
        },
      );

      test(
        "sees the server's close code and reason (file-form server)",
        { timeout: 30_000 },
        async () => {
          const id = newId(peer.name);
          const trust = peer.trust(certs.caFile);
          const report = await runClient(peer.name, {
            url: `${fileServer.url}?id=${id}`,
            cases: ["hello"],
            close: { by: "server", code: 4002, reason: "bye from server" },
            ...trust.spec,
          }, { env: trust.env });
          assertEchoed(report, ["hello"]);
          assert.deepEqual(report.close, { code: 4002, reason: "bye from server", wasClean: true });
          assert.equal((await fileServer.closed(id)).close?.code, 4002);
        },
      );

      test("fails on the certificate without the CA", { timeout: 30_000 }, async () => {
        const report = await runClient(peer.name, {
          url: `${pemServer.url}?id=${newId(peer.name)}`,
          cases: ["hello"],
          close: { by: "client", code: 1000, reason: "" },
        });
        assert.equal(report.opened, false, "connected to a server whose CA is not trusted");
        assert.match(report.error ?? "", /certif|issuer|verify/i, `unclear error: ${report.error}`);
      });
    });
  }
});

/** The command running cli.ts from source under the current runtime. */
function cliCommand(args: string[]): string[] {
  const cli = join(REPO_ROOT, "cli.ts");
  return isDeno
    ? [process.execPath, "run", "--allow-all", cli, ...args]
    : [process.execPath, "run", cli, ...args];
}

/** A child process with its output collected, killed by pid on `kill()`. */
interface Child {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
  kill(): void;
}

function start(command: string[], stdin: "pipe" | "ignore" = "ignore"): Child {
  const child = spawn(command[0], command.slice(1), {
    stdio: [stdin, "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  let out = "";
  let err = "";
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (text: string) => (out += text));
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (text: string) => (err += text));
  const exited = new Promise<number | null>((resolve) => {
    child.on("close", (code) => resolve(code));
    child.on("error", () => resolve(null));
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
  };
}

async function waitForOutput(proc: Child, pattern: RegExp, ms: number): Promise<RegExpExecArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const match = pattern.exec(proc.stdout());
    if (match !== null) return match;
    if (Date.now() > deadline || proc.child.exitCode !== null) {
      throw new Error(
        `No ${pattern} in the output within ${ms} ms.\nstdout: ${proc.stdout()}\nstderr: ${proc.stderr()}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe("CLI over wss://", { skip: skipTls || false }, () => {
  let certs: TestCerts;
  let server: Child | null = null;
  let url = "";

  before(async () => {
    certs = makeTestCerts();
    server = start(cliCommand([
      "serve",
      "--port",
      "0",
      "--hostname",
      "127.0.0.1",
      "--cert",
      certs.certFile,
      "--key",
      certs.keyFile,
      "--compression",
    ]));
    url = (await waitForOutput(server, /(wss:\/\/\S+)/, 20_000))[1];
  });

  after(async () => {
    server?.kill();
    await server?.exited;
    certs?.cleanup();
  });

  test("serve --cert --key prints a wss:// URL", () => {
    assert.match(url, /^wss:\/\/127\.0\.0\.1:\d+\/$/);
  });

  test(
    "connect --ca talks to it: lines go out, echoes are printed, exit 0",
    { timeout: 30_000 },
    async () => {
      const client = start(cliCommand(["connect", url, "--ca", certs.caFile]), "pipe");
      try {
        client.child.stdin!.write("first line\nsecond line\n");
        await waitForOutput(client, /second line\n/, 15_000);
        client.child.stdin!.end();
        const code = await within(client.exited, 15_000, "cli connect to exit");
        assert.equal(client.stdout(), "first line\nsecond line\n");
        assert.equal(code, 0, client.stderr());
        assert.match(client.stderr(), /1000/);
      } finally {
        client.kill();
      }
    },
  );

  test(
    "connect without --ca fails with status 2 and a certificate error",
    { timeout: 30_000 },
    async () => {
      const client = start(cliCommand(["connect", url]), "pipe");
      try {
        client.child.stdin!.end();
        const code = await within(client.exited, 15_000, "cli connect to exit");
        assert.equal(code, 2, client.stderr());
        assert.match(client.stderr(), /certificate/i);
      } finally {
        client.kill();
      }
    },
  );

  test("serve --compression negotiates permessage-deflate over wss://", async () => {
    const ws = await connect(url, { caCerts: [certs.ca], compression: true });
    try {
      assert.match(ws.extensions, /^permessage-deflate\b/);
      const big = "compress me over TLS ".repeat(5000);
      ws.send(big);
      const reader = ws.readable.getReader();
      assert.equal((await within(reader.read(), 10_000, "echo")).value, big);
      reader.releaseLock();
      ws.close(1000);
      await within(ws.closed, 10_000, "close");
    } finally {
      ws.terminate();
    }
  });

  test("connect --ca --compression offers permessage-deflate", { timeout: 30_000 }, async () => {
    const echo = await startSluiceEcho({
      tls: { cert: certs.cert, key: certs.key },
      compression: true,
    });
    const client = start(
      cliCommand(["connect", `${echo.url}?id=cli`, "--ca", certs.caFile, "--compression"]),
      "pipe",
    );
    try {
      const line = "x".repeat(2000);
      client.child.stdin!.write(line + "\n");
      await waitForOutput(client, new RegExp(`${line}\n`), 15_000);
      client.child.stdin!.end();
      assert.equal(await within(client.exited, 15_000, "cli connect to exit"), 0, client.stderr());
      const record = await echo.closed("cli");
      assert.match(record.extensions, /^permessage-deflate\b/);
      assert.equal(record.received.length, 1);
    } finally {
      client.kill();
      await echo.stop();
    }
  });
});
