/**
 * Edge cases of the server's opening-handshake path (request head parsing,
 * upgrade validation, the request-URL cache, the 101 bytes): what a request
 * gets for each request-target form, Host variant, HTTP version, method and
 * header shape, checked against RFC 9110/9112 and RFC 6455 §4.2.1.

 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fc from "fast-check";
import { HeadReader, headText, parseRequestHead } from "../../src/protocol/http.ts";
import { buildUpgradeResponse, validateUpgradeRequest } from "../../src/protocol/handshake.ts";
import { computeAccept, ServerHandshake } from "../../src/protocol/server_handshake.ts";
import { HandshakeError } from "../../src/protocol/errors.ts";

const KEY = "dGhlIHNhbXBsZSBub25jZQ==";

/** Bytes from a string of byte values (every char below U+0100). */
function raw(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => {
    const code = c.charCodeAt(0);
    if (code > 0xff) throw new Error("raw() takes byte values only");
    return code;
  });
}

/** A valid upgrade request's field lines (each ending CRLF), with `Host` as given. */
function fields(host = "example.com"): string {
  return `Host: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n`;
}

/** A whole head: request line, fields, blank line. */
function head(line: string, fieldLines = fields()): string {
  return `${line}\r\n${fieldLines}\r\n`;
}

type Outcome = { status: number; message: string } | { href: string };

/** What the sans-I/O server handshake says about `bytes`, fed whole or one byte at a time. */
function verdict(bytes: Uint8Array, byteByByte = false): Outcome {
  const core = new ServerHandshake();
  let result = null;
  if (byteByByte) {
    for (let i = 0; i < bytes.length && result === null; i++) {
      result = core.receive(bytes.subarray(i, i + 1));
    }
  } else {
    result = core.receive(bytes);
  }
  assert.ok(result !== null, "no verdict");
  if (result.kind === "reject") {
    return { status: result.error.status, message: result.error.message };
  }
  assert.equal(result.kind, "upgrade");
  return { href: result.request.href };
}

/** The verdict on `text`, which must be the same whole and split byte by byte. */
function outcome(text: string): Outcome {
  const whole = verdict(raw(text));
  assert.deepEqual(verdict(raw(text), true), whole, `split differently: ${JSON.stringify(text)}`);
  return whole;
}

function assertStatus(text: string, status: number, message?: RegExp): void {
  const result = outcome(text);
  assert.ok("status" in result, `accepted ${JSON.stringify(text)} as ${JSON.stringify(result)}`);
  assert.equal(result.status, status, `${JSON.stringify(text)}: ${result.message}`);
  if (message) assert.match(result.message, message);
}

function assertHref(text: string, href: string): void {
  assert.deepEqual(outcome(text), { href }, JSON.stringify(text));
}

