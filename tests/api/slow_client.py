"""A slowloris client on real sockets: a request head trickled a few bytes at a time."""

from __future__ import annotations

import asyncio
import time


async def trickle_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                       every_s: float, for_s: float) -> tuple[float, bytes]:
    """Send a head that never ends, a header line every ``every_s``, until the server
    closes (or ``for_s`` passes). Returns (seconds until closed, what the server said)."""
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    said = b""
    n = 0
    while time.monotonic() - started < for_s:
        try:
            said += await asyncio.wait_for(reader.read(4096), every_s)
        except TimeoutError:
            pass
        except ConnectionError:  # closed while our last line was on its way: cut off
            return time.monotonic() - started, said
        else:
            if reader.at_eof():
                return time.monotonic() - started, said
        try:
            writer.write(b"X-Slow-%d: 1\r\n" % n)
            await writer.drain()
        except ConnectionError:
            return time.monotonic() - started, said
        n += 1
    return time.monotonic() - started, said
