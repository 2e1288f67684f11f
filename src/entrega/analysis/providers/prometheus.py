"""The prometheus provider: one PromQL query per release over Prometheus' HTTP API.

The query is the user's (``prometheus: {url, query}``) with ``{release}``, ``{app}`` and
``{window}`` replaced, evaluated at the end of the window (``/api/v1/query?time=``). It must
return one number: a scalar, or a vector of exactly one series (aggregate with ``sum()``).
An empty vector or NaN (a rate over no requests) is no data.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from entrega.analysis.providers.base import (
    Measurement,
    MeasureWindow,
    MetricProvider,
    substitute,
)
from entrega.config import MetricConfig


class PrometheusProvider(MetricProvider):
    def __init__(self, *, app: str, client: httpx.AsyncClient | None = None) -> None:
        self.app = app
        self._client = client

    async def measure(self, *, metric: MetricConfig, release: str,
                      window: MeasureWindow) -> Measurement:
        source = metric.prometheus
        if source is None:
            return Measurement(None, error="no prometheus: settings")
        query = substitute(source.query, release=release, app=self.app,
                           window=window.promql_range)
        url = source.url.rstrip("/") + "/api/v1/query"
        params = {"query": query, "time": f"{window.ended_at:.3f}"}
        try:
            if self._client is not None:
                response = await self._client.get(url, params=params, timeout=source.timeout_s)
            else:
                async with httpx.AsyncClient() as client:
                    response = await client.get(url, params=params, timeout=source.timeout_s)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            return Measurement(None, query, f"{source.url} unreachable or not JSON: {exc!r}")
        if body.get("status") != "success":
            return Measurement(None, query, f"prometheus: {body.get('error') or body}")
        return parse_result(body.get("data") or {}, query)


def parse_result(data: dict[str, Any], query: str) -> Measurement:
    """One number from a query result (``data`` of the API's answer)."""
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return _number(result[1], query)
    if kind == "vector" and isinstance(result, list):
        if not result:
            return Measurement(None, query, "the query returned no series")
        if len(result) > 1:
            return Measurement(None, query, f"the query returned {len(result)} series; "
                               "aggregate them (sum(...)) into one")
        return _number(result[0]["value"][1], query)
    return Measurement(None, query, f"expected a scalar or an instant vector, got {kind}")


def _number(raw: Any, query: str) -> Measurement:
    value = float(raw)
    if math.isnan(value):
        return Measurement(None, query, "the query returned NaN (no requests in the window?)")
    return Measurement(value, query)
