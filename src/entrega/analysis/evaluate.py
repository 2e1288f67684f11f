"""One analysis check, pure: two snapshots, the metric configs, any external
measurements and the window's ratings in, a verdict out. This is the controller's entry
point."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from entrega.analysis.feedback import FeedbackCounts, judge_feedback
from entrega.analysis.judges import (
    AnalysisOutcome,
    MannWhitneyRule,
    MetricVerdict,
    SequentialRule,
    ThresholdRule,
    judge_analysis,
    judge_mann_whitney,
    judge_sequential,
    judge_threshold,
    judge_threshold_value,
)
from entrega.analysis.judges.quantile import QuantileRule, judge_quantile
from entrega.analysis.peers import PEERS, compute_peer_windows, peer_key
from entrega.analysis.providers.base import Measurement
from entrega.analysis.providers.builtin import release_metrics, router_restarted
from entrega.analysis.window import WindowCounts, compute_window
from entrega.codec import from_config
from entrega.config import MetricConfig
from entrega.routers.base import ReleaseMetrics

BuiltinJudge = Callable[[str, str, MetricConfig, WindowCounts, WindowCounts | None],
                        MetricVerdict]


def _threshold(name: str, measure: str, cfg: MetricConfig, canary: WindowCounts,
               stable: WindowCounts | None) -> MetricVerdict:
    return judge_threshold(name, measure, from_config(ThresholdRule, cfg), canary, stable)


def _sequential(name: str, measure: str, cfg: MetricConfig, canary: WindowCounts,
                stable: WindowCounts | None) -> MetricVerdict:
    return judge_sequential(name, _sequential_rule(cfg), canary, stable)


def _sequential_rule(cfg: MetricConfig) -> SequentialRule:
    # Unset bounds take the judge's own defaults: no worse than stable, by any margin.
    return from_config(SequentialRule, cfg, max_ratio=cfg.max_ratio or 1.0,
                       max_increase=cfg.max_increase or 0.0,
                       pass_ratio=cfg.pass_ratio or SequentialRule.pass_ratio)


def _mann_whitney(name: str, measure: str, cfg: MetricConfig, canary: WindowCounts,
                  stable: WindowCounts | None) -> MetricVerdict:
    if not measure.startswith("latency-p"):
        return MetricVerdict(name, "no-data", f"mann-whitney judges latencies, not {measure}",
                             critical=cfg.critical)
    rule = from_config(MannWhitneyRule, cfg, max_ratio=cfg.max_ratio or 1.2,
                       quantile=int(measure.removeprefix("latency-p")) / 100)
    return judge_mann_whitney(name, rule, canary, stable)


def _quantile(name: str, measure: str, cfg: MetricConfig, canary: WindowCounts,
              stable: WindowCounts | None) -> MetricVerdict:
    if not measure.startswith("latency-p"):
        return MetricVerdict(name, "no-data", f"quantile judges latencies, not {measure}",
                             critical=cfg.critical)
    rule = quantile_rule(cfg, int(measure.removeprefix("latency-p")) / 100)
    return judge_quantile(name, rule, canary, stable)


def quantile_rule(cfg: MetricConfig, quantile: float) -> QuantileRule:
    """The quantile judge's rule from a metric's config; the pass margin defaults to twice
    the slowdown ``max_ratio`` allows (1.2 -> 1.4)."""
    max_ratio = cfg.max_ratio or 1.2
    return from_config(QuantileRule, cfg, max_ratio=max_ratio, quantile=quantile,
                       pass_ratio=cfg.pass_ratio or 1 + 2 * (max_ratio - 1))


#: Judges of the builtin provider's window counts, by ``judge:`` kind.
JUDGES: dict[str, BuiltinJudge] = {
    "threshold": _threshold,
    "sequential": _sequential,
    "quantile": _quantile,
    "mann-whitney": _mann_whitney,
}


def compute_windows(baseline: dict[str, Any], latest: dict[str, Any], *, canary: str,
                    stable: str | None) -> tuple[WindowCounts, WindowCounts | None]:
    """The canary's and the stable's counts over one window: the difference of two
    snapshots of the builtin provider, or the latest alone after a router restart."""
    restarted = router_restarted(baseline, latest)
    canary_counts = compute_window(_baseline_metrics(baseline, canary),
                                   release_metrics(latest, canary), router_restarted=restarted)
    stable_counts = (compute_window(_baseline_metrics(baseline, stable),
                                    release_metrics(latest, stable), router_restarted=restarted)
                     if stable else None)
    return canary_counts, stable_counts


#: id(baseline) -> (the baseline, its releases parsed). A window's baseline is the same
#: stored document at every check of the window (a thousand rollouts checked every second
#: parsed theirs a thousand times a second). The entry holds the document itself, so its
#: id is not reused while cached; a baseline is never changed once stored.
_BASELINES: OrderedDict[int, tuple[dict[str, Any], dict[str | None, ReleaseMetrics | None]]] = (
    OrderedDict())
_BASELINES_KEPT = 4096


def _baseline_metrics(baseline: dict[str, Any], version: str | None) -> ReleaseMetrics | None:
    entry = _BASELINES.get(id(baseline))
    if entry is None or entry[0] is not baseline:
        entry = _BASELINES[id(baseline)] = (baseline, {})
        if len(_BASELINES) > _BASELINES_KEPT:
            _BASELINES.popitem(last=False)
    parsed = entry[1]
    if version not in parsed:
        parsed[version] = release_metrics(baseline, version)
    return parsed[version]


def evaluate_window(metrics: Mapping[str, MetricConfig], *, baseline: dict[str, Any],
                    latest: dict[str, Any], canary: str, stable: str | None,
                    measurements: Mapping[str, Mapping[str, Measurement]] | None = None,
                    feedback: FeedbackCounts | None = None, duration_s: float = 0.0,
                    environment: str = "", peers: Mapping[str, dict[str, Any]] | None = None,
                    ) -> tuple[AnalysisOutcome, str, list[MetricVerdict]]:
    """Judge one window (baseline -> latest snapshot of the builtin provider).

    ``measurements`` holds what external providers measured over the same window, by
    metric name then ``"canary"``/``"stable"`` (see ``providers.measure_external``); a
    metric with an external provider and no measurement is ``no-data``. ``feedback``
    holds the ratings given during the window (see :func:`uses_feedback`); a ``feedback``
    metric without them is ``no-data``. ``duration_s`` is how long the window has run: with
    it, a judge says how long the current traffic needs to decide. ``peers`` holds the
    latest snapshot of every other app's environment a metric names (``app:``), by
    :func:`~entrega.analysis.peers.peer_key`; ``environment`` is the analysing one (the
    default environment of such a metric).
    """
    canary_counts, stable_counts = compute_windows(baseline, latest, canary=canary,
                                                   stable=stable)
    if duration_s > 0:
        canary_counts = dataclasses.replace(canary_counts, duration_s=duration_s)
        if stable_counts is not None:
            stable_counts = dataclasses.replace(stable_counts, duration_s=duration_s)
    verdicts = []
    for name, cfg in metrics.items():
        if cfg.provider != "builtin":
            verdicts.append(_judge_external(name, cfg, (measurements or {}).get(name, {})))
            continue
        peer = cfg.peer(environment)
        if peer is not None:
            key = peer_key(*peer)
            verdicts.append(judge_peer(name, cfg, key, baseline.get(PEERS, {}).get(key),
                                       (peers or {}).get(key), duration_s=duration_s))
            continue
        if (cfg.measure or name) == "feedback":
            verdicts.append(judge_feedback(name, _sequential_rule(cfg), feedback,
                                           has_stable=stable is not None))
            continue
        judge = JUDGES[cfg.judge]
        verdicts.append(judge(name, cfg.measure or name, cfg, canary_counts, stable_counts))
    verdict, reason = judge_analysis(verdicts)
    return verdict, reason, verdicts


def judge_peer(name: str, cfg: MetricConfig, key: str, record: dict[str, Any] | None,
               latest: dict[str, Any] | None, *, duration_s: float = 0.0) -> MetricVerdict:
    """Another app's environment (``key``) judged by the metric's own judge and settings:
    its counts during the window as the canary side, before it as the stable side (see
    ``analysis/peers.py``)."""
    windows = compute_peer_windows(record, latest, duration_s=duration_s)
    if isinstance(windows, str):
        return MetricVerdict(name, "no-data", f"{key}: {windows}", critical=cfg.critical,
                             details={"app": key})
    during, before = windows
    verdict = JUDGES[cfg.judge](name, cfg.measure or name, cfg, during, before)
    before_s = float((record or {}).get("before_s") or 0.0)
    reason = (f"{key} during the window against the {before_s:.0f} s before it "
              f"(as canary/stable): {verdict.reason}")
    return dataclasses.replace(verdict, reason=reason,
                               details={**verdict.details, "app": key,
                                        "before_s": round(before_s, 1)})


def _judge_external(name: str, cfg: MetricConfig,
                    measured: Mapping[str, Measurement]) -> MetricVerdict:
    rule = from_config(ThresholdRule, cfg)  # min_requests unused: a value has no requests
    canary, stable = measured.get("canary"), measured.get("stable")
    if canary is None or canary.value is None:
        why = canary.error if canary is not None and canary.error else "no canary value"
        return MetricVerdict(name, "no-data", f"{cfg.provider}: {why}", critical=cfg.critical,
                             details={"query": canary.query} if canary else {})
    verdict = judge_threshold_value(name, rule, canary.value,
                                    stable.value if stable is not None else None)
    details = {"provider": cfg.provider, "query": canary.query}
    return MetricVerdict(verdict.metric, verdict.verdict, verdict.reason, verdict.canary,
                         verdict.stable, verdict.critical, details)


def uses_feedback(metrics: Mapping[str, MetricConfig]) -> bool:
    """Whether any metric judges ratings: only then does the controller read them."""
    return any(cfg.provider == "builtin" and (cfg.measure or name) == "feedback"
               for name, cfg in metrics.items())
