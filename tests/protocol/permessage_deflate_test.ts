import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  deflateOffer,
  type DeflateOptions,
  type NegotiatedDeflate,
  parseDeflateResponse,
  resolveDeflateOptions,
  selectDeflateOffer,
} from "../../src/protocol/permessage_deflate.ts";

const DEFAULTS: NegotiatedDeflate = {
  serverNoContextTakeover: false,
  clientNoContextTakeover: false,
  serverMaxWindowBits: 15,
  clientMaxWindowBits: 15,
};
const BITS = [8, 9, 10, 11, 12, 13, 14, 15];

describe("deflateOffer (client)", () => {
  test("offers client_max_window_bits by default so servers can limit us", () => {
    assert.equal(deflateOffer(), "permessage-deflate; client_max_window_bits");
  });

  test("writes each option as its parameter", () => {
    assert.equal(
      deflateOffer({
        serverNoContextTakeover: true,
        clientNoContextTakeover: true,
        serverMaxWindowBits: 10,
        clientMaxWindowBits: 9,
      }),
      "permessage-deflate; server_no_context_takeover; client_no_context_takeover; " +
        "server_max_window_bits=10; client_max_window_bits=9",
    );
  });

  test("writes every window size 8..15 (15 is the default and left out)", () => {
    for (const bits of BITS) {
      assert.equal(
        deflateOffer({ serverMaxWindowBits: bits, clientMaxWindowBits: bits }),
        bits === 15
          ? "permessage-deflate; client_max_window_bits"
          : `permessage-deflate; server_max_window_bits=${bits}; client_max_window_bits=${bits}`,
      );
    }
  });
});

