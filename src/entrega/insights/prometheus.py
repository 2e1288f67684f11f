"""entrega's own metrics for Prometheus, computed from the store at scrape time.

Nothing is counted in memory: every value is a query over the store (rollouts by phase,
events, analysis runs, feedback), so the numbers survive restarts, agree with
``entrega history`` and are the same whichever server process answers. Counters are
monotone because the store is append-only for what they count.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from entrega.store.insights_repository import InsightsRepository
from entrega.vocabulary import EventKind

#: Upper bounds (s) of the step-duration histogram: canary steps last seconds to an hour.
STEP_BUCKETS_S = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
#: Events that end one step of a rollout and begin the next.
STEP_KINDS = (EventKind.ROLLOUT, EventKind.STEP, EventKind.COMMAND, EventKind.PROMOTED,
              EventKind.ROLLED_BACK, EventKind.FAILED)


class StoreCollector(Collector):
    """The metrics of ``apps`` (one store may hold several apps: a token limited to some
    sees only theirs)."""

    def __init__(self, apps: Sequence[str], insights: InsightsRepository) -> None:
        self.apps = tuple(apps)
        self.insights = insights

    def collect(self) -> Iterator[Metric]:
        rollouts = GaugeMetricFamily("entrega_rollouts", "Rollouts by current phase.",
                                     labels=["app", "environment", "phase"])
        for (app, env, phase), n in sorted(self.insights.rollout_phase_counts().items()):
            if app in self.apps:
                rollouts.add_metric([app, env, phase], n)
        yield rollouts

        names = {EventKind.ROLLED_BACK: ("entrega_rollbacks", "Rollouts rolled back."),
                 EventKind.PROMOTED: ("entrega_promotions", "Rollouts promoted to 100%."),
                 EventKind.FAILED: ("entrega_rollout_failures", "Rollouts that failed."),
                 EventKind.INSTANCE_RESTARTED: ("entrega_instance_restarts",
                                                "Instance crashes seen (and restarted).")}
        events = self.insights.event_counts(names)
        for kind, (name, doc) in names.items():
            family = CounterMetricFamily(name, doc, labels=["app", "environment"])
            for (app, env, k), n in sorted(events.items()):
                if k == kind and app in self.apps:
                    family.add_metric([app, env], n)
            yield family

        verdicts = CounterMetricFamily("entrega_analysis_verdicts",
                                       "Analysis windows by their latest verdict.",
                                       labels=["app", "environment", "verdict"])
        for (app, env, verdict), n in sorted(self.insights.analysis_verdict_counts().items()):
            if app in self.apps:
                verdicts.add_metric([app, env, verdict], n)
        yield verdicts

        feedback = CounterMetricFamily("entrega_feedback", "Feedback received.",
                                       labels=["app", "version", "rating"])
        for (app, version, rating), n in sorted(self.insights.feedback_counts().items()):
            if app in self.apps:
                feedback.add_metric([app, version, rating], n)
        yield feedback

        yield self._step_durations()

    def _step_durations(self) -> Metric:
        """Seconds between consecutive step events of each rollout, per environment."""
        family = HistogramMetricFamily("entrega_rollout_step_duration_seconds",
                                       "How long rollout steps took.",
                                       labels=["app", "environment"])
        for app in self.apps:
            per_rollout: dict[int, list[tuple[float, str]]] = defaultdict(list)
            for e in self.insights.events(app, kinds=STEP_KINDS):
                if e.rollout_id is not None:
                    per_rollout[e.rollout_id].append((e.time, e.environment or ""))
            durations: dict[str, list[float]] = defaultdict(list)
            for steps in per_rollout.values():
                for (t0, env), (t1, _) in zip(steps, steps[1:], strict=False):
                    durations[env].append(max(0.0, t1 - t0))
            for env, values in sorted(durations.items()):
                buckets = [(str(b), sum(1 for v in values if v <= b))
                           for b in STEP_BUCKETS_S]
                buckets.append(("+Inf", len(values)))
                family.add_metric([app, env], buckets, sum(values))
        return family


def render_metrics(apps: Sequence[str], insights: InsightsRepository) -> bytes:
    """The Prometheus text exposition of entrega's metrics for ``apps``: each family once,
    with a sample per app (so one scrape of a server of several apps is valid)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(apps, insights))
    return generate_latest(registry)
