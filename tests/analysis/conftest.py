"""Builders for the analysis tables: router snapshots, window counts and latency histograms.

Histograms use the routers' fixed buckets (``LATENCY_BUCKETS_MS`` plus a last +inf bucket),
addressed here by the upper bound of a bucket so tables read in milliseconds.
"""

from __future__ import annotations

import math

from entrega.analysis.window import WindowCounts
from entrega.routers.base import LATENCY_BUCKETS_MS, ReleaseMetrics

__all__ = ["INF", "N_BUCKETS", "counts", "hist", "snapshot"]

INF = math.inf
N_BUCKETS = len(LATENCY_BUCKETS_MS) + 1


def hist(*pairs: tuple[float, int]) -> tuple[int, ...]:
    """A histogram from (bucket upper bound in ms, count) pairs; INF is the last bucket."""
    buckets = [0] * N_BUCKETS
    for upper, count in pairs:
        index = N_BUCKETS - 1 if upper == INF else LATENCY_BUCKETS_MS.index(upper)
        buckets[index] += count
    return tuple(buckets)


def snapshot(requests: int, errors: int = 0, buckets: tuple[int, ...] | None = None,
             ) -> ReleaseMetrics:
    """A cumulative router snapshot; by default every request took 1-2 ms."""
    if buckets is None:
        buckets = hist((2, requests))
    return ReleaseMetrics(requests=requests, errors_5xx=errors, latency_buckets=buckets)


def counts(requests: int, errors: int = 0, buckets: tuple[int, ...] | None = None,
           ) -> WindowCounts:
    """One window's figures; by default every request took 1-2 ms."""
    if buckets is None:
        buckets = hist((2, requests))
    return WindowCounts(requests, errors, buckets)


# -- real servers for the provider tests ---------------------------------------------------

import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402

from entrega.waiting import wait_until_sync  # noqa: E402

Route = Callable[[], tuple[int, str, str]]  # -> (status, content type, body)


class LocalServer:
    """A real HTTP server on a free loopback port, answering from ``routes`` by path."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                route = server.routes.get(self.path)
                status, kind, body = route() if route else (404, "text/plain", "not found")
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def json_server() -> Iterator[LocalServer]:
    server = LocalServer({})
    yield server
    server.close()


def json_route(document: object, status: int = 200) -> Route:
    return lambda: (status, "application/json", json.dumps(document))


#: Per release: requests per second and the share of them answered 5xx. The exporter's
#: counters grow with wall time, like a router's.
EXPORTED = {"v1": (100.0, 0.01), "v2": (10.0, 0.10)}
#: le bounds (seconds) of the exported latency histogram and the share of requests below
EXPORTED_BUCKETS = ((0.025, 0.5), (0.05, 0.9), (0.1, 0.99), (0.25, 1.0))


def exposition(elapsed_s: float) -> str:
    """The router's metrics in Prometheus' text format after ``elapsed_s`` of traffic."""
    lines = ["# TYPE entrega_router_requests_total counter",
             "# TYPE entrega_router_responses_5xx_total counter",
             "# TYPE entrega_router_request_duration_seconds histogram"]
    for release, (rps, error_share) in EXPORTED.items():
        requests = rps * elapsed_s
        lines.append(f'entrega_router_requests_total{{release="{release}"}} {requests}')
        lines.append(f'entrega_router_responses_5xx_total{{release="{release}"}} '
                     f"{requests * error_share}")
        for le, share in EXPORTED_BUCKETS:
            lines.append(f'entrega_router_request_duration_seconds_bucket{{release="{release}",'
                         f'le="{le}"}} {requests * share}')
        lines.append(f'entrega_router_request_duration_seconds_bucket{{release="{release}",'
                     f'le="+Inf"}} {requests}')
        lines.append(f'entrega_router_request_duration_seconds_count{{release="{release}"}} '
                     f"{requests}")
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _poll(what: str, deadline_s: float, check: Callable[[], bool]) -> None:
    def answered() -> bool:
        try:
            return check()
        except httpx.HTTPError:
            return False

    if wait_until_sync(answered, timeout_s=deadline_s, interval_s=0.2):
        return
    raise AssertionError(f"timed out after {deadline_s:g}s waiting for {what}")


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus on a free loopback port, scraping a tiny exporter every second.

    Fails (never skips) when the binary is missing: CI must install it.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run scripts/install-system-deps.sh "
                    "(Debian's prometheus package)")
    started = time.monotonic()
    exporter = LocalServer({"/metrics": lambda: (
        200, "text/plain; version=0.0.4", exposition(time.monotonic() - started + 60))})
    home = tmp_path_factory.mktemp("prometheus")
    config = home / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: entrega-router\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter.port}']}}]\n")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (home / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        _poll("prometheus to be ready", 30,
              lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200)

        def scraped() -> bool:
            query = 'count_over_time(entrega_router_requests_total{release="v2"}[1m])'
            body = httpx.get(f"{url}/api/v1/query", params={"query": query}, timeout=1).json()
            result = body["data"]["result"]
            return bool(result) and float(result[0]["value"][1]) >= 3

        _poll("three scrapes of the exporter", 30, scraped)
        yield url
    except AssertionError:
        log.flush()
        raise AssertionError(Path(log.name).read_text()[-2000:]) from None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        exporter.close()
