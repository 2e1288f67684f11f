"""Reading what the pure computations need from the store: one function per view.

Everything here is a read; the figures themselves are computed by ``series``,
``scorecard`` and ``dora``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from entrega.errors import Conflict, NotFound
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
from entrega.insights.team import AppHistory
from entrega.store.insights_repository import InsightsRepository
from entrega.store.models import Event, Rollout
from entrega.store.repository import Repository
from entrega.vocabulary import EventKind, Phase

#: Event kinds shown in a release's timeline.
TIMELINE_KINDS = (EventKind.RELEASE, EventKind.ROLLOUT, EventKind.TRAFFIC, EventKind.STEP,
                  EventKind.COMMAND, EventKind.PROMOTED, EventKind.ROLLED_BACK, EventKind.FAILED,
                  EventKind.VERIFIED, EventKind.VERIFICATION_FAILED,
                  EventKind.INSTANCE_RESTARTED, EventKind.STOPPED, EventKind.ERROR,
                  EventKind.ANALYSIS)
FINAL_WORD: dict[str, str] = {Phase.SUCCEEDED: "promoted", Phase.ROLLED_BACK: "rolled back",
                              Phase.FAILED: "failed"}


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
            for e in events if e.kind == EventKind.TRAFFIC]


@dataclass(frozen=True)
class Span:
    """The stretch of time that belongs to one tenure of a release in one environment:
    after ``after`` (exclusive) until ``until``; None is open-ended.

    A release deployed three times (rolled back, redeployed...) has three tenures, and a
    report is about one of them. Its tenures partition time at the starts of its
    rollouts: the release has no traffic between them, so whatever the collector, late
    feedback or a restart records before the next rollout of the same release belongs to
    the last one, and nothing counts twice. A sample interval spanning two tenures counts
    in the later one (at most one sampling period of traffic)."""

    after: float | None = None
    until: float | None = None

    def holds(self, t: float) -> bool:
        return (self.after is None or t > self.after) and (self.until is None or t <= self.until)


def serving_until(rollouts: list[Rollout], rollout: Rollout) -> float | None:
    """When the release of ``rollout`` stopped serving after it (``rollouts``: the
    environment's, oldest first): at the rollout's end unless it was promoted, else when
    the next promoted rollout replaced it; None while it serves."""
    if rollout.phase != Phase.SUCCEEDED:
        return rollout.finished_at
    return next((r.finished_at for r in rollouts
                 if r.id > rollout.id and r.phase == Phase.SUCCEEDED), None)


def tenure(rollouts: list[Rollout], rollout: Rollout) -> Span:
    """The span of ``rollout``'s tenure: from its start (from the beginning of time for
    the release's first rollout here) to the start of the release's next rollout here."""
    same = [r for r in rollouts if r.version == rollout.version]
    earlier = [r for r in same if r.id < rollout.id]
    later = [r for r in same if r.id > rollout.id]
    return Span(rollout.created_at if earlier else None, later[0].created_at if later else None)


def replaced_span(rollouts: list[Rollout], rollout: Rollout) -> Span:
    """The tenure of the release ``rollout`` replaced. When the rollout did not replace it
    after all (rolled back, failed), that release served on: it is cut at the rollout's
    end, so that only the time of this rollout counts."""
    before = [r for r in rollouts if r.version == rollout.from_version and r.id < rollout.id]
    span = tenure(rollouts, before[-1]) if before else Span()
    if rollout.phase == Phase.SUCCEEDED or rollout.finished_at is None:
        return span
    return Span(span.after, rollout.finished_at)


def release_figures(src: Sources, version: str, environment: str, *, now: float,
                    span: Span = Span(), not_before: float | None = None,
                    traffic: list[tuple[float, dict[str, int]]] | None = None,
                    ) -> tuple[ReleaseFigures, list[Interval]]:
    """A release's figures in one environment within ``span`` (default: its whole life)."""
    intervals = [i for i in compute_intervals(_samples(src, version, environment),
                                              not_before=not_before)
                 if span.holds(i.end)]
    if traffic is None:
        traffic = _traffic(src.insights.events(src.app, kinds=["traffic"],
                                               environment=environment))
    restarts = sum(1 for e in src.insights.events(src.app, kinds=["instance_restarted"],
                                                  environment=environment, version=version)
                   if span.holds(e.time))
    feedback = [f for f in src.insights.feedback(src.app, version=version, limit=100_000)
                if f.environment in (None, environment) and span.holds(f.time)]
    figures = ReleaseFigures(
        version=version, totals=compute_totals(intervals), restarts=restarts,
        time_at_weight=compute_time_at_weight([t for t in traffic if span.holds(t[0])],
                                              version, now=min(span.until or now, now)),
        ratings=tuple(f.rating for f in feedback if f.rating is not None),
        feedback_count=len(feedback))
    return figures, intervals


def _check_release(src: Sources, version: str) -> None:
    if src.repo.release(src.app, version) is None:
        raise NotFound(f"no release {version} of {src.app}",
                       hint="see `entrega releases` for the known versions")


def environment_of(src: Sources, version: str, environment: str | None,
                   ) -> tuple[str, list[Rollout]]:
    """The environment a report is about (default: the latest in the lifecycle that had a
    rollout of the release) and the release's rollouts there."""
    _check_release(src, version)
    rollouts = src.insights.rollouts(src.app, version=version)
    if environment is None:
        order = [e.name for e in src.repo.environments(src.app)]
        seen = {r.environment for r in rollouts}
        candidates = [e for e in order if e in seen]
        environment = candidates[-1] if candidates else (order[-1] if order else "")
    return environment, [r for r in rollouts if r.environment == environment]


def chosen_rollout(src: Sources, version: str, environment: str | None,
                   rollout_id: int | None) -> tuple[str, list[Rollout], Rollout | None]:
    """The environment, the release's rollouts there and the one reported: ``rollout_id``,
    or the latest."""
    if rollout_id is None:
        environment, rollouts = environment_of(src, version, environment)
        return environment, rollouts, (rollouts[-1] if rollouts else None)
    _check_release(src, version)
    every = src.insights.rollouts(src.app, version=version)
    chosen = next((r for r in every if r.id == rollout_id), None)
    if chosen is None:
        ids = ", ".join(str(r.id) for r in every) or "none"
        raise NotFound(f"rollout {rollout_id} is not a rollout of {version} "
                       f"(its rollouts: {ids})", hint="`entrega history` shows every rollout")
    if environment is not None and environment != chosen.environment:
        raise Conflict(f"rollout {rollout_id} was in {chosen.environment}, not {environment}",
                       hint="leave out --env, or pick a rollout of that environment")
    return (chosen.environment, [r for r in every if r.environment == chosen.environment],
            chosen)


def _points(points: list[Point]) -> list[dict[str, Any]]:
    return [p.__dict__ for p in points]


def build_report(src: Sources, version: str, *, environment: str | None = None,
                 rollout_id: int | None = None, now: float, bins: int = 60) -> dict[str, Any]:
    """One rollout of the release (the latest, or ``rollout_id``) against the release it
    replaced in that rollout: scorecard, timeline, verdict, series for the plots, rating
    distribution and comments (JSON-ready).

    Each release's figures cover one tenure (:class:`Span`): the reported release's from
    that rollout to its next rollout here, the replaced release's from its own rollout to
    this rollout's end. A version deployed three times gives three reports, never one
    mixed."""
    environment, rollouts, chosen = chosen_rollout(src, version, environment, rollout_id)
    env_rollouts = src.insights.rollouts(src.app, environment=environment) if chosen else []
    span = tenure(env_rollouts, chosen) if chosen else Span()
    until = serving_until(env_rollouts, chosen) if chosen else None
    previous_version = chosen.from_version if chosen else None
    traffic = _traffic(src.insights.events(src.app, kinds=["traffic"],
                                           environment=environment))
    current, cur_intervals = release_figures(
        src, version, environment, now=now, span=span, traffic=traffic,
        not_before=chosen.created_at if chosen else None)
    previous: ReleaseFigures | None = None
    prev_intervals: list[Interval] = []
    if chosen and previous_version:
        previous, prev_intervals = release_figures(
            src, previous_version, environment, now=now, traffic=traffic,
            span=replaced_span(env_rollouts, chosen))
    figures = compute_scorecard(current, previous)
    # The plots cover this tenure of the release (its rollout and its traffic samples),
    # both releases over the same span.
    ends = [i.end for i in cur_intervals]
    start = min(([chosen.created_at] if chosen else []) + ends[:1] or [now - 3600])
    end = max(([until or now] if chosen else []) + ends[-1:] or [now])
    width = max(end - start, 1.0)
    start, end = start - 0.05 * width, end + 0.05 * width
    ids = [chosen.id] if chosen else []
    events = src.insights.events(src.app, kinds=TIMELINE_KINDS, rollout_ids=ids) if ids else []
    restarts = [e for e in src.insights.events(src.app, kinds=["instance_restarted"],
                                               environment=environment, version=version)
                if span.holds(e.time)]
    timeline = sorted([*events, *restarts], key=lambda e: (e.time, e.id))
    runs = src.insights.analysis_runs(ids) if ids else []
    feedback = [f for f in src.insights.feedback(src.app, version=version, limit=500)
                if span.holds(f.time)]
    prev_ratings = previous.ratings if previous else ()
    release = src.repo.release(src.app, version)
    return {
        "app": src.app, "version": version, "environment": environment,
        "previous_version": previous_version, "generated_at": now,
        "release": {"digest": release.digest if release else None,
                    "meta": release.meta if release else {},
                    "created_at": release.created_at if release else None},
        "rollout": ({**_rollout_dict(chosen), "serving_until": until}
                    if chosen else None),
        "verdict": {
            "outcome": FINAL_WORD.get(chosen.phase, chosen.phase) if chosen
            else "never rolled out",
            "phase": chosen.phase if chosen else None,
            "reason": (chosen.state or {}).get("message", "") if chosen else "",
            "quality": compute_quality(figures),
        },
        "figures": [f.to_dict() for f in figures],
        "time_at_weight": {str(k): v for k, v in current.time_at_weight.items()},
        "rollouts": [_rollout_dict(r) for r in rollouts],
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


def _rollout_dict(r: Rollout) -> dict[str, Any]:
    return {"id": r.id, "phase": r.phase, "strategy": r.strategy,
            "from_version": r.from_version, "created_at": r.created_at,
            "finished_at": r.finished_at, "created_by": r.created_by, "reason": r.reason}


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
            fixes=str(fixes) if fixes else None, hotfix=meta.get("hotfix") is True,
            # a release group's members count as one deployment of the team
            group=f"group-{r.group_id}" if r.group_id is not None else None))
    return out


def build_dora(src: Sources, *, environment: str, days: float, now: float) -> DoraReport:
    return compute_dora(deployments(src, environment, since=now - days * 86_400),
                        environment=environment, now=now, days=days)


def build_history(src: Sources, *, environment: str, days: float, now: float) -> AppHistory:
    """The app's deployments to ``environment`` as the team's DORA merges them with the
    other apps' (``insights/team.py``)."""
    return AppHistory(src.app, environment,
                      deployments(src, environment, since=now - days * 86_400))
