"""The router's control API: HTTP/1.1 + JSON on a unix socket, for the controller only.

    GET  /health     {"ok": true, "pid", "listen", "preview_listen", "app",
                      "workers": {"count", "pids", "spare"}}
    GET  /routes     Routes.to_dict(), with ``draining`` {release: requests in flight}
    PUT  /routes     body Routes.to_dict(); validated, persisted, then applied; 200 {"ok"}
    GET  /metrics    {"started_at", "releases": {version: ReleaseMetrics fields},
                      "restarts": [{"what", "at", "reason"}] (oldest first, bounded)}
    POST /shutdown   200 at once, then drain and exit

The supervisor serves it (process/router_supervisor.py) for its workers, behind :class:`DataPlane`.
Validation and persistence happen here, once, before the data plane sees the table.
The socket file is created mode 0600: whoever can reach it can reroute all traffic.
Not on the data path, so it uses asyncio streams and a minimal parser: one request per
read of the head, Content-Length bodies only.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from entrega.dataplane.admin.state import parse_routes, save_routes
from entrega.dataplane.routes import Routes
from entrega.errors import RoutesNotApplied

MAX_BODY_BYTES = 16 * 1024 * 1024
#: a request head (and then its body) must arrive within this; the controller sends each
#: in one write, so only a stuck or hostile client is ever cut off
HEADER_TIMEOUT_S = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Content Too Large", 500: "Internal Server Error"}


def control_in_use(path: str) -> bool:
    """True when something answers on the control socket ``path`` (a router runs)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
        return True


class DataPlane(Protocol):
    """What the control API reads and changes."""

    def health(self) -> dict[str, object]:
        """Fields added to ``GET /health``."""
        ...

    async def routes(self) -> dict[str, object]:
        """The live table, ``Routes.to_dict()`` with ``draining`` filled in."""
        ...

    async def apply(self, routes: Routes) -> None:
        """Swap in a validated table; raises RoutesNotApplied."""
        ...

    async def metrics(self) -> dict[str, object]:
        """``MetricsRegistry.to_dict()`` form."""
        ...

    async def connections(self) -> int:
        """Client connections open now."""
        ...


class ControlServer:
    def __init__(self, plane: DataPlane, *, state_path: Path, info: dict[str, object],
                 on_shutdown: Callable[[], None],
                 header_timeout_s: float = HEADER_TIMEOUT_S) -> None:
        self.plane = plane
        self.header_timeout_s = header_timeout_s
        self.state_path = state_path
        self.info = info
        self.on_shutdown = on_shutdown
        self._lock = asyncio.Lock()
        self._server: asyncio.AbstractServer | None = None
        #: the connections open now (a controller keeps its connection alive)
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, path: str) -> asyncio.AbstractServer:
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=path)
        finally:
            os.umask(old_umask)
        return self._server

    def close(self) -> None:
        """Stop accepting and end every open connection now. A connection kept alive must
        not outlive the router's stop: its handler would go on answering (the router
        would look alive to its client) until its header timeout, and a cancellation at
        exit can be lost when it meets a request arriving (Python 3.11's ``wait_for``),
        which held a router's exit for those 10 s."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                                  self.header_timeout_s)
                except (asyncio.IncompleteReadError, TimeoutError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    await self._answer(writer, 400, {"error": "malformed request line"}, False)
                    return
                method, target, _ = parts
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                keep = headers.get("connection", "").lower() != "close"
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    await self._answer(writer, 411, {"error": "send a Content-Length body"}, False)
                    return
                length = int(headers.get("content-length", "0") or 0)
                if length > MAX_BODY_BYTES:
                    await self._answer(writer, 413, {"error": "body too large"}, False)
                    return
                body = await asyncio.wait_for(reader.readexactly(length),
                                              self.header_timeout_s) if length else b""
                status, payload = await self._dispatch(method, target.split("?")[0], body)
                await self._answer(writer, status, payload, keep)
                if method == "POST" and target == "/shutdown" and status == 200:
                    self.on_shutdown()
                    return
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError, TimeoutError):
            return
        except asyncio.CancelledError:
            # The router is exiting with this connection kept alive by its client (the
            # controller's pooled one): end it quietly. Raising would make asyncio log the
            # cancellation as an error with a traceback in router.log.
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, status: int, payload: object,
                      keep: bool) -> None:
        body = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{'' if keep else 'Connection: close' + chr(13) + chr(10)}\r\n".encode() + body)
        await writer.drain()

    async def _dispatch(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        plane = self.plane
        if path == "/health":
            return 200, {"ok": True, "pid": os.getpid(), **self.info, **plane.health()}
        if path == "/routes":
            if method == "GET":
                return 200, await plane.routes()
            if method == "PUT":
                return await self._put_routes(body)
            return 405, {"error": f"{method} /routes: use GET or PUT"}
        if path == "/metrics":
            return 200, await plane.metrics()
        if path == "/shutdown":
            if method != "POST":
                return 405, {"error": "use POST /shutdown"}
            return 200, {"ok": True, "draining": await plane.connections()}
        return 404, {"error": f"no such endpoint {path}; try /health /routes /metrics /shutdown"}

    async def _put_routes(self, body: bytes) -> tuple[int, object]:
        try:
            routes = parse_routes(body)
        except ValueError as exc:
            return 400, {"error": f"PUT /routes: {exc}"}
        async with self._lock:  # one writer at a time: the file and the table agree
            try:
                routes.validate()  # before persisting: the file only holds valid tables
            except ValueError as exc:
                return 400, {"error": f"PUT /routes: invalid route table: {exc}"}
            try:
                await asyncio.to_thread(save_routes, self.state_path, routes)
            except OSError as exc:
                return 500, {"error": f"cannot persist routes to {self.state_path}: {exc}"}
            try:
                await self.plane.apply(routes)
            except RoutesNotApplied as exc:
                return 500, {"error": f"PUT /routes: persisted but not applied: {exc}"}
        return 200, {"ok": True}
