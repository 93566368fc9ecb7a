"""An interop peer: the Python `websockets` asyncio server (10.x legacy API).

Same behaviour as every peer in this folder (see peers.ts): prints {"port": N}
as its first stdout line, then one JSON line per event; echoes each message with
the same type, followed by a JSON text report of what arrived; "CMD close
<code|none> [reason]" makes it close; it selects the first offered subprotocol
it supports. It exits when stdin closes.
"""

import asyncio
import hashlib
import json
import sys
from urllib.parse import parse_qs, urlsplit

import websockets

SUPPORTED = ["sluice.v1", "sluice.v2"]
MAX = 64 * 1024 * 1024


def report(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def select_subprotocol(offered, supported):
    for protocol in offered:
        if protocol in supported:
            return protocol
    return None


async def handler(ws, path=None):
    query = parse_qs(urlsplit(ws.path).query)
    conn_id = query.get("id", [""])[0]
    report({"event": "open", "id": conn_id, "protocol": ws.subprotocol or ""})
    try:
        async for message in ws:
            if isinstance(message, str):
                if message.startswith("CMD "):
                    parts = message.split(" ")
                    if parts[1] == "close":
                        if parts[2] == "none":
                            await ws.close()
                        else:
                            await ws.close(int(parts[2]), " ".join(parts[3:]))
                    continue
                data = message.encode("utf-8")
                kind = "text"
            else:
                data = message
                kind = "binary"
            await ws.send(message)
            await ws.send(json.dumps({
                "kind": kind,
                "length": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }))
    except websockets.ConnectionClosed:
        pass
    await ws.wait_closed()
    report({"event": "close", "id": conn_id, "code": ws.close_code, "reason": ws.close_reason})


async def main():
    async with websockets.serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=SUPPORTED,
        select_subprotocol=select_subprotocol,
        max_size=MAX,
        compression=None,
        ping_interval=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        report({"port": port, "version": websockets.__version__})
        loop = asyncio.get_running_loop()
        # Exit once stdin closes: the test that started us is gone.
        await loop.run_in_executor(None, sys.stdin.read)


asyncio.run(main())
