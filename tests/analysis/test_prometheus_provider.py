"""The prometheus provider against a real Prometheus scraping the router's metric names."""

from __future__ import annotations

import time

import pytest

from entrega.analysis.providers import MeasureWindow
from entrega.analysis.providers.prometheus import PrometheusProvider, parse_result
from entrega.config import MetricConfig

pytestmark = pytest.mark.real

ERROR_RATE = ('sum(rate(entrega_router_responses_5xx_total{release="{release}"}[{window}])) / '
              'sum(rate(entrega_router_requests_total{release="{release}"}[{window}]))')
P95 = ('histogram_quantile(0.95, sum by (le) (rate('
       'entrega_router_request_duration_seconds_bucket{release="{release}"}[{window}])))')


def metric(url: str, query: str) -> MetricConfig:
    return MetricConfig.model_validate({"prometheus": {"url": url, "query": query,
                                                       "timeout_s": 5}})


def window() -> MeasureWindow:
    now = time.time()
    return MeasureWindow(started_at=now - 30, ended_at=now)


@pytest.mark.parametrize(("query", "release", "expected"), [
    pytest.param(ERROR_RATE, "v1", 0.01, id="stable-error-rate"),
    pytest.param(ERROR_RATE, "v2", 0.10, id="canary-error-rate"),
    pytest.param(P95, "v2", 0.075, id="p95-from-the-histogram"),
])
async def test_measures_a_release(prometheus, query, release, expected):
    m = await PrometheusProvider(app="shop").measure(metric=metric(prometheus, query),
                                                     release=release, window=window())
    assert m.error == ""
    assert m.value == pytest.approx(expected, rel=0.05)
    assert f'release="{release}"' in m.query and "[30s]" in m.query


async def test_unknown_release_is_no_data(prometheus):
    m = await PrometheusProvider(app="shop").measure(
        metric=metric(prometheus, 'entrega_router_requests_total{release="{release}"}'),
        release="v9", window=window())
    assert m.value is None and "no series" in m.error


async def test_several_series_must_be_aggregated(prometheus):
    m = await PrometheusProvider(app="shop").measure(
        metric=metric(prometheus, "entrega_router_requests_total"), release="v1",
        window=window())
    assert m.value is None and "returned 2 series" in m.error


async def test_bad_promql_is_no_data_with_prometheus_error(prometheus):
    m = await PrometheusProvider(app="shop").measure(metric=metric(prometheus, "sum(("),
                                                     release="v1", window=window())
    assert m.value is None and "parse error" in m.error


async def test_scalar_result(prometheus):
    m = await PrometheusProvider(app="shop").measure(metric=metric(prometheus, "scalar(vector(2))"),
                                                     release="v1", window=window())
    assert m.value == 2.0


async def test_unreachable_prometheus_is_no_data():
    m = await PrometheusProvider(app="shop").measure(
        metric=metric("http://127.0.0.1:9", "up"), release="v1", window=window())
    assert m.value is None and "unreachable" in m.error


def test_nan_is_no_data():
    m = parse_result({"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]},
                     "q")
    assert m.value is None and "NaN" in m.error
