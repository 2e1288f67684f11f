"""One keep-alive connection from the router to an instance, and its response parser.

The connection serves one exchange at a time (no upstream pipelining) and writes the
response straight into the client's transport. Within one ``data_received`` everything
for the client (head, body pieces, chunk framing) is gathered in ``cork`` and written with
one ``writelines``: a small response leaves in one send, not three.

The status line is rebuilt from the code with the standard reason phrase (RFC 9112 says
clients ignore the phrase), which spares a parser callback per response.

Response framing towards the client is the proxy's choice: Content-Length is passed on,
a chunked or close-delimited body is re-chunked for HTTP/1.1 clients, and an HTTP/1.0
client gets the raw body followed by a close.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

try:
    from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser
except ImportError:  # a fleet host's python3 has the standard library only (http1parse.py)
    from entrega.dataplane.http1parse import (  # type: ignore[assignment]
        HttpParserError,
        HttpParserUpgrade,
        HttpResponseParser,
    )

from entrega.dataplane.http import wire
from entrega.dataplane.http.pool import EndpointPool

if TYPE_CHECKING:
    from entrega.dataplane.http.exchange import Exchange


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("pool", "transport", "parser", "exchange", "idle_since", "headers",
                 "cork", "status", "got_bytes", "chunk_out", "until_close", "head_done",
                 "interim", "done", "keep", "read_paused", "write_paused")

    def __init__(self, pool: EndpointPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.parser = HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.idle_since = 0.0
        self.headers: list[bytes] = []  # name, value, name, value...
        self.cork: list[bytes] = []
        self.status = 0
        self.got_bytes = False
        self.chunk_out = False
        self.until_close = False
        self.head_done = False
        self.interim = False
        self.done = False
        self.keep = False
        self.read_paused = False
        self.write_paused = False

    # -- lifecycle, used by Exchange and EndpointPool ---------------------------------

    def begin(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.headers = []
        self.got_bytes = self.chunk_out = self.until_close = False
        self.head_done = self.interim = self.done = False
        if self.write_paused:
            exchange.client.pause(wire.PAUSE_UPSTREAM)
        if exchange.client.write_paused:
            self.pause_reading()

    def detach(self) -> None:
        """Unbind from the exchange (which keeps no further interest in this connection)."""
        exchange = self.exchange
        self.exchange = None
        if exchange is not None and self.write_paused:
            exchange.client.resume(wire.PAUSE_UPSTREAM)
        if self.read_paused:
            self.read_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def is_closed(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.transport.close()

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        exchange = self.exchange
        if exchange is None:
            self.pool.discard(self)
            return
        self.detach()
        if exchange.tunnel:
            exchange.upstream_lost(self, True)
        elif self.until_close and self.head_done and not self.done:
            # The body was delimited by the close: that is its normal end.
            if self.chunk_out:
                self.cork.append(wire.LAST_CHUNK)
            self.flush(exchange)
            exchange.response_complete(self, reusable=False)
        else:
            exchange.upstream_lost(self, self.got_bytes)

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None:
            self.exchange.client.pause(wire.PAUSE_UPSTREAM)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None:
            self.exchange.client.resume(wire.PAUSE_UPSTREAM)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # An idle connection must stay silent; whatever this is, drop the connection.
            self.transport.close()
            return
        if exchange.tunnel:
            exchange.client.transport.write(data)
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            if self.cork:
                self.flush(exchange)
            rest = data[exc.args[0]:]
            if rest:
                exchange.client.transport.write(rest)
            exchange.tunnel_open()
            return
        except HttpParserError as exc:
            if self.cork:
                self.flush(exchange)
            exchange.fail(502, f"upstream {self.pool.host}:{self.pool.port} of release "
                               f"{exchange.version} sent an invalid response: {exc}")
            return
        if self.cork:
            self.flush(exchange)
        if self.done:
            exchange.response_complete(self, reusable=self.keep)

    def flush(self, exchange: Exchange) -> None:
        cork = self.cork
        if len(cork) == 1:
            exchange.client.transport.write(cork[0])
        else:
            exchange.client.transport.writelines(cork)
        cork.clear()

    # -- httptools callbacks ----------------------------------------------------------------

    # (no on_message_begin: the headers are reset where they are consumed, one callback
    # less per response)

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        headers.append(name)
        headers.append(value)

    def on_headers_complete(self) -> None:
        exchange = cast("Exchange", self.exchange)
        parser = self.parser
        status = self.status = parser.get_status_code()
        headers = self.headers
        self.headers = []
        if status < 200 and status != 101:
            self.interim = True
            if not exchange.http10:
                self.cork += (wire.status_line(status), wire.CRLF)
            return
        self.head_done = True
        out = [wire.status_line(status)]
        length = chunked = False
        connection: list[bytes] | None = None
        upgrade = b""
        special = wire.RESPONSE_SPECIAL
        keys = wire.RESPONSE_KEYS
        for i in range(0, len(headers), 2):
            name = headers[i]
            value = headers[i + 1]
            kind = None
            if (len(name) << 8 | (name[0] | 0x20)) in keys:  # wire.name_key, inlined
                kind = special.get(name.lower())
            if kind is None:
                out.append(name)
                out.append(wire.COLON)
                out.append(value)
                out.append(wire.CRLF)
            elif kind == wire.CONTENT_LENGTH:
                length = True
                out += (name, wire.COLON, value, wire.CRLF)
            elif kind == wire.TRANSFER_ENCODING:
                chunked = True
            elif kind == wire.CONNECTION:
                if connection is None:
                    connection = []
                connection.append(value)
            elif kind == wire.UPGRADE:
                upgrade = value
        if connection is not None:
            out = wire.drop_named_headers(out, wire.named_hop_headers(connection), head=1)
        out.append(exchange.route_header)
        keep = exchange.keep_alive and not exchange.client.closing
        if status == 101:
            out += (wire.CONN_UPGRADE, b"Upgrade: ", upgrade, wire.CRLF)
        elif exchange.is_head or status == 204 or status == 304:
            pass
        elif chunked or not length:
            self.until_close = not chunked
            if exchange.http10:
                keep = False  # the close delimits the body for an HTTP/1.0 client
            else:
                self.chunk_out = True
                out.append(wire.CHUNKED)
        if status != 101:
            if not keep:
                out.append(wire.CONN_CLOSE)
            elif exchange.http10:
                out.append(wire.CONN_KEEP_ALIVE)
        out.append(wire.CRLF)
        exchange.keep_alive = keep
        self.keep = parser.should_keep_alive() and not self.until_close
        self.cork.append(b"".join(out))
        exchange.response_started(status)
        if exchange.is_head:
            # httptools cannot be told that a HEAD response has no body; the upstream
            # sends nothing more for this request, so start the next one afresh.
            self.done = True
            self.parser = HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        if self.chunk_out:
            self.cork += (b"%x\r\n" % len(body), body, wire.CRLF)
        else:
            self.cork.append(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.status == 101:
            return
        if self.chunk_out:
            self.cork.append(wire.LAST_CHUNK)
        self.done = True
