/**
 * Finding the executables the interop tests run as peers: `deno`, `bun`,
 * Node.js and a Python with `websockets`. One finder for every suite, so they
 * all agree on which binary is which.
 *
 * Deno and Bun are found on `PATH` (the repository's `tools/node_modules/.bin`
 * when set up as documented) or in the repository's `node_modules/.bin`
 * folders; the running runtime is always itself.
 *
 * @module
 */

import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { delimiter, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

/** The repository's root directory (with a trailing separator). */
export const REPO_ROOT = fileURLToPath(new URL("../", import.meta.url));

/** Which runtime runs this file. */
export const RUNTIME: "deno" | "bun" = typeof (globalThis as { Deno?: unknown }).Deno === "object"
  ? "deno"
  : "bun";

/**
 * Python with `websockets`: Debian's `/usr/bin/python3` (python3-websockets).
 * The default `python3` on PATH may be another build without the package, so
 * the system one is tried first.
 */
export const SYSTEM_PYTHON = "/usr/bin/python3";

/** Where to look, in order: `PATH`, then the repository's own bin folders. */
function searchDirs(): string[] {
  return [
    ...(process.env.PATH ?? "").split(delimiter).filter((dir) => dir !== ""),
    join(REPO_ROOT, "node_modules", ".bin"),
    join(REPO_ROOT, "tools", "node_modules", ".bin"),
  ];
}

/** Every existing file called `name` in the search folders, in order. */
function candidates(name: string): string[] {
  return searchDirs().map((dir) => join(dir, name)).filter((path) => existsSync(path));
}

/**
 * Whether `path` is Node.js itself: `deno test` may put its own `node` shim on
 * PATH (Bun can too), and a peer on a node compat layer is not the peer we want.
 */
function isRealNode(path: string): boolean {
  const out = spawnSync(path, [
    "-e",
    "process.stdout.write(process.versions.deno ?? process.versions.bun ?? process.version)",
  ], { encoding: "utf8", timeout: 10_000 });
  return out.status === 0 && out.stdout.startsWith("v");
}

const found = new Map<string, string | null>();

/**
 * The path of an executable, or `null`: the running one for the current
 * runtime, for `node` the first that is Node.js itself, else the first found
 * on `PATH` or in the repository's `node_modules/.bin` folders.
 */
export function findExecutable(name: string): string | null {
  if (name === RUNTIME) return process.execPath;
  if (!found.has(name)) {
    const all = candidates(name);
    found.set(name, (name === "node" ? all.find(isRealNode) : all[0]) ?? null);
  }
  return found.get(name)!;
}

let python: { python: string; version: string } | null | undefined;

/** A Python 3 whose `websockets` is version 10 or later, with that version; `null` if none. */
export function findPythonWithWebsockets(): { python: string; version: string } | null {
  if (python !== undefined) return python;
  const paths = [...new Set([SYSTEM_PYTHON, ...candidates("python3")])]
    .filter((path) => existsSync(path));
  python = null;
  for (const path of paths) {
    const out = spawnSync(path, ["-c", "import websockets; print(websockets.__version__)"], {
      encoding: "utf8",
      timeout: 10_000,
    });
    const version = out.status === 0 ? out.stdout.trim() : "";
    if (version !== "" && Number(version.split(".")[0]) >= 10) {
      python = { python: path, version };
      break;
    }
  }
  return python;
}
