"""Idle keep-alive upstream connections, one pool per endpoint.

Pools outlive route tables: a weight change keeps every warm connection, and only an
endpoint that left every release has its pool closed (its idle connections closed at
once; connections still serving a request are closed when they come back).

Idle connections are reused last-in first-out (the most recently used one is the least
likely to have been closed by the upstream) and closed after ``idle_timeout_s``, which
stays below the common server keep-alive timeouts (uvicorn and Node close after 5 s) so
the upstream rarely closes a connection we are about to reuse; when it does anyway, the
proxy retries a replayable request once on a new connection.
"""

from __future__ import annotations

from typing import Protocol

from entrega.net import Endpoint


class PooledConnection(Protocol):
    idle_since: float

    def is_closed(self) -> bool: ...

    def close(self) -> None: ...


class EndpointPool:
    __slots__ = ("host", "port", "idle", "closed", "max_idle")

    def __init__(self, host: str, port: int, *, max_idle: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[PooledConnection] = []
        self.closed = False
        self.max_idle = max_idle

    def acquire(self) -> PooledConnection | None:
        """A live idle connection, or None when a new one must be made."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.is_closed():
                return conn
        return None

    def release(self, conn: PooledConnection, now: float) -> None:
        if self.closed or len(self.idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        self.idle.append(conn)

    def discard(self, conn: PooledConnection) -> None:
        """Forget an idle connection the upstream closed."""
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def expire(self, cutoff: float) -> None:
        """Close idle connections unused since before ``cutoff`` (oldest are first)."""
        idle = self.idle
        n = 0
        while n < len(idle) and idle[n].idle_since < cutoff:
            n += 1
        if n:
            expired, self.idle = idle[:n], idle[n:]
            for conn in expired:
                conn.close()

    def close(self) -> None:
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class PoolRegistry:
    """The pools by (host, port); ``retain`` closes those no release uses any more."""

    def __init__(self, *, max_idle_per_endpoint: int = 256) -> None:
        self.pools: dict[tuple[str, int], EndpointPool] = {}
        self.max_idle = max_idle_per_endpoint

    def get(self, endpoint: Endpoint) -> EndpointPool:
        key = (endpoint.host, endpoint.port)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = EndpointPool(*key, max_idle=self.max_idle)
        return pool

    def retain(self, endpoints: set[tuple[str, int]]) -> None:
        for key in [k for k in self.pools if k not in endpoints]:
            self.pools.pop(key).close()

    def expire(self, cutoff: float) -> None:
        for pool in self.pools.values():
            if pool.idle:
                pool.expire(cutoff)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()
        self.pools.clear()
