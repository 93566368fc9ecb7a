/**
 * The browser entry point (`@sluice/ws/browser`) stays bundleable for a
 * browser: `bun build --target browser` of browser.ts yields one module
 * with no runtime-only import (`node:`, `Deno.`, `Bun.`, `require`), and the
 * module graph a bundler follows from browser.ts (value imports; type-only
 * ones are erased) never reaches socket, runtime or compression code.
 *
 * Quick, so it runs under both `deno test` and `bun test`.
 */

import { describe } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import process from "node:process";
import { test } from "../_watch.ts";
import { findExecutable, REPO_ROOT } from "../_executables.ts";

const ENTRY = join(REPO_ROOT, "browser.ts");
const CI = process.env.CI === "true" || process.env.CI === "1";

/** Value imports and re-exports of a module: specifiers a bundler must follow. */
function valueImports(source: string): string[] {
  const out: string[] = [];
  const statement = /^\s*(import|export)\s+([^;]*?)\s*from\s*["']([^"']+)["']/gms;
  for (const match of source.matchAll(statement)) {
    const clause = match[2].trim();
    if (clause.startsWith("type ")) continue; // import type / export type
    const braces = /^\{([^}]*)\}$/s.exec(clause);
    if (braces !== null) {
      const names = braces[1].split(",").map((s) => s.trim()).filter((s) => s !== "");
      if (names.length > 0 && names.every((name) => name.startsWith("type "))) continue;
    }
    out.push(match[3]);
  }
  for (const match of source.matchAll(/^\s*import\s*["']([^"']+)["']/gm)) out.push(match[1]);
  return out;
}

/** Every module reachable from `entry` by value imports, relative to the repository. */
function graph(entry: string): { modules: string[]; external: string[] } {
  const seen = new Set<string>();
  const external: string[] = [];
  const stack = [entry];
  while (stack.length > 0) {
    const file = stack.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    for (const specifier of valueImports(readFileSync(file, "utf8"))) {
      if (specifier.startsWith(".")) stack.push(join(dirname(file), specifier));
      else external.push(`${relative(REPO_ROOT, file)} imports ${specifier}`);
    }
  }
  return { modules: [...seen].map((f) => relative(REPO_ROOT, f)).sort(), external };
}

/** A watched test whose body is synchronous. */
function check(name: string, body: () => void): void {
  test(name, () => Promise.resolve().then(body));
}

describe("browser entry point", () => {
  check("its module graph reaches no socket, runtime or compression code", () => {
    const { modules, external } = graph(ENTRY);
    assert.deepEqual(external, [], "no bare or node: imports");
    assert.ok(modules.includes("src/reconnect_core.ts"), `modules: ${modules.join(", ")}`);
    const forbidden =
      /^src\/(runtime\/|client\.ts|server\.ts|websocket\.ts|pubsub|protocol\/(deflate|permessage))/;
    assert.deepEqual(
      modules.filter((m) => forbidden.test(m)),
      [],
      `modules: ${modules.join(", ")}`,
    );
    // The walker does see what it must refuse: mod.ts reaches the client.
    assert.ok(graph(join(REPO_ROOT, "mod.ts")).modules.includes("src/client.ts"));
  });

  check("bun build --target browser bundles it without runtime-only imports", () => {
    const bun = findExecutable("bun");
    if (bun === null) {
      assert.ok(!CI, "bun is needed in CI to bundle browser.ts");
      console.warn("SKIPPED: no bun on PATH to bundle browser.ts");
      return;
    }
    const out = spawnSync(bun, ["build", "--target", "browser", "--format", "esm", ENTRY], {
      encoding: "utf8",
      timeout: 60_000,
      env: { ...process.env, NO_COLOR: "1" },
    });
    assert.equal(out.status, 0, `bun build failed: ${out.stderr}`);
    const code = out.stdout;
    assert.match(
      code,
      /export\s*\{[^}]*\bReconnectingWebSocket\b/s,
      "exports ReconnectingWebSocket",
    );
    for (
      const pattern of [
        /\bnode:/,
        /\bDeno\./,
        /\bBun\./,
        /\brequire\(/,
        /\bimport\s*[\w{*]/,
        /zlib/i,
      ]
    ) {
      const at = code.search(pattern);
      assert.equal(
        at,
        -1,
        `the browser bundle contains ${pattern}: …${code.slice(Math.max(0, at - 200), at + 80)}…`,
      );
    }
    assert.ok(code.length < 64 * 1024, `a small bundle (${code.length} bytes)`);
  });
});
