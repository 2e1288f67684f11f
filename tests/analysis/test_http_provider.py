"""The http provider against a real local HTTP server, and its JSONPath-like selector."""

from __future__ import annotations

import pytest

from entrega.analysis.providers import MeasureWindow, measure_external
from entrega.analysis.providers.http import HttpProvider, parse_selector, select_value
from entrega.config import MetricConfig

from .conftest import LocalServer, json_route

WINDOW = MeasureWindow(started_at=1000.0, ended_at=1030.0)


@pytest.mark.parametrize(("select", "steps"), [
    pytest.param("$", [], id="root"),
    pytest.param("$.data.error_rate", ["data", "error_rate"], id="dotted"),
    pytest.param("$.items[0].value", ["items", 0, "value"], id="index"),
    pytest.param("$['a b'][12]", ["a b", 12], id="quoted-and-index"),
    pytest.param('$["x-y"].z', ["x-y", "z"], id="double-quoted"),
])
def test_parse_selector(select, steps):
    assert parse_selector(select) == steps


@pytest.mark.parametrize("select", ["data", "$.", "$[x]", "$.a..b"])
def test_malformed_selectors(select):
    with pytest.raises(ValueError):
        parse_selector(select)


def test_select_value_names_the_missing_step():
    doc = {"items": [{"value": 3}]}
    assert select_value(doc, "$.items[0].value") == 3
    with pytest.raises(KeyError, match="1"):
        select_value(doc, "$.items[1].value")


def metric(server: LocalServer, path: str, select: str) -> MetricConfig:
    return MetricConfig.model_validate({"http": {"url": server.url + path, "select": select,
                                                 "timeout_s": 2}})


DOC = {"data": {"error_rate": 0.012, "text": "0.5", "none": None, "flag": True,
                "list": [1, 2]},
       "items": [{"value": 7}]}

CASES = [
    pytest.param("$.data.error_rate", 0.012, "", id="number"),
    pytest.param("$.items[0].value", 7.0, "", id="indexed"),
    pytest.param("$.data.text", 0.5, "", id="numeric-string"),
    pytest.param("$.data.missing", None, "nothing at $.data.missing", id="missing-field"),
    pytest.param("$.data.none", None, "is null", id="null"),
    pytest.param("$.data.flag", None, "not a number", id="boolean"),
    pytest.param("$.data.list", None, "not a number", id="list"),
]


@pytest.mark.parametrize(("select", "value", "error"), CASES)
async def test_measure_from_a_real_server(json_server, select, value, error):
    json_server.routes["/metrics/v2"] = json_route(DOC)
    m = await HttpProvider(app="shop").measure(
        metric=metric(json_server, "/metrics/{release}", select), release="v2", window=WINDOW)
    assert (m.value, m.query) == (value, f"GET {json_server.url}/metrics/v2 {select}")
    assert error in m.error


@pytest.mark.parametrize(("route", "error"), [
    pytest.param(json_route({"x": 1}, status=500), "answered 500", id="server-error"),
    pytest.param(None, "answered 404", id="not-found"),
    pytest.param(lambda: (200, "text/plain", "not json"), "did not answer JSON", id="not-json"),
])
async def test_bad_answers_are_no_data(json_server, route, error):
    if route is not None:
        json_server.routes["/m"] = route
    m = await HttpProvider(app="shop").measure(metric=metric(json_server, "/m", "$.x"),
                                               release="v2", window=WINDOW)
    assert m.value is None and error in m.error


async def test_unreachable_server_is_no_data(json_server):
    cfg = metric(json_server, "/m", "$.x")
    json_server.close()
    m = await HttpProvider(app="shop").measure(metric=cfg, release="v2", window=WINDOW)
    assert m.value is None and "unreachable" in m.error


async def test_measure_external_measures_canary_and_stable(json_server):
    json_server.routes["/shop/v1"] = json_route({"p": 1.0})
    json_server.routes["/shop/v2"] = json_route({"p": 2.5})
    cfg = metric(json_server, "/{app}/{release}", "$.p")
    builtin = MetricConfig()
    result = await measure_external({"custom": cfg, "error-rate": builtin}, app="shop",
                                    canary="v2", stable="v1", window=WINDOW)
    assert set(result) == {"custom"}
    assert (result["custom"]["canary"].value, result["custom"]["stable"].value) == (2.5, 1.0)


async def test_measure_external_opens_no_client_when_every_metric_is_builtin(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # An HTTP client costs ~50 ms of CPU to create (the CA bundle): a check of the router's
    # own counters, every second for each of many rollouts, must not pay it.
    def no_client(*args: object, **kwargs: object) -> None:
        raise AssertionError("an HTTP client was created for builtin metrics only")

    monkeypatch.setattr("entrega.analysis.providers.httpx.AsyncClient", no_client)
    metrics = {"error-rate": MetricConfig(), "latency-p95": MetricConfig(judge="quantile")}
    assert await measure_external(metrics, app="shop", canary="v2", stable="v1",
                                  window=WINDOW) == {}
