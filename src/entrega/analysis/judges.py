"""Judges: pure functions from measurements to verdicts.

A verdict is ``pass``, ``fail``, ``inconclusive`` (too little data to be sure) or
``no-data``. Too little data is never a pass: a canary nobody calls has proved nothing.

``threshold`` compares point estimates, like Flagger and Keptn do: canary above an
absolute bound (``max``), above stable by more than ``max_increase``, or above stable by
more than ``max_ratio`` fails. Checked every second over a growing window it reacts fast
to gross regressions; small ones need the statistical judges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from entrega.analysis.window import WindowCounts

Verdict = Literal["pass", "fail", "inconclusive", "no-data"]


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    verdict: Verdict
    reason: str
    canary: float | None = None
    stable: float | None = None
    critical: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "verdict": self.verdict, "reason": self.reason,
                "canary": self.canary, "stable": self.stable, "critical": self.critical,
                **({"details": self.details} if self.details else {})}


@dataclass(frozen=True)
class ThresholdRule:
    max: float | None = None
    max_increase: float | None = None
    max_ratio: float | None = None
    min_requests: int = 30
    critical: bool = True


def measure_value(measure: str, counts: WindowCounts) -> float | None:
    if measure == "error-rate":
        return counts.error_rate
    if measure.startswith("latency-p"):
        return counts.percentile_ms(int(measure.removeprefix("latency-p")) / 100)
    raise ValueError(f"unknown measure {measure!r}")


def judge_threshold(metric: str, measure: str, rule: ThresholdRule, canary: WindowCounts,
                    stable: WindowCounts | None) -> MetricVerdict:
    unit = "" if measure == "error-rate" else "ms"

    def fmt(value: float | None) -> str:
        if value is None:
            return "n/a"
        return f"{value:.2%}" if measure == "error-rate" else f"{value:.1f}{unit}"

    base: dict[str, Any] = {"critical": rule.critical}
    if canary.requests == 0:
        return MetricVerdict(metric, "no-data", "no canary requests yet", **base)
    value = measure_value(measure, canary)
    reference = measure_value(measure, stable) if stable and stable.requests else None
    details = {"canary_requests": canary.requests,
               "stable_requests": stable.requests if stable else 0}
    if value is None:
        return MetricVerdict(metric, "no-data", "no measurement", details=details, **base)

    def breaches(v: float) -> list[str]:
        found: list[str] = []
        if rule.max is not None and v > rule.max:
            found.append(f"{fmt(v)} > max {fmt(rule.max)}")
        if reference is not None and rule.max_increase is not None \
                and v - reference > rule.max_increase:
            found.append(f"{fmt(v)} exceeds stable {fmt(reference)} by more than "
                         f"{fmt(rule.max_increase)}")
        # A stable at zero makes any canary value an infinite ratio, not a skipped check.
        if reference is not None and rule.max_ratio is not None \
                and v > rule.max_ratio * reference:
            ratio = f"{v / reference:.2f}x" if reference > 0 else "above"
            found.append(f"{fmt(v)} is {ratio} stable {fmt(reference)} "
                         f"(max {rule.max_ratio:g}x)")
        return found

    failures = breaches(value)
    enough = canary.requests >= rule.min_requests
    # A gross failure is clear before min_requests for error rates: when the rule would
    # still fail if every request still needed to reach min_requests succeeded, there is
    # nothing left to wait for.
    certain = (measure == "error-rate" and not enough
               and bool(breaches(canary.errors / rule.min_requests)))
    if failures and (enough or certain):
        return MetricVerdict(metric, "fail", "; ".join(failures), value, reference,
                             details=details, **base)
    if not enough:
        return MetricVerdict(metric, "inconclusive",
                             f"{canary.requests} canary requests, need {rule.min_requests}",
                             value, reference, details=details, **base)
    if reference is None and (rule.max_increase is not None or rule.max_ratio is not None):
        # Too little data is never a pass: a bound relative to stable needs stable traffic.
        return MetricVerdict(metric, "inconclusive", "no stable requests to compare with",
                             value, reference, details=details, **base)
    return MetricVerdict(metric, "pass", f"{fmt(value)} (stable {fmt(reference)})",
                         value, reference, details=details, **base)


def judge_analysis(verdicts: list[MetricVerdict]) -> tuple[Literal["pass", "fail",
                                                                    "inconclusive"], str]:
    """Combine metric verdicts: a critical failure fails alone; pass needs every metric
    to pass; anything else is inconclusive."""
    failed = [v for v in verdicts if v.verdict == "fail"]
    critical = [v for v in failed if v.critical]
    if critical:
        return "fail", "; ".join(f"{v.metric}: {v.reason}" for v in critical)
    if verdicts and all(v.verdict == "pass" for v in verdicts):
        return "pass", "; ".join(f"{v.metric} {v.reason}" for v in verdicts)
    pending = [v for v in verdicts if v.verdict != "pass"]
    return "inconclusive", "; ".join(f"{v.metric}: {v.reason}" for v in pending)
