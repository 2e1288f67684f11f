"""The ``threshold`` judge: point estimates against bounds, like Flagger and Keptn.

Canary above an absolute bound (``max``), above stable by more than ``max_increase``
(Keptn's ``<=+0.01``), or above stable by more than ``max_ratio`` (Keptn's ``<=+20%``)
fails. It has no false-alarm bound: checked every second over a growing window it reacts
fast to gross regressions and flaps on noise, which is why the built-in metrics use the
``sequential`` and ``mann-whitney`` judges. Use it for values a provider computes
(Prometheus, HTTP) and for absolute limits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from entrega.analysis.judges.base import MetricVerdict
from entrega.analysis.judges.sequential import format_points
from entrega.analysis.window import WindowCounts


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
    def fmt(value: float | None) -> str:
        if value is None:
            return "n/a"
        return f"{value:.2%}" if measure == "error-rate" else f"{value:.1f}ms"

    def fmt_increase(value: float) -> str:
        return format_points(value) if measure == "error-rate" else f"{value:g}ms"

    what = "error rate" if measure == "error-rate" else measure
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
        return compute_breaches(rule, v, reference, what=what, fmt=fmt,
                                fmt_increase=fmt_increase)

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
                             f"{canary.requests} canary requests, need {rule.min_requests} "
                             f"(min_requests: {rule.min_requests})",
                             value, reference, details=details, **base)
    if reference is None and (rule.max_increase is not None or rule.max_ratio is not None):
        # Too little data is never a pass: a bound relative to stable needs stable traffic.
        return MetricVerdict(metric, "inconclusive", "no stable requests to compare with",
                             value, reference, details=details, **base)
    return MetricVerdict(metric, "pass", f"{fmt(value)} (stable {fmt(reference)})"
                         f"{compute_within(rule)}", value, reference, details=details, **base)


def compute_breaches(rule: ThresholdRule, value: float, reference: float | None, *,
                     what: str, fmt: Callable[[float], str],
                     fmt_increase: Callable[[float], str]) -> list[str]:
    """Each bound of ``rule`` that ``value`` breaks, as a sentence that quotes the bound as
    configured: "canary error rate 3.00% is more than 0.2 points above stable's 1.00%
    (max_increase: 0.002)"."""
    found: list[str] = []
    if rule.max is not None and value > rule.max:
        found.append(f"canary {what} {fmt(value)} is above {fmt(rule.max)} "
                     f"(max: {rule.max:g})")
    if reference is not None and rule.max_increase is not None \
            and value - reference > rule.max_increase:
        found.append(f"canary {what} {fmt(value)} is more than "
                     f"{fmt_increase(rule.max_increase)} above stable's {fmt(reference)} "
                     f"(max_increase: {rule.max_increase:g})")
    # A stable at zero makes any canary value an infinite ratio, not a skipped check.
    if reference is not None and rule.max_ratio is not None \
            and value > rule.max_ratio * reference:
        ratio = f"{value / reference:.2f}x stable's" if reference > 0 else "above stable's"
        found.append(f"canary {what} {fmt(value)} is {ratio} {fmt(reference)}, more than "
                     f"{rule.max_ratio:g}x (max_ratio: {rule.max_ratio:g})")
    return found


def compute_within(rule: ThresholdRule) -> str:
    """", within max: 0.05, max_ratio: 1.2": the bounds a passing value met."""
    bounds = [f"{name}: {bound:g}" for name, bound in
              (("max", rule.max), ("max_increase", rule.max_increase),
               ("max_ratio", rule.max_ratio)) if bound is not None]
    return f", within {', '.join(bounds)}" if bounds else ""


def judge_threshold_value(metric: str, rule: ThresholdRule, value: float | None,
                          reference: float | None, *, unit: str = "") -> MetricVerdict:
    """The threshold judge on values a provider computed (Prometheus, HTTP): no request
    counts, so no ``min_requests``; a missing value is ``no-data``, never a pass."""
    base: dict[str, Any] = {"critical": rule.critical}
    if value is None:
        return MetricVerdict(metric, "no-data", "the provider returned no canary value",
                             stable=reference, **base)

    def fmt(v: float) -> str:
        return f"{v:g}{unit}"

    found = compute_breaches(rule, value, reference, what="value", fmt=fmt, fmt_increase=fmt)
    relative = rule.max_increase is not None or rule.max_ratio is not None
    if found:
        return MetricVerdict(metric, "fail", "; ".join(found), value, reference, **base)
    if relative and reference is None:
        return MetricVerdict(metric, "inconclusive", "the provider returned no stable value",
                             value, None, **base)
    shown = f"{fmt(value)} (stable {fmt(reference)})" if reference is not None else fmt(value)
    return MetricVerdict(metric, "pass", shown + compute_within(rule), value, reference,
                         **base)
