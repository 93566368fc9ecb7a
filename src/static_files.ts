/**
 * Files from a directory as a `fetch` handler for {@linkcode serve}: what
 * `cli.ts serve --static DIR` runs, and a quick way to put a page next to a
 * WebSocket endpoint.
 *
 * @module
 */

import { open, realpath, stat } from "node:fs/promises";
import { extname, isAbsolute, join, resolve, sep } from "node:path";

/** Options for {@linkcode serveStatic}. */
export interface StaticFilesOptions {
  /** The file served for a directory. @default {"index.html"} */
  index?: string;
  /** `Cache-Control` sent with every file. @default {"no-cache"} (revalidate with the ETag) */
  cacheControl?: string;
}

/** Content types by extension: text types say their charset. */
const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".cjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".webmanifest": "application/manifest+json; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".csv": "text/csv; charset=utf-8",
  ".xml": "application/xml; charset=utf-8",
  ".svg": "image/svg+xml; charset=utf-8",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".avif": "image/avif",
  ".ico": "image/x-icon",
  ".bmp": "image/bmp",
  ".wasm": "application/wasm",
  ".pdf": "application/pdf",
  ".zip": "application/zip",
  ".gz": "application/gzip",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".ttf": "font/ttf",
  ".otf": "font/otf",
  ".mp3": "audio/mpeg",
  ".ogg": "audio/ogg",
  ".wav": "audio/wav",
  ".mp4": "video/mp4",
  ".webm": "video/webm",
};

/**
 * The content type for a file name (`application/octet-stream` when unknown).
 *
 * @example
 * ```ts
 * import { contentType } from "@sluice/ws";
 * console.log(contentType("app.js")); // "text/javascript; charset=utf-8"
 * ```
 */
export function contentType(path: string): string {
  return CONTENT_TYPES[extname(path).toLowerCase()] ?? "application/octet-stream";
}

function text(status: number, body: string, headers: Record<string, string> = {}): Response {
  return new Response(body + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  });
}

/**
 * The path's segments, decoded, or `null` when one could leave the
 * directory or name a hidden file: `..` and `.` (also percent-encoded),
 * segments that decode to a slash, a backslash or NUL, and dot-files.
 */
function safeSegments(pathname: string): string[] | null {
  const segments: string[] = [];
  for (const raw of pathname.split("/")) {
    if (raw === "") continue;
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      return null;
    }
    if (
      segment.startsWith(".") || segment.includes("/") || segment.includes("\\") ||
      segment.includes("\0") || isAbsolute(segment)
    ) {
      return null;
    }
    segments.push(segment);
  }
  return segments;
}

/** A file's bytes as a stream read 64 KiB at a time, as the consumer pulls. */
function fileStream(path: string): ReadableStream<Uint8Array> {
  let handle: Awaited<ReturnType<typeof open>> | null = null;
  return new ReadableStream<Uint8Array>({
    async start() {
      handle = await open(path, "r");
    },
    async pull(controller) {
      const buffer = new Uint8Array(64 * 1024);
      const { bytesRead } = await handle!.read(buffer, 0, buffer.length, null);
      if (bytesRead === 0) {
        await handle!.close();
        handle = null;
        controller.close();
      } else {
        controller.enqueue(buffer.subarray(0, bytesRead));
      }
    },
    async cancel() {
      await handle?.close();
      handle = null;
    },
  }, { highWaterMark: 0 });
}

/**
 * A `fetch` handler that serves the files under `root`: GET and HEAD, the
 * content type from the extension, `index.html` for a directory (and a
 * redirect to add the slash), `ETag` and `Last-Modified` with 304 answers.
 * Nothing outside `root` is reachable: `..` and encoded variants, encoded
 * slashes, hidden files and symlinks that lead out get 404.
 *
 * @example A page next to a WebSocket echo
 * ```ts
 * import { serve, serveStatic } from "@sluice/ws";
 * const server = await serve({ port: 0, fetch: serveStatic("./public") }, {
 *   message: (ws, data) => ws.send(data),
 * });
 * await server.shutdown();
 * ```
 */
export function serveStatic(
  root: string,
  options: StaticFilesOptions = {},
): (request: Request) => Promise<Response> {
  const index = options.index ?? "index.html";
  const cacheControl = options.cacheControl ?? "no-cache";
  const base = resolve(root);
  // Resolved once, lazily: symlinks are judged against the real directory.
  let realBase: Promise<string> | null = null;
  return async (request) => {
    if (request.method !== "GET" && request.method !== "HEAD") {
      return text(405, `Method ${request.method} is not allowed`, { allow: "GET, HEAD" });
    }
    const url = new URL(request.url);
    const segments = safeSegments(url.pathname);
    if (segments === null) return text(404, "Not found");
    let path = join(base, ...segments);
    try {
      let info = await stat(path);
      if (info.isDirectory()) {
        if (!url.pathname.endsWith("/")) {
          // Relative links in the index resolve against the directory.
          return new Response(null, {
            status: 301,
            // One leading slash: "//evil.example" would be a protocol-relative
            // redirect to another host.
            headers: { location: `${url.pathname.replace(/^\/+/, "/")}/${url.search}` },
          });
        }
        path = join(path, index);
        info = await stat(path);
      }
      if (!info.isFile()) return text(404, "Not found");
      const real = await realpath(path);
      // A root that does not exist (yet) is tried again on the next request.
      realBase ??= realpath(base).catch((error) => {
        realBase = null;
        throw error;
      });
      const top = await realBase;
      const root = top.endsWith(sep) ? top : top + sep;
      if (!real.startsWith(root)) return text(404, "Not found");
      // A symlink with a plain name may lead to a hidden file (or into a
      // hidden directory) inside the folder: judged by where it leads.
      if (real.slice(root.length).split(sep).some((part) => part.startsWith("."))) {
        return text(404, "Not found");
      }
      const etag = `W/"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
      const lastModified = new Date(Math.floor(info.mtimeMs / 1000) * 1000).toUTCString();
      const headers: Record<string, string> = {
        "content-type": contentType(path),
        etag,
        "last-modified": lastModified,
        "cache-control": cacheControl,
      };
      if (notModified(request.headers, etag, info.mtimeMs)) {
        return new Response(null, { status: 304, headers });
      }
      headers["content-length"] = String(info.size);
      return new Response(request.method === "HEAD" ? null : fileStream(real), { headers });
    } catch {
      return text(404, "Not found");
    }
  };
}

/** RFC 9110 §13.1.2 and §13.1.3: If-None-Match wins over If-Modified-Since. */
function notModified(headers: Headers, etag: string, mtimeMs: number): boolean {
  const ifNoneMatch = headers.get("if-none-match");
  if (ifNoneMatch !== null) {
    // Weak comparison: W/ prefixes do not matter.
    const strip = (tag: string) => tag.trim().replace(/^W\//, "");
    return ifNoneMatch.trim() === "*" ||
      ifNoneMatch.split(",").some((tag) => strip(tag) === strip(etag));
  }
  const since = headers.get("if-modified-since");
  if (since === null) return false;
  const time = Date.parse(since);
  return !Number.isNaN(time) && Math.floor(mtimeMs / 1000) * 1000 <= time;
}
