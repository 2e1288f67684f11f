"""The embedded router's data path: client connections and the state they share.

Requests on one client connection are answered strictly in order. The parser may run
ahead into pipelined requests that arrived in the same read; those wait in ``queue``
(bodies held in their own buffers) and reading pauses until the pending answer is out,
so no request's bytes ever reach another request's upstream.

Nothing here logs per request or awaits per request: a request on a pooled upstream
connection is handled entirely in protocol callbacks. Timeouts are enforced by one sweep
per ``sweep_interval_s`` over all connections instead of a timer per request; deadlines
are computed from ``Proxy.now``, a clock the sweep advances, so the data path never asks
the loop for the time (the sweep allows for that clock being one interval behind).

The hot path is written for mypyc (setup.py): module constants are ``Final`` and the
settings it reads are plain attributes of ``Proxy``, so compiled code uses them directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import unquote_to_bytes, urlsplit

try:
    from httptools import (
        HttpParserCallbackError,
        HttpParserError,
        HttpParserUpgrade,
        HttpRequestParser,
    )
except ImportError:  # a fleet host's python3 has the standard library only (http1parse.py)
    from entrega.dataplane.http1parse import (  # type: ignore[assignment]
        HttpParserCallbackError,
        HttpParserError,
        HttpParserUpgrade,
        HttpRequestParser,
    )

from entrega.dataplane.http import wire
from entrega.dataplane.http.cohort import cookie_value
from entrega.dataplane.http.exchange import Exchange
from entrega.dataplane.http.metrics import MetricsRegistry, ReleaseStats
from entrega.dataplane.http.pool import EndpointPool, PoolRegistry
from entrega.dataplane.http.table import DRAW_COOKIE as _DRAW_COOKIE_NAME
from entrega.dataplane.http.table import PIN_COOKIE as _PIN_COOKIE_NAME
from entrega.dataplane.http.table import ReleaseRoute, RouteTable
from entrega.dataplane.routes import Routes
from entrega.errors import HeadTooLarge
from entrega.waiting import wait_until

log = logging.getLogger("entrega.router")

_NO_NAMES: Final[frozenset[bytes]] = frozenset()
PIN_COOKIE: Final = _PIN_COOKIE_NAME.encode()
DRAW_COOKIE: Final = _DRAW_COOKIE_NAME.encode()
#: How long a draining router keeps an idle keep-alive connection open for its client's
#: next request (answered with ``Connection: close``), before closing it.
DRAIN_IDLE_GRACE_S: Final = 1.0


@dataclass(frozen=True)
class ProxySettings:
    #: a client must send a whole request head within this time (slowloris guard)
    header_timeout_s: float = 30.0
    #: idle keep-alive client connections are closed after this; above the 60 s idle
    #: timeout of common load balancers in front of us, so they close first
    client_idle_timeout_s: float = 75.0
    #: an upstream that has not started its answer by then gets a 504
    upstream_timeout_s: float = 60.0
    connect_timeout_s: float = 5.0
    #: larger request heads are answered 431 (nginx and HAProxy use 8-64 KiB)
    max_header_bytes: int = 65536
    #: request bodies up to this size are held so the request can be retried once
    replay_max_bytes: int = 65536
    #: below the 5 s keep-alive timeout of uvicorn and Node, so the upstream rarely
    #: closes a pooled connection just as we reuse it
    upstream_idle_timeout_s: float = 4.0
    max_idle_per_endpoint: int = 256

    @property
    def sweep_interval_s(self) -> float:
        return max(0.05, min(1.0, self.upstream_timeout_s / 4, self.header_timeout_s / 4,
                             self.upstream_idle_timeout_s / 4))


class Proxy:
    """State shared by every connection of one router process."""

    def __init__(self, settings: ProxySettings, *, app: str = "",
                 control_plane_url: str | None = None, control_plane_key: bytes = b"",
                 counters: memoryview | None = None) -> None:
        self.settings = settings
        self.app = app
        self.loop = asyncio.get_running_loop()
        #: the loop's time at the last sweep (at most ``sweep_interval_s`` behind)
        self.now = self.loop.time()
        # the settings read on every request, as attributes of this compiled class
        self.upstream_timeout_s = settings.upstream_timeout_s
        self.header_timeout_s = settings.header_timeout_s
        self.idle_timeout_s = settings.client_idle_timeout_s
        self.max_header_bytes = settings.max_header_bytes
        self.replay_max_bytes = settings.replay_max_bytes
        self.pools = PoolRegistry(max_idle_per_endpoint=settings.max_idle_per_endpoint)
        #: per-release counters, in ``counters`` (a worker's memory shared with its
        #: supervisor, metrics.py) when given
        self.metrics = MetricsRegistry(counters)
        self.table = self._compile(Routes())
        #: where ``/.entrega/...`` requests go (user feedback to entrega's server), if set;
        #: its pool and counters are its own: never in a release's metrics
        self.control_route: ReleaseRoute | None = None
        self.control_prefix = b""
        if control_plane_url:
            host, port, prefix = parse_control_plane_url(control_plane_url)
            pool = EndpointPool(host, port, max_idle=settings.max_idle_per_endpoint)
            self.control_route = ReleaseRoute("control-plane", [pool], ReleaseStats(),
                                              release_header=False)
            self.control_prefix = prefix
        #: proves to the control plane that the request came through this router (../proof.py)
        self.control_proof = b"X-Entrega-Router-Key: " + control_plane_key + wire.CRLF \
            if control_plane_key else b""
        self.clients: set[ClientConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def _compile(self, routes: Routes) -> RouteTable:
        return RouteTable(routes, pool_for=self.pools.get, stats_for=self.metrics.for_release,
                          app=self.app)

    def apply(self, routes: Routes) -> None:
        """Swap the route table (raises ValueError, leaving the old one, if invalid)."""
        table = self._compile(routes)
        self.table = table
        self.pools.retain(table.endpoints())
        self.metrics.forget_old(set(routes.backends))

    def draining(self) -> dict[str, int]:
        """Releases no longer routed that still have requests in flight."""
        routed = self.table.routes.backends
        return {version: stats.inflight for version, stats in self.metrics.releases.items()
                if version not in routed and stats.inflight > 0}

    def protocol_factory(self, *, preview: bool) -> Callable[[], ClientConnection]:
        return lambda: ClientConnection(self, preview)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def sweep_forever(self) -> None:
        interval_s = self.settings.sweep_interval_s
        while True:
            await asyncio.sleep(interval_s)
            self.sweep(self.loop.time())

    def sweep(self, now: float) -> None:
        self.now = now
        # Deadlines were set from a ``now`` up to one interval old: judge them against a
        # time one interval back, so that none fires early.
        late = now - self.settings.sweep_interval_s
        for client in list(self.clients):
            client.check_deadlines(late)
        self.pools.expire(now - self.settings.upstream_idle_timeout_s)
        if self.control_route is not None:
            self.control_route.pools[0].expire(now - self.settings.upstream_idle_timeout_s)

    async def drain(self, timeout_s: float) -> int:
        """Let every connection finish; returns how many were still open at the deadline
        (and were then closed).

        An idle keep-alive connection is not closed at once: its client may be sending on
        it at this very moment, and closing under that request fails it ("server
        disconnected without a response"; most clients do not retry it). For a short grace
        each connection answers what it is asked with ``Connection: close`` and then
        closes, so a busy client moves to a fresh connection (the router that took over the
        address); the connections still idle after the grace are closed, the busy ones
        finish until the deadline."""
        for client in list(self.clients):
            client.closing = True  # answer what is asked, then close
        grace = min(DRAIN_IDLE_GRACE_S, timeout_s / 2)
        await wait_until(lambda: not self.clients, timeout_s=grace, interval_s=0.05)
        for client in list(self.clients):
            client.start_closing()  # the idle ones close now
        await wait_until(lambda: not self.clients, timeout_s=max(0.0, timeout_s - grace),
                         interval_s=0.05)
        left = len(self.clients)
        for client in list(self.clients):
            client.transport.abort()
        self.pools.close()
        if self.control_route is not None:
            self.control_route.pools[0].close()
        return left


def parse_control_plane_url(url: str) -> tuple[str, int, bytes]:
    """``http://host:port[/prefix]`` -> (host, port, path prefix without trailing /)."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"control plane URL {url!r}: expected http://HOST:PORT[/PREFIX]")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/").encode()


class ClientConnection(asyncio.Protocol):
    __slots__ = ("proxy", "preview", "transport", "parser", "peer_ip", "host_header", "url",
                 "headers", "reading", "active", "queue", "paused", "write_paused", "in_head",
                 "head_bytes", "head_seen", "deadline", "closing", "closed", "tunnel", "upgrading",
                 "_advancing")

    def __init__(self, proxy: Proxy, preview: bool) -> None:
        self.proxy = proxy
        self.preview = preview
        self.transport: asyncio.Transport = cast(asyncio.Transport, None)
        self.parser = HttpRequestParser(self)
        self.peer_ip = b""
        self.host_header = b""
        self.url = b""
        self.headers: list[bytes] = []  # name, value, name, value...
        self.reading: Exchange | None = None   # the request being parsed
        self.active: Exchange | None = None    # the request being answered
        self.queue: deque[Exchange] = deque()  # parsed requests waiting for ``active``
        self.paused = 0
        self.write_paused = False
        self.in_head = False
        self.head_bytes = 0  # url + header lines of the request head being parsed
        self.head_seen = 0   # bytes received while a head is incomplete (bounds memory)
        self.deadline = 0.0
        self.closing = False  # answer what was asked, then close (drain, bad bytes)
        self.closed = False
        self.tunnel: Exchange | None = None
        self.upgrading: Exchange | None = None
        self._advancing = False

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer_ip = str(peer[0]).encode() if peer else b"unknown"
        self.proxy.clients.add(self)
        self.deadline = self.proxy.now + self.proxy.header_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.proxy.clients.discard(self)
        active, self.active = self.active, None
        if active is not None:
            active.client_gone()
        self.queue.clear()
        self.reading = self.tunnel = self.upgrading = None

    def eof_received(self) -> bool:
        # A client that closes while its answer is pending has given up on it (nginx and
        # HAProxy treat it so too): close, which aborts the upstream request.
        return False

    def pause_writing(self) -> None:
        self.write_paused = True
        active = self.active
        if active is not None and active.upstream is not None:
            active.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        active = self.active
        if active is not None and active.upstream is not None:
            active.upstream.resume_reading()

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.tunnel_to_upstream(data)
            return
        if self.in_head:
            self.head_seen += len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self._upgraded(data[exc.args[0]:])
        except HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse(431, f"request head larger than "
                                  f"{self.proxy.settings.max_header_bytes} bytes")
            else:
                log.exception("router bug while parsing a request")
                self._refuse(500, "internal error of the router")
            return
        except HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request: {exc}")
            return
        if self.in_head and self.head_seen > self.proxy.max_header_bytes:
            self._refuse(431, f"request head larger than "
                              f"{self.proxy.max_header_bytes} bytes")
            return
        active = self.active
        if active is not None and active.out and active.upstream is not None:
            active.flush()

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.in_head = True
        self.head_bytes = self.head_seen = 0
        self.url = b""
        self.headers = []
        if self.active is None:
            self.deadline = self.proxy.now + self.proxy.header_timeout_s

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        headers.append(name)
        headers.append(value)
        self.head_bytes += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.deadline = 0.0
        if self.head_bytes > self.proxy.max_header_bytes:
            raise HeadTooLarge("request head too large")  # stops the parser; answered 431
        parser = self.parser
        proxy = self.proxy
        table = proxy.table
        method = parser.get_method()
        cohort = None if self.preview else table.cohort
        wanted = cohort.header_names if cohort is not None else _NO_NAMES
        keys = cohort.request_keys if cohort is not None else wire.REQUEST_KEYS
        cohort_values: dict[bytes, bytes] = {}
        url = self.url
        out = [method, b" ", url, wire.HTTP11]
        xff = cookie = b""
        hosts = 0
        chunked = False
        connection: list[bytes] | None = None
        upgrade_to = b""
        special = wire.REQUEST_SPECIAL
        headers = self.headers
        for i in range(0, len(headers), 2):
            name = headers[i]
            value = headers[i + 1]
            kind = None
            if (len(name) << 8 | (name[0] | 0x20)) in keys:  # wire.name_key, inlined
                lname = name.lower()
                if lname in wanted:
                    seen = cohort_values.get(lname)
                    cohort_values[lname] = value if seen is None else seen + b"; " + value
                kind = special.get(lname)
            if kind is None:
                out.append(name)
                out.append(wire.COLON)
                out.append(value)
                out.append(wire.CRLF)
            elif kind == wire.CONTENT_LENGTH:
                out += (name, wire.COLON, value, wire.CRLF)
            elif kind == wire.HOST:
                hosts += 1
                out += (name, wire.COLON, value, wire.CRLF)
            elif kind == wire.COOKIE:
                cookie = value if not cookie else cookie + b"; " + value
                out += (name, wire.COLON, value, wire.CRLF)
            elif kind == wire.XFF:
                xff = value if not xff else xff + b", " + value
            elif kind == wire.TRANSFER_ENCODING:
                chunked = True
                out += (name, wire.COLON, value, wire.CRLF)
            elif kind == wire.CONNECTION:
                if connection is None:
                    connection = []
                connection.append(value)
            elif kind == wire.UPGRADE:
                upgrade_to = value
        if connection is not None:
            out = wire.drop_named_headers(out, wire.named_hop_headers(connection), head=4)
        refuse = 405 if method == b"CONNECT" else 0
        if hosts != 1:
            # RFC 9112 3.2: an HTTP/1.1 request needs exactly one Host, any request at most
            # one; a proxy that picked one of two could route by another than the app reads.
            if hosts or parser.get_http_version() != "1.0":
                refuse = 400
            else:
                out.append(self._host_header())
        out += (b"X-Forwarded-For: ", xff + b", " + self.peer_ip if xff else self.peer_ip,
                wire.CRLF, wire.XFP_HTTP)
        # (parser calls only when the headers leave the answer open: each costs)
        upgrade = bool(upgrade_to) and method != b"CONNECT" and parser.should_upgrade()
        keep_alive = parser.should_keep_alive()
        # an HTTP/1.0 client keeps the connection only with ``Connection: keep-alive``
        http10 = ((connection is not None or not keep_alive)
                  and parser.get_http_version() == "1.0")
        if upgrade:
            out += (wire.CONN_UPGRADE, b"Upgrade: ", upgrade_to, wire.CRLF)

        route_header: bytes | None = None
        if refuse:
            route = None
        elif self.preview:
            route = table.preview
        elif url.startswith(wire.PASSTHROUGH_PREFIX):
            route = proxy.control_route
            if route is None:
                refuse = 404
            else:
                out[2] = proxy.control_prefix + url
                out.append(proxy.control_proof)
                pinned = cookie_value(cookie, PIN_COOKIE) if cookie else None
                if pinned:
                    out += (b"X-Entrega-Release: ", unquote_to_bytes(pinned), wire.CRLF)
        else:
            route = None
            bucket = 0
            if cohort is not None:
                matched, bucket = cohort.classify(cohort_values)
                if matched:
                    route = table.cohort_route
                elif bucket:
                    route = table.pick_for_bucket(bucket)  # a user with an id: by bucket
            if route is None and not bucket:
                # a visitor by its draw in this rollout, or drawn now (table.py: Pins)
                slot = -1
                # (find, not ``in``: on bytes, ``in`` first tries the needle as an int)
                if cookie and cookie.find(DRAW_COOKIE) >= 0:
                    drawn = cookie_value(cookie, DRAW_COOKIE)
                    if drawn is not None:
                        slot = table.draws.get(drawn, -1)
                if slot >= 0:
                    route = table.slots[slot]
                    if cookie_value(cookie, PIN_COOKIE) != route.pin:
                        route_header = route.pin_header  # it moved: say where it is now
                else:
                    slot = table.draw()
                    if slot >= 0:
                        route = table.slots[slot]
                        route_header = table.draw_headers[slot]
        out.append(wire.CRLF)
        exchange = Exchange(
            self, route, b"".join(out), is_head=method == b"HEAD", chunked=chunked,
            # (a refused request closes its connection, as HAProxy does, except a 404)
            keep_alive=keep_alive and not upgrade and (not refuse or refuse == 404),
            http10=http10, upgrade=upgrade,
            refuse=refuse, route_header=route_header,
            idempotent=method == b"GET" or method == b"HEAD" or method == b"OPTIONS")
        if upgrade:
            self.upgrading = exchange
        self.reading = exchange
        if self.active is None:
            self.active = exchange
            exchange.start()
        else:
            self.queue.append(exchange)

    def on_body(self, body: bytes) -> None:
        if self.reading is not None:
            self.reading.send_body(body)

    def on_message_complete(self) -> None:
        exchange = self.reading
        self.reading = None
        if exchange is not None:
            exchange.request_complete()
        if self.queue:
            # A pipelined request waits for the one being answered; read nothing more.
            # (While only the active request is pending, reading goes on so that a
            # client giving up is noticed at once.)
            self.pause(wire.PAUSE_PIPELINE)

    # -- used by Exchange ----------------------------------------------------------------------

    def pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed and not self.transport.is_closing():
                self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.transport.close()

    def exchange_finished(self, exchange: Exchange) -> None:
        if exchange is not self.active or self.closed:
            return
        self.active = None
        if not exchange.keep_alive:
            self.transport.close()
            return
        self._advance()

    def check_deadlines(self, now: float) -> None:
        active = self.active
        if active is None:
            if self.deadline and now > self.deadline:
                self.close()  # idle keep-alive, or a request head too slow to arrive
        elif active.deadline and now > active.deadline:
            active.fail(504, f"release {active.version}: upstream did not answer within "
                             f"{self.proxy.settings.upstream_timeout_s:g} s")

    def start_closing(self) -> None:
        self.closing = True
        if self.active is None and not self.in_head:
            self.close()

    # -- internals --------------------------------------------------------------------------------

    def _advance(self) -> None:
        """Start the next queued request, or go idle."""
        if self._advancing:
            return
        self._advancing = True
        try:
            queue = self.queue
            while queue:
                exchange = queue.popleft()
                self.active = exchange
                exchange.start()
                if self.closed or self.transport.is_closing():
                    return
                if self.active is not None:
                    if not exchange.req_done or not queue:
                        self.resume(wire.PAUSE_PIPELINE)
                    return
        finally:
            self._advancing = False
        if self.closing or self.paused & wire.PAUSE_BROKEN:
            self.transport.close()
            return
        if not self.in_head:
            self.deadline = self.proxy.now + self.proxy.idle_timeout_s
        self.resume(wire.PAUSE_PIPELINE)

    def _upgraded(self, rest: bytes) -> None:
        exchange = self.upgrading
        self.upgrading = None
        if exchange is None:
            self.close()
            return
        self.tunnel = exchange
        if rest:
            exchange.tunnel_to_upstream(rest)

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed, after whatever is still pending."""
        self.in_head = False
        reading, self.reading = self.reading, None
        if reading is not None:
            if reading is self.active:
                self.close()  # its body cannot be delimited any more: nothing to answer on
                return
            self.queue.remove(reading)
        if self.active is None:
            self.transport.write(wire.error_response(status, message, keep_alive=False))
            self.transport.close()
            return
        self.closing = True
        self.pause(wire.PAUSE_BROKEN)

    def _host_header(self) -> bytes:
        if not self.host_header:
            sock = self.transport.get_extra_info("sockname")
            host = str(sock[0]) if sock else "localhost"
            host = f"[{host}]" if ":" in host else host
            self.host_header = f"Host: {host}:{sock[1] if sock else 80}\r\n".encode()
        return self.host_header