describe("opening handshake: request line", () => {
  test("HTTP versions: 1.1 and later 1.x accepted, 1.0 400, other majors 505, bad syntax 400", () => {
    assertHref(head("GET /c HTTP/1.1"), "http://example.com/c");
    // RFC 9110 §2.5: a 1.x minor above 1 is read as the highest 1.x understood.
    assertHref(head("GET /c HTTP/1.2"), "http://example.com/c");
    assertHref(head("GET /c HTTP/1.9"), "http://example.com/c");
    assertStatus(head("GET /c HTTP/1.0"), 400, /HTTP\/1\.1/);
    for (const version of ["2.0", "0.9", "3.0", "9.9"]) {
      assertStatus(head(`GET /c HTTP/${version}`), 505, /not supported/);
    }
    // HTTP-name is case-sensitive (RFC 9112 §2.3); the version is required.
    for (const line of ["GET /c http/1.1", "GET /c", "GET /c HTTP/1", "GET /c HTTP/1.10"]) {
      assertStatus(head(line), 400, /Malformed request line/);
    }
  });

  test("methods are case-sensitive: only GET; others 405 with Allow: GET", () => {
    for (const method of ["get", "Get", "HEAD", "POST", "OPTIONS", "CONNECT"]) {
      const core = new ServerHandshake();
      const result = core.receive(raw(head(`${method} /c HTTP/1.1`)));
      assert.ok(result?.kind === "reject", method);
      assert.equal(result.error.status, 405, method);
      assert.equal(result.error.headers.get("allow"), "GET", method);
    }
  });

  test("request-target forms: origin-form with query, absolute-form http(s) only", () => {
    assertHref(head("GET /c?room=1&x=%20 HTTP/1.1"), "http://example.com/c?room=1&x=%20");
    assertHref(head("GET /a%2Fb/%zz HTTP/1.1"), "http://example.com/a%2Fb/%zz");
    // Absolute-form: the target's authority wins over Host (RFC 9112 §3.2.2).
    assertHref(head("GET http://other.example/p?q HTTP/1.1"), "http://other.example/p?q");
    assertHref(head("GET https://Other.EXAMPLE:443/p HTTP/1.1"), "https://other.example/p");
    // §4.1: the Request-URI is a resource name or an http(s) URI, never ws(s).
    for (const target of ["ws://example.com/p", "wss://example.com/p", "example.com:80"]) {
      assertStatus(head(`GET ${target} HTTP/1.1`), 400, /Invalid request target/);
    }
    // Asterisk-form and other non-URIs.
    for (const target of ["*", "?q", "c"]) {
      assertStatus(head(`GET ${target} HTTP/1.1`), 400, /target/);
    }
  });

  test("a target starting with // or /\\ keeps the host from Host", () => {
    for (const target of ["//evil.example/x", "/\\evil.example/x", "//user@evil.example/"]) {
      const result = outcome(head(`GET ${target} HTTP/1.1`));
      assert.ok("href" in result, target);
      assert.equal(new URL(result.href).host, "example.com", target);
    }
  });

  test("targets up to the head limit are accepted; one byte over is 431", () => {
    const base = head("GET / HTTP/1.1").length;
    const max = 16 * 1024;
    const fits = "/" + "a".repeat(max - base);
    assert.equal(head(`GET ${fits} HTTP/1.1`).length, max);
    assertHref(head(`GET ${fits} HTTP/1.1`), "http://example.com" + fits);
    assertStatus(head(`GET ${fits}a HTTP/1.1`), 431);
  });
});

describe("opening handshake: Host", () => {
  test("missing, empty, repeated, userinfo, path, bad port or bad IPv6: 400", () => {
    assertStatus(
      head("GET /c HTTP/1.1", fields().replace("Host: example.com\r\n", "")),
      400,
      /Host/,
    );
    for (
      const host of ["", "a@b", "a b\t", "a/b", "[::1", "[::1]x", "a:b", "aé", "[fe80::1%25eth0]"]
    ) {
      assertStatus(head("GET /c HTTP/1.1", fields(host)), 400, /Host/);
    }
    // Two Host lines, even equal ones (RFC 9112 §3.2).
    for (const second of ["example.com", "", "other.example"]) {
      assertStatus(head("GET /c HTTP/1.1", fields() + `Host: ${second}\r\n`), 400, /Host/);
    }
    // Matches the uri-host pattern but is no URL authority.
    for (const host of ["a:99999", "%zz", "1.2.3.4.5", "xn--a"]) {
      assertStatus(head("GET /c HTTP/1.1", fields(host)), 400, /target or Host/);
    }
  });

  test("ports, IPv6, case and a trailing dot are kept as URL semantics say", () => {
    const cases: [string, string][] = [
      ["example.com:8080", "http://example.com:8080/c"],
      ["[::1]:8080", "http://[::1]:8080/c"],
      ["[::1]", "http://[::1]/c"],
      ["EXAMPLE.COM", "http://example.com/c"],
      ["example.com.", "http://example.com./c"],
      ["example.com:80", "http://example.com/c"],
      ["example.com:", "http://example.com/c"],
    ];
    for (const [host, href] of cases) assertHref(head("GET /c HTTP/1.1", fields(host)), href);
  });
});

