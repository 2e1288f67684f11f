"""An HTTP/1.x message parser in the standard library, with httptools' interface.

The router parses requests and responses with httptools (llhttp, in C) wherever it is
installed, as it is with entrega's own dependencies. A fleet host runs the router from
the host agent's sources with the host's own ``python3`` and nothing else (see
``targets/ssh/agent.py``): there, ``http/proxy.py`` and ``http/upstream.py`` fall back to
these classes. They keep the contract the HTTP path relies on, and nothing more:

- the same callbacks on the protocol object, each called only when the object has it:
  ``on_message_begin``, ``on_url``, ``on_header``, ``on_headers_complete``, ``on_body``,
  ``on_message_complete``;
- ``get_method``, ``get_http_version``, ``should_keep_alive``, ``should_upgrade`` and
  (responses) ``get_status_code``;
- the same errors: :class:`HttpParserError` for a malformed message,
  :class:`HttpParserCallbackError` when a callback raised (the callback's exception is
  its ``__context__``), :class:`HttpParserUpgrade` with the offset in the data just fed
  where the upgraded (tunnelled) bytes begin.

Bodies are framed as RFC 9112 says: chunked, else Content-Length, else none (a request)
or until the connection closes (a response, which then never completes here: the
connection's end completes it). A head larger than ``MAX_HEAD_BYTES`` is an error rather
than a buffer that grows without bound. It is slower than llhttp, which matters only for
throughput on a host whose python3 lacks httptools (``pip install httptools`` there makes
the router use it).
"""

from __future__ import annotations

from typing import Any

from entrega.errors import HttpParserCallbackError, HttpParserError, HttpParserUpgrade

