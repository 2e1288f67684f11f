"""The private channel between the router's supervisor and one of its workers.

A socketpair made by the supervisor; the worker inherits one end (``--link-fd``). It
carries JSON lines, one request from the supervisor and one answer from the worker at a
time, so there is no request id: answers come back in order.

    {"op": "start", "slot": i, "listen_fds": [fd], "preview_fds": [fd],
     "routes": {...} | null}                  keep slot i's inherited sockets (close the
                                              others), apply the table, begin accepting
    {"op": "apply", "routes": {...}}          swap the route table
    {"op": "status"}    {"draining": {release: in flight}, "connections": n}
    {"op": "metrics"}   MetricsRegistry.to_dict() of this worker
    {"op": "drain"}     answered at once; then stop accepting, drain and exit

An answer is ``{"ok": true, ...}`` or ``{"error": "..."}``. A socketpair instead of a
socket file per worker: nothing to name, clean up or protect, no sun_path length limit,
and end-of-file on it tells a worker that its supervisor is gone (it then drains and
exits rather than hold the port as an orphan nobody can reconfigure).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from entrega.errors import LinkClosed, WorkerRefused

#: a metrics answer carries a ring of 2048 latencies per release; a route table can list
#: many endpoints; the control API accepts bodies up to this size too
MAX_LINE_BYTES = 16 * 1024 * 1024

Message = dict[str, Any]


class WorkerLink:
    """The supervisor's end: ``call`` sends one request and returns its answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()
        self._broken = False

    async def call(self, op: str, *, timeout_s: float, **fields: object) -> Message:
        """Raises LinkClosed when the worker is gone or does not answer in ``timeout_s``
        (the link is then unusable: a late answer would pair with the next request)."""
        async with self._lock:
            if self._broken:
                raise LinkClosed("link already broken")
            try:
                line = await asyncio.wait_for(self._exchange({"op": op, **fields}), timeout_s)
                answer = json.loads(line)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError, TimeoutError) as exc:
                self._broken = True
                raise LinkClosed(f"{op}: {_broken(exc, timeout_s)}",
                                 timed_out=isinstance(exc, TimeoutError)) from exc
        if not isinstance(answer, dict) or "error" in answer:
            error = answer.get("error") if isinstance(answer, dict) else answer
            raise WorkerRefused(str(error))
        return answer

    async def _exchange(self, request: Message) -> bytes:
        self._writer.write(json.dumps(request).encode() + b"\n")
        await self._writer.drain()
        return await self._reader.readuntil(b"\n")

    def close(self) -> None:
        self._broken = True
        self._writer.close()


def _broken(exc: BaseException, timeout_s: float) -> str:
    """Why the link broke, in words (the sentence ends up in the router's restart log)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the worker closed its link"
    if isinstance(exc, asyncio.LimitOverrunError):
        return f"an answer longer than {MAX_LINE_BYTES} bytes"
    if isinstance(exc, ValueError):
        return f"an answer that is not JSON ({exc})"
    return f"the link failed ({getattr(exc, 'strerror', None) or exc})"


async def serve_link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     handle: Callable[[Message], Awaitable[Message]]) -> None:
    """The worker's end: answer requests in order until the supervisor closes the link."""
    try:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                return
            try:
                request = json.loads(line)
                answer = await handle(request)
            except ValueError as exc:
                answer = {"error": str(exc)}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, asyncio.LimitOverrunError):
        return
