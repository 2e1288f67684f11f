"""What every judge returns, and how one check's metric verdicts combine.

A verdict is ``pass``, ``fail``, ``inconclusive`` (too little data, or a suspicion the
data cannot yet confirm) or ``no-data``. Too little data is never a pass: a canary nobody
calls has proved nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Verdict = Literal["pass", "fail", "inconclusive", "no-data"]
#: The verdict of a whole check (one metric's may also be ``no-data``); the rollout
#: state machine gets it with its window as ``rollouts.model.AnalysisVerdict``.
AnalysisOutcome = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class MetricVerdict:
    """One metric's verdict on one check; ``details`` holds the test's numbers, so
    ``entrega analysis explain`` can show why it decided."""

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


def judge_analysis(verdicts: list[MetricVerdict]) -> tuple[AnalysisOutcome, str]:
    """Combine metric verdicts: a critical failure fails alone; pass needs every critical
    metric to pass; anything else is inconclusive.

    A non-critical metric (``critical: false``) informs: its verdict is kept, shown and
    named in a pass's reason, but it never fails a check and never holds a pass back, with
    or without data. With no critical metric at all there is nothing to block a pass; with
    no metric at all nothing was judged, which is not a pass."""
    critical = [v for v in verdicts if v.critical]
    failed = [v for v in critical if v.verdict == "fail"]
    if failed:
        return "fail", "; ".join(f"{v.metric}: {v.reason}" for v in failed)
    pending = [v for v in critical if v.verdict != "pass"]
    if verdicts and not pending:
        return "pass", "; ".join(
            f"{v.metric} {v.reason}" if v.critical else f"{v.metric} (informs only): {v.reason}"
            for v in verdicts)
    return "inconclusive", "; ".join(f"{v.metric}: {v.reason}" for v in pending)


def format_needs(requests: float | None, rate_per_s: float | None) -> str:
    """"about 140 s more at 3 req/s", from canary requests still needed and the rate."""
    if requests is None:
        return "the traffic so far does not point to a pass yet"
    if not rate_per_s:
        return f"about {math.ceil(requests)} more canary requests"
    seconds = requests / rate_per_s
    shown = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return f"about {shown} more at {rate_per_s:.2g} req/s"
