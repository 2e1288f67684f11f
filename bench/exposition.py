"""A scrape of the embedded router's ``/metrics``: its own writer against prometheus_client's.

    python -m bench.exposition            # a table (~5 s)
    python -m bench.exposition --json     # the same as one JSON object

Why the router writes its Prometheus text by hand (dataplane/admin/exposition.py) when
``prometheus_client`` is a dependency: a scrape is rendered on the router's event loop,
which with ``workers: 1`` is the loop that proxies every request. Here the same counters
(``releases`` releases, each with requests in several latency buckets) are rendered both
ways, each ``--rounds`` times, the best round counting: prometheus_client's
``generate_latest`` over metric families (what :func:`reference_exposition` builds, the
way insights/prometheus.py serves entrega's own metrics) against ``render_prometheus``.
Both outputs are parsed back with prometheus_client's parser and must give the same
samples (to the router's precision), so the comparison is of equals.

``import_ms`` is what importing prometheus_client adds to a router process's start (the
router does not import it otherwise), measured in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from entrega.dataplane.admin.exposition import RouterCounters, render_prometheus
from entrega.dataplane.http.metrics import MAX_RELEASES_KEPT, MetricsRegistry
from entrega.routers.base import LATENCY_BUCKETS_MS

#: release counts: one (a quiet environment), a canary (stable + canary + a draining one),
#: and the most a router keeps (MAX_RELEASES_KEPT)
RELEASES = (1, 3, MAX_RELEASES_KEPT)
_LE = [f"{ms / 1000:g}" for ms in LATENCY_BUCKETS_MS] + ["+Inf"]


class _Families(Collector):
    def __init__(self, counters: RouterCounters) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        labels = ["release"]
        requests = CounterMetricFamily("entrega_router_requests_total",
                                       "Requests answered, by release.", labels=labels)
        errors = CounterMetricFamily("entrega_router_responses_5xx_total",
                                     "Responses with status >= 500 (the router's own "
                                     "502/503/504 included), by release.", labels=labels)
        durations = HistogramMetricFamily("entrega_router_request_duration_seconds",
                                          "Time from the request head to the end of the "
                                          "answer, by release.", labels=labels)
        inflight = GaugeMetricFamily("entrega_router_inflight",
                                     "Requests in flight, by release.", labels=labels)
        for version, stats in self.counters.releases.items():
            requests.add_metric([version], stats.requests)
            errors.add_metric([version], stats.errors_5xx)
            cumulative, buckets = 0, []
            for le, count in zip(_LE, stats.buckets, strict=True):
                cumulative += count
                buckets.append((le, cumulative))
            durations.add_metric([version], buckets, stats.latency_sum_ms / 1000)
            inflight.add_metric([version], stats.inflight)
        yield from (requests, errors, durations, inflight)
        yield GaugeMetricFamily("entrega_router_started_at_seconds",
                                "When this router process started (unix time).",
                                value=self.counters.started_at)


def reference_exposition(counters: RouterCounters) -> bytes:
    """The router's exposition as prometheus_client writes it (names, types, labels)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(counters))
    return generate_latest(registry)


def samples(text: bytes) -> dict[tuple[str, str, tuple[tuple[str, str], ...]], float]:
    """(family type, sample name, labels) -> value, as Prometheus reads an exposition."""
    return {(family.type, s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples}


def differences(ours: bytes, reference: bytes) -> list[str]:
    """Samples the two expositions disagree on, beyond the precision the router writes
    (microseconds for latency sums, milliseconds for its start time)."""
    a, b = samples(ours), samples(reference)
    return [f"{key}: {a.get(key)} != {b.get(key)}" for key in sorted(set(a) | set(b))
            if key not in a or key not in b or not math.isclose(a[key], b[key], abs_tol=1e-3)]


def counters_of(releases: int) -> MetricsRegistry:
    registry = MetricsRegistry()
    for i in range(releases):
        stats = registry.for_release(f"v{i}")
        for ms in (0.4, 0.9, 2.5, 12.0, 48.0, 230.0, 1800.0):
            stats.record(200 if ms < 1000 else 503, ms)
    return registry


def best_us(render: Callable[[RouterCounters], bytes], counters: RouterCounters,
            rounds: int, budget_s: float = 0.2) -> float:
    """Microseconds per render, best of ``rounds`` rounds of about ``budget_s`` each."""
    best = float("inf")
    for _ in range(rounds):
        n, began = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - began) < budget_s:
            render(counters)
            n += 1
        best = min(best, elapsed / n)
    return best * 1e6


def import_ms() -> float:
    """What ``import prometheus_client`` costs a fresh interpreter (best of three)."""
    code = ("import time; t = time.perf_counter(); import prometheus_client; "
            "print(time.perf_counter() - t)")
    return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                    text=True, check=True).stdout) for _ in range(3)) * 1000


def run(rounds: int) -> dict[str, object]:
    rows = []
    for releases in RELEASES:
        counters = counters_of(releases)
        ours, reference = render_prometheus(counters), reference_exposition(counters)
        if differ := differences(ours, reference):
            raise SystemExit(f"bench.exposition: the two expositions of {releases} "
                             f"release(s) differ: {differ[:3]}")
        hand = best_us(render_prometheus, counters, rounds)
        library = best_us(reference_exposition, counters, rounds)
        rows.append({"releases": releases, "bytes": len(ours), "router_us": round(hand, 1),
                     "prometheus_client_us": round(library, 1),
                     "ratio": round(library / hand, 1)})
    return {"scrapes": rows, "import_ms": round(import_ms(), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.exposition", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--rounds", type=int, default=5, help="rounds per writer (best counts)")
    args = p.parse_args(argv)
    result = run(args.rounds)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'releases':>8} {'bytes':>8} {'router':>12} {'prometheus_client':>18} {'ratio':>6}")
    for row in result["scrapes"]:  # type: ignore[attr-defined]
        print(f"{row['releases']:>8} {row['bytes']:>8} {row['router_us']:>9.1f} us "
              f"{row['prometheus_client_us']:>15.1f} us {row['ratio']:>5.1f}x")
    print(f"import prometheus_client: {result['import_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
