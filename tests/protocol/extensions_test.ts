import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  type Extension,
  isToken,
  parseExtensions,
  serializeExtensions,
} from "../../src/protocol/extensions.ts";

const PMD = "permessage-deflate";

describe("parseExtensions", () => {
  test("reads one extension without parameters", () => {
    assert.deepEqual(parseExtensions(PMD), [{ name: PMD, params: [] }]);
  });

  test("reads parameters with and without values, in order", () => {
    assert.deepEqual(
      parseExtensions(
        "permessage-deflate; client_max_window_bits; server_max_window_bits=10; server_no_context_takeover",
      ),
      [{
        name: PMD,
        params: [
          { name: "client_max_window_bits", value: null },
          { name: "server_max_window_bits", value: "10" },
          { name: "server_no_context_takeover", value: null },
        ],
      }],
    );
  });

  test("reads several extensions, keeping their order (preference order of offers)", () => {
    assert.deepEqual(
      parseExtensions("permessage-deflate; client_max_window_bits=10, permessage-deflate, x-foo"),
      [
        { name: PMD, params: [{ name: "client_max_window_bits", value: "10" }] },
        { name: PMD, params: [] },
        { name: "x-foo", params: [] },
      ],
    );
  });

  test("treats several header lines as one comma-separated list", () => {
    assert.deepEqual(parseExtensions(["permessage-deflate; a=1", "x-foo, x-bar; b"]), [
      { name: PMD, params: [{ name: "a", value: "1" }] },
      { name: "x-foo", params: [] },
      { name: "x-bar", params: [{ name: "b", value: null }] },
    ]);
  });

  test("unquotes quoted-string values (RFC 6455 §9.1)", () => {
    assert.deepEqual(parseExtensions('permessage-deflate; server_max_window_bits="10"'), [
      { name: PMD, params: [{ name: "server_max_window_bits", value: "10" }] },
    ]);
    // A quoted-pair escapes any character; the result must still be a token.
    assert.deepEqual(parseExtensions('x; a="b\\c"'), [
      { name: "x", params: [{ name: "a", value: "bc" }] },
    ]);
  });

  test("allows optional whitespace (SP and HTAB) around separators", () => {
    const expected: Extension[] = [
      { name: PMD, params: [{ name: "a", value: "1" }, { name: "b", value: null }] },
      { name: "x", params: [] },
    ];
    for (
      const value of [
        "permessage-deflate;a=1;b,x",
        "permessage-deflate ; a = 1 ; b , x",
        "  permessage-deflate;\ta=\t1;b\t,\tx  ",
        'permessage-deflate; a = "1"; b, x',
      ]
    ) {
      assert.deepEqual(parseExtensions(value), expected, JSON.stringify(value));
    }
  });

  test("skips empty list elements, as RFC 7230 §7 requires of recipients", () => {
    assert.deepEqual(parseExtensions(", permessage-deflate, , x,"), [
      { name: PMD, params: [] },
      { name: "x", params: [] },
    ]);
  });

  test("keeps duplicate parameters so negotiation can reject them", () => {
    assert.deepEqual(parseExtensions("x; a; a=1")[0].params, [
      { name: "a", value: null },
      { name: "a", value: "1" },
    ]);
  });

  test("keeps names exactly as received", () => {
    assert.equal(parseExtensions("PerMessage-Deflate")[0].name, "PerMessage-Deflate");
  });

  const malformed: [string, RegExp][] = [
    ["", /no extension/],
    ["   ", /no extension/],
    [" , ,", /no extension/],
    ["permessage deflate", /expected "," or ";" at offset 11 \(found "d"\)/],
    ["permessage-deflate;", /expected a parameter name at offset 19/],
    ["permessage-deflate; ;a", /expected a parameter name at offset 20/],
    ["permessage-deflate; a=", /expected a parameter value at offset 22/],
    ["permessage-deflate; a==1", /expected a parameter value at offset 22/],
    ["permessage-deflate; a=1=2", /expected "," or ";" at offset 23/],
    ["permessage-deflate; a b", /expected "," or ";" at offset 22/],
    ["; a", /expected an extension name at offset 0/],
    ["=x", /expected an extension name at offset 0/],
    ['"permessage-deflate"', /expected an extension name at offset 0/],
    ['permessage-deflate; a="10', /unterminated quoted-string at offset 22/],
    ['permessage-deflate; a="1 0"', /quoted value "1 0" of parameter "a" is not a token/],
    ['permessage-deflate; a=""', /quoted value "" of parameter "a" is not a token/],
    ['permessage-deflate; a="1\\', /invalid escape in quoted-string/],
    ["permessage-deflate; a=1;", /expected a parameter name/],
    ["permessage-déflate", /expected "," or ";" at offset 12/],
    ["x; a=(1)", /expected a parameter value/],
    ["x\r\n; a", /expected "," or ";"/],
    ['x; a="\u00e9"', /invalid character in quoted-string/],
  ];
  for (const [value, message] of malformed) {
    test(`rejects ${JSON.stringify(value)} with a SyntaxError`, () => {
      assert.throws(() => parseExtensions(value), (error: unknown) => {
        assert.ok(error instanceof SyntaxError, `got ${String(error)}`);
        assert.match(error.message, /^Invalid Sec-WebSocket-Extensions header: /);
        assert.match(error.message, message);
        return true;
      });
    });
  }
});

describe("serializeExtensions", () => {
  test("writes name; param; param=value, joined with commas", () => {
    assert.equal(
      serializeExtensions([
        {
          name: PMD,
          params: [{ name: "server_no_context_takeover", value: null }, {
            name: "client_max_window_bits",
            value: "10",
          }],
        },
        { name: "x-foo", params: [] },
      ]),
      "permessage-deflate; server_no_context_takeover; client_max_window_bits=10, x-foo",
    );
  });

  test("round-trips through parseExtensions", () => {
    const values = [
      "permessage-deflate",
      "permessage-deflate; client_max_window_bits",
      "permessage-deflate; server_max_window_bits=8; client_no_context_takeover, x; y=z",
    ];
    for (const value of values) {
      assert.equal(serializeExtensions(parseExtensions(value)), value);
    }
    // Quoted and spaced input normalizes to the canonical form.
    assert.equal(
      serializeExtensions(parseExtensions('permessage-deflate ;a="1" ,x')),
      "permessage-deflate; a=1, x",
    );
  });

  test("throws TypeError for names and values that are not tokens", () => {
    assert.throws(() => serializeExtensions([{ name: "a b", params: [] }]), TypeError);
    assert.throws(() => serializeExtensions([{ name: "", params: [] }]), TypeError);
    assert.throws(
      () => serializeExtensions([{ name: "x", params: [{ name: "a;b", value: null }] }]),
      TypeError,
    );
    assert.throws(
      () => serializeExtensions([{ name: "x", params: [{ name: "a", value: "1 2" }] }]),
      /Invalid value "1 2" for parameter "a": must be a token/,
    );
  });
});

describe("isToken", () => {
  test("accepts every tchar and nothing else in ASCII", () => {
    const tchars = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (let code = 0; code < 128; code++) {
      const c = String.fromCharCode(code);
      assert.equal(isToken(c), tchars.includes(c), `code ${code}`);
    }
    assert.equal(isToken(""), false);
    assert.equal(isToken("é"), false);
  });
});
