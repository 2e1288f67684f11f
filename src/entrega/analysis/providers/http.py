"""The http provider: a number from any JSON document.

``http: {url, select}``: GET the URL (``{release}`` and ``{app}`` replaced) and take the
number at ``select``, a small JSONPath: ``$`` then ``.name``, ``['name']`` or ``[index]``
steps (``$.data.error_rate``, ``$.items[0].value``). A missing field, a null or a non-2xx
answer is no data; a value that is not a number says so.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from entrega.analysis.providers.base import (
    Measurement,
    MeasureWindow,
    MetricProvider,
    substitute,
)
from entrega.config import MetricConfig

_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


def parse_selector(select: str) -> list[str | int]:
    """``$.items[0].value`` -> ``["items", 0, "value"]``; ValueError when malformed."""
    if not select.startswith("$"):
        raise ValueError(f"a selector starts with $: {select!r}")
    steps: list[str | int] = []
    pos = 1
    while pos < len(select):
        match = _STEP.match(select, pos)
        if match is None:
            raise ValueError(f"cannot read {select!r} at {select[pos:]!r}")
        name, index, quoted, dquoted = match.groups()
        steps.append(int(index) if index is not None else (name or quoted or dquoted or ""))
        pos = match.end()
    return steps


def select_value(document: Any, select: str) -> Any:
    """The value at ``select`` in ``document``; KeyError naming the missing step."""
    value = document
    for step in parse_selector(select):
        if isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict) and step in value:
            value = value[step]
        else:
            raise KeyError(step)
    return value


class HttpProvider(MetricProvider):
    def __init__(self, *, app: str, client: httpx.AsyncClient | None = None) -> None:
        self.app = app
        self._client = client

    async def measure(self, *, metric: MetricConfig, release: str,
                      window: MeasureWindow) -> Measurement:
        source = metric.http
        if source is None:
            return Measurement(None, error="no http: settings")
        url = substitute(source.url, release=release, app=self.app)
        asked = f"GET {url} {source.select}"
        try:
            if self._client is not None:
                response = await self._client.get(url, timeout=source.timeout_s)
            else:
                async with httpx.AsyncClient() as client:
                    response = await client.get(url, timeout=source.timeout_s)
        except httpx.HTTPError as exc:
            return Measurement(None, asked, f"{url} unreachable: {exc or 'no answer in time'}")
        if not response.is_success:
            return Measurement(None, asked, f"{url} answered {response.status_code}")
        try:
            value = select_value(response.json(), source.select)
        except ValueError as exc:
            return Measurement(None, asked, f"{url} did not answer JSON: {exc}")
        except KeyError as exc:
            return Measurement(None, asked, f"nothing at {source.select} (no {exc})")
        if value is None:
            return Measurement(None, asked, f"{source.select} is null")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return Measurement(None, asked, f"{source.select} is not a number: {value!r}")
        try:
            return Measurement(float(value), asked)
        except ValueError:
            return Measurement(None, asked, f"{source.select} is not a number: {value!r}")
