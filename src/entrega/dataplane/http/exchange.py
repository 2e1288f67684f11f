"""One request/response exchange: from a parsed request head to the end of its answer.

An exchange is created when the request head is parsed, picks its release there (so the
cohort rule sees the headers), and starts when it reaches the front of its client
connection's queue. It holds its ``ReleaseRoute`` and ``EndpointPool`` to the end, which
is why a route change never moves a request that is already in flight.

Accounting invariant: ``start`` adds one to the release's ``inflight`` and exactly one of
``_finish`` / ``client_gone`` / the end of a tunnel takes it back; the request is recorded
(status, latency) once, when its answer ends or, for an upgrade, when the 101 arrives.

Retry rule (HAProxy's ``retry-on conn-failure empty-response`` with ``redispatch``): a
request whose upstream connection is lost before any response byte (the instance was
killed, or closed a pooled connection just as we reused it) is sent once more, to
another instance of the same release when it has one, provided that:

- it is idempotent (GET, HEAD, OPTIONS): a POST whose bytes may have reached the app is
  never replayed, since the app may have acted on it (a 502 is the honest answer; a
  refused connect is no such case: ``_connect`` tries the next instance, nothing sent);
- every byte sent so far is still held (``replay``): a body no larger than
  ``replay_max_bytes``;
- no byte of the answer went to the client, and the client is still there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import TYPE_CHECKING

from entrega.dataplane.http import wire
from entrega.dataplane.http.pool import EndpointPool
from entrega.dataplane.http.table import ReleaseRoute
from entrega.dataplane.http.upstream import UpstreamConnection

if TYPE_CHECKING:
    from entrega.dataplane.http.proxy import ClientConnection

log = logging.getLogger("entrega.router")

# uvloop's loop.time() ticks in whole milliseconds: too coarse for latency buckets.
_clock = time.perf_counter


class Exchange:
    __slots__ = ("client", "route", "route_header", "out", "replay", "replay_size", "chunked",
                 "is_head", "keep_alive", "http10", "refuse", "req_done", "resp_done",
                 "head_sent", "upstream", "pool", "retried", "status", "started",
                 "holding", "deadline", "tunnel", "upgrade", "idempotent")

    def __init__(self, client: ClientConnection, route: ReleaseRoute | None, head: bytes, *,
                 is_head: bool, chunked: bool, keep_alive: bool, http10: bool,
                 upgrade: bool = False, refuse: int = 0,
                 route_header: bytes | None = None, idempotent: bool = False) -> None:
        self.client = client
        self.route = route
        #: response header lines the router adds: the release, and maybe the pin cookie
        self.route_header = (route_header if route_header is not None else
                             route.release_header if route is not None else b"")
        self.out = [head]
        self.replay: list[bytes] | None = [head]
        self.replay_size = 0
        self.chunked = chunked
        self.is_head = is_head
        self.keep_alive = keep_alive
        self.http10 = http10
        self.refuse = refuse
        self.req_done = False
        self.resp_done = False
        self.head_sent = False
        self.upstream: UpstreamConnection | None = None
        self.pool: EndpointPool | None = None
        self.retried = False
        self.status = 0
        self.started = 0.0
        self.holding = False
        self.deadline = 0.0
        self.tunnel = False
        #: asked to switch protocols: its upstream connection is never pooled again
        self.upgrade = upgrade
        #: safe to send twice (retry rule above)
        self.idempotent = idempotent

    @property
    def version(self) -> str:
        return self.route.version if self.route is not None else "-"

    # -- driven by the client connection ---------------------------------------------------

    def start(self) -> None:
        route = self.route
        if route is None or self.refuse:
            if self.refuse == 405:
                self.fail(405, "CONNECT is not supported by this router")
            elif self.refuse == 400:
                self.fail(400, "a request needs exactly one Host header (HTTP/1.0: at most "
                               "one)")
            elif self.refuse == 404:
                self.fail(404, "/.entrega/ is entrega's own path, but this router has no "
                               "control plane to forward it to (start it with "
                               "--control-plane-url http://HOST:PORT)")
            else:
                self.fail(503, "no release is routable on this listener")
            return
        client = self.client
        proxy = client.proxy
        self.started = _clock()
        self.holding = True
        route.stats.inflight += 1
        pool = self.pool = route.next_pool()
        conn = pool.acquire()
        if conn is not None:
            self.deadline = proxy.now + proxy.upstream_timeout_s
            self._attach(conn)  # type: ignore[arg-type]
        else:
            client.pause(wire.PAUSE_CONNECTING)
            proxy.spawn(self._connect())

    def send_body(self, body: bytes) -> None:
        if self.resp_done:
            return  # answered already (early response or error): the rest is discarded
        if self.chunked:
            pieces: tuple[bytes, ...] = (b"%x\r\n" % len(body), body, wire.CRLF)
            self.out += pieces
        else:
            pieces = (body,)
            self.out.append(body)
        replay = self.replay
        if replay is not None:
            self.replay_size += len(body)
            if self.replay_size > self.client.proxy.replay_max_bytes:
                self.replay = None
            else:
                replay += pieces

    def request_complete(self) -> None:
        self.req_done = True
        if self.resp_done:
            self.client.exchange_finished(self)
            return
        if self.chunked:
            self.out.append(wire.LAST_CHUNK)
            if self.replay is not None:
                self.replay.append(wire.LAST_CHUNK)

    def flush(self) -> None:
        """Write what the client sent so far to the upstream (the caller checked both)."""
        out = self.out
        transport = self.upstream.transport  # type: ignore[union-attr]
        if len(out) == 1:
            transport.write(out[0])
        else:
            transport.writelines(out)
        out.clear()

    def tunnel_to_upstream(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.transport.write(data)
        elif not self.resp_done:
            self.out.append(data)

    def client_gone(self) -> None:
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.detach()
            conn.transport.abort()
        self.resp_done = True
        self._account(self.status)

    # -- driven by the upstream connection -------------------------------------------------

    def response_started(self, status: int) -> None:
        self.status = status
        self.head_sent = True
        self.deadline = 0.0

    def response_complete(self, conn: UpstreamConnection, *, reusable: bool) -> None:
        self.upstream = None
        conn.detach()
        if reusable and self.req_done and not self.upgrade and self.pool is not None:
            self.pool.release(conn, self.client.proxy.now)
        else:
            conn.close()
        self._finish(self.status)

    def upstream_lost(self, conn: UpstreamConnection, got_bytes: bool) -> None:
        self.upstream = None
        if self.resp_done:
            return
        client = self.client
        if self.tunnel:
            self.resp_done = True
            self._account(0)
            client.close()
            return
        route = self.route
        if (not got_bytes and self.idempotent and not self.retried and self.replay is not None
                and not client.closed and route is not None):
            self.retried = True
            pool = route.next_pool()
            if pool is conn.pool and len(route.pools) > 1:
                pool = route.next_pool()
            self.pool = pool
            self.out = list(self.replay)
            self.deadline = 0.0
            client.pause(wire.PAUSE_CONNECTING)
            client.proxy.spawn(self._connect())
            return
        self.fail(502, f"release {self.version}: upstream {conn.pool.host}:{conn.pool.port} "
                       "closed the connection before answering")

    def tunnel_open(self) -> None:
        self.tunnel = True
        self._account(101, release=False)
        client = self.client
        client.tunnel = self
        if self.out and self.upstream is not None:
            self.flush()
        client.resume(wire.PAUSE_PIPELINE)

    # -- answers of the router itself --------------------------------------------------------

    def fail(self, status: int, message: str) -> None:
        """Answer ``status`` in place of the upstream, or cut the client off mid-answer."""
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.detach()
            conn.close()
        client = self.client
        client.resume(wire.PAUSE_CONNECTING)
        if self.resp_done:
            return
        if self.head_sent:
            # Part of the answer is out: closing is the only honest signal left.
            self.keep_alive = False
            self._finish(502)
            return
        keep = self.keep_alive and not client.closing
        self.keep_alive = keep
        if not client.closed:
            client.transport.write(wire.error_response(
                status, message, release_header=self.route_header, keep_alive=keep,
                http10=self.http10))
        self._finish(status)

    # -- internals ----------------------------------------------------------------------------

    def _attach(self, conn: UpstreamConnection) -> None:
        self.upstream = conn
        conn.begin(self)
        if self.out:
            self.flush()

    async def _connect(self) -> None:
        client = self.client
        proxy = client.proxy
        route = self.route
        pool = self.pool
        assert route is not None and pool is not None
        timeout_s = proxy.settings.connect_timeout_s
        pools = route.pools
        # each endpoint once, from this one on (not ``next_pool``: requests made meanwhile
        # move the round-robin, which could hand back the endpoint that just refused)
        first = pools.index(pool)
        try:
            for attempt in range(len(pools)):
                pool = self.pool = pools[(first + attempt) % len(pools)]
                try:
                    async with asyncio.timeout(timeout_s):
                        _, conn = await proxy.loop.create_connection(
                            partial(UpstreamConnection, pool), pool.host, pool.port)
                except (OSError, TimeoutError):
                    continue
                if self.resp_done or client.closed:
                    conn.close()
                    return
                client.resume(wire.PAUSE_CONNECTING)
                self.deadline = proxy.now + proxy.upstream_timeout_s
                self._attach(conn)
                return
            self.fail(502, f"release {route.version}: no endpoint accepted a connection")
        except Exception:
            log.exception("router bug while connecting upstream for release %s", route.version)
            self.fail(502, "internal error of the router")

    def _finish(self, status: int) -> None:
        self.resp_done = True
        self.deadline = 0.0
        self._account(status)
        if self.req_done or not self.keep_alive:
            self.client.exchange_finished(self)

    def _account(self, status: int, *, release: bool = True) -> None:
        route = self.route
        if route is None:
            return
        if self.started:
            route.stats.record(status, (_clock() - self.started) * 1000.0)
            self.started = 0.0
        if release and self.holding:
            self.holding = False
            route.stats.inflight -= 1