describe("opening handshake: header fields", () => {
  test("names in any case find the common fields; same-length other names do not", () => {
    const mixed = "hOsT: example.com\r\nUPGRADE: websocket\r\ncOnNeCtIoN: Upgrade\r\n" +
      `SEC-WEBSOCKET-KEY: ${KEY}\r\nsec-websocket-VERSION: 13\r\n`;
    assertHref(head("GET /c HTTP/1.1", mixed), "http://example.com/c");
    // Same length as a common name, one character different.
    assertStatus(head("GET /c HTTP/1.1", fields().replace("Host:", "Hosx:")), 400, /Missing Host/);
    assertStatus(
      head("GET /c HTTP/1.1", fields().replace("Sec-WebSocket-Key:", "Sec_WebSocket_Key:")),
      400,
      /Missing Sec-WebSocket-Key/,
    );
  });

  test("field names: the value under any casing of any name, never another's (fast-check)", () => {
    const common = [
      "host",
      "upgrade",
      "connection",
      "origin",
      "sec-websocket-key",
      "sec-websocket-version",
      "sec-websocket-extensions",
      "sec-websocket-protocol",
      "user-agent",
      "pragma",
      "cache-control",
      "accept-encoding",
      "accept-language",
      "cookie",
      "authorization",
      "content-length",
      "content-type",
      "accept",
    ];
    const tchars = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    // A common name with its case flipped at random, and maybe one character replaced.
    const name = fc.tuple(
      fc.constantFrom(...common),
      fc.array(fc.boolean(), { minLength: 24, maxLength: 24 }),
      fc.option(fc.tuple(fc.nat(), fc.constantFrom(...tchars)), { freq: 2 }),
    ).map(([base, flips, change]) => {
      let chars = [...base].map((c, i) => flips[i] ? c.toUpperCase() : c);
      if (change !== null) {
        const at = change[0] % chars.length;
        chars = chars.map((c, i) => i === at ? change[1] : c);
      }
      return { base, name: chars.join("") };
    });
    fc.assert(
      fc.property(name, fc.constantFrom(...common), ({ base, name }, other) => {
        const parsed = parseRequestHead(raw(`GET / HTTP/1.1\r\n${name}: v\r\nX-Z: w\r\n\r\n`));
        const lower = name.toLowerCase();
        assert.equal(parsed.fields.get(lower), "v", name);
        assert.equal(parsed.headers.get(name), "v", name);
        assert.equal(parsed.fields.get("x-z"), "w");
        if (lower !== base) assert.equal(parsed.fields.get(base), null, name);
        if (other !== lower) assert.equal(parsed.fields.get(other), null, `${name} as ${other}`);
      }),
      { numRuns: 3000 },
    );
  });

  test("duplicates: Upgrade and Connection are lists; two keys or Hosts are 400", () => {
    assertHref(
      head("GET /c HTTP/1.1", fields() + "Upgrade: websocket\r\n"),
      "http://example.com/c",
    );
    assertHref(
      head(
        "GET /c HTTP/1.1",
        fields().replace("Connection: Upgrade", "Connection: keep-alive") +
          "Connection: Upgrade\r\n",
      ),
      "http://example.com/c",
    );
    assertHref(
      head(
        "GET /c HTTP/1.1",
        fields().replace("Connection: Upgrade", "Connection: keep-alive, Upgrade"),
      ),
      "http://example.com/c",
    );
    assertStatus(head("GET /c HTTP/1.1", fields() + `Sec-WebSocket-Key: ${KEY}\r\n`), 400, /Key/);
    // Two versions: 426 naming the one version spoken (§4.4).
    assertStatus(head("GET /c HTTP/1.1", fields() + "Sec-WebSocket-Version: 13\r\n"), 426);
  });

  test("keys that are not base64 of 16 bytes are 400; whitespace around values is OWS", () => {
    for (const key of [btoa("fifteen bytes!!"), btoa("seventeen bytes!!"), KEY.slice(0, -2), "x"]) {
      assertStatus(head("GET /c HTTP/1.1", fields().replace(KEY, key)), 400, /Sec-WebSocket-Key/);
    }
    const spaced = fields().replace("Host: example.com", "Host:\t example.com \t")
      .replace(`Key: ${KEY}`, `Key:${KEY}  `);
    assertHref(head("GET /c HTTP/1.1", spaced), "http://example.com/c");
  });

  test("obs-fold, bare LF, bare CR, NUL, DEL, space before the colon: 400", () => {
    for (
      const extra of [
        "X-A: a\r\n b\r\n",
        "X-A: a\r\n\tb\r\n",
        "X-A: a\nb\r\n",
        "X-A: a\n\r\n",
        "X-A: a\rb\r\n",
        "X-A: a\x00b\r\n",
        "X-A: a\x7fb\r\n",
        "X-A : b\r\n",
      ]
    ) {
      assertStatus(head("GET /c HTTP/1.1", fields() + extra), 400);
    }
    // obs-fold continuing Host must not extend it.
    assertStatus(
      head(
        "GET /c HTTP/1.1",
        fields().replace("Host: example.com\r\n", "Host: example.com\r\n .evil\r\n"),
      ),
      400,
    );
  });

  test("obs-text in a value comes through one character per byte", () => {
    const core = new ServerHandshake();
    const result = core.receive(
      raw(head("GET /c HTTP/1.1", fields() + "Origin: \xe9\x80\x9f\xff\r\n")),
    );
    assert.ok(result?.kind === "upgrade");
    assert.equal(result.request.origin, "\xe9\x80\x9f\xff");
  });

  test("a bare LF right after a chunk boundary is still refused", () => {
    const text = raw(head("GET /c HTTP/1.1", fields() + "X-A: a\nb\r\n"));
    const lf = text.indexOf(0x0a, text.indexOf(raw("X-A")[0], 30));
    const reader = new HeadReader(16384, { rejectBareLf: true });
    assert.equal(reader.push(text.subarray(0, lf)), null);
    assert.throws(() => reader.push(text.subarray(lf)), (error: unknown) => {
      assert.ok(error instanceof HandshakeError);
      assert.equal(error.status, 400);
      return true;
    });
  });
});

