/**
 * permessage-deflate (RFC 7692) over real sockets, Sluice to Sluice and
 * against raw peers that put exact bytes on the wire:
 *
 * - negotiation over real handshakes: every parameter, both sides' view;
 *   the server declines bad offers (a plain 101), the client refuses bad
 *   responses (the connection fails);
 * - the agreed parameters hold on the wire (window bits, context takeover),
 *   checked by inflating with `node:zlib` independently of the codec;
 * - per-message rules: RSV1 on the first frame only, control frames never
 *   compressed, fragmented compressed messages, the threshold;
 * - failures: a deflate bomb (1009, quickly, bounded memory), invalid
 *   compressed data (1007), RSV1 without the extension (1002).
 *
 * Runs under `deno test --allow-all` and `bun test`.
 *
 * @module
 */

import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { constants, deflateRawSync, inflateRawSync } from "node:zlib";
import process from "node:process";
import {
  connect,
  type DeflateOptions,
  HandshakeError,
  serve,
  WebSocket,
  type WebSocketConnection,
} from "../../mod.ts";
import {
  buildFrame,
  concat,
  Op,
  RawClient,
  type ServerFrame,
  upgradeRequest,
  utf8,
  within,
} from "./_raw_client.ts";
import { countingProxy, type SluiceEcho, startSluiceEcho } from "./deflate_peers/harness.ts";
import { type Answer, FakeServer } from "./deflate_peers/fake_server.ts";
import { smallMessage } from "./deflate_peers/scenario.mjs";

const KiB = 1024;
const MiB = 1024 * KiB;
const TAIL = new Uint8Array([0x00, 0x00, 0xff, 0xff]);
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------
// DEFLATE on the test's side, with node:zlib (not the codec under test).

/**
 * Inflates one message on its own (a fresh LZ77 window), as RFC 7692 §7.2.2
 * says: append 00 00 FF FF and inflate. A small `chunkSize` makes zlib check
 * every distance against the `windowBits` window (with one big output buffer
 * it would read any distance within the message).
 */
function inflateAlone(payload: Uint8Array, windowBits = 15): Uint8Array {
  return new Uint8Array(inflateRawSync(concat(payload, TAIL), {
    windowBits,
    chunkSize: 64,
    finishFlush: constants.Z_SYNC_FLUSH,
  }));
}

/**
 * Inflates the messages of one direction with context takeover: the
 * messages, each with its tail, form one DEFLATE stream.
 */
class TakeoverInflater {
  #stream: Uint8Array[] = [];
  #seen = 0;

