/**
 * `cli.ts serve --static DIR`, run from source: files next to the WebSocket
 * endpoint with their content types, directories and their index, 404s,
 * HEAD and revalidation, and no way out of DIR (dot-dot in every encoding,
 * encoded slashes, hidden files, symlinks that lead out).
 *
 * Runs under both `deno test --allow-all` and `bun test`.
 */

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { connect } from "../../mod.ts";
import { RawClient, within } from "./_raw_client.ts";

const root = new URL("../../", import.meta.url).pathname;
const isDeno = "Deno" in globalThis;

function cliCommand(args: string[]): [string, string[]] {
  return isDeno
    ? [process.execPath, ["run", "--allow-all", join(root, "cli.ts"), ...args]]
    : [process.execPath, ["run", join(root, "cli.ts"), ...args]];
}

/** Starts the CLI and resolves with the HTTP URL it prints for the files. */
function startCli(args: string[]): Promise<{ child: ChildProcess; url: string; ws: string }> {
  const [command, argv] = cliCommand(args);
  const child = spawn(command, argv, { stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the CLI did not print its URLs in time: ${out}`));
    }, 20_000);
    child.stdout!.on("data", (chunk: Uint8Array) => {
      out += new TextDecoder().decode(chunk);
      const ws = /(ws:\/\/\S+)/.exec(out);
      const http = /Serving files from .* on (http:\/\/\S+)/.exec(out);
      if (ws && http) {
        clearTimeout(timer);
        resolve({ child, url: http[1], ws: ws[1] });
      }
    });
    child.stderr!.on("data", (chunk: Uint8Array) => (out += new TextDecoder().decode(chunk)));
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the CLI exited early with ${code}: ${out}`));
    });
  });
}

// A PNG signature and some bytes that are not UTF-8: binary must arrive unchanged.
const PNG = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0xff, 0x00, 0xfe]);
const FILES: Record<string, string | Uint8Array> = {
  "index.html": "<!doctype html><title>home</title>",
  "app.js": "console.log('app');",
  "mod.mjs": "export const x = 1;",
  "style.css": "body { color: red }",
  "data.json": '{"ok":true}',
  "logo.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>",
  "img.png": PNG,
  "photo.jpg": new Uint8Array([0xff, 0xd8, 0xff]),
  "anim.gif": "GIF89a",
  "favicon.ico": new Uint8Array([0, 0, 1, 0]),
  "notes.txt": "plain text",
  "module.wasm": new Uint8Array([0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0]),
  "app.js.map": '{"version":3}',
  "blob.unknownext": "?",
  "big.bin": new Uint8Array(300 * 1024).map((_, i) => i % 251),
  "sub/index.html": "<p>sub</p>",
  "sub/deeper/page.html": "<p>deeper</p>",
  ".env": "SECRET=inside-but-hidden",
};

