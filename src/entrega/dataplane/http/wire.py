"""HTTP/1.1 wire details shared by both sides of the proxy, precomputed as bytes.

Header names are compared lowercased against these tables once per header; everything
the proxy adds (framing, X-Forwarded-*, the release header, its own error answers) is
built from constants here so the data path only joins bytes. They are ``Final`` so that
the mypyc build (setup.py) compiles them in as constants instead of looking each one up
on the module at every use.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

# Kinds of request/response headers the proxy treats specially (identity-compared ints).
HOP: Final = 1             # hop-by-hop: never forwarded
CONNECTION: Final = 2      # hop-by-hop, and names more hop-by-hop headers
UPGRADE: Final = 3         # hop-by-hop unless the exchange is an upgrade
TRANSFER_ENCODING: Final = 4  # framing: the proxy re-frames bodies itself
CONTENT_LENGTH: Final = 5
XFF: Final = 6             # X-Forwarded-For: the client's address is appended
HOST: Final = 7
XFP: Final = 8             # X-Forwarded-Proto: replaced by ours
COOKIE: Final = 9          # forwarded, and read for the release pin

REQUEST_SPECIAL: Final[dict[bytes, int]] = {
    b"connection": CONNECTION, b"keep-alive": HOP, b"proxy-connection": HOP, b"te": HOP,
    b"trailer": HOP, b"upgrade": UPGRADE, b"transfer-encoding": TRANSFER_ENCODING,
    b"content-length": CONTENT_LENGTH, b"x-forwarded-for": XFF, b"host": HOST,
    b"x-forwarded-proto": XFP, b"cookie": COOKIE,
}
RESPONSE_SPECIAL: Final[dict[bytes, int]] = {
    b"connection": CONNECTION, b"keep-alive": HOP, b"proxy-connection": HOP, b"te": HOP,
    b"trailer": HOP, b"upgrade": UPGRADE, b"transfer-encoding": TRANSFER_ENCODING,
    b"content-length": CONTENT_LENGTH,
}


def name_key(name: bytes) -> int:
    """A fingerprint of a header name whatever its case: its length and first letter.

    The data path lowercases a name and looks it up in the tables above only when its
    key is among the tables' keys: most headers (Date, Server, Content-Type...) are
    passed on after two integer operations.
    """
    return len(name) << 8 | (name[0] | 0x20)


REQUEST_KEYS: Final = frozenset(name_key(name) for name in REQUEST_SPECIAL)
RESPONSE_KEYS: Final = frozenset(name_key(name) for name in RESPONSE_SPECIAL)

#: Connection header tokens that do not name another header
CONNECTION_OPTIONS: Final = frozenset({b"close", b"keep-alive", b"upgrade"})

CRLF: Final = b"\r\n"
COLON: Final = b": "
HTTP11: Final = b" HTTP/1.1\r\n"
XFP_HTTP: Final = b"X-Forwarded-Proto: http\r\n"
CHUNKED: Final = b"Transfer-Encoding: chunked\r\n"
CONN_CLOSE: Final = b"Connection: close\r\n"
CONN_KEEP_ALIVE: Final = b"Connection: keep-alive\r\n"
CONN_UPGRADE: Final = b"Connection: Upgrade\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"
#: requests under this path go to entrega's control plane (user feedback), not to a release
PASSTHROUGH_PREFIX: Final = b"/.entrega/"

_REASONS = {
    400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 431: b"Request Header Fields Too Large",
    500: b"Internal Server Error", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


_STATUS_LINES = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, HTTPStatus(code).phrase.encode()) for code in
    (s.value for s in HTTPStatus)}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <code> <standard reason>\\r\\n``, precomputed for known codes."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d \r\n" % status
    return line


_NO_NAMES: Final[frozenset[bytes]] = frozenset()
#: the Connection values almost every peer sends, which name no header
_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"Keep-Alive", b"close", b"Close"})


def named_hop_headers(connection_values: list[bytes]) -> frozenset[bytes]:
    """Lowercased header names listed in Connection headers (beyond close/keep-alive)."""
    if len(connection_values) == 1 and connection_values[0] in _PLAIN_CONNECTION:
        return _NO_NAMES
    names = set()
    for value in connection_values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token and token not in CONNECTION_OPTIONS:
                names.add(token)
    return frozenset(names)


def error_response(status: int, message: str, *, release_header: bytes = b"",
                   keep_alive: bool, http10: bool = False) -> bytes:
    """A complete plain-text answer of the router itself."""
    body = message.encode() + b"\n"
    if not keep_alive:
        connection = CONN_CLOSE
    elif http10:
        connection = CONN_KEEP_ALIVE
    else:
        connection = b""
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % len(body),
        b"Cache-Control: no-store\r\n", release_header, connection, CRLF, body,
    ))

# Why a client connection's reading is paused (a bit set; reading resumes at zero).
PAUSE_PIPELINE: Final = 1     # a response is pending: the next request waits in the socket
PAUSE_UPSTREAM: Final = 2     # the upstream's send buffer is full
PAUSE_CONNECTING: Final = 4   # the upstream connection is still being made
PAUSE_BROKEN: Final = 8       # unparseable bytes: answer what came before, then close


def drop_named_headers(out: list[bytes], names: frozenset[bytes], *,
                       head: int) -> list[bytes]:
    """Remove the headers named in Connection from a head built as ``head`` parts of the
    start line followed by (name, ": ", value, CRLF) groups."""
    if not names:
        return out
    kept = out[:head]
    for i in range(head, len(out), 4):
        if out[i].lower() not in names:
            kept += out[i:i + 4]
    return kept

