// A real HTTP client for the plain-HTTP tests: the runtime's own `fetch`
// (Node's undici, Deno's, Bun's) against a Sluice server with a `fetch`
// option (see tests/integration/http_test.ts for the routes). Prints one
// JSON line: what each step saw, or { failed } with the error.
//
// Usage: <runtime> http_fetch_client.mjs http://127.0.0.1:PORT

const base = (globalThis.Deno ? Deno.args : process.argv.slice(2))[0];
const steps = {};

async function main() {
  const hello = await fetch(`${base}/hello?name=ada`, { headers: { "X-Test": "1" } });
  steps.hello = {
    status: hello.status,
    type: hello.headers.get("content-type"),
    length: hello.headers.get("content-length"),
    text: await hello.text(),
  };

  const json = await fetch(`${base}/echo`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ a: [1, 2, 3], s: "é" }),
  });
  steps.json = { status: json.status, body: await json.json() };

  // A streamed upload: chunked where the client streams request bodies.
  const parts = ["stream", "ed ", "upload"];
  const upload = await fetch(`${base}/echo`, {
    method: "PUT",
    body: new ReadableStream({
      pull(controller) {
        const part = parts.shift();
        if (part === undefined) controller.close();
        else controller.enqueue(new TextEncoder().encode(part));
      },
    }),
    duplex: "half",
  });
  steps.upload = { status: upload.status, text: await upload.text() };

  const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => i & 0xff);
  const count = await fetch(`${base}/count`, { method: "POST", body: big });
  steps.big = await count.json();

  const stream = await fetch(`${base}/stream?n=5`);
  steps.stream = {
    status: stream.status,
    encoding: stream.headers.get("transfer-encoding"),
    text: await stream.text(),
  };

  const head = await fetch(`${base}/hello?name=ada`, { method: "HEAD" });
  steps.head = {
    status: head.status,
    length: head.headers.get("content-length"),
    text: await head.text(),
  };

  const failing = await fetch(`${base}/throw`);
  steps.throw = { status: failing.status };

  // Sequential requests reuse the connection (keep-alive): same client port.
  const ports = [];
  for (let i = 0; i < 3; i++) ports.push((await (await fetch(`${base}/remote`)).json()).port);
  steps.ports = ports;

  const missing = await fetch(`${base}/nowhere`);
  steps.missing = { status: missing.status, text: await missing.text() };
}

main().then(
  () => console.log(JSON.stringify({ ok: true, steps })),
  (error) => console.log(JSON.stringify({ failed: String(error?.stack ?? error), steps })),
).finally(() => {
  // Pooled keep-alive connections must not keep the process alive.
  setTimeout(() => (globalThis.Deno ? Deno.exit(0) : process.exit(0)), 10);
});
