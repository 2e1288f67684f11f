"""One analysis check, pure: two snapshots and the metric configs in, a verdict out."""

from __future__ import annotations

from typing import Any, Literal

from entrega.analysis.judges import MetricVerdict, ThresholdRule, judge_analysis, judge_threshold
from entrega.analysis.providers.builtin import release_metrics
from entrega.analysis.window import compute_window
from entrega.config import MetricConfig


def evaluate_window(metrics: dict[str, MetricConfig], *, baseline: dict[str, Any],
                    latest: dict[str, Any], canary: str, stable: str | None,
                    ) -> tuple[Literal["pass", "fail", "inconclusive"], str, list[MetricVerdict]]:
    restarted = baseline.get("started_at") != latest.get("started_at")
    canary_counts = compute_window(release_metrics(baseline, canary),
                                   release_metrics(latest, canary), router_restarted=restarted)
    stable_counts = (compute_window(release_metrics(baseline, stable),
                                    release_metrics(latest, stable), router_restarted=restarted)
                     if stable else None)
    verdicts = []
    for name, cfg in metrics.items():
        rule = ThresholdRule(max=cfg.max, max_increase=cfg.max_increase,
                             max_ratio=cfg.max_ratio, min_requests=cfg.min_requests,
                             critical=cfg.critical)
        verdicts.append(judge_threshold(name, cfg.measure or name, rule, canary_counts,
                                        stable_counts))
    verdict, reason = judge_analysis(verdicts)
    return verdict, reason, verdicts
