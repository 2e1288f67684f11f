"""Judges: pure functions from one window's measurements to a verdict per metric.

One module per judge; each states its false-alarm bound in its docstring:

- ``threshold``: point estimates against absolute or stable-relative bounds (no bound);
- ``sequential``: error counts, mixture SPRT, P(false fail) <= alpha over any number of checks;
- ``mann-whitney``: request latencies, U tests Bonferroni-corrected over ``max_checks``.
"""

from entrega.analysis.judges.base import AnalysisOutcome, MetricVerdict, Verdict, judge_analysis
from entrega.analysis.judges.mann_whitney import MannWhitneyRule, judge_mann_whitney
from entrega.analysis.judges.sequential import SequentialRule, judge_sequential
from entrega.analysis.judges.threshold import (
    ThresholdRule,
    judge_threshold,
    judge_threshold_value,
    measure_value,
)

__all__ = [
    "AnalysisOutcome", "MannWhitneyRule", "MetricVerdict", "SequentialRule", "ThresholdRule",
    "Verdict", "judge_analysis", "judge_mann_whitney", "judge_sequential", "judge_threshold",
    "judge_threshold_value", "measure_value",
]
