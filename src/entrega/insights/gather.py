"""Reading what the pure computations need from the store: one function per view.

Everything here is a read; the figures themselves are computed by ``series``,
``scorecard`` and ``dora``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from entrega.errors import NotFound
from entrega.insights.dora import Deployment, DoraReport, compute_dora, parse_commit_time
from entrega.insights.scorecard import (
    ReleaseFigures,
    compute_quality,
    compute_scorecard,
)
from entrega.insights.series import (
    Interval,
    Point,
    Sample,
    compute_intervals,
    compute_series,
    compute_time_at_weight,
    compute_totals,
)
from entrega.store.insights_repository import InsightsRepository
from entrega.store.models import Event, Rollout
from entrega.store.repository import Repository

#: Event kinds shown in a release's timeline.
TIMELINE_KINDS = ("release", "rollout", "traffic", "step", "command", "promoted", "rolled_back",
                  "failed", "verified", "verification_failed", "instance_restarted",
                  "stopped", "error", "analysis")
FINAL_WORD = {"succeeded": "promoted", "rolled_back": "rolled back", "failed": "failed"}


@dataclass
class Sources:
    app: str
    repo: Repository
    insights: InsightsRepository


def _samples(src: Sources, version: str, environment: str) -> list[Sample]:
    return [Sample(r.time, r.router_started_at, r.requests, r.errors_5xx,
                   tuple(r.latency_buckets), r.weight)
            for r in src.insights.samples(src.app, version, environment=environment)]


def _traffic(events: list[Event]) -> list[tuple[float, dict[str, int]]]:
    return [(e.time, {str(k): int(v) for k, v in (e.data.get("weights") or {}).items()})
            for e in events if e.kind == "traffic"]


def release_figures(src: Sources, version: str, environment: str, *, now: float,
                    traffic: list[tuple[float, dict[str, int]]] | None = None,
                    ) -> tuple[ReleaseFigures, list[Interval]]:
    began = [r.created_at for r in src.insights.rollouts(src.app, environment=environment,
                                                         version=version)]
    intervals = compute_intervals(_samples(src, version, environment),
                                  not_before=min(began) if began else None)
    if traffic is None:
        traffic = _traffic(src.insights.events(src.app, kinds=["traffic"],
                                               environment=environment))
    restarts = len(src.insights.events(src.app, kinds=["instance_restarted"],
                                       environment=environment, version=version))
    feedback = src.insights.feedback(src.app, version=version, limit=100_000)
    ratings = tuple(f.rating for f in feedback if f.rating is not None
                    and (f.environment in (None, environment)))
    figures = ReleaseFigures(
        version=version, totals=compute_totals(intervals), restarts=restarts,
        time_at_weight=compute_time_at_weight(traffic, version, now=now),
        ratings=ratings, feedback_count=sum(1 for f in feedback
                                            if f.environment in (None, environment)))
    return figures, intervals


def environment_of(src: Sources, version: str, environment: str | None,
                   ) -> tuple[str, list[Rollout]]:
    """The environment a report is about (default: the latest in the lifecycle that had a
    rollout of the release) and the release's rollouts there."""
    if src.repo.release(src.app, version) is None:
        raise NotFound(f"no release {version} of {src.app}",
                       hint="see `entrega releases` for the known versions")
    rollouts = src.insights.rollouts(src.app, version=version)
    if environment is None:
        order = [e.name for e in src.repo.environments(src.app)]
        seen = {r.environment for r in rollouts}
        candidates = [e for e in order if e in seen]
        environment = candidates[-1] if candidates else (order[-1] if order else "")
    return environment, [r for r in rollouts if r.environment == environment]


def _points(points: list[Point]) -> list[dict[str, Any]]:
    return [p.__dict__ for p in points]


