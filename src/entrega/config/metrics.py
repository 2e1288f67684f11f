"""The metrics of an analysis: where a metric's numbers come from, how they are judged,
and the built-in metrics with every default. Read by the judges' adapters
(``analysis/evaluate.py``), the benchmark and ``entrega init``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from entrega.config.model import Model as _Model


class PrometheusSource(_Model):
    """A PromQL query over Prometheus' HTTP API, run once per release per check."""

    #: Base URL of the Prometheus server (``http://prometheus:9090``).
    url: str = Field(min_length=1)
    #: PromQL returning one number; ``{release}``, ``{app}`` and ``{window}`` (the analysis
    #: window as a PromQL duration, e.g. ``30s``) are replaced before it is sent.
    query: str = Field(min_length=1)
    #: A check runs every second: a slow server must not stall the controller for long.
    timeout_s: float = Field(default=5.0, gt=0)


class HttpSource(_Model):
    """A JSON document from any URL and the number in it."""

    #: ``{release}`` and ``{app}`` are replaced before the request.
    url: str = Field(min_length=1)
    #: Where the number is: ``$.data.error_rate``, ``$.items[0].value``.
    select: str = Field(pattern=r"^\$")
    timeout_s: float = Field(default=5.0, gt=0)


class MetricConfig(_Model):
    """One metric of an analysis: where its numbers come from and how to judge them.

    ``provider`` defaults from the section given (``prometheus:`` or ``http:``), else the
    router's own counters (``builtin``). ``judge``: ``sequential`` (error counts, builtin;
    or low ratings among ratings, ``measure: feedback``), ``quantile`` (latency percentiles
    from every request, builtin), ``mann-whitney`` (request latencies, builtin) or
    ``threshold`` (anything).
    """

    provider: Literal["builtin", "prometheus", "http"] = "builtin"
    prometheus: PrometheusSource | None = None
    http: HttpSource | None = None
    #: What the builtin provider measures; defaults from the metric's name. ``feedback``:
    #: users' ratings of each release (``/.entrega/feedback``), low ones (1-2) as "errors".
    measure: Literal["error-rate", "latency-p50", "latency-p95", "latency-p99",
                     "feedback"] | None = None
    judge: Literal["threshold", "sequential", "quantile", "mann-whitney"] = "threshold"
    #: threshold: fail when the canary's value is above this absolute bound.
    max: float | None = Field(default=None, ge=0)
    #: threshold: fail when canary - stable is above this (e.g. 0.01 = one point of error
    #: rate); sequential: the observed increase must be above this to fail.
    max_increase: float | None = Field(default=None, ge=0)
    #: threshold: fail when canary / stable is above this (e.g. 1.2 = 20% slower);
    #: sequential and mann-whitney: fail when the canary is *surely* worse than this ratio;
    #: quantile: the margin (fail when surely above it, pass when surely within it).
    max_ratio: float | None = Field(default=None, gt=0)
    #: sequential: a step passes on evidence that the canary's rate is below this times
    #: stable's (default 4) ...; quantile: ... that the canary's quantile is within this
    #: times stable's (default: twice the slowdown max_ratio allows, 1.2 -> 1.4)
    pass_ratio: float | None = Field(default=None, gt=1)
    #: sequential: ... or below this absolute rate (what lets an app with no errors pass).
    pass_rate: float = Field(default=0.01, gt=0, lt=1)
    #: Below this many canary requests the verdict is inconclusive, never a pass.
    min_requests: int = Field(default=30, ge=1)
    #: sequential, quantile, mann-whitney: probability that a canary within bounds ever
    #: fails, however often it is checked.
    alpha: float = Field(default=0.01, gt=0, lt=1)
    #: sequential, quantile: probability that a canary beyond the pass margin ever passes.
    beta: float = Field(default=0.05, gt=0, lt=1)
    #: quantile, mann-whitney: checks of one window that a rank test's share of ``alpha``
    #: covers (an hour of 1 s checks).
    max_checks: int = Field(default=3600, ge=1)
    #: A critical metric fails the whole analysis on its own.
    critical: bool = True
    #: Another app whose router this metric reads (builtin error-rate or latency-pNN):
    #: a release that breaks its callers is caught where the damage shows. That app does
    #: not split its traffic for this rollout, so its counts during the window are judged
    #: against its counts just before it (see ``analysis/peers.py``).
    app: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]*$")
    #: The other app's environment; default: the one of the same name as the analysing
    #: environment (production's canary watches the callers in production).
    environment: str | None = Field(default=None, min_length=1)

    def peer(self, environment: str) -> tuple[str, str] | None:
        """The (app, environment) whose router this metric reads, when another app's
        (``environment``: the analysing environment's name, the default)."""
        if self.app is None:
            return None
        return self.app, self.environment or environment

    @model_validator(mode="before")
    @classmethod
    def _infer_provider(cls, data: Any) -> Any:
        if isinstance(data, dict) and "provider" not in data:
            for kind in ("prometheus", "http"):
                if data.get(kind) is not None:
                    return {**data, "provider": kind}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> MetricConfig:
        if self.provider == "prometheus" and self.prometheus is None:
            raise ValueError("provider prometheus needs prometheus: {url, query}")
        if self.provider == "http" and self.http is None:
            raise ValueError("provider http needs http: {url, select}")
        if self.provider != "builtin" and self.judge != "threshold":
            raise ValueError(f"judge {self.judge} needs the builtin provider's request "
                             "counts; use judge: threshold for a provider's values")
        if self.judge == "sequential" and self.measure not in (None, "error-rate", "feedback"):
            raise ValueError("judge sequential judges error counts: measure error-rate "
                             "(or feedback: low ratings)")
        if self.measure == "feedback" and self.judge != "sequential":
            raise ValueError("measure feedback is judged by judge: sequential (the share of "
                             "low ratings, canary against stable)")
        if self.judge in ("mann-whitney", "quantile") and self.measure == "error-rate":
            raise ValueError(f"judge {self.judge} judges latencies: measure latency-pNN")
        if self.environment is not None and self.app is None:
            raise ValueError("environment names another app's environment: set app: too")
        if self.app is not None:
            if self.provider != "builtin":
                raise ValueError(f"app: another app's numbers come from its router (the "
                                 f"builtin provider), not provider {self.provider}")
            if self.judge == "mann-whitney":
                raise ValueError("app: judge mann-whitney needs both sides' request rings; "
                                 "use judge: quantile for another app's latency")
        if self.judge != "threshold" and self.max is not None:
            raise ValueError(f"max is an absolute bound of judge threshold, not {self.judge}")
        return self


