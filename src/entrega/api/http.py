"""Serving the API over HTTP/1.1: uvicorn, with a deadline on every request head.

uvicorn times out idle keep-alive connections, but not a client that trickles a request
head a byte at a time (slowloris): each byte cancels the idle timer and nothing else
watches, so a few hundred such clients hold the API forever. Here every request head
(from the connection's first byte, or the first byte after the previous answer) must be
complete within ``header_timeout_s``; a late one is answered 408 and closed. Bodies are
not limited by it: an artifact upload may take long, and is bounded by its size instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TIMEOUT_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                  b"content-length: 40\r\nconnection: close\r\n\r\n"
                  b"the request head did not arrive in time\n")


class HeadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a header deadline (set by :func:`with_header_timeout`)."""

    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that sends nothing at all is cut off too

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self.head_deadline is None:
            self.head_deadline = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _too_slow(self) -> None:
        self.head_deadline = None
        if not self.transport.is_closing():
            self.transport.write(TIMEOUT_ANSWER)
            self.transport.close()


def with_header_timeout(header_timeout_s: float) -> type[HeadDeadlineProtocol]:
    """The protocol class for uvicorn's ``http=`` with this header deadline."""
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,),
                {"header_timeout_s": header_timeout_s})


def http_server(app: Any, *, host: str, port: int, header_timeout_s: float) -> uvicorn.Server:
    """The uvicorn server ``entrega server`` runs. Signals are the caller's business:
    uvicorn's own handlers re-raise the signal after serving, which would kill the process
    before the caller has stopped what it runs beside the API."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=False, lifespan="off",
                                           http=with_header_timeout(header_timeout_s)))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    return server
