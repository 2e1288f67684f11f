"""What every judge returns, and how one check's metric verdicts combine.

A verdict is ``pass``, ``fail``, ``inconclusive`` (too little data, or a suspicion the
data cannot yet confirm) or ``no-data``. Too little data is never a pass: a canary nobody
calls has proved nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from entrega.analysis.window import WindowCounts

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


def describe_needs(requests: float | None, canary: WindowCounts,
                   details: dict[str, Any]) -> str:
    """How long the canary's traffic so far needs to reach the pass evidence, from the
    canary requests still needed (None: the data do not point to a pass): written into
    ``details`` (``needs_requests``, and ``needs_s`` when the window's duration is known)
    and said in words, "about 140 s more at 3 req/s"."""
    rate = canary.requests / canary.duration_s if canary.duration_s > 0 else None
    details["needs_requests"] = None if requests is None else math.ceil(requests)
    if requests is None:
        return "the traffic so far does not point to a pass yet"
    if not rate:
        return f"about {math.ceil(requests)} more canary requests"
    seconds = requests / rate
    details["needs_s"] = round(seconds, 1)
    shown = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return f"about {shown} more at {rate:.2g} req/s"