  inflate(payload: Uint8Array): Uint8Array {
    this.#stream.push(payload, TAIL);
    const all = inflateRawSync(concat(...this.#stream), { finishFlush: constants.Z_SYNC_FLUSH });
    const out = new Uint8Array(all.subarray(this.#seen));
    this.#seen = all.length;
    return out;
  }
}

/** Compresses one message on its own, as a peer would: sync flush, tail removed. */
function deflateAlone(data: Uint8Array, windowBits = 15): Uint8Array {
  const out = deflateRawSync(data, { windowBits, finishFlush: constants.Z_SYNC_FLUSH });
  assert.deepEqual(new Uint8Array(out.subarray(out.length - 4)), TAIL);
  return new Uint8Array(out.subarray(0, out.length - 4));
}

/** Writes bits least significant first, Huffman codes most significant first (RFC 1951 §3.1.1). */
class BitWriter {
  readonly bytes: number[] = [];
  #acc = 0;
  #n = 0;

  bit(b: number): void {
    this.#acc |= b << this.#n;
    if (++this.#n === 8) {
      this.bytes.push(this.#acc);
      this.#acc = 0;
      this.#n = 0;
    }
  }

  bits(value: number, count: number): void {
    for (let i = 0; i < count; i++) this.bit((value >> i) & 1);
  }

  code(code: number, length: number): void {
    for (let i = length - 1; i >= 0; i--) this.bit((code >> i) & 1);
  }

  get aligned(): boolean {
    return this.#n === 0;
  }

  finish(): Uint8Array {
    if (this.#n > 0) this.bytes.push(this.#acc);
    this.#acc = 0;
    this.#n = 0;
    return Uint8Array.from(this.bytes);
  }
}

/**
 * A deflate bomb at DEFLATE's best ratio (~1032:1): one dynamic block whose
 * codes make "length 258, distance 1" cost two bits, so `matches` of them are
 * zero bytes. It inflates to `1 + 258 * matches` zero bytes.
 *
 * Literal/length code lengths: 0 → 2, 256 (end) → 2, 285 (length 258) → 1;
 * one distance code (0, distance 1) of length 1. Canonical codes: 285 = "0",
 * 0 = "10", 256 = "11"; distance 0 = "0".
 */
function deflateBomb(matches: number): Uint8Array {
  const w = new BitWriter();
  w.bits(0, 1); // BFINAL = 0: the message's tail ends the stream
  w.bits(2, 2); // BTYPE = 10, dynamic Huffman codes
  w.bits(286 - 257, 5); // HLIT
  w.bits(1 - 1, 5); // HDIST
  w.bits(18 - 4, 4); // HCLEN: code length codes up to symbol 1 in the order below
  const order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1];
  const codeLengthLengths: Record<number, number> = { 18: 1, 1: 2, 2: 2 }; // 18="0", 1="10", 2="11"
  for (const symbol of order) w.bits(codeLengthLengths[symbol] ?? 0, 3);
  w.code(0b11, 2); // literal 0: length 2
  w.code(0b0, 1); // 18: 11 + 127 = 138 zeros
  w.bits(127, 7);
  w.code(0b0, 1); // 18: 11 + 106 = 117 zeros (literals 1..255 unused)
  w.bits(106, 7);
  w.code(0b11, 2); // 256: length 2
  w.code(0b0, 1); // 18: 11 + 17 = 28 zeros (257..284 unused)
  w.bits(17, 7);
  w.code(0b10, 2); // 285: length 1
  w.code(0b10, 2); // distance 0: length 1
  w.code(0b10, 2); // the literal 0
  let zeroBits = 2 * matches; // each match: 285 = "0", distance 0 = "0"
  while (zeroBits > 0 && !w.aligned) {
    w.bit(0);
    zeroBits--;
  }
  const head = w.finish();
  const zeroBytes = Math.floor(zeroBits / 8);
  const end = new BitWriter();
  for (let i = 0; i < zeroBits % 8; i++) end.bit(0);
  end.code(0b11, 2); // end of block
  const tail = end.finish();
  const out = new Uint8Array(head.length + zeroBytes + tail.length);
  out.set(head);
  out.set(tail, head.length + zeroBytes);
  return out;
}

// ---------------------------------------------------------------------------
// Raw clients and small helpers.

/** Opens a raw connection offering `offer` (or nothing) and returns it with the response. */
async function openRaw(port: number, offer: string | null) {
  const client = await RawClient.connect(port);
  client.write(upgradeRequest(`127.0.0.1:${port}`, {
    headers: offer === null ? {} : { "Sec-WebSocket-Extensions": offer },
  }));
  const response = await client.readResponse();
  assert.equal(response.status, 101, response.head + response.body);
  return { client, response };
}

/** Reads the next data frame (skipping nothing: any other frame fails). */
async function expectDataFrame(client: RawClient, ms = 5000): Promise<ServerFrame> {
  const frame = await client.expectFrame(ms);
  assert.ok(
    frame.opcode === Op.Text || frame.opcode === Op.Binary,
    `expected a data frame, got opcode ${frame.opcode}`,
  );
  return frame;
}

/** `permessage-deflate; a; b=1` as `{a: true, b: "1"}`, or `null` for "". */
function agreedParams(header: string): Record<string, string | true> | null {
  if (header === "") return null;
  const [name, ...params] = header.split(";").map((s) => s.trim());
  assert.equal(name, "permessage-deflate", header);
  const out: Record<string, string | true> = {};
  for (const param of params) {
    const eq = param.indexOf("=");
    if (eq === -1) out[param] = true;
    else out[param.slice(0, eq).trim()] = param.slice(eq + 1).trim();
  }
  return out;
}

/** `n` random ASCII letters (incompressible by LZ77, valid UTF-8). */
function randomText(n: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(n));
  return Array.from(bytes, (b) => String.fromCharCode(97 + (b % 26))).join("");
}

/** Sends `message` and returns the next message read, with a timeout. */
async function echo(ws: WebSocketConnection, message: string | Uint8Array): Promise<unknown> {
  const reader = ws.readable.getReader();
  try {
    ws.send(message);
    return (await within(reader.read(), 10_000, "an echo")).value;
  } finally {
    reader.releaseLock();
  }
}

async function withEcho<T>(
  options: Parameters<typeof startSluiceEcho>[0],
  body: (echo: SluiceEcho) => Promise<T>,
): Promise<T> {
  const server = await startSluiceEcho(options);
  try {
    return await body(server);
  } finally {
    await server.stop();
  }
}

async function withFake<T>(
  answer: (request: string) => Answer,
  body: (fake: FakeServer) => Promise<T>,
): Promise<T> {
  const fake = await FakeServer.start(answer);
  try {
    return await body(fake);
  } finally {
    await fake.close();
  }
}

// ---------------------------------------------------------------------------

describe("negotiation between a Sluice client and a Sluice server", () => {
  const rows: {
    client: DeflateOptions | false;
    server: DeflateOptions | false;
    agreed: Record<string, string | true> | null;
    why: string;
  }[] = [
    { client: {}, server: {}, agreed: {}, why: "defaults: nothing to add" },
    {
      client: { serverNoContextTakeover: true },
      server: {},
      agreed: { server_no_context_takeover: true },
      why: "a server accepting server_no_context_takeover must answer it (§7.1.1.1)",
    },
    {
      client: { clientNoContextTakeover: true },
      server: {},
      agreed: { client_no_context_takeover: true },
      why: "the client's hint is echoed, so the server keeps no window for it",
    },
    {
      client: {},
      server: { serverNoContextTakeover: true, clientNoContextTakeover: true },
      agreed: { server_no_context_takeover: true, client_no_context_takeover: true },
      why: "the server may add both unasked",
    },
    {
      client: { serverMaxWindowBits: 10 },
      server: {},
      agreed: { server_max_window_bits: "10" },
      why: "server_max_window_bits is echoed, not larger (§7.1.2.1)",
    },
    {
      client: {},
      server: { serverMaxWindowBits: 11 },
      agreed: { server_max_window_bits: "11" },
      why: "a server may announce a smaller window unasked",
    },
    {
      client: { serverMaxWindowBits: 12 },
      server: { serverMaxWindowBits: 10 },
      agreed: { server_max_window_bits: "10" },
      why: "the smaller of the two wins",
    },
    {
      client: { serverMaxWindowBits: 9 },
      server: { serverMaxWindowBits: 12 },
      agreed: { server_max_window_bits: "9" },
      why: "the smaller of the two wins",
    },
    {
      client: { clientMaxWindowBits: 10 },
      server: {},
      agreed: { client_max_window_bits: "10" },
      why: "the client's own limit is confirmed",
    },
    {
      client: {},
      server: { clientMaxWindowBits: 9 },
      agreed: { client_max_window_bits: "9" },
      why: "a bare client_max_window_bits lets the server choose (§7.1.2.2)",
    },
    {
      client: { serverMaxWindowBits: 8, clientMaxWindowBits: 8 },
      server: {},
      agreed: { server_max_window_bits: "8", client_max_window_bits: "8" },
      why: "8 is valid: zlib compresses with 9, which a window of 8 still reads",
    },
    {
      client: {
        serverNoContextTakeover: true,
        clientNoContextTakeover: true,
        serverMaxWindowBits: 10,
        clientMaxWindowBits: 10,
      },
      server: { serverMaxWindowBits: 9, clientMaxWindowBits: 9 },
      agreed: {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: "9",
        client_max_window_bits: "9",
      },
      why: "all four parameters at once",
    },
    { client: false, server: {}, agreed: null, why: "no offer, no extension" },
    { client: {}, server: false, agreed: null, why: "a server without compression ignores offers" },
  ];

  for (const { client, server, agreed, why } of rows) {
    test(`client ${JSON.stringify(client)}, server ${JSON.stringify(server)}: ${why}`, async () => {
      await withEcho(
        { compression: server === false ? false : { threshold: 0, ...server } },
        async (echoServer) => {
          const ws = await connect(`${echoServer.url}?id=row`, {
            compression: client === false ? false : { threshold: 0, ...client },
          });
          try {
            assert.deepEqual(agreedParams(ws.extensions), agreed, `client saw ${ws.extensions}`);
            const record = echoServer.connections.get("row")!;
            assert.equal(record.extensions, ws.extensions, "both sides agree on the header");
            // Messages that need the window: a random 4 KiB block repeated
            // (distance 4096, beyond a 9-bit window), small ones, in a row.
            const block = randomText(4 * KiB);
            for (const message of [block.repeat(5), "Hello", "Hello", block, "", block.repeat(2)]) {
              assert.equal(await echo(ws, message), message);
            }
            const binary = utf8(block.repeat(3));
            assert.deepEqual(await echo(ws, binary), binary);
            ws.close(1000);
            assert.equal((await within(ws.closed, 5000, "close")).closeCode, 1000);
          } finally {
            ws.terminate();
          }
        },
      );
    });
  }
});

describe("the server declines a bad offer without failing the handshake", () => {
  const bad = [
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=010",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; client_max_window_bits=16",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; foo",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_max_window_bits=10; client_max_window_bits=11",
    "x-webkit-deflate-frame",
    "permessage-deflate;;",
  ];
  for (const offer of bad) {
    test(`declines "${offer}": 101 without the extension, RSV1 then fails with 1002`, async () => {
      await withEcho({ compression: { threshold: 0 } }, async (server) => {
        const { client, response } = await openRaw(server.port, offer);
        try {
          assert.equal(response.headers.get("sec-websocket-extensions"), null);
          // Not negotiated: the connection is plain, and RSV1 is a violation.
          client.write(buildFrame({ opcode: Op.Text, payload: "plain" }));
          const plain = await expectDataFrame(client);
          assert.equal(plain.rsv1, false);
          assert.equal(decoder.decode(plain.payload), "plain");
          client.write(
            buildFrame({ opcode: Op.Text, payload: deflateAlone(utf8("Hello")), rsv1: true }),
          );
          assert.equal((await client.expectClose()).code, 1002);
        } finally {
          client.destroy();
        }
      });
    });
  }

  test("moves on to the next offer when the first is bad", async () => {
    await withEcho({ compression: { threshold: 0 } }, async (server) => {
      const { client, response } = await openRaw(
        server.port,
        "permessage-deflate; foo, permessage-deflate; server_no_context_takeover",
      );
      try {
        assert.deepEqual(
          agreedParams(response.headers.get("sec-websocket-extensions") ?? ""),
          { server_no_context_takeover: true },
        );
        client.write(
          buildFrame({ opcode: Op.Text, payload: deflateAlone(utf8("Hello")), rsv1: true }),
        );
        const frame = await expectDataFrame(client);
        assert.equal(frame.rsv1, true);
        assert.equal(decoder.decode(inflateAlone(frame.payload)), "Hello");
      } finally {
        client.destroy();
      }
    });
  });

  test("accepts a quoted parameter value (RFC 6455 §9.1 allows quoted-string)", async () => {
    await withEcho({ compression: { threshold: 0 } }, async (server) => {
      const { client, response } = await openRaw(
        server.port,
        'permessage-deflate; client_max_window_bits="10"',
      );
      client.destroy();
      assert.deepEqual(
        agreedParams(response.headers.get("sec-websocket-extensions") ?? ""),
        { client_max_window_bits: "10" },
      );
    });
  });

  test("a server limiting client windows declines offers that cannot be limited", async () => {
    await withEcho({ compression: { clientMaxWindowBits: 10 } }, async (server) => {
      const bare = await openRaw(server.port, "permessage-deflate");
      bare.client.destroy();
      assert.equal(bare.response.headers.get("sec-websocket-extensions"), null);
      const limited = await openRaw(server.port, "permessage-deflate; client_max_window_bits");
      limited.client.destroy();
      assert.deepEqual(
        agreedParams(limited.response.headers.get("sec-websocket-extensions") ?? ""),
        { client_max_window_bits: "10" },
      );
    });
  });
});

describe("the client refuses a bad server response", () => {
  const bad: { response: string; offer?: DeflateOptions | false; error: RegExp }[] = [
    { response: "permessage-deflate; server_max_window_bits=16", error: /server_max_window_bits/ },
    { response: "permessage-deflate; foo", error: /foo/ },
    { response: "permessage-deflate; foo=bar", error: /foo/ },
    {
      response: "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
      error: /duplicate|server_no_context_takeover/i,
    },
    { response: "permessage-deflate, permessage-deflate", error: /permessage-deflate/ },
    { response: "x-unknown-extension", error: /x-unknown-extension/ },
    { response: "permessage-deflate, x-unknown-extension", error: /x-unknown-extension/ },
    {
      response: "permessage-deflate; server_max_window_bits=12",
      offer: { serverMaxWindowBits: 10 },
      error: /server_max_window_bits/,
    },
    { response: "permessage-deflate; client_max_window_bits", error: /client_max_window_bits/ },
    { response: "permessage-deflate", offer: false, error: /not offer/ },
  ];
  for (const { response, offer, error } of bad) {
    test(`"${response}"${offer === undefined ? "" : ` to ${JSON.stringify(offer)}`}: connect() rejects`, async () => {
      await withFake(() => ({ extensions: response }), async (fake) => {
        const failure = await within(
          connect(fake.url, { compression: offer ?? true }).then(
            (ws) => {
              ws.terminate();
              assert.fail(`accepted ${response}`);
            },
            (err: Error) => err,
          ),
          5000,
          "connect",
        );
        assert.ok(failure instanceof HandshakeError, `${failure.name}: ${failure.message}`);
        assert.match(failure.message, error);
        const conn = await fake.accept();
        assert.ok(await conn.waitForEnd(2000), "the client did not drop the connection");
      });
    });
  }

  test("a quoted value in the response is read like a token", async () => {
    await withFake(
      () => ({ extensions: 'permessage-deflate; server_max_window_bits="10"' }),
      async (fake) => {
        const ws = await connect(fake.url, { compression: { serverMaxWindowBits: 10 } });
        try {
          const conn = await fake.accept();
          // The server compresses with 1 KiB; the client must read it.
          const text = "quoted but fine. ".repeat(100);
          const reader = ws.readable.getReader();
          conn.write(buildFrame({
            opcode: Op.Text,
            payload: deflateAlone(utf8(text), 10),
            rsv1: true,
            mask: false,
          }));
          assert.equal((await within(reader.read(), 5000, "a message")).value, text);
          reader.releaseLock();
        } finally {
          ws.terminate();
        }
      },
    );
  });

  test("a valid response is accepted (the control for the cases above)", async () => {
    await withFake(
      () => ({ extensions: "permessage-deflate; server_max_window_bits=9" }),
      async (fake) => {
        const ws = await connect(fake.url, { compression: { serverMaxWindowBits: 10 } });
        assert.equal(ws.extensions, "permessage-deflate; server_max_window_bits=9");
        ws.terminate();
      },
    );
  });
});

describe("the agreed parameters hold on the wire", () => {
  /** 600 random letters twice: the second copy is a match at distance 600 (> 2^9). */
  const farRepeat = () => {
    const block = randomText(600);
    return block + block;
  };

  test("server_max_window_bits=9: the server's output reads with a 512-byte window", async () => {
    await withEcho({ compression: { threshold: 0 } }, async (server) => {
      for (
        const [offer, limited] of [["permessage-deflate; server_max_window_bits=9", true], [
          "permessage-deflate",
          false,
        ]] as const
      ) {
        const { client } = await openRaw(server.port, offer);
        try {
          const text = farRepeat();
          client.write(buildFrame({ opcode: Op.Text, payload: text }));
          const frame = await expectDataFrame(client);
          assert.equal(frame.rsv1, true);
          assert.equal(decoder.decode(inflateAlone(frame.payload, 15)), text);
          if (limited) {
            assert.equal(decoder.decode(inflateAlone(frame.payload, 9)), text);
          } else {
            // The control: with a 32 KiB window the server does reach 600 back.
            assert.throws(() => inflateAlone(frame.payload, 9), /distance too far back/);
          }
        } finally {
          client.destroy();
        }
      }
    });
  });

  test("server_no_context_takeover: every server message inflates on its own", async () => {
    await withEcho({ compression: { threshold: 0 } }, async (server) => {
      const text = "Sluice compresses this line. ".repeat(70);
      for (const takeover of [false, true]) {
        const { client } = await openRaw(
          server.port,
          takeover ? "permessage-deflate" : "permessage-deflate; server_no_context_takeover",
        );
        try {
          client.write(buildFrame({ opcode: Op.Text, payload: text }));
          client.write(buildFrame({ opcode: Op.Text, payload: text }));
          const first = await expectDataFrame(client);
          const second = await expectDataFrame(client);
          assert.equal(decoder.decode(inflateAlone(first.payload)), text);
          if (!takeover) {
            assert.deepEqual(second.payload, first.payload, "same input, same fresh state");
            assert.equal(decoder.decode(inflateAlone(second.payload)), text);
          } else {
            // The control: the second message refers back into the first.
            assert.ok(second.payload.length < first.payload.length / 2);
            assert.throws(() => inflateAlone(second.payload), /distance too far back/);
            const inflater = new TakeoverInflater();
            assert.equal(decoder.decode(inflater.inflate(first.payload)), text);
            assert.equal(decoder.decode(inflater.inflate(second.payload)), text);
          }
        } finally {
          client.destroy();
        }
      }
    });
  });

  test("client_max_window_bits=9 in the response: the client compresses with 512 bytes", async () => {
    for (
      const [answer, limited] of [["permessage-deflate; client_max_window_bits=9", true], [
        "permessage-deflate",
        false,
      ]] as const
    ) {
      await withFake(() => ({ extensions: answer }), async (fake) => {
        const ws = await connect(fake.url, { compression: { threshold: 0 } });
        try {
          const conn = await fake.accept();
          assert.match(conn.header("sec-websocket-extensions") ?? "", /client_max_window_bits/);
          const text = farRepeat();
          ws.send(text);
          const frame = (await conn.readFrame())!;
          assert.equal(frame.rsv1, true);
          assert.equal(frame.masked, true);
          assert.equal(decoder.decode(inflateAlone(frame.payload, 15)), text);
          if (limited) assert.equal(decoder.decode(inflateAlone(frame.payload, 9)), text);
          else assert.throws(() => inflateAlone(frame.payload, 9), /distance too far back/);
        } finally {
          ws.terminate();
        }
      });
    }
  });

  test("client_no_context_takeover in the response: every client message inflates on its own", async () => {
    const text = "Sluice compresses this line. ".repeat(70);
    for (const takeover of [false, true]) {
      const answer = takeover
        ? "permessage-deflate"
        : "permessage-deflate; client_no_context_takeover";
      await withFake(() => ({ extensions: answer }), async (fake) => {
        const ws = await connect(fake.url, { compression: { threshold: 0 } });
        try {
          const conn = await fake.accept();
          ws.send(text);
          ws.send(text);
          const first = (await conn.readFrame())!;
          const second = (await conn.readFrame())!;
          assert.equal(decoder.decode(inflateAlone(first.payload)), text);
          if (!takeover) {
            assert.equal(decoder.decode(inflateAlone(second.payload)), text);
          } else {
            assert.throws(() => inflateAlone(second.payload), /distance too far back/);
            const inflater = new TakeoverInflater();
            inflater.inflate(first.payload);
            assert.equal(decoder.decode(inflater.inflate(second.payload)), text);
          }
        } finally {
          ws.terminate();
        }
      });
    }
  });

  test("1 000 small messages in a row: context takeover saves bytes on the wire", {
    timeout: 30_000,
  }, async () => {
    const messages = Array.from({ length: 1000 }, (_, i) => smallMessage(i));
    const raw = messages.reduce((sum, m) => sum + m.length, 0);
    const measure = async (options: DeflateOptions) => {
      return await withEcho({ compression: { threshold: 0, ...options } }, async (server) => {
        const proxy = await countingProxy(server.port);
        try {
          const ws = await connect(`ws://127.0.0.1:${proxy.port}/`, {
            compression: { threshold: 0 },
          });
          const reader = ws.readable.getReader();
          for (const message of messages) ws.send(message);
          for (const message of messages) {
            assert.equal((await within(reader.read(), 10_000, "an echo")).value, message);
          }
          ws.close(1000);
          await within(ws.closed, 5000, "close");
          return { up: proxy.up, down: proxy.down };
        } finally {
          await proxy.close();
        }
      });
    };
    const takeover = await measure({});
    const alone = await measure({ serverNoContextTakeover: true, clientNoContextTakeover: true });
    // Each message alone still shrinks a little (Huffman coding); with the
    // shared window most of it is a reference to the previous message.
    for (const direction of ["up", "down"] as const) {
      assert.ok(alone[direction] < raw, `${direction}: ${alone[direction]} bytes for ${raw} raw`);
      assert.ok(
        takeover[direction] < alone[direction] / 2,
        `${direction}: ${takeover[direction]} bytes with takeover vs ${alone[direction]} without`,
      );
    }
  });
});

describe("per-message rules on the wire", () => {
  test("RSV1 is set on compressed messages only, and the threshold decides", async () => {
    await withEcho({ compression: { threshold: 1024 } }, async (server) => {
      const { client } = await openRaw(server.port, "permessage-deflate");
      try {
        const below = "a".repeat(1023);
        const at = "a".repeat(1024);
        client.write(buildFrame({ opcode: Op.Text, payload: below }));
        client.write(buildFrame({ opcode: Op.Text, payload: at }));
        client.write(buildFrame({ opcode: Op.Binary, payload: utf8(at) }));
        const small = await expectDataFrame(client);
        assert.equal(small.rsv1, false, "1023 bytes < threshold 1024: sent as is");
        assert.equal(decoder.decode(small.payload), below);
        const big = await expectDataFrame(client);
        assert.equal(big.rsv1, true, "1024 bytes: compressed");
        assert.ok(big.fin);
        assert.ok(big.payload.length < 100);
        const inflater = new TakeoverInflater();
        assert.equal(decoder.decode(inflater.inflate(big.payload)), at);
        const binary = await expectDataFrame(client);
        assert.equal(binary.opcode, Op.Binary);
        assert.equal(binary.rsv1, true);
        assert.equal(decoder.decode(inflater.inflate(binary.payload)), at);
      } finally {
        client.destroy();
      }
    });
  });

  test("compression: true compresses from 1 KiB up (the default threshold)", async () => {
    await withEcho({ compression: true }, async (server) => {
      const { client } = await openRaw(server.port, "permessage-deflate");
      try {
        client.write(buildFrame({ opcode: Op.Text, payload: "b".repeat(1023) }));
        client.write(buildFrame({ opcode: Op.Text, payload: "b".repeat(1024) }));
        assert.equal((await expectDataFrame(client)).rsv1, false);
        assert.equal((await expectDataFrame(client)).rsv1, true);
      } finally {
        client.destroy();
      }
    });
  });

  test("the client's threshold too: below it RSV1 = 0 and the payload is as sent", async () => {
    await withFake(() => ({ extensions: "permessage-deflate" }), async (fake) => {
      const ws = await connect(fake.url, { compression: { threshold: 100 } });
      try {
        const conn = await fake.accept();
        ws.send("c".repeat(99));
        ws.send("c".repeat(100));
        const small = (await conn.readFrame())!;
        assert.equal(small.rsv1, false);
        assert.equal(decoder.decode(small.payload), "c".repeat(99));
        const big = (await conn.readFrame())!;
        assert.equal(big.rsv1, true);
        assert.equal(decoder.decode(inflateAlone(big.payload)), "c".repeat(100));
      } finally {
        ws.terminate();
      }
    });
  });

  test("control frames are never compressed, in either direction", async () => {
    await withEcho({ compression: { threshold: 0 } }, async (server) => {
      const { client } = await openRaw(server.port, "permessage-deflate");
      try {
        const payload = "p".repeat(125);
        client.write(buildFrame({ opcode: Op.Ping, payload }));
        const pong = await client.expectFrame();
        assert.equal(pong.opcode, Op.Pong);
        assert.equal(pong.rsv1, false);
        assert.equal(decoder.decode(pong.payload), payload);
        // A ping the server sends, and its close frame with a compressible reason.
        client.write(buildFrame({ opcode: Op.Text, payload: `PING ${"q".repeat(100)}` }));
        const ping = await client.expectFrame();
        assert.equal(ping.opcode, Op.Ping);
        assert.equal(ping.rsv1, false);
        assert.equal(decoder.decode(ping.payload), "q".repeat(100));
        client.write(buildFrame({ opcode: Op.Text, payload: `CLOSE 4000 ${"r".repeat(100)}` }));
        const close = await client.expectFrame();
        assert.equal(close.opcode, Op.Close);
        assert.equal(close.rsv1, false);
        assert.equal(decoder.decode(close.payload.subarray(2)), "r".repeat(100));
      } finally {
        client.destroy();
      }
    });
    // The client side: its pong and close frames.
    await withFake(() => ({ extensions: "permessage-deflate" }), async (fake) => {
      const ws = await connect(fake.url, { compression: { threshold: 0 } });
      try {
        const conn = await fake.accept();
        conn.write(buildFrame({ opcode: Op.Ping, payload: "s".repeat(125), mask: false }));
        const pong = (await conn.readFrame())!;
        assert.equal(pong.opcode, Op.Pong);
        assert.equal(pong.rsv1, false);
        assert.equal(decoder.decode(pong.payload), "s".repeat(125));
        ws.ping("t".repeat(125));
        const ping = (await conn.readFrame())!;
        assert.equal(ping.rsv1, false);
        ws.close(4000, "u".repeat(100));
        const close = (await conn.readFrame())!;
        assert.equal(close.opcode, Op.Close);
        assert.equal(close.rsv1, false);
        assert.equal(decoder.decode(close.payload.subarray(2)), "u".repeat(100));
      } finally {
        ws.terminate();
      }
    });
  });

  test("RSV1 is only on the first frame: the server refuses it on a continuation (1002)", async () => {
    await withEcho({ compression: { threshold: 0 } }, async (server) => {
      const { client } = await openRaw(server.port, "permessage-deflate");
      try {
        const compressed = deflateAlone(utf8("Hello, fragments"));
        client.write(
          buildFrame({
            opcode: Op.Text,
            payload: compressed.subarray(0, 4),
            fin: false,
            rsv1: true,
          }),
        );
        client.write(
          buildFrame({ opcode: Op.Continuation, payload: compressed.subarray(4), rsv1: true }),
        );
        assert.equal((await client.expectClose()).code, 1002);
      } finally {
        client.destroy();
      }
    });
  });

  test("RSV1 on a control frame is refused (1002), even with the extension", async () => {
    await withEcho({ compression: { threshold: 0 } }, async (server) => {
      const { client } = await openRaw(server.port, "permessage-deflate");
      try {
        client.write(
          buildFrame({ opcode: Op.Ping, payload: deflateAlone(utf8("ping")), rsv1: true }),
        );
        assert.equal((await client.expectClose()).code, 1002);
      } finally {
        client.destroy();
      }
    });
  });

  test("a compressed message in 3 frames (with a ping between) reassembles", async () => {
    await withEcho({ compression: { threshold: 0 } }, async (server) => {
      const { client } = await openRaw(server.port, "permessage-deflate");
      try {
        const text = "fragmented and compressed; ".repeat(200);
        const compressed = deflateAlone(utf8(text));
        const a = Math.floor(compressed.length / 3);
        client.write(
          buildFrame({
            opcode: Op.Text,
            payload: compressed.subarray(0, a),
            fin: false,
            rsv1: true,
          }),
        );
        client.write(
          buildFrame({
            opcode: Op.Continuation,
            payload: compressed.subarray(a, 2 * a),
            fin: false,
          }),
        );
        client.write(buildFrame({ opcode: Op.Ping, payload: "mid-message" }));
        client.write(buildFrame({ opcode: Op.Continuation, payload: compressed.subarray(2 * a) }));
        const pong = await client.expectFrame();
        assert.equal(pong.opcode, Op.Pong);
        const frame = await expectDataFrame(client);
        assert.equal(frame.rsv1, true);
        assert.equal(decoder.decode(inflateAlone(frame.payload)), text);
      } finally {
        client.destroy();
      }
    });
    // And a Sluice client receiving one from a raw server.
    await withFake(() => ({ extensions: "permessage-deflate" }), async (fake) => {
      const ws = await connect(fake.url, { compression: true });
      try {
        const conn = await fake.accept();
        const text = "from the server, in pieces; ".repeat(100);
        const compressed = deflateAlone(utf8(text));
        const reader = ws.readable.getReader();
        conn.write(
          buildFrame({
            opcode: Op.Text,
            payload: compressed.subarray(0, 5),
            fin: false,
            rsv1: true,
            mask: false,
          }),
        );
        conn.write(
          buildFrame({
            opcode: Op.Continuation,
            payload: compressed.subarray(5, 10),
            fin: false,
            mask: false,
          }),
        );
        conn.write(
          buildFrame({ opcode: Op.Continuation, payload: compressed.subarray(10), mask: false }),
        );
        assert.equal((await within(reader.read(), 5000, "a message")).value, text);
        reader.releaseLock();
      } finally {
        ws.terminate();
      }
    });
  });

  test('the RFC 7692 §7.2.3 examples arrive as "Hello"', async () => {
    const bytes = (...b: number[]) => new Uint8Array(b);
    await withEcho({ compression: { threshold: 0 } }, async (server) => {
      const { client } = await openRaw(server.port, "permessage-deflate");
      try {
        const payloads = [
          bytes(0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00), // §7.2.3.1
          bytes(0xf2, 0x00, 0x11, 0x00, 0x00), // §7.2.3.2: refers back to the first
          bytes(0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00), // §7.2.3.3
          bytes(0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00), // §7.2.3.4: BFINAL
          bytes(0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00), // §7.2.3.5
        ];
        for (const payload of payloads) {
          client.write(buildFrame({ opcode: Op.Text, payload, rsv1: true }));
        }
        // A one-shot deflate (ending with a final block) after them, and an empty message.
        client.write(
          buildFrame({ opcode: Op.Text, payload: deflateRawSync(utf8("Hello")), rsv1: true }),
        );
        client.write(buildFrame({ opcode: Op.Text, payload: bytes(0x00), rsv1: true }));
        const inflater = new TakeoverInflater();
        for (let i = 0; i < payloads.length + 1; i++) {
          const frame = await expectDataFrame(client);
          assert.equal(
            decoder.decode(frame.rsv1 ? inflater.inflate(frame.payload) : frame.payload),
            "Hello",
          );
        }
        const empty = await expectDataFrame(client);
        assert.equal(empty.rsv1 ? inflater.inflate(empty.payload).length : empty.payload.length, 0);
        assert.deepEqual(
          server.connections.values().next().value?.received.map((r) => r.length),
          [5, 5, 5, 5, 5, 5, 0],
        );
      } finally {
        client.destroy();
      }
    });
  });
});

describe("failures", () => {
  test("a small deflate bomb (4 KiB inflating to 4 MiB) closes with 1009", async () => {
    await withEcho({ compression: true, maxMessageSize: MiB }, async (server) => {
      const { client } = await openRaw(server.port, "permessage-deflate");
      try {
        const bomb = deflateBomb(16_384);
        assert.ok(bomb.length < 5 * KiB);
        client.write(buildFrame({ opcode: Op.Binary, payload: bomb, rsv1: true }));
        const close = await client.expectClose();
        assert.equal(close.code, 1009, close.reason);
      } finally {
        client.destroy();
      }
    });
  });

  test("a deflate bomb inflating to over 1 GiB closes with 1009 at once, in bounded memory", {
    timeout: 30_000,
  }, async () => {
    // DEFLATE's ratio is at most ~1032:1, so 1 GiB needs ~1 MiB of input;
    // this one is just under the server's 1 MiB limit on what it buffers.
    const matches = Math.ceil(2 ** 30 / 258) + 1;
    const bomb = deflateBomb(matches);
    assert.ok(bomb.length < MiB, `${bomb.length} bytes`);
    assert.ok(1 + 258 * matches > 2 ** 30);
    const frame = buildFrame({ opcode: Op.Binary, payload: bomb, rsv1: true });
    await withEcho({ compression: true, maxMessageSize: MiB }, async (server) => {
      const { client } = await openRaw(server.port, "permessage-deflate");
      try {
        const rss = () => process.memoryUsage().rss;
        const before = rss();
        let peak = before;
        const sampler = setInterval(() => (peak = Math.max(peak, rss())), 2);
        const started = performance.now();
        try {
          client.write(frame);
          const close = await client.expectClose(10_000);
          assert.equal(close.code, 1009, close.reason);
        } finally {
          clearInterval(sampler);
        }
        const elapsed = performance.now() - started;
        peak = Math.max(peak, rss());
        assert.ok(elapsed < 3000, `took ${elapsed.toFixed(0)} ms`);
        assert.ok(
          peak - before < 64 * MiB,
          `RSS grew by ${((peak - before) / MiB).toFixed(1)} MiB while refusing the bomb`,
        );
        const record = [...server.connections.values()][0];
        assert.match(record.error ?? "", /limit/i);
      } finally {
        client.destroy();
      }
    });
  });

  test("the client refuses a bomb too (1009)", async () => {
    await withFake(() => ({ extensions: "permessage-deflate" }), async (fake) => {
      const ws = await connect(fake.url, { compression: true, maxMessageSize: MiB });
      try {
        const conn = await fake.accept();
        conn.write(
          buildFrame({ opcode: Op.Binary, payload: deflateBomb(100_000), rsv1: true, mask: false }),
        );
        assert.equal((await conn.expectClose()).code, 1009);
        assert.ok(await conn.waitForEnd(5000), "the client did not drop the connection");
      } finally {
        ws.terminate();
      }
    });
  });

  test("the limit applies to the inflated size: exactly maxMessageSize passes, one byte more is 1009", async () => {
    const limit = 64 * KiB;
    await withEcho({ compression: true, maxMessageSize: limit }, async (server) => {
      for (const [size, accepted] of [[limit, true], [limit + 1, false]] as const) {
        const { client } = await openRaw(server.port, "permessage-deflate");
        try {
          const payload = deflateAlone(new Uint8Array(size).fill(0x61));
          assert.ok(payload.length < 1024, "the compressed form is far below the limit");
          client.write(buildFrame({ opcode: Op.Binary, payload, rsv1: true }));
          if (accepted) {
            const frame = await expectDataFrame(client);
            assert.equal(inflateAlone(frame.payload).length, size);
          } else {
            assert.equal((await client.expectClose()).code, 1009);
          }
        } finally {
          client.destroy();
        }
      }
    });
  });

  test("without context takeover, one connection's failure leaves the others' inflating intact", async () => {
    // Directions without context takeover share one zlib stream per process;
    // an error or a bomb in the middle of it must not leak into the next user.
    await withEcho({
      compression: { threshold: 0, serverNoContextTakeover: true, clientNoContextTakeover: true },
      maxMessageSize: MiB,
    }, async (server) => {
      const text = "still fine after a neighbour failed; ".repeat(20);
      const compressed = deflateAlone(utf8(text));
      const fragmented = await openRaw(server.port, "permessage-deflate");
      const whole = await openRaw(server.port, "permessage-deflate");
      try {
        // A message whose first part arrives before the neighbours fail.
        fragmented.client.write(buildFrame({
          opcode: Op.Text,
          payload: compressed.subarray(0, 10),
          fin: false,
          rsv1: true,
        }));
        for (
          const [payload, code] of [
            [new Uint8Array([0xff, 0xff, 0xff]), 1007],
            [deflateBomb(100_000), 1009],
            [new Uint8Array([0xf2, 0x00, 0x11, 0x00, 0x00]), 1007],
          ] as const
        ) {
          const bad = await openRaw(server.port, "permessage-deflate");
          try {
            bad.client.write(buildFrame({ opcode: Op.Binary, payload, rsv1: true }));
            assert.equal((await bad.client.expectClose()).code, code);
          } finally {
            bad.client.destroy();
          }
          whole.client.write(buildFrame({ opcode: Op.Text, payload: compressed, rsv1: true }));
          const echoed = await expectDataFrame(whole.client);
          assert.equal(decoder.decode(inflateAlone(echoed.payload)), text);
        }
        fragmented.client.write(buildFrame({
          opcode: Op.Continuation,
          payload: compressed.subarray(10),
        }));
        const echoed = await expectDataFrame(fragmented.client);
        assert.equal(decoder.decode(inflateAlone(echoed.payload)), text);
      } finally {
        fragmented.client.destroy();
        whole.client.destroy();
      }
    });
  });

  const invalid: [string, Uint8Array][] = [
    ["a reserved block type (BTYPE = 11)", new Uint8Array([0xff, 0xff, 0xff])],
    ["a stored block whose NLEN is not ~LEN", new Uint8Array([0x00, 0x05, 0x00, 0x00, 0x00, 0x48])],
    ["a distance before the start of the data", new Uint8Array([0xf2, 0x00, 0x11, 0x00, 0x00])],
  ];
  for (const [what, payload] of invalid) {
    test(`invalid compressed data (${what}) closes with 1007`, async () => {
      await withEcho({ compression: true }, async (server) => {
        const { client } = await openRaw(server.port, "permessage-deflate");
        try {
          client.write(buildFrame({ opcode: Op.Text, payload, rsv1: true }));
          assert.equal((await client.expectClose()).code, 1007);
        } finally {
          client.destroy();
        }
      });
    });
  }

  test("compressed text that inflates to invalid UTF-8 closes with 1007", async () => {
    await withEcho({ compression: true }, async (server) => {
      const { client } = await openRaw(server.port, "permessage-deflate");
      try {
        const payload = deflateAlone(new Uint8Array([0x48, 0xff, 0xfe, 0x49]));
        client.write(buildFrame({ opcode: Op.Text, payload, rsv1: true }));
        assert.equal((await client.expectClose()).code, 1007);
      } finally {
        client.destroy();
      }
    });
  });

  test("the client closes with 1007 on invalid compressed data", async () => {
    await withFake(() => ({ extensions: "permessage-deflate" }), async (fake) => {
      const ws = await connect(fake.url, { compression: true });
      try {
        const conn = await fake.accept();
        conn.write(
          buildFrame({
            opcode: Op.Text,
            payload: new Uint8Array([0xff, 0xff]),
            rsv1: true,
            mask: false,
          }),
        );
        assert.equal((await conn.expectClose()).code, 1007);
      } finally {
        ws.terminate();
      }
    });
  });

  test("RSV1 without negotiation closes with 1002 (server without or declining compression)", async () => {
    for (const [compression, offer] of [[false, "permessage-deflate"], [true, null]] as const) {
      await withEcho({ compression }, async (server) => {
        const { client, response } = await openRaw(server.port, offer);
        try {
          assert.equal(response.headers.get("sec-websocket-extensions"), null);
          client.write(
            buildFrame({ opcode: Op.Text, payload: deflateAlone(utf8("Hello")), rsv1: true }),
          );
          assert.equal((await client.expectClose()).code, 1002);
        } finally {
          client.destroy();
        }
      });
    }
  });

  test("RSV1 without negotiation: the client closes with 1002", async () => {
    for (const compression of [true, false]) {
      // The server agrees to nothing, whether the client offered or not.
      await withFake(() => ({ extensions: null }), async (fake) => {
        const ws = await connect(fake.url, { compression });
        try {
          assert.equal(ws.extensions, "");
          const conn = await fake.accept();
          conn.write(
            buildFrame({
              opcode: Op.Text,
              payload: deflateAlone(utf8("Hello")),
              rsv1: true,
              mask: false,
            }),
          );
          assert.equal((await conn.expectClose()).code, 1002);
        } finally {
          ws.terminate();
        }
      });
    }
  });
});

test("the WebSocket class takes compression in its options", async () => {
  await withEcho({ compression: true }, async (server) => {
    const ws = new WebSocket(`${server.url}?id=class`, [], { compression: { threshold: 0 } });
    try {
      const text = "the WebSocket class, compressed. ".repeat(100);
      const echoed = await within(
        new Promise<unknown>((resolve, reject) => {
          ws.onopen = () => ws.send(text);
          ws.onmessage = (event) => resolve(event.data);
          ws.onerror = (event) => reject(new Error((event as ErrorEvent).message));
        }),
        5000,
        "an echo",
      );
      assert.equal(echoed, text);
      assert.match(ws.extensions, /^permessage-deflate\b/);
      assert.equal(server.connections.get("class")?.extensions, ws.extensions);
    } finally {
      ws.terminate();
    }
  });
});

test("serve() rejects invalid compression options up front", async () => {
  for (
    const compression of [{ serverMaxWindowBits: 16 }, { clientMaxWindowBits: 7 }, { level: 10 }, {
      threshold: -1,
    }]
  ) {
    await assert.rejects(
      serve({ hostname: "127.0.0.1", port: 0, compression }, () => {}),
      RangeError,
      JSON.stringify(compression),
    );
  }
});
