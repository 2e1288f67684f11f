"""The one interface every external metric provider implements.

A provider returns raw numbers; judging happens elsewhere (``analysis.judges``). No data
(an empty query result, a missing field, an unreachable server) is a ``Measurement`` with
``value=None`` and the reason in ``error``: it becomes a ``no-data`` verdict, never a pass,
and never an exception that would stall the controller's loop.

The builtin provider is not one of these: the router's counters are cumulative, so a
window is the difference of two snapshots, and the controller keeps the first in the store
(see ``builtin.py``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from entrega.config import MetricConfig


@dataclass(frozen=True)
class MeasureWindow:
    """The stretch of time a measurement covers (Unix seconds)."""

    started_at: float
    ended_at: float

    @property
    def duration_s(self) -> float:
        return max(0.0, self.ended_at - self.started_at)

    @property
    def promql_range(self) -> str:
        """The window as a PromQL duration, at least one second (``30s``)."""
        return f"{max(1, round(self.duration_s))}s"


@dataclass(frozen=True)
class Measurement:
    #: The number measured; None means no data.
    value: float | None
    #: What was asked (the PromQL or URL after substitution), for ``analysis explain``.
    query: str = ""
    #: Why there is no value, when there is none.
    error: str = ""


class MetricProvider(abc.ABC):
    """Measures one metric of one release over a window. Idempotent, read-only."""

    @abc.abstractmethod
    async def measure(self, *, metric: MetricConfig, release: str,
                      window: MeasureWindow) -> Measurement:
        """The raw value for ``release`` over ``window``; never raises for missing data."""


def substitute(template: str, **values: str) -> str:
    """Replace ``{name}`` placeholders, leaving other braces (PromQL label sets) alone."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template
