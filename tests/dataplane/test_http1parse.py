"""The standard-library HTTP/1.x parser behaves as httptools does, callback for callback.

A fleet host's router runs on the host's own python3 without httptools
(dataplane/http1parse.py); the HTTP path must see the same callbacks, answers and errors
there. Each message below is fed to both parsers whole and cut at every byte, and the
callbacks' log is compared.
"""

from __future__ import annotations

from typing import Any

import httptools
import pytest

from entrega.dataplane import http1parse


class Log:
    """A protocol object recording what a parser calls and answers, in order."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.events: list[tuple[object, ...]] = []
        self.body = b""

    def on_message_begin(self) -> None:
        self.events.append(("begin",))

    def on_url(self, url: bytes) -> None:
        # httptools may give the URL in pieces (as the bytes arrive); the proxy joins them
        if self.events and self.events[-1][0] == "url":
            url = bytes(self.events.pop()[1]) + url  # type: ignore[arg-type]
        self.events.append(("url", url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.events.append(("header", name, value))

    def on_headers_complete(self) -> None:
        p = self.parser
        answer: tuple[object, ...] = (p.get_http_version(), p.should_keep_alive(),
                                      p.should_upgrade())
        if hasattr(p, "get_method"):
            answer += (p.get_method(),)
        else:
            answer += (p.get_status_code(),)
        self.events.append(("headers", *answer))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.events.append(("complete", self.body))
        self.body = b""


def parse(module: Any, kind: str, chunks: list[bytes]) -> list[tuple[object, ...]]:
    log = Log()
    log.parser = getattr(module, kind)(log)
    fed = 0
    for chunk in chunks:
        try:
            log.parser.feed_data(chunk)
        except module.HttpParserUpgrade as exc:
            log.events.append(("upgrade", fed + exc.args[0]))
            break
        except module.HttpParserError:
            log.events.append(("error",))
            break
        fed += len(chunk)
    if log.body:
        log.events.append(("body so far", log.body))
    return log.events


REQUESTS = {
    "get": b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Beta-User: yes\r\n\r\n",
    "two pipelined": b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
    "content-length body": b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    "chunked body": b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
    "chunked with trailer": b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"1\r\nz\r\n0\r\nX-T: 1\r\n\r\n",
    "http/1.0": b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
    "http/1.0 keep-alive": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "close": b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    "websocket upgrade": b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                         b"\r\nframes",
    "no space after colon": b"GET / HTTP/1.1\r\nHost:x\r\n\r\n",
    "bad request line": b"GET\r\n\r\n",
    "bad header": b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
}
RESPONSES = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
    "no reason phrase": b"HTTP/1.1 204\r\n\r\n",
    "304 without body": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    "interim 100 then 200": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                            b"Content-Length: 1\r\n\r\n!",
    "until close": b"HTTP/1.1 200 OK\r\n\r\nall the rest",
    "switching protocols": b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                           b"Upgrade: websocket\r\n\r\ntunnel",
    "bad status": b"HTTP/1.1 OK\r\n\r\n",
    "5xx": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
}


def cuts(data: bytes) -> list[list[bytes]]:
    return [[data]] + [[data[:i], data[i:]] for i in range(1, len(data))]


@pytest.mark.parametrize("name", list(REQUESTS))
def test_requests_parse_as_with_httptools(name: str) -> None:
    data = REQUESTS[name]
    for chunks in cuts(data):
        expected = parse(httptools, "HttpRequestParser", chunks)
        assert parse(http1parse, "HttpRequestParser", chunks) == expected, chunks


@pytest.mark.parametrize("name", list(RESPONSES))
def test_responses_parse_as_with_httptools(name: str) -> None:
    data = RESPONSES[name]
    for chunks in cuts(data):
        expected = parse(httptools, "HttpResponseParser", chunks)
        assert parse(http1parse, "HttpResponseParser", chunks) == expected, chunks


def test_a_failing_callback_is_a_callback_error_with_its_cause() -> None:
    class Refuses(Log):
        def on_headers_complete(self) -> None:
            raise OverflowError("too large")

    parser = http1parse.HttpRequestParser(Refuses())
    with pytest.raises(http1parse.HttpParserCallbackError) as caught:
        parser.feed_data(b"GET / HTTP/1.1\r\n\r\n")
    assert isinstance(caught.value.__context__, OverflowError)


def test_an_endless_head_is_refused() -> None:
    parser = http1parse.HttpRequestParser(Log())
    with pytest.raises(http1parse.HttpParserError):
        parser.feed_data(b"GET / HTTP/1.1\r\nX: " + b"a" * (http1parse.MAX_HEAD_BYTES + 10))
