"""A server peer: the Python `websockets` asyncio server (10.x legacy API).

Run as `/usr/bin/python3 -u python_server.py [SPEC]`; SPEC is JSON
{compression?: boolean} (default true: permessage-deflate, websockets'
default). Same behaviour as ws_server.mjs: prints {"port": N} first, then
open (with the agreed extensions) and close events per connection; echoes
every message with its type; "CLOSE <code> <reason>" makes it close. Exits
when stdin closes.
"""

import asyncio
import json
import sys
from urllib.parse import parse_qs, urlsplit

import websockets

SPEC = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}


def report(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def handler(ws, path=None):
    conn_id = parse_qs(urlsplit(ws.path).query).get("id", [""])[0]
    extensions = ws.response_headers.get("Sec-WebSocket-Extensions", "")
    report({"event": "open", "id": conn_id, "extensions": extensions})
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith("CLOSE "):
                _, code, *reason = message.split(" ")
                await ws.close(int(code), " ".join(reason))
                break
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass
    await ws.wait_closed()
    report({"event": "close", "id": conn_id, "code": ws.close_code, "reason": ws.close_reason})


async def main():
    async with websockets.serve(
        handler,
        "127.0.0.1",
        0,
        max_size=64 * 1024 * 1024,
        compression=None if SPEC.get("compression") is False else "deflate",
        ping_interval=None,
    ) as server:
        report({"port": server.sockets[0].getsockname()[1], "version": websockets.__version__})
        loop = asyncio.get_running_loop()
        # Exit once stdin closes: the test that started us is gone.
        await loop.run_in_executor(None, sys.stdin.read)


asyncio.run(main())
