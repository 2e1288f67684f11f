"""The router's Prometheus exposition: names, labels and values are an interface (the
Prometheus metric provider's queries, users' dashboards). The router writes it by hand for
speed (see exposition.py); Prometheus must read it exactly as prometheus_client's own."""

from __future__ import annotations

from bench.exposition import differences, reference_exposition, samples

from entrega.dataplane.admin.exposition import render_prometheus
from entrega.dataplane.http.metrics import MetricsRegistry
from entrega.routers.base import LATENCY_BUCKETS_MS


def counters() -> MetricsRegistry:
    registry = MetricsRegistry()
    v1 = registry.for_release("v1")
    for status, ms in ((200, 0.5), (200, 3.0), (503, 40.0), (200, 99999.0)):
        v1.record(status, ms)
    v1.inflight = 2
    registry.for_release('odd "name"\\\n')  # label values are escaped
    return registry


def test_reads_as_prometheus_clients_own_exposition() -> None:
    registry = counters()
    assert differences(render_prometheus(registry), reference_exposition(registry)) == []


def test_names_labels_and_values() -> None:
    registry = counters()
    found = samples(render_prometheus(registry))
    v1 = (("release", "v1"),)
    assert found[("counter", "entrega_router_requests_total", v1)] == 4
    assert found[("counter", "entrega_router_responses_5xx_total", v1)] == 1
    assert found[("gauge", "entrega_router_inflight", v1)] == 2
    assert found[("histogram", "entrega_router_request_duration_seconds_count", v1)] == 4
    assert abs(found[("histogram", "entrega_router_request_duration_seconds_sum", v1)]
               - (0.5 + 3 + 40 + 99999) / 1000) < 1e-6
    le = {dict(labels)["le"]: value for (_, name, labels), value in found.items()
          if name.endswith("_bucket") and ("release", "v1") in labels}
    assert len(le) == len(LATENCY_BUCKETS_MS) + 1
    assert le["0.001"] == 1 and le["0.003"] == 2 and le["0.05"] == 3 and le["+Inf"] == 4
    odd = (("release", 'odd "name"\\\n'),)
    assert found[("counter", "entrega_router_requests_total", odd)] == 0
    assert abs(found[("gauge", "entrega_router_started_at_seconds", ())]
               - registry.started_at) < 0.001
