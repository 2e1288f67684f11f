"""The team's DORA: the four keys over the deployments of every app of a server together,
beside each app's own report (pure).

A team is judged by what reaches its users, whichever service carries it, so the team's
figures are not an average of the apps' figures: they are the four keys of one merged
history. Deployment frequency counts every app's promoted deployments; lead time and
recovery time are medians over all of them; change failure rate is the failed share of
all of them. Each app's figures are the per-app report exactly as ``GET /api/v1/dora``
gives it (``insights/dora.py``), each in its own environment (apps need not share
environment names).

**Release groups.** A release group (several apps' releases delivered together) is one
change for the team: its members that carry the same group key in the same environment
are one deployment of the team. It is promoted when every member is; it failed when any
member did (the other members are rolled back with it), and its users had it from the
first member's failure until the last member's recovery. Its lead-time samples are each
member's commit up to when the whole group served 100%: a member's change is not
delivered while the group can still take it back. Restores never merge with the
deployments they undo, even under the same group key. In each app's own report a
member is simply one of the app's deployments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from entrega.codec import Codec
from entrega.insights.dora import (
    DAY_S,
    FAILURE_WINDOW_S,
    Deployment,
    DoraReport,
    Failure,
    Metric,
    compute_dora,
    compute_keys,
    failure_began,
)
from entrega.vocabulary import TERMINAL_PHASES, Phase


@dataclass(frozen=True)
class AppHistory:
    """One app's deployments to the environment its figures are about."""

    app: str
    environment: str
    deployments: Sequence[Deployment]


@dataclass(frozen=True)
class TeamFailure:
    """One failed deployment of the team: one app's, or a group's (every member that
    failed, by app)."""

    #: app -> the version that failed
    releases: dict[str, str]
    group: str | None
    how: str
    recovery_s: float | None


@dataclass(frozen=True)
class TeamFigures:
    """The four keys over every app's deployments, a group counted once."""

    deployments: int
    deployment_frequency: Metric
    lead_time: Metric
    change_failure_rate: Metric
    recovery_time: Metric
    failures: list[TeamFailure] = field(default_factory=list)


@dataclass(frozen=True)
class TeamDoraReport:
    days: float
    since: float
    until: float
    team: TeamFigures
    #: app -> its own report (``GET /api/v1/apps/<app>/dora``), in the order given
    apps: dict[str, DoraReport]

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON data (the API's), field for field."""
        return _REPORT.dump(self)


_REPORT = Codec[TeamDoraReport](TeamDoraReport, what="the team's DORA report")

#: (app, deployment) of one deployment of the team: one app's, or a group's members
Members = list[tuple[str, Deployment]]


def group_deployments(histories: Sequence[AppHistory], *, since: float) -> list[Members]:
    """The team's deployments since ``since``: each app's alone, except that the members
    of one release group in one environment are one (a restore never merges with a
    change), in the order the first member started."""
    merged: dict[tuple[object, ...], Members] = {}
    for history in histories:
        for d in history.deployments:
            if d.started_at < since:
                continue
            key: tuple[object, ...] = (
                ("group", d.group, history.environment, d.is_restore) if d.group is not None
                else ("alone", history.app, d.rollout_id))
            merged.setdefault(key, []).append((history.app, d))
    return sorted(merged.values(),
                  key=lambda members: min((d.started_at, d.rollout_id) for _, d in members))


def _finished(d: Deployment) -> bool:
    return d.outcome in TERMINAL_PHASES and d.finished_at is not None


def _failure_of(members: Members, failed: dict[tuple[str, int], Failure]) -> TeamFailure | None:
    found = [(app, d, failed[app, d.rollout_id]) for app, d in members
             if (app, d.rollout_id) in failed]
    if not found:
        return None
    spans = [(failure_began(d, f.how), f.recovery_s) for _, d, f in found]
    began = min(start for start, _ in spans)
    recovered = [start + took for start, took in spans if took is not None]
    group = members[0][1].group
    how = (found[0][2].how if group is None
           else "; ".join(f"{app} {f.how}" for app, _, f in found))
    return TeamFailure(releases={app: d.version for app, d, _ in found}, group=group,
                       how=how, recovery_s=max(recovered) - began if recovered else None)


def compute_team_dora(histories: Sequence[AppHistory], *, now: float, days: float = 90,
                      failure_window_s: float = FAILURE_WINDOW_S) -> TeamDoraReport:
    """The team's four keys over every app of ``histories`` and each app's own report,
    over the ``days`` up to ``now``. Which deployments failed is each app's own affair
    (a restore or a fix-forward undoes that app's release), decided once per app."""
    since = now - days * DAY_S
    apps = {h.app: compute_dora(h.deployments, environment=h.environment, now=now, days=days,
                                failure_window_s=failure_window_s) for h in histories}
    failed = {(app, f.rollout_id): f for app, report in apps.items() for f in report.failures}
    changes = [members for members in group_deployments(histories, since=since)
               if not all(d.is_restore for _, d in members)
               and all(_finished(d) for _, d in members)]
    lead_times: list[float] = []
    promoted = 0
    for members in changes:
        if all(d.outcome == Phase.SUCCEEDED for _, d in members):
            promoted += 1
            served = max(d.finished_at or 0.0 for _, d in members)
            lead_times += [served - d.commit_time for _, d in members
                           if d.commit_time is not None]
    failures = [f for f in (_failure_of(members, failed) for members in changes)
                if f is not None]
    frequency, lead, cfr, recovery = compute_keys(
        days=days, changes=len(changes), promoted=promoted, lead_times=lead_times,
        failed=len(failures),
        recoveries=[f.recovery_s for f in failures if f.recovery_s is not None])
    team = TeamFigures(deployments=len(changes), deployment_frequency=frequency,
                       lead_time=lead, change_failure_rate=cfr, recovery_time=recovery,
                       failures=failures)
    return TeamDoraReport(days=days, since=since, until=now, team=team, apps=apps)
