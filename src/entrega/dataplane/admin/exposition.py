"""The router's per-release counters in the Prometheus text format (``--metrics-listen``).

Served by the router process itself on an address of its own, so Prometheus scrapes the
data plane directly and keeps working while the controller is down. Names (used by the
Prometheus metric provider's queries, keep them stable)::

    entrega_router_requests_total{release}                 counter
    entrega_router_responses_5xx_total{release}            counter
    entrega_router_request_duration_seconds{release}       histogram (_bucket/_sum/_count)
    entrega_router_inflight{release}                       gauge

Rendering walks the counters the data path already keeps (http/metrics.py); a scrape costs
O(releases x buckets) and nothing is added to the per-request path. With ``--workers N``
the supervisor serves the same names over the sum of its workers' counters
(process/worker_metrics.py), which never goes down when a worker is replaced.

Written by hand, not with ``prometheus_client`` (which entrega's own ``/metrics`` uses):
a scrape is rendered on the router's event loop, with ``workers: 1`` the loop that proxies
every request, and ``python -m bench.exposition`` measures prometheus_client's
``generate_latest`` over the same counters at 23-27x this writer's time (0.9 ms against
40 us for three releases, 22 ms against 0.8 ms for the 64 a router keeps: a 22 ms stall
of every request in flight, per scrape), plus ~145 ms to import it at every start.
tests/dataplane/test_exposition.py holds this writer to prometheus_client's: Prometheus
reads the same samples from both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from entrega.dataplane.reports import LATENCY_BUCKETS_MS

_LE = [f"{ms / 1000:g}" for ms in LATENCY_BUCKETS_MS] + ["+Inf"]
_MAX_HEAD_BYTES = 16384


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class ReleaseCounters(Protocol):
    """What is rendered of one release (``ReleaseStats`` or a sum over workers)."""

    @property
    def requests(self) -> int: ...
    @property
    def errors_5xx(self) -> int: ...
    @property
    def buckets(self) -> Sequence[int]: ...
    @property
    def latency_sum_ms(self) -> float: ...
    @property
    def inflight(self) -> int: ...


class RouterCounters(Protocol):
    @property
    def started_at(self) -> float: ...
    @property
    def releases(self) -> Mapping[str, ReleaseCounters]: ...


def render_prometheus(registry: RouterCounters) -> bytes:
    """The whole exposition, text format 0.0.4."""
    releases = list(registry.releases.items())
    lines = [
        "# HELP entrega_router_requests_total Requests answered, by release.",
        "# TYPE entrega_router_requests_total counter",
    ]
    labels = {version: f'release="{_label(version)}"' for version, _ in releases}
    lines += [f"entrega_router_requests_total{{{labels[v]}}} {s.requests}" for v, s in releases]
    lines += [
        "# HELP entrega_router_responses_5xx_total Responses with status >= 500 (the "
        "router's own 502/503/504 included), by release.",
        "# TYPE entrega_router_responses_5xx_total counter",
    ]
    lines += [f"entrega_router_responses_5xx_total{{{labels[v]}}} {s.errors_5xx}"
              for v, s in releases]
    lines += [
        "# HELP entrega_router_request_duration_seconds Time from the request head to the "
        "end of the answer, by release.",
        "# TYPE entrega_router_request_duration_seconds histogram",
    ]
    for version, stats in releases:
        label = labels[version]
        cumulative = 0
        for le, count in zip(_LE, stats.buckets, strict=True):
            cumulative += count
            lines.append(f'entrega_router_request_duration_seconds_bucket{{{label},le="{le}"}} '
                         f"{cumulative}")
        lines.append(f"entrega_router_request_duration_seconds_sum{{{label}}} "
                     f"{stats.latency_sum_ms / 1000:.6f}")
        lines.append(f"entrega_router_request_duration_seconds_count{{{label}}} {cumulative}")
    lines += [
        "# HELP entrega_router_inflight Requests in flight, by release.",
        "# TYPE entrega_router_inflight gauge",
    ]
    lines += [f"entrega_router_inflight{{{labels[v]}}} {s.inflight}" for v, s in releases]
    lines += [
        "# HELP entrega_router_started_at_seconds When this router process started (unix time).",
        "# TYPE entrega_router_started_at_seconds gauge",
        f"entrega_router_started_at_seconds {registry.started_at:.3f}",
    ]
    return ("\n".join(lines) + "\n").encode()


class MetricsServer:
    """``GET /metrics`` over HTTP/1.1 keep-alive; anything else is 404.

    ``counters`` is awaited once per scrape: a single router returns its registry at
    once, a supervisor asks its workers first.
    """

    def __init__(self, counters: Callable[[], Awaitable[RouterCounters]]) -> None:
        self.counters = counters

    async def start(self, host: str, port: int) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._serve, host, port, reuse_address=True,
                                          limit=_MAX_HEAD_BYTES)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                request_line, _, rest = head.partition(b"\r\n")
                parts = request_line.split(b" ")
                keep = b"connection: close" not in rest.lower()
                if len(parts) == 3 and parts[0] in (b"GET", b"HEAD") and (
                        parts[1].split(b"?")[0] == b"/metrics"):
                    status = b"200 OK"
                    body = render_prometheus(await self.counters())
                    ctype = b"text/plain; version=0.0.4; charset=utf-8"
                else:
                    status = b"404 Not Found"
                    body = b"the router serves only GET /metrics here\n"
                    ctype = b"text/plain; charset=utf-8"
                writer.write(b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
                    status, ctype, len(body), b"" if keep else b"Connection: close\r\n"))
                if parts[0] != b"HEAD":
                    writer.write(body)
                await writer.drain()
                if not keep:
                    return
        except ConnectionError:
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()
