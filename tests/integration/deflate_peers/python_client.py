"""A client peer: the Python `websockets` asyncio client (10.x legacy API).

Run as `/usr/bin/python3 -u python_client.py SPEC`. Same contract as
whatwg_client.ts: SPEC is JSON {url, cases, close: {by, code, reason},
compression?, ca?}; it connects (offering permessage-deflate unless
compression is false, trusting the CA file `ca` for wss://), runs the cases,
closes as asked and prints one JSON report line.

The cases mirror scenario.mjs byte for byte (the tests check this by hashing
what the Sluice server received).
"""

import asyncio
import hashlib
import json
import ssl
import sys

import websockets

KIB = 1024
MIB = 1024 * KIB
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
SENTENCE = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. "


def random_bytes(seed, n):
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:n])


def compressible_text(n):
    return (SENTENCE * (n // len(SENTENCE) + 1))[:n]


def random_text(seed, n):
    return "".join(ALPHABET[b & 63] for b in random_bytes(seed, n))


def small_message(i):
    return (
        f'{{"seq":{i},"topic":"prices","symbol":"SLC","bid":{1000 + i % 97},'
        f'"ask":{1001 + i % 89},"note":"the quick brown fox jumps over the lazy dog"}}'
    )


def messages_for(name):
    if name == "hello":
        return ["hello"]
    if name == "unicode":
        return ["h\u00e9llo w\u00f6rld \u2713 \U0001f389 \u4e2d\u6587"]
    if name == "empty-text":
        return [""]
    if name == "bytes-0-255":
        return [bytes(range(256))]
    if name == "text-1k":
        return [compressible_text(KIB)]
    if name == "text-64k":
        return [compressible_text(64 * KIB)]
    if name == "text-1m":
        return [compressible_text(MIB)]
    if name == "random-text-1k":
        return [random_text(name, KIB)]
    if name == "random-text-64k":
        return [random_text(name, 64 * KIB)]
    if name == "random-text-1m":
        return [random_text(name, MIB)]
    if name == "random-binary-1m":
        return [random_bytes(name, MIB)]
    if name == "small-1000":
        return [small_message(i) for i in range(1000)]
    raise ValueError(f"Unknown case {name}")


def describe(message):
    if isinstance(message, str):
        return f"text({len(message)} chars: {json.dumps(message[:40])})"
    return f"binary({len(message)} bytes)"


async def run_cases(ws, cases):
    results = []
    for name in cases:
        messages = messages_for(name)
        for message in messages:
            await ws.send(message)
        error = None
        for i, message in enumerate(messages):
            try:
                echoed = await asyncio.wait_for(ws.recv(), 15)
            except Exception as err:  # noqa: BLE001 - reported, not raised
                error = f"echo {i} of {len(messages)}: {type(err).__name__} {err}"
                break
            if error is None and (type(echoed) is not type(message) or echoed != message):
                error = f"echo {i} differs: sent {describe(message)}, got {describe(echoed)}"
        results.append({"name": name, "ok": error is None, "count": len(messages), **(
            {"error": error} if error else {})})
        if error and "Timeout" in error:
            break
    return results


async def main(spec):
    report = {"runtime": "python-websockets", "opened": False}
    context = None
    if spec["url"].startswith("wss:"):
        context = ssl.create_default_context(cafile=spec.get("ca"))
    try:
        ws = await websockets.connect(
            spec["url"],
            ssl=context,
            compression=None if spec.get("compression") is False else "deflate",
            max_size=64 * MIB,
            ping_interval=None,
            open_timeout=10,
        )
    except Exception as err:  # noqa: BLE001 - reported, not raised
        report["error"] = f"{type(err).__name__}: {err}"
        return report
    report["opened"] = True
    report["extensions"] = ws.response_headers.get("Sec-WebSocket-Extensions", "")
    report["cases"] = await run_cases(ws, spec["cases"])
    close = spec["close"]
    if close["by"] == "client":
        await ws.close(close["code"], close["reason"])
    else:
        await ws.send(f"CLOSE {close['code']} {close['reason']}")
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            pass
    await ws.wait_closed()
    report["close"] = {
        "code": ws.close_code,
        "reason": ws.close_reason,
        "wasClean": ws.close_code != 1006,
    }
    return report


def run():
    spec = json.loads(sys.argv[1])
    try:
        report = asyncio.run(asyncio.wait_for(main(spec), 45))
    except Exception as err:  # noqa: BLE001 - reported, not raised
        report = {"runtime": "python-websockets", "opened": False,
                  "error": f"{type(err).__name__}: {err}"}
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


run()
