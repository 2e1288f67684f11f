"""A tiny HTTP/1.1 test backend: ``python backend.py NAME PORT``.

Answers with its own name and serves the odd behaviours the router tests need:

    /                 body NAME, header X-Backend: NAME
    /headers          JSON of the request headers (lowercased names)
    /slow?ms=N        answers after N ms
    /bytes?n=N        N bytes of a fixed pattern, Content-Length, streamed
    /chunked?n=K&size=S   K chunks of S bytes, Transfer-Encoding: chunked
    /until-close?n=N  N bytes, no length, then close
    /truncate         Content-Length 1000, sends 10 bytes, closes
    /status?code=N    answers status N
    /arm-close?after=N  answers, then closes this connection when its next request
                      arrives, after reading N bytes of its body
    POST /sha         sha256 hex and length of the request body (CL or chunked)
    /ws               Upgrade: 101, then echoes bytes
    /stats            {"connections": connections accepted so far, not counting /stats ones,
                       "sleeping": requests read whole and waiting in /slow now}
    /.entrega/...     JSON {"backend", "method", "path", "headers"}: stands in for entrega's
                      server behind the router's control-plane passthrough
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern_bytes(n: int) -> bytes:
    reps, rest = divmod(n, len(PATTERN))
    return PATTERN * reps + PATTERN[:rest]


async def _digest(reader: asyncio.StreamReader, sha: Any, n: int) -> bool:
    """Hash the next ``n`` body bytes into ``sha``; False if the client left first."""
    while n:
        piece = await reader.read(min(n, 65536))
        if not piece:
            return False
        sha.update(piece)
        n -= len(piece)
    return True

class Backend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.connections = 0
        self.stats_calls = 0
        self.sleeping = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        armed: int | None = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if armed is not None:
                    if armed:
                        await reader.readexactly(armed)
                    return  # closes without answering: the idle-close race, on purpose
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        k = k.strip().lower()
                        headers[k] = f"{headers[k]}, {v.strip()}" if k in headers else v.strip()
                body = b""
                sha = hashlib.sha256()
                size = 0

                if "chunked" in headers.get("transfer-encoding", ""):
                    while True:
                        n = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        if n == 0:
                            await reader.readuntil(b"\r\n")
                            break
                        if not await _digest(reader, sha, n):
                            return
                        size += n
                        await reader.readexactly(2)
                elif "content-length" in headers:
                    n = int(headers["content-length"])
                    if not await _digest(reader, sha, n):
                        return
                    size += n
                url = urlsplit(target)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
                path = url.path
                extra = f"X-Backend: {self.name}\r\n"
                if path == "/slow":
                    self.sleeping += 1
                    try:
                        await asyncio.sleep(int(q.get("ms", "100")) / 1000)
                    finally:
                        self.sleeping -= 1
                    body = self.name.encode()
                elif path == "/headers":
                    body = json.dumps(headers).encode()
                elif path.startswith("/.entrega/"):
                    body = json.dumps({"backend": self.name, "method": method, "path": target,
                                       "headers": headers, "size": size}).encode()
                elif path == "/stats":
                    self.stats_calls += 1  # each call comes on a connection of its own
                    body = json.dumps({"connections": self.connections - self.stats_calls,
                                       "sleeping": self.sleeping}).encode()
                elif path == "/sha":
                    body = json.dumps({"sha256": sha.hexdigest(), "size": size}).encode()
                elif path == "/status":
                    code = int(q.get("code", "200"))
                    writer.write(f"HTTP/1.1 {code} X\r\n{extra}Content-Length: 4\r\n\r\nnope"
                                 .encode())
                    continue
                elif path == "/bytes":
                    n = int(q["n"])
                    writer.write(f"HTTP/1.1 200 OK\r\n{extra}Content-Length: {n}\r\n\r\n"
                                 .encode())
                    await self._stream(writer, n)
                    continue
                elif path == "/chunked":
                    count, s = int(q.get("n", "10")), int(q.get("size", "1000"))
                    writer.write(f"HTTP/1.1 200 OK\r\n{extra}Transfer-Encoding: chunked\r\n\r\n"
                                 .encode())
                    for i in range(count):
                        writer.write(b"%x\r\n" % s + bytes([65 + i % 26]) * s + b"\r\n")
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                    continue
                elif path == "/until-close":
                    n = int(q["n"])
                    writer.write(f"HTTP/1.1 200 OK\r\n{extra}Connection: close\r\n\r\n".encode())
                    await self._stream(writer, n)
                    return
                elif path == "/truncate":
                    writer.write(f"HTTP/1.1 200 OK\r\n{extra}Content-Length: 1000\r\n\r\n"
                                 .encode() + b"x" * 10)
                    await writer.drain()
                    return
                elif path == "/ws":
                    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\n" + extra.encode() + b"\r\n")
                    while data := await reader.read(65536):
                        writer.write(data)
                        await writer.drain()
                    return
                elif path == "/arm-close":
                    armed = int(q.get("after", "0"))
                    body = self.name.encode()
                else:
                    body = self.name.encode()
                if method == "HEAD":
                    writer.write(f"HTTP/1.1 200 OK\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
                                 .encode())
                else:
                    conn = "" if keep else "Connection: close\r\n"
                    writer.write(f"HTTP/1.1 200 OK\r\n{extra}{conn}Content-Length: {len(body)}"
                                 f"\r\n\r\n".encode() + body)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter, n: int) -> None:
        sent = 0
        while sent < n:
            piece = PATTERN[: min(len(PATTERN), n - sent)]
            writer.write(piece)
            sent += len(piece)
            await writer.drain()


async def main(name: str, port: int) -> None:
    backend = Backend(name)
    server = await asyncio.start_server(backend.handle, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop
        uvloop.run(main(sys.argv[1], int(sys.argv[2])))
    except KeyboardInterrupt:
        pass