describe("opening handshake: headText", () => {
  test("one character per byte for any bytes, long or short (fast-check)", () => {
    const byte = fc.oneof(
      fc.integer({ min: 0x80, max: 0x9f }),
      fc.integer({ min: 0, max: 0xff }),
    );
    fc.assert(
      fc.property(fc.array(byte, { maxLength: 9000, size: "max" }), (values) => {
        const bytes = Uint8Array.from(values);
        const text = headText(bytes);
        assert.equal(text.length, bytes.length);
        for (let i = 0; i < bytes.length; i++) {
          if (text.charCodeAt(i) !== bytes[i]) assert.fail(`byte ${i}: ${bytes[i]}`);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe("opening handshake: the origin-form URL cache", () => {
  test("every href equals a fresh parse of scheme, Host and target (fast-check, past eviction)", () => {
    const hosts = [
      "example.com",
      "EXAMPLE.com",
      "Example.Com:80",
      "example.com:8080",
      "example.com:443",
      "a.example",
      "A.EXAMPLE.",
      "[::1]:8080",
      "[::1]",
      "127.0.0.1",
      "0x7f.1",
      "a%41",
      "a:99999",
      "%zz",
      "xn--a",
    ];
    const targets = [
      "/",
      "/c",
      "/C",
      "/c?q",
      "/c?Q",
      "//evil.example/x",
      "/\\evil.example/x",
      "/a/../b",
      "/%2e%2e/x",
      "/c#f",
      "/" + "x".repeat(600),
    ];
    const pick = (pool: string[], fresh: string) =>
      fc.oneof(
        { weight: 3, arbitrary: fc.constantFrom(...pool) },
        { weight: 1, arbitrary: fc.nat(400).map((n) => fresh.replace("N", String(n))) },
      );
    const request = fc.tuple(fc.boolean(), pick(hosts, "hN.example"), pick(targets, "/rN"));
    fc.assert(
      fc.property(fc.array(request, { minLength: 300, maxLength: 400 }), (requests) => {
        for (const [secure, host, target] of requests) {
          let expected: string | null = null;
          try {
            expected = new URL(`${secure ? "https" : "http"}://${host}${target}`).href;
          } catch {
            // A 400.
          }
          const parsed = parseRequestHead(head(`GET ${target} HTTP/1.1`, fields(host)));
          const label = `${secure} ${host} ${target}`;
          if (expected === null) {
            assert.throws(
              () => validateUpgradeRequest(parsed, secure),
              (e: unknown) => e instanceof HandshakeError && e.status === 400,
              label,
            );
          } else {
            assert.equal(validateUpgradeRequest(parsed, secure).href, expected, label);
          }
        }
      }),
      { numRuns: 40 },
    );
  });
});

describe("opening handshake: the 101 response", () => {
  test("the plain 101 written byte by byte equals the general path's bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
        const accept = computeAccept(btoa(String.fromCharCode(...bytes)));
        assert.deepEqual(
          buildUpgradeResponse(accept),
          buildUpgradeResponse(accept, { headers: new Headers() }),
        );
      }),
      { numRuns: 200 },
    );
  });
});

describe("opening handshake: regressions", () => {
  /**
   * Runs `parseRequestHead(text)` in a child runtime (Deno or Bun, as this
   * test runs in) with a time limit: a hang cannot be stopped in-process.
   */
  function parseInChild(text: string): string {
    const module = new URL("../../src/protocol/http.ts", import.meta.url).href;
    const code = `import { parseRequestHead } from ${JSON.stringify(module)};
let out; try { parseRequestHead(${JSON.stringify(text)}); out = "returned"; }
catch (e) { out = "threw " + e.status; }
console.log(out);`;
    const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";
    const args = isDeno ? ["eval", "--ext=ts", code] : ["-e", code];
    const child = spawnSync(process.execPath, args, {
      timeout: 10_000,
      killSignal: "SIGKILL",
      encoding: "utf8",
    });
    if (child.signal !== null) return `killed (${child.signal}) after 10 s`;
    return child.stdout.trim() || child.stderr.trim();
  }

  test("parseRequestHead on a head without its blank line throws 400 rather than hang", () => {
    // The harness: a complete head parses.
    assert.equal(parseInChild("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "returned");
    // A field line without its CRLF: counting the lines once looped forever
    // here (indexOf gave -1, and -1 + 2 went back to the start).
    assert.equal(parseInChild("GET / HTTP/1.1\r\nHost: x"), "threw 400");
  });

  test("raw UTF-8 in the request-target is a 400, as on the plain-HTTP path", () => {
    // "/café?q=€" sent as UTF-8 bytes rather than percent-encoded (RFC 9112
    // §3.2): the URL made from the head's one-character-per-byte text would
    // have been "/caf%C3%83%C2%A9", which the client never sent.
    const bytes = new TextEncoder().encode(head("GET /caf\u00e9?q=\u20ac HTTP/1.1"));
    assert.deepEqual(verdict(bytes), {
      status: 400,
      message: "Invalid characters in the request target",
    });
  });

  test("control characters in the request-target are a 400, not dropped or kept", () => {
    // RFC 9112 §3.2: not a request-target. The URL parser strips a trailing C0
    // control ("/admin\x01" would reach the application as "/admin") and
    // percent-encodes inner ones.
    for (const target of ["/admin\x01", "/a\x00b", "/a\x7f", "/a\x1fb?x"]) {
      const result = outcome(head(`GET ${target} HTTP/1.1`));
      assert.ok(
        "status" in result,
        `${JSON.stringify(target)} accepted as ${JSON.stringify(result)}`,
      );
      assert.equal(result.status, 400);
    }
  });
});
