/**
 * Every ```ts example in README.md is type-checked with `deno check` and run
 * to its end on Deno and on Bun, as a user would paste it: `@sluice/ws` is
 * rewritten to this repository's `mod.ts`, the snippet runs in a fresh folder
 * that holds `cert.pem`, `key.pem` and `ca.pem` (for the TLS example), and it
 * must exit with status 0 within {@linkcode RUN_TIMEOUT_MS} and write nothing
 * to stderr (so an error the library logs, with no handler to take it, fails
 * the example too).
 *
 * A block preceded by `<!-- check-only: reason -->` is only type-checked.
 *
 * @module
 */

import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { findExecutable, REPO_ROOT } from "./_executables.ts";
import { makeTestCerts, opensslSkipReason, type TestCerts } from "./_certs.ts";

/** How long one snippet may run on one runtime. */
const RUN_TIMEOUT_MS = 30_000;

/** One ```ts block of the README. */
export interface Snippet {
  /** 1-based line of the opening fence. */
  line: number;
  /** The code between the fences. */
  code: string;
  /** The reason given in a `<!-- check-only: reason -->` marker, or `null`. */
  checkOnly: string | null;
}

const CHECK_ONLY = /^<!--\s*check-only:\s*(.+?)\s*-->$/;

/** The ```ts blocks of a Markdown text, with their check-only markers. */
export function extractSnippets(markdown: string): Snippet[] {
  const lines = markdown.split("\n");
  const snippets: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i])) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]); i++) body.push(lines[i]);
    assert.ok(i < lines.length, `README.md:${start + 1}: code block never closed`);
    let prev = start - 1;
    while (prev >= 0 && lines[prev].trim() === "") prev--;
    const marker = prev >= 0 ? CHECK_ONLY.exec(lines[prev].trim()) : null;
    snippets.push({
      line: start + 1,
      code: body.join("\n") + "\n",
      checkOnly: marker?.[1] ?? null,
    });
  }
  return snippets;
}

/** The snippet as a standalone file importing this repository's entry points. */
function standalone(code: string): string {
  const mod = pathToFileURL(join(REPO_ROOT, "mod.ts")).href;
  const redis = pathToFileURL(join(REPO_ROOT, "src", "redis_broker.ts")).href;
  return code
    .replace(/(["'])@sluice\/ws\1/g, JSON.stringify(mod))
    .replace(/(["'])@sluice\/ws\/redis\1/g, JSON.stringify(redis));
}

interface RunResult {
  status: number | null;
  signal: string | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

/** Runs `command args` in `cwd`, killing it after `timeout` ms. */
function run(command: string, args: string[], cwd: string, timeout: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd,
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, NO_COLOR: "1" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (chunk) => (stdout += chunk));
    child.stderr!.on("data", (chunk) => (stderr += chunk));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeout);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, timedOut, stdout, stderr });
    });
  });
}

function describeFailure(what: string, result: RunResult): string {
  const how = result.timedOut
    ? `did not end within ${RUN_TIMEOUT_MS} ms`
    : result.status !== 0
    ? `exited with ${result.status ?? result.signal}`
    : "wrote to stderr (an error logged by the library, or a warning)";
  return `${what} ${how}:\n${result.stdout.slice(-2000)}\n${result.stderr.slice(-4000)}`;
}

const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
const snippets = extractSnippets(readme);
const deno = findExecutable("deno");
const bun = findExecutable("bun");
const skipTls = opensslSkipReason("the README examples");

test("extractSnippets finds ```ts blocks and their check-only markers", () => {
  const markdown = [
    "# T",
    "```sh",
    "npm test",
    "```",
    "<!-- check-only: needs a browser -->",
    "",
    "```ts",
    "a();",
    "```",
    "```ts",
    "b();",
    "```",
  ].join("\n");
  assert.deepEqual(extractSnippets(markdown), [
    { line: 7, code: "a();\n", checkOnly: "needs a browser" },
    { line: 10, code: "b();\n", checkOnly: null },
  ]);
});

describe("README.md examples", { skip: skipTls || false }, () => {
  let dir = "";
  let certs: TestCerts | null = null;
  const files = new Map<Snippet, string>();

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "sluice-readme-"));
    certs = makeTestCerts("Sluice README CA");
    copyFileSync(certs.certFile, join(dir, "cert.pem"));
    copyFileSync(certs.keyFile, join(dir, "key.pem"));
    copyFileSync(certs.caFile, join(dir, "ca.pem"));
    for (const snippet of snippets) {
      const file = join(dir, `readme_line_${snippet.line}.ts`);
      writeFileSync(file, standalone(snippet.code));
      files.set(snippet, file);
    }
  });

  after(() => {
    certs?.cleanup();
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  test("has TypeScript examples, each runnable or marked check-only with a reason", () => {
    assert.ok(snippets.length >= 5, `only ${snippets.length} \`\`\`ts blocks found`);
    for (const snippet of snippets) {
      assert.match(snippet.code, /@sluice\/ws/, `README.md:${snippet.line} imports @sluice/ws`);
    }
  });

  test("every example type-checks (deno check)", () => {
    assert.ok(deno, "deno not found on PATH or in tools/node_modules/.bin");
    // One process for all snippets: the library is checked once.
    // From the repository, whose deno.json resolves the Redis entry point's npm client.
    const result = spawnSync(deno, ["check", "--quiet", ...files.values()], {
      cwd: REPO_ROOT,
      encoding: "utf8",
      timeout: 120_000,
      env: { ...process.env, NO_COLOR: "1" },
    });
    assert.equal(
      result.status,
      0,
      `deno check failed (file readme_line_N.ts is the block at README.md:N):\n` +
        `${result.stdout}${result.stderr}`,
    );
  });

  for (const snippet of snippets) {
    for (
      const [name, executable, args] of [
        ["Deno", deno, ["run", "--allow-all", "--quiet"]],
        ["Bun", bun, []],
      ] as const
    ) {
      const skip = snippet.checkOnly !== null ? `check-only: ${snippet.checkOnly}` : false;
      test(`README.md:${snippet.line} runs to its end on ${name}`, { skip }, async () => {
        assert.ok(
          executable,
          `${name.toLowerCase()} not found on PATH or in tools/node_modules/.bin`,
        );
        const file = files.get(snippet)!;
        const result = await run(executable, [...args, file], dir, RUN_TIMEOUT_MS);
        assert.ok(
          !result.timedOut && result.status === 0 && result.stderr === "",
          describeFailure(`README.md:${snippet.line} on ${name}`, result),
        );
      });
    }
  }
});