describe("selectDeflateOffer (server)", () => {
  test("accepts a bare offer with the defaults", () => {
    assert.deepEqual(selectDeflateOffer("permessage-deflate"), {
      params: DEFAULTS,
      response: "permessage-deflate",
    });
  });

  test("accepts browsers' usual offer", () => {
    assert.deepEqual(selectDeflateOffer("permessage-deflate; client_max_window_bits"), {
      params: DEFAULTS,
      response: "permessage-deflate",
    });
  });

  test("echoes server_no_context_takeover when offered (§7.1.1.1)", () => {
    assert.deepEqual(selectDeflateOffer("permessage-deflate; server_no_context_takeover"), {
      params: { ...DEFAULTS, serverNoContextTakeover: true },
      response: "permessage-deflate; server_no_context_takeover",
    });
  });

  test("echoes the client_no_context_takeover hint, so no inflate window is kept (§7.1.1.2)", () => {
    assert.deepEqual(selectDeflateOffer("permessage-deflate; client_no_context_takeover"), {
      params: { ...DEFAULTS, clientNoContextTakeover: true },
      response: "permessage-deflate; client_no_context_takeover",
    });
  });

  test("adds both no_context_takeover parameters when the options ask, even unoffered", () => {
    assert.deepEqual(
      selectDeflateOffer("permessage-deflate", {
        serverNoContextTakeover: true,
        clientNoContextTakeover: true,
      }),
      {
        params: { ...DEFAULTS, serverNoContextTakeover: true, clientNoContextTakeover: true },
        response: "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
      },
    );
  });

  test("server_max_window_bits: echoes the offered value, capped by the option (§7.1.2.1)", () => {
    for (const offered of BITS) {
      for (const option of BITS) {
        const selected = selectDeflateOffer(
          `permessage-deflate; server_max_window_bits=${offered}`,
          { serverMaxWindowBits: option },
        );
        const bits = Math.min(offered, option);
        assert.deepEqual(selected, {
          params: { ...DEFAULTS, serverMaxWindowBits: bits },
          response: `permessage-deflate; server_max_window_bits=${bits}`,
        }, `offered ${offered}, option ${option}`);
      }
    }
  });

  test("server_max_window_bits: announces a smaller own window unasked", () => {
    for (const option of BITS) {
      assert.deepEqual(
        selectDeflateOffer("permessage-deflate", { serverMaxWindowBits: option }),
        {
          params: { ...DEFAULTS, serverMaxWindowBits: option },
          response: option === 15
            ? "permessage-deflate"
            : `permessage-deflate; server_max_window_bits=${option}`,
        },
      );
    }
  });

  test("client_max_window_bits: limits the client only when offered (§7.1.2.2)", () => {
    for (const option of BITS) {
      // A bare client_max_window_bits lets the server pick any value.
      assert.deepEqual(
        selectDeflateOffer("permessage-deflate; client_max_window_bits", {
          clientMaxWindowBits: option,
        }),
        {
          params: { ...DEFAULTS, clientMaxWindowBits: option },
          response: option === 15
            ? "permessage-deflate"
            : `permessage-deflate; client_max_window_bits=${option}`,
        },
      );
      // With a value, the client will not use more than it said.
      for (const offered of BITS) {
        const bits = Math.min(offered, option);
        assert.deepEqual(
          selectDeflateOffer(`permessage-deflate; client_max_window_bits=${offered}`, {
            clientMaxWindowBits: option,
          }),
          {
            params: { ...DEFAULTS, clientMaxWindowBits: bits },
            response: bits === 15
              ? "permessage-deflate"
              : `permessage-deflate; client_max_window_bits=${bits}`,
          },
          `offered ${offered}, option ${option}`,
        );
      }
    }
  });

  test("declines an offer without client_max_window_bits when the client must be limited", () => {
    assert.equal(selectDeflateOffer("permessage-deflate", { clientMaxWindowBits: 10 }), null);
    assert.deepEqual(
      selectDeflateOffer(
        "permessage-deflate, permessage-deflate; client_max_window_bits",
        { clientMaxWindowBits: 10 },
      )?.params,
      { ...DEFAULTS, clientMaxWindowBits: 10 },
    );
  });

  test("accepts all four parameters at once", () => {
    assert.deepEqual(
      selectDeflateOffer(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; " +
          "server_max_window_bits=9; client_max_window_bits=12",
      ),
      {
        params: {
          serverNoContextTakeover: true,
          clientNoContextTakeover: true,
          serverMaxWindowBits: 9,
          clientMaxWindowBits: 12,
        },
        response: "permessage-deflate; server_no_context_takeover; client_no_context_takeover; " +
          "server_max_window_bits=9; client_max_window_bits=12",
      },
    );
  });

  const badOffers = [
    "permessage-deflate; foo",
    "permessage-deflate; foo=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
    "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; client_no_context_takeover=true",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=08",
    "permessage-deflate; server_max_window_bits=+9",
    "permessage-deflate; server_max_window_bits=10.0",
    "permessage-deflate; server_max_window_bits=0xa",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; client_max_window_bits=abc",
    'permessage-deflate; client_max_window_bits="16"',
  ];
  for (const offer of badOffers) {
    test(`declines ${JSON.stringify(offer)} and moves on to the next offer`, () => {
      assert.equal(selectDeflateOffer(offer), null);
      assert.deepEqual(
        selectDeflateOffer(`${offer}, permessage-deflate; server_max_window_bits=11`),
        {
          params: { ...DEFAULTS, serverMaxWindowBits: 11 },
          response: "permessage-deflate; server_max_window_bits=11",
        },
      );
    });
  }

  test("accepts a quoted window size (RFC 6455 §9.1 quoted-string)", () => {
    assert.deepEqual(
      selectDeflateOffer('permessage-deflate; server_max_window_bits="12"')?.params,
      { ...DEFAULTS, serverMaxWindowBits: 12 },
    );
  });

  test("accepts the first acceptable offer, in the client's order", () => {
    const selected = selectDeflateOffer(
      "permessage-deflate; server_max_window_bits=10; client_max_window_bits, " +
        "permessage-deflate; client_max_window_bits, permessage-deflate",
    );
    assert.equal(selected?.response, "permessage-deflate; server_max_window_bits=10");
  });

  test("ignores other extensions and returns null when nothing is offered", () => {
    assert.equal(selectDeflateOffer("x-webkit-deflate-frame"), null);
    assert.equal(selectDeflateOffer("x-foo; a=1, x-bar"), null);
    assert.equal(
      selectDeflateOffer("x-webkit-deflate-frame, permessage-deflate")?.response,
      "permessage-deflate",
    );
  });

  test("reads offers spread over several header lines", () => {
    assert.equal(
      selectDeflateOffer([
        "permessage-deflate; foo",
        "permessage-deflate; server_max_window_bits=9",
      ])
        ?.response,
      "permessage-deflate; server_max_window_bits=9",
    );
  });

  test("throws SyntaxError for a malformed header (RFC 6455 §9.1 fails the connection)", () => {
    assert.throws(() => selectDeflateOffer("permessage-deflate; ="), SyntaxError);
    assert.throws(() => selectDeflateOffer(""), SyntaxError);
  });

  test("throws RangeError for invalid options", () => {
    assert.throws(() => selectDeflateOffer("permessage-deflate", { serverMaxWindowBits: 16 }), {
      name: "RangeError",
      message: /serverMaxWindowBits must be an integer from 8 to 15, got 16/,
    });
  });
});