#: What the builtin provider measures from a router, so what another app's metric may say
#: (``app:``): a router counts requests, errors and latencies, nothing else.
ROUTER_MEASURES = ("error-rate", "latency-p50", "latency-p95", "latency-p99")


#: The built-in metrics. Error rate: the sequential test may be checked every second with
#: at most 1% false rollbacks; 0.2 points of absolute increase keep a x3 of a 0.01% error
#: rate at high volume from failing. Latency: p95 may grow by 20% (bench/analysis.py shows
#: what these catch, and how fast). Feedback (used only where a step names it): the same
#: sequential test on users' low ratings (1-2) among their ratings; ratings are few and
#: noisy, so only a share of low ratings 5 points above stable's counts as worse, and a
#: step passes once the ratings show the canary's share of low ones surely below half (or
#: below 4x stable's): a few ratings can show that, where 1% would take hundreds.
DEFAULT_METRICS: dict[str, MetricConfig] = {
    "error-rate": MetricConfig(judge="sequential", max_increase=0.002),
    "latency-p95": MetricConfig(judge="quantile", max_ratio=1.2, min_requests=50),
    "latency-p99": MetricConfig(judge="quantile", max_ratio=1.5, min_requests=50),
    "feedback": MetricConfig(judge="sequential", measure="feedback", max_increase=0.05,
                             pass_rate=0.5),
}
#: The metrics of the analysis steps ``entrega init`` writes, and that the benchmark judges.
DEFAULT_ANALYSIS: tuple[str, ...] = ("error-rate", "latency-p95", "latency-p99")
