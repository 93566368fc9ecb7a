// @ts-check
/**
 * The interop scenario a real WebSocket client runs against a Sluice server,
 * written in plain JavaScript so that Node (with npm `ws`), Deno and Bun can
 * all run it, in the test's own process or in a child process.
 *
 * Against `<base>echo` it sends text and binary messages of each size in
 * {@linkcode SIZES}, checks each echo byte for byte, then closes with 4000
 * "bye". Against `<base>server-close` it only waits for the server's close.
 * The payloads are deterministic, so the server side can check what it
 * received without being told.
 *
 * @module
 */

/** Message sizes in bytes: empty, the 7-bit length limit, the first 16-bit length, 64 KiB (the first 64-bit length), 16 MiB. */
export const SIZES = [0, 125, 126, 64 * 1024, 16 * 1024 * 1024];

/**
 * `n` deterministic bytes.
 * @param {number} n
 * @param {number} seed
 * @returns {Uint8Array}
 */
export function binaryOfSize(n, seed) {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed * 7 + (i >>> 8)) & 0xff;
  return out;
}

const PIECES = ["a", "é", "€", "😀", "z", "ß", "中"];

/**
 * A string of exactly `n` UTF-8 bytes mixing 1- to 4-byte characters.
 * @param {number} n
 * @returns {string}
 */
function smallText(n) {
  let out = "";
  let bytes = 0;
  for (let i = 0; bytes < n; i++) {
    const piece = PIECES[i % PIECES.length];
    const size = new TextEncoder().encode(piece).length;
    if (bytes + size > n) {
      out += "x".repeat(n - bytes);
      break;
    }
    out += piece;
    bytes += size;
  }
  return out;
}

/**
 * A deterministic string of exactly `n` UTF-8 bytes.
 * @param {number} n
 * @returns {string}
 */
export function textOfBytes(n) {
  const unit = 4096;
  if (n < unit) return smallText(n);
  return smallText(unit).repeat(Math.floor(n / unit)) + smallText(n % unit);
}

/**
 * Hex SHA-256 of bytes.
 * @param {Uint8Array} bytes
 * @returns {Promise<string>}
 */
export async function sha256(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", /** @type {BufferSource} */ (bytes));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Opens a WebSocket and turns its events into awaitable steps.
 * @param {any} WebSocketClass a WHATWG-style WebSocket constructor
 * @param {string} url
 * @param {boolean} waitOpen wait for the open event (off when the server closes at once)
 */
async function open(WebSocketClass, url, waitOpen = true) {
  const ws = new WebSocketClass(url);
  ws.binaryType = "arraybuffer";
  /** @type {any[]} */
  const inbox = [];
  /** @type {(() => void) | null} */
  let wake = null;
  /** @type {{ code: number, reason: string, wasClean: boolean } | null} */
  let closed = null;
  /** @type {string | null} */
  let error = null;
  ws.addEventListener("message", (/** @type {any} */ event) => {
    inbox.push(event.data);
    wake?.();
  });
  ws.addEventListener("close", (/** @type {any} */ event) => {
    closed = { code: event.code, reason: event.reason, wasClean: event.wasClean };
    wake?.();
  });
  ws.addEventListener("error", (/** @type {any} */ event) => {
    error = String(event?.message ?? event?.error ?? "error event");
    wake?.();
  });
  /**
   * @param {() => boolean} ready
   * @param {number} ms
   * @param {string} what
   */
  const until = async (ready, ms, what) => {
    const deadline = Date.now() + ms;
    while (!ready()) {
      if (Date.now() > deadline) throw new Error(`Timed out: ${what}`);
      if (closed !== null && !ready()) throw new Error(`Closed (${closed.code}) while ${what}`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, Math.min(200, deadline - Date.now())));
        wake = () => {
          clearTimeout(timer);
          resolve(undefined);
        };
      });
      wake = null;
    }
  };
  if (waitOpen) await until(() => ws.readyState === 1, 10_000, "opening");
  return {
    ws,
    /** @param {number} ms */
    async next(ms) {
      await until(() => inbox.length > 0, ms, "waiting for a message");
      return inbox.shift();
    },
    /** @param {number} ms */
    async closed(ms) {
      await until(() => closed !== null, ms, "waiting for close");
      return /** @type {{ code: number, reason: string, wasClean: boolean }} */ (closed);
    },
    get error() {
      return error;
    },
  };
}

/**
 * Runs the scenario and returns a JSON-serialisable report.
 * @param {any} WebSocketClass
 * @param {string} base the server URL, ending with "/"
 */
export async function runScenario(WebSocketClass, base) {
  /** @type {{ kind: string, size: number, ok: boolean, detail?: string }[]} */
  const echoes = [];
  const echo = await open(WebSocketClass, `${base}echo`);
  for (const size of SIZES) {
    const text = textOfBytes(size);
    echo.ws.send(text);
    const back = await echo.next(30_000);
    echoes.push({
      kind: "text",
      size,
      ok: typeof back === "string" && back === text,
      detail: typeof back === "string" ? `${back.length} chars` : `got ${typeof back}`,
    });
    const bytes = binaryOfSize(size, size);
    echo.ws.send(bytes);
    const data = await echo.next(30_000);
    const received = data instanceof ArrayBuffer ? new Uint8Array(data) : null;
    let ok = received !== null && received.length === bytes.length;
    if (ok && received !== null) {
      ok = size > 65536
        ? await sha256(received) === await sha256(bytes)
        : received.every((b, i) => b === bytes[i]);
    }
    echoes.push({
      kind: "binary",
      size,
      ok,
      detail: received === null
        ? `got ${Object.prototype.toString.call(data)}`
        : `${received.length} bytes`,
    });
  }
  echo.ws.close(4000, "bye");
  const clientClose = await echo.closed(10_000);

  const other = await open(WebSocketClass, `${base}server-close`, false);
  const serverClose = await other.closed(10_000);
  return {
    echoes,
    clientClose,
    serverClose,
    errors: /** @type {string[]} */ ([echo.error, other.error].filter((e) => e !== null)),
  };
}