describe("parseDeflateResponse (client)", () => {
  test("reads an empty acceptance as the defaults", () => {
    assert.deepEqual(parseDeflateResponse("permessage-deflate"), DEFAULTS);
  });

  test("reads all four parameters", () => {
    assert.deepEqual(
      parseDeflateResponse(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; " +
          "server_max_window_bits=10; client_max_window_bits=8",
      ),
      {
        serverNoContextTakeover: true,
        clientNoContextTakeover: true,
        serverMaxWindowBits: 10,
        clientMaxWindowBits: 8,
      },
    );
  });

  test("accepts every window size up to the offered one", () => {
    for (const offered of BITS) {
      for (const bits of BITS.filter((b) => b <= offered)) {
        const options = { serverMaxWindowBits: offered, clientMaxWindowBits: offered };
        assert.deepEqual(
          parseDeflateResponse(
            `permessage-deflate; server_max_window_bits=${bits}; client_max_window_bits=${bits}`,
            options,
          ),
          { ...DEFAULTS, serverMaxWindowBits: bits, clientMaxWindowBits: bits },
        );
      }
    }
  });

  test("takes a missing echo as the offered value (as ws does)", () => {
    assert.deepEqual(
      parseDeflateResponse("permessage-deflate", {
        serverMaxWindowBits: 10,
        clientMaxWindowBits: 11,
        serverNoContextTakeover: true,
      }),
      // No server_no_context_takeover in the answer: keep the inflate window, which is safe.
      { ...DEFAULTS, serverMaxWindowBits: 10, clientMaxWindowBits: 11 },
    );
  });

  test("our own client_no_context_takeover holds even if the server does not echo it", () => {
    assert.deepEqual(
      parseDeflateResponse("permessage-deflate", { clientNoContextTakeover: true }),
      { ...DEFAULTS, clientNoContextTakeover: true },
    );
  });

  const badResponses: [string, DeflateOptions, RegExp][] = [
    ["x-foo", {}, /extension "x-foo" was not offered/],
    ["permessage-deflate, x-foo", {}, /extension "x-foo" was not offered/],
    ["permessage-deflate, permessage-deflate", {}, /2 permessage-deflate entries/],
    ["permessage-deflate; foo", {}, /unknown parameter "foo"/],
    [
      "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
      {},
      /duplicate parameter "server_no_context_takeover"/,
    ],
    [
      "permessage-deflate; client_max_window_bits=9; client_max_window_bits=9",
      {},
      /duplicate parameter "client_max_window_bits"/,
    ],
    ["permessage-deflate; client_no_context_takeover=1", {}, /must not have a value/],
    ["permessage-deflate; server_max_window_bits", {}, /needs a value from 8 to 15, got none/],
    ["permessage-deflate; server_max_window_bits=16", {}, /needs a value from 8 to 15, got "16"/],
    ["permessage-deflate; server_max_window_bits=7", {}, /needs a value from 8 to 15, got "7"/],
    ["permessage-deflate; client_max_window_bits", {}, /needs a value from 8 to 15 in a response/],
    ["permessage-deflate; client_max_window_bits=016", {}, /must be from 8 to 15, got "016"/],
    [
      "permessage-deflate; server_max_window_bits=11",
      { serverMaxWindowBits: 10 },
      /server_max_window_bits=11 exceeds the offered 10/,
    ],
    [
      "permessage-deflate; client_max_window_bits=9",
      { clientMaxWindowBits: 8 },
      /client_max_window_bits=9 exceeds the offered 8/,
    ],
  ];
  for (const [response, options, message] of badResponses) {
    test(`rejects ${JSON.stringify(response)} (options ${JSON.stringify(options)})`, () => {
      assert.throws(() => parseDeflateResponse(response, options), (error: unknown) => {
        assert.ok(error instanceof Error);
        assert.match(error.message, message);
        return true;
      });
    });
  }

  test("throws SyntaxError for a malformed or empty value", () => {
    assert.throws(() => parseDeflateResponse("permessage-deflate;"), SyntaxError);
    assert.throws(() => parseDeflateResponse(""), SyntaxError);
  });
});

