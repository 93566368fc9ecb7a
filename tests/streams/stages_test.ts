import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  type DecodedMessage,
  type Frame,
  FrameDecoderStream,
  FrameEncoderStream,
  MessageDecoderStream,
  MessageEncoderStream,
  Opcode,
  WebSocketError,
} from "../../mod.ts";

async function collect<T>(stream: ReadableStream<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of stream) out.push(item);
  return out;
}

function chunksOf(bytes: Uint8Array, sizes: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  let i = 0;
  while (at < bytes.length) {
    const size = sizes[i++ % sizes.length];
    out.push(bytes.slice(at, at + size));
    at += size;
  }
  return out;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

describe("stream stages", () => {
  test("RFC 6455 §5.7 masked Hello decodes through both stages", async () => {
    const bytes = new Uint8Array([
      0x81,
      0x85,
      0x37,
      0xfa,
      0x21,
      0x3d,
      0x7f,
      0x9f,
      0x4d,
      0x51,
      0x58,
    ]);
    for (let split = 1; split <= bytes.length; split++) {
      const messages = await collect(
        ReadableStream.from(chunksOf(bytes, [split]))
          .pipeThrough(new FrameDecoderStream({ role: "server" }))
          .pipeThrough(new MessageDecoderStream()),
      );
      assert.deepEqual(messages, [{ type: "text", data: "Hello" }], `split every ${split} bytes`);
    }
  });

  test("client encode → server decode round trip with fragmentation and control frames", async () => {
    const big = new Uint8Array(70_000).map((_, i) => i * 7);
    const input: (string | Uint8Array)[] = [
      "",
      "héllo wörld ✓",
      big,
      new Uint8Array(0),
      "x".repeat(300),
    ];
    const bytes = concat(
      await collect(
        ReadableStream.from(input)
          .pipeThrough(new MessageEncoderStream({ fragmentSize: 1000 }))
          .pipeThrough(new FrameEncoderStream({ role: "client" })),
      ),
    );
    // Every client frame is masked.
    assert.equal(bytes[1] & 0x80, 0x80);
    const decoded = await collect(
      ReadableStream.from(chunksOf(bytes, [1, 7, 4096, 13]))
        .pipeThrough(new FrameDecoderStream({ role: "server" }))
        .pipeThrough(new MessageDecoderStream()),
    );
    const expected: DecodedMessage[] = input.map((m) =>
      typeof m === "string" ? { type: "text", data: m } : { type: "binary", data: m }
    );
    assert.deepEqual(decoded, expected);
  });

  test("a ping between fragments is reported between them", async () => {
    const enc = new TextEncoder();
    const frames: Frame[] = [
      { fin: false, rsv1: false, opcode: Opcode.Text, payload: enc.encode("Hel") },
      { fin: true, rsv1: false, opcode: Opcode.Ping, payload: enc.encode("p") },
      { fin: true, rsv1: false, opcode: Opcode.Continuation, payload: enc.encode("lo") },
    ];
    const out = await collect(ReadableStream.from(frames).pipeThrough(new MessageDecoderStream()));
    assert.deepEqual(out, [
      { type: "ping", data: enc.encode("p") },
      { type: "text", data: "Hello" },
    ]);
  });

  test("violations error the pipeline with the close code", async () => {
    // Unmasked frame sent to a server.
    await assert.rejects(
      collect(
        ReadableStream.from([new Uint8Array([0x81, 0x01, 0x41])])
          .pipeThrough(new FrameDecoderStream({ role: "server" })),
      ),
      (err: unknown) => err instanceof WebSocketError && err.closeCode === 1002,
    );
    // Invalid UTF-8 in the first fragment fails before the message ends.
    const frames: Frame[] = [
      { fin: false, rsv1: false, opcode: Opcode.Text, payload: new Uint8Array([0xc0, 0x80]) },
    ];
    await assert.rejects(
      collect(ReadableStream.from(frames).pipeThrough(new MessageDecoderStream())),
      (err: unknown) => err instanceof WebSocketError && err.closeCode === 1007,
    );
    // Too big for the limit.
    await assert.rejects(
      collect(
        ReadableStream.from([{
          fin: true,
          rsv1: false,
          opcode: Opcode.Binary,
          payload: new Uint8Array(11),
        }])
          .pipeThrough(new MessageDecoderStream({ maxMessageSize: 10 })),
      ),
      (err: unknown) => err instanceof WebSocketError && err.closeCode === 1009,
    );
  });

  test("a stream ending mid-frame errors instead of dropping bytes silently", async () => {
    await assert.rejects(
      collect(
        ReadableStream.from([new Uint8Array([0x82, 0x85, 1, 2, 3, 4, 5])])
          .pipeThrough(new FrameDecoderStream({ role: "server" })),
      ),
      /middle of a frame/,
    );
  });

  test("backpressure: an unread pipeline stops pulling its source", async () => {
    let pulls = 0;
    const frame = new Uint8Array([0x82, 0x80 | 100, 0, 0, 0, 0, ...new Uint8Array(100)]);
    const source = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulls++;
        if (pulls > 10_000) controller.close();
        else controller.enqueue(frame);
      },
    }, { highWaterMark: 1 });
    const messages = source
      .pipeThrough(new FrameDecoderStream({ role: "server" }))
      .pipeThrough(new MessageDecoderStream());
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(pulls < 20, `source pulled ${pulls} times with nobody reading`);
    const reader = messages.getReader();
    for (let i = 0; i < 50; i++) await reader.read();
    assert.ok(pulls >= 50);
    await reader.cancel();
  });
});