def build_report(src: Sources, version: str, *, environment: str | None = None,
                 now: float, bins: int = 60) -> dict[str, Any]:
    """The release's scorecard against the release it replaced, its rollout timeline,
    verdict, series for the plots, rating distribution and comments (JSON-ready)."""
    environment, rollouts = environment_of(src, version, environment)
    last = rollouts[-1] if rollouts else None
    previous_version = last.from_version if last else None
    traffic = _traffic(src.insights.events(src.app, kinds=["traffic"],
                                           environment=environment))
    current, cur_intervals = release_figures(src, version, environment, now=now,
                                             traffic=traffic)
    previous, prev_intervals = (release_figures(src, previous_version, environment, now=now,
                                                traffic=traffic)
                                if previous_version else (None, []))
    figures = compute_scorecard(current, previous)
    # The plots cover the release's life here (its rollouts and its traffic samples), both
    # releases over the same span.
    ends = [i.end for i in cur_intervals]
    start = min([r.created_at for r in rollouts] + ends[:1] or [now - 3600])
    end = max([r.finished_at or now for r in rollouts] + ends[-1:] or [now])
    span = max(end - start, 1.0)
    start, end = start - 0.05 * span, end + 0.05 * span
    ids = [r.id for r in rollouts]
    events = src.insights.events(src.app, kinds=TIMELINE_KINDS, rollout_ids=ids) if ids else []
    restarts = [e for e in src.insights.events(src.app, kinds=["instance_restarted"],
                                               environment=environment, version=version)]
    timeline = sorted([*events, *restarts], key=lambda e: (e.time, e.id))
    runs = src.insights.analysis_runs(ids) if ids else []
    feedback = src.insights.feedback(src.app, version=version, limit=500)
    prev_ratings = previous.ratings if previous else ()
    release = src.repo.release(src.app, version)
    return {
        "app": src.app, "version": version, "environment": environment,
        "previous_version": previous_version, "generated_at": now,
        "release": {"digest": release.digest if release else None,
                    "meta": release.meta if release else {},
                    "created_at": release.created_at if release else None},
        "verdict": {
            "outcome": FINAL_WORD.get(last.phase, last.phase) if last else "never rolled out",
            "phase": last.phase if last else None,
            "reason": (last.state or {}).get("message", "") if last else "",
            "quality": compute_quality(figures),
        },
        "figures": [f.to_dict() for f in figures],
        "time_at_weight": {str(k): v for k, v in current.time_at_weight.items()},
        "rollouts": [{"id": r.id, "phase": r.phase, "strategy": r.strategy,
                      "from_version": r.from_version, "created_at": r.created_at,
                      "finished_at": r.finished_at, "created_by": r.created_by,
                      "reason": r.reason} for r in rollouts],
        "timeline": [{"time": e.time, "kind": e.kind, "actor": e.actor, "message": e.message,
                      "version": e.version} for e in timeline],
        "analysis": [{"rollout_id": r.rollout_id, "window": r.window, "verdict": r.verdict,
                      "metrics": (r.result or {}).get("metrics") or []} for r in runs],
        "weight_marks": [{"time": t, "weights": w} for t, w in traffic if start <= t <= end],
        "series": {
            "start": start, "end": end,
            "current": _points(compute_series(cur_intervals, start=start, end=end,
                                              bins=bins)),
            "previous": _points(compute_series(prev_intervals, start=start, end=end,
                                               bins=bins)),
        },
        "ratings": {"current": _distribution(current.ratings),
                    "previous": _distribution(prev_ratings)},
        "comments": [{"time": f.time, "rating": f.rating, "comment": f.comment,
                      "user_id": f.user_id, "tags": list(f.tags or [])}
                     for f in feedback if f.comment],
    }


def _distribution(ratings: tuple[int, ...]) -> dict[str, int]:
    return {str(n): sum(1 for r in ratings if r == n) for n in range(1, 6)}


def deployments(src: Sources, environment: str, *, since: float | None = None,
                ) -> list[Deployment]:
    rollouts = src.insights.rollouts(src.app, environment=environment, since=since)
    releases = src.insights.releases(src.app)
    first_traffic: dict[int, float] = {}
    ids = [r.id for r in rollouts]
    for e in src.insights.events(src.app, kinds=["traffic"], rollout_ids=ids) if ids else []:
        weights = e.data.get("weights") or {}
        if e.rollout_id is not None and e.rollout_id not in first_traffic \
                and int(weights.get(e.version or "", 0)) > 0:
            first_traffic[e.rollout_id] = e.time
    out = []
    for r in rollouts:
        meta = releases[r.version].meta if r.version in releases else {}
        fixes = meta.get("fixes")
        out.append(Deployment(
            rollout_id=r.id, version=r.version, started_at=r.created_at, outcome=r.phase,
            finished_at=r.finished_at, exposed_at=first_traffic.get(r.id),
            commit_time=parse_commit_time(meta.get("commit_time")),
            from_version=r.from_version, is_restore=r.reason.startswith("rollback"),
            fixes=str(fixes) if fixes else None, hotfix=meta.get("hotfix") is True))
    return out


def build_dora(src: Sources, *, environment: str, days: float, now: float) -> DoraReport:
    return compute_dora(deployments(src, environment, since=now - days * 86_400),
                        environment=environment, now=now, days=days)