describe("negotiation end to end", () => {
  const sides: DeflateOptions[] = [];
  for (const serverNoContextTakeover of [false, true]) {
    for (const clientNoContextTakeover of [false, true]) {
      for (const serverMaxWindowBits of BITS) {
        for (const clientMaxWindowBits of BITS) {
          sides.push({
            serverNoContextTakeover,
            clientNoContextTakeover,
            serverMaxWindowBits,
            clientMaxWindowBits,
          });
        }
      }
    }
  }

  test("client and server agree on the same parameters for every pair of settings", () => {
    let accepted = 0;
    for (const client of sides) {
      const offer = deflateOffer(client);
      for (const server of sides) {
        const selected = selectDeflateOffer(offer, server);
        // deflateOffer always offers client_max_window_bits, so nothing is declined.
        assert.ok(selected, `${offer} with ${JSON.stringify(server)}`);
        accepted++;
        const agreed = parseDeflateResponse(selected.response, client);
        assert.deepEqual(agreed, selected.params, `${offer} -> ${selected.response}`);
        // Both sides' limits and wishes hold.
        assert.equal(
          agreed.serverMaxWindowBits,
          Math.min(client.serverMaxWindowBits!, server.serverMaxWindowBits!),
        );
        assert.equal(
          agreed.clientMaxWindowBits,
          Math.min(client.clientMaxWindowBits!, server.clientMaxWindowBits!),
        );
        assert.equal(
          agreed.serverNoContextTakeover,
          client.serverNoContextTakeover || server.serverNoContextTakeover,
        );
        assert.equal(
          agreed.clientNoContextTakeover,
          client.clientNoContextTakeover || server.clientNoContextTakeover,
        );
      }
    }
    assert.equal(accepted, sides.length * sides.length);
  });
});

describe("resolveDeflateOptions", () => {
  test("fills in the documented defaults", () => {
    assert.deepEqual(resolveDeflateOptions(), {
      serverNoContextTakeover: false,
      clientNoContextTakeover: false,
      serverMaxWindowBits: 15,
      clientMaxWindowBits: 15,
      threshold: 1024,
      level: 6,
      memLevel: 8,
    });
  });

  test("rejects out-of-range and non-integer values", () => {
    const bad: DeflateOptions[] = [
      { serverMaxWindowBits: 7 },
      { clientMaxWindowBits: 16 },
      { clientMaxWindowBits: 9.5 },
      { threshold: -1 },
      { level: 10 },
      { level: -2 },
      { memLevel: 0 },
      { memLevel: 10 },
      { serverMaxWindowBits: Number.NaN },
    ];
    for (const options of bad) {
      assert.throws(() => resolveDeflateOptions(options), RangeError, JSON.stringify(options));
    }
    assert.throws(
      () => resolveDeflateOptions({ serverNoContextTakeover: 1 as unknown as boolean }),
      TypeError,
    );
  });
});