describe("cli.ts serve --static", () => {
  let dir = "";
  let site = "";
  let server: { child: ChildProcess; url: string; ws: string } | null = null;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "sluice-static-"));
    site = join(dir, "site");
    writeFileSync(join(dir, "secret.txt"), "SECRET outside the site");
    for (const [name, content] of Object.entries(FILES)) {
      const path = join(site, name);
      mkdirSync(join(path, ".."), { recursive: true });
      writeFileSync(path, content);
    }
    symlinkSync(join(dir, "secret.txt"), join(site, "leak.txt"));
    symlinkSync(dir, join(site, "parent"));
    symlinkSync(join(site, "notes.txt"), join(site, "alias.txt"));
    // Plain names inside the folder that lead to a hidden file or directory.
    symlinkSync(join(site, ".env"), join(site, "env.txt"));
    mkdirSync(join(site, ".private"));
    writeFileSync(join(site, ".private", "key.txt"), "SECRET in a hidden directory");
    symlinkSync(join(site, ".private"), join(site, "public"));
    server = await startCli(["serve", "--port", "0", "--hostname", "127.0.0.1", "--static", site]);
  });

  after(async () => {
    if (server !== null) {
      server.child.kill("SIGKILL");
      await new Promise((resolve) => server!.child.once("exit", resolve));
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test("every file with its content type, bytes unchanged", async () => {
    const types: Record<string, string> = {
      "index.html": "text/html; charset=utf-8",
      "app.js": "text/javascript; charset=utf-8",
      "mod.mjs": "text/javascript; charset=utf-8",
      "style.css": "text/css; charset=utf-8",
      "data.json": "application/json; charset=utf-8",
      "logo.svg": "image/svg+xml; charset=utf-8",
      "img.png": "image/png",
      "photo.jpg": "image/jpeg",
      "anim.gif": "image/gif",
      "favicon.ico": "image/x-icon",
      "notes.txt": "text/plain; charset=utf-8",
      "module.wasm": "application/wasm",
      "app.js.map": "application/json; charset=utf-8",
      "blob.unknownext": "application/octet-stream",
      "big.bin": "application/octet-stream",
      "alias.txt": "text/plain; charset=utf-8",
    };
    for (const [name, type] of Object.entries(types)) {
      const response = await fetch(server!.url + name);
      assert.equal(response.status, 200, name);
      assert.equal(response.headers.get("content-type"), type, name);
      const bytes = new Uint8Array(await response.arrayBuffer());
      const expected = FILES[name === "alias.txt" ? "notes.txt" : name];
      assert.deepEqual(
        bytes,
        typeof expected === "string" ? new TextEncoder().encode(expected) : expected,
        name,
      );
      assert.equal(response.headers.get("content-length"), String(bytes.length), name);
    }
  });

  test("/ is index.html; a directory gets its index, after a redirect adding the slash", async () => {
    assert.equal(await (await fetch(server!.url)).text(), FILES["index.html"]);
    const redirect = await fetch(server!.url + "sub?x=1", { redirect: "manual" });
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.get("location"), "/sub/?x=1");
    await redirect.body?.cancel();
    assert.equal(await (await fetch(server!.url + "sub/")).text(), FILES["sub/index.html"]);
    assert.equal(
      await (await fetch(server!.url + "sub/deeper/page.html")).text(),
      FILES["sub/deeper/page.html"],
    );
  });

  test("missing files and directories without an index get 404", async () => {
    for (const path of ["nope.html", "sub/nope", "sub/deeper/", "img.png/x"]) {
      const response = await fetch(server!.url + path);
      assert.equal(response.status, 404, path);
      await response.body?.cancel();
    }
  });

  test("HEAD: the headers of GET, no body", async () => {
    const response = await fetch(server!.url + "big.bin", { method: "HEAD" });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-length"), String(300 * 1024));
    assert.equal((await response.arrayBuffer()).byteLength, 0);
  });

  test("ETag and Last-Modified: revalidation gets 304", async () => {
    const first = await fetch(server!.url + "app.js");
    await first.body?.cancel();
    const etag = first.headers.get("etag")!;
    const lastModified = first.headers.get("last-modified")!;
    assert.match(etag, /^W\/".+"$/);
    const byTag = await fetch(server!.url + "app.js", { headers: { "if-none-match": etag } });
    assert.equal(byTag.status, 304);
    assert.equal((await byTag.arrayBuffer()).byteLength, 0);
    const byDate = await fetch(server!.url + "app.js", {
      headers: { "if-modified-since": lastModified },
    });
    assert.equal(byDate.status, 304);
    await byDate.body?.cancel();
    const stale = await fetch(server!.url + "app.js", { headers: { "if-none-match": '"other"' } });
    assert.equal(stale.status, 200);
    await stale.body?.cancel();
  });

  test("other methods get 405 with Allow", async () => {
    const response = await fetch(server!.url + "app.js", { method: "POST", body: "x" });
    assert.equal(response.status, 405);
    assert.equal(response.headers.get("allow"), "GET, HEAD");
    await response.body?.cancel();
  });

  test("nothing outside DIR, and no hidden file, is reachable", async () => {
    // Raw bytes: clients would normalise these paths before sending them.
    const port = Number(new URL(server!.url).port);
    const attempts = [
      "/../secret.txt",
      "/sub/../../secret.txt",
      "/%2e%2e/secret.txt",
      "/%2E%2E/secret.txt",
      "/.%2e/secret.txt",
      "/..%2fsecret.txt",
      "/%2e%2e%2fsecret.txt",
      "/sub/..%2f..%2fsecret.txt",
      "/..%5csecret.txt",
      "/%2fetc%2fpasswd",
      "//etc/passwd",
      "/%00secret.txt",
      "/leak.txt",
      "/parent/secret.txt",
      "/.env",
      "/%2eenv",
      "/env.txt",
      "/public/key.txt",
      "/sub/%2e%2e/%2e%2e/secret.txt",
      `http://127.0.0.1:${port}/../secret.txt`,
    ];
    for (const target of attempts) {
      const client = await RawClient.connect(port);
      try {
        client.write(
          `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`,
        );
        const response = await client.readResponse();
        assert.ok(
          response.status === 404 || response.status === 400,
          `${target}: ${response.status}`,
        );
        assert.doesNotMatch(response.body, /SECRET/, target);
      } finally {
        client.destroy();
      }
    }
  });

  test("the WebSocket echo answers on the same port", async () => {
    const ws = await connect(server!.ws + "any");
    const reader = ws.readable.getReader();
    ws.send("still a WebSocket server");
    assert.equal((await within(reader.read(), 5000, "echo")).value, "still a WebSocket server");
    ws.close();
    await ws.closed;
  });
});

describe("cli.ts serve --static: bad directories", () => {
  test("a missing directory or a file fails at start with status 2", () => {
    const [command, args] = cliCommand(["serve", "--port", "0", "--static", "/no/such/dir"]);
    const missing = spawnSync(command, args, { encoding: "utf8", timeout: 30_000 });
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /--static/);
    const [command2, args2] = cliCommand([
      "serve",
      "--port",
      "0",
      "--static",
      join(root, "README.md"),
    ]);
    const file = spawnSync(command2, args2, { encoding: "utf8", timeout: 30_000 });
    assert.equal(file.status, 2);
    assert.match(file.stderr, /not a directory/);
  });
});