#: A head (request or status line and headers) must fit in this many bytes.
MAX_HEAD_BYTES = 1024 * 1024

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                   b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class _Parser:
    """What requests and responses share: the head, the body framing, the callbacks."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self._callbacks = {name: getattr(protocol, name, None) for name in (
            "on_message_begin", "on_url", "on_header", "on_headers_complete", "on_body",
            "on_message_complete")}
        self._buffer = b""
        self._state = _HEAD
        self._remaining = 0
        self._version = "1.1"
        self._keep_alive = True
        self._upgrade = False
        self._upgrade_header = False

    # -- the interface -----------------------------------------------------------------

    def get_http_version(self) -> str:
        return self._version

    def should_keep_alive(self) -> bool:
        return self._keep_alive

    def should_upgrade(self) -> bool:
        return self._upgrade_header

    def feed_data(self, data: bytes) -> None:
        # Offsets into ``data`` are needed for an upgrade: bytes held from an earlier call
        # are all before it.
        held = len(self._buffer)
        self._buffer += data
        pos = 0
        buf = self._buffer
        while pos < len(buf):
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_HEAD_BYTES:
                        raise HttpParserError("the message head is too large")
                    break
                if end == pos:  # a stray empty line between messages (RFC 9112 2.2)
                    pos += 2
                    continue
                self._head(buf[pos:end])
                pos = end + 4
                if self._upgrade:
                    self._complete()
                    raise HttpParserUpgrade(max(0, pos - held))
                if self._state == _DONE:
                    self._complete()
            elif state == _LENGTH:
                take = min(self._remaining, len(buf) - pos)
                self._call("on_body", buf[pos:pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._complete()
            elif state == _UNTIL_CLOSE:
                self._call("on_body", buf[pos:])
                pos = len(buf)
            elif state == _CHUNK_SIZE:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if len(buf) - pos > 1024:
                        raise HttpParserError("a chunk size line is too long")
                    break
                size = buf[pos:end].split(b";", 1)[0].strip()
                if not size or any(c not in b"0123456789abcdefABCDEF" for c in size):
                    raise HttpParserError(f"invalid chunk size {bytes(size)!r}")
                self._remaining = int(size, 16)
                pos = end + 2
                self._state = _CHUNK_DATA if self._remaining else _TRAILERS
            elif state == _CHUNK_DATA:
                take = min(self._remaining, len(buf) - pos)
                self._call("on_body", buf[pos:pos + take])
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buf) - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise HttpParserError("a chunk does not end with CRLF")
                pos += 2
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_HEAD_BYTES:
                        raise HttpParserError("the trailers are too large")
                    break
                line = buf[pos:end]
                pos = end + 2
                if not line:  # the end of the trailers (of a message without any: at once)
                    self._complete()
                    continue
                name, colon, value = line.partition(b":")
                if not colon or not name or any(c not in _TOKEN for c in name):
                    raise HttpParserError(f"invalid trailer line {bytes(line[:80])!r}")
                self._call("on_header", name, value.strip(b" \t"))
            else:  # _DONE: only reached between messages
                self._state = _HEAD
        self._buffer = buf[pos:]

    # -- helpers -----------------------------------------------------------------------

    def _call(self, name: str, *args: object) -> None:
        callback = self._callbacks[name]
        if callback is None:
            return
        try:
            callback(*args)
        except Exception as exc:
            raise HttpParserCallbackError(f"the {name} callback failed") from exc

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self._call("on_message_begin")
        self._first_line(lines[0])
        close = keep = upgrade_token = False
        chunked = False
        length: int | None = None
        self._upgrade_header = False
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or any(c not in _TOKEN for c in name):
                raise HttpParserError(f"invalid header line {bytes(line[:80])!r}")
            value = value.strip(b" \t")
            self._call("on_header", name, value)
            lower = name.lower()
            if lower == b"content-length":
                if not value.isdigit() or (length is not None and length != int(value)):
                    raise HttpParserError(f"invalid Content-Length {bytes(value[:40])!r}")
                length = int(value)
            elif lower == b"transfer-encoding":
                chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
            elif lower == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")}
                close = close or b"close" in tokens
                keep = keep or b"keep-alive" in tokens
                upgrade_token = upgrade_token or b"upgrade" in tokens
            elif lower == b"upgrade":
                self._upgrade_header = True
        self._upgrade_header = self._upgrade_header and upgrade_token
        if self._version == "1.1":
            self._keep_alive = not close
        else:
            self._keep_alive = keep and not close
        # framed first: a response delimited by the close is not kept alive, which the
        # on_headers_complete callback reads
        self._frame_body(chunked, length)
        self._call("on_headers_complete")

    def _frame_body(self, chunked: bool, length: int | None) -> None:
        raise NotImplementedError

    def _first_line(self, line: bytes) -> None:
        raise NotImplementedError

    def _set_version(self, text: bytes) -> None:
        if text not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise HttpParserError(f"unsupported protocol {bytes(text[:20])!r}")
        self._version = text[5:].decode()

    def _complete(self) -> None:
        self._state = _DONE
        self._call("on_message_complete")
        self._state = _HEAD


class HttpRequestParser(_Parser):
    """Parses the requests of one client connection, one after another."""

    def __init__(self, protocol: Any) -> None:
        super().__init__(protocol)
        self._method = b""

    def get_method(self) -> bytes:
        return self._method

    def _first_line(self, line: bytes) -> None:
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[0] or not parts[1] \
                or any(c not in _TOKEN for c in parts[0]):
            raise HttpParserError(f"invalid request line {bytes(line[:80])!r}")
        self._method = parts[0]
        self._set_version(parts[2])
        self._call("on_url", parts[1])

    def _frame_body(self, chunked: bool, length: int | None) -> None:
        self._upgrade = self._method == b"CONNECT" or self._upgrade_header
        if chunked:
            self._state = _CHUNK_SIZE
        elif length:
            self._state, self._remaining = _LENGTH, length
        else:
            self._state = _DONE


class HttpResponseParser(_Parser):
    """Parses the responses of one upstream connection, one after another."""

    def __init__(self, protocol: Any) -> None:
        super().__init__(protocol)
        self._status = 0

    def get_status_code(self) -> int:
        return self._status

    def _first_line(self, line: bytes) -> None:
        version, _, rest = line.partition(b" ")
        status = rest[:3]
        if not status.isdigit() or (len(rest) > 3 and rest[3:4] != b" "):
            raise HttpParserError(f"invalid status line {bytes(line[:80])!r}")
        self._set_version(version)
        self._status = int(status)

    def _frame_body(self, chunked: bool, length: int | None) -> None:
        status = self._status
        self._upgrade = status == 101
        if status < 200 or status in (204, 304):
            self._state = _DONE
        elif chunked:
            self._state = _CHUNK_SIZE
        elif length is not None:
            self._state, self._remaining = (_LENGTH, length) if length else (_DONE, 0)
        else:
            self._state = _UNTIL_CLOSE
            self._keep_alive = False
