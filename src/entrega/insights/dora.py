"""The four DORA keys from entrega's own records (pure).

Definitions (DORA, "Accelerate State of DevOps" 2024), as entrega measures them in one
environment (production by default) over a period:

- **deployment frequency**: deployments of a change that reached 100% of the traffic,
  per day. Restores (``entrega rollback``) are not changes and are not counted.
- **lead time for changes**: from the commit (release meta ``commit_time``, ISO 8601 or
  unix seconds) to the release serving 100% of the environment; the median.
- **change failure rate**: the share of deployments (finished, restores excluded) that
  failed: rolled back (by analysis or by hand), failed, or - once promoted - restored away
  from (``entrega rollback``) or fixed forward (a later release whose meta says
  ``fixes: <version>``, or ``hotfix: true`` for the deployment just before it) within
  ``failure_window_s``.
- **failed deployment recovery time**: for each failed deployment, from when users first
  got it (its first traffic, or its promotion for a late failure) to when they no longer
  did (rolled back, restored, or the fix at 100%); the median.

Tiers: DORA 2024's performance clusters give one value per cluster (elite / high /
medium / low): lead time < 1 day / < 1 week / < 1 month / longer; deploys on demand
(several a day) / daily to weekly / weekly to monthly / less; change failure rate 5% /
20% / 10% / 40%; recovery < 1 hour / < 1 day / < 1 day / a week or more. One metric alone
is placed by the bounds in :data:`TIERS`; where the clusters are not ordered (failure
rate: medium's 10% is below high's 20%; recovery: high and medium share "< 1 day"), the
bounds keep the tiers in order and say so.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from entrega.codec import Codec
from entrega.vocabulary import TERMINAL_PHASES, Phase

DAY_S = 86_400.0
#: A restore or fix within this time after a promotion makes that deployment a failure.
#: One day: long enough for a bug to be noticed in a working day, short enough that a
#: release replaced by routine work next week is not counted as a failure.
FAILURE_WINDOW_S = DAY_S

#: metric -> ((tier, bound), ...): a value is in the first tier whose bound it is within.
#: ``deploys_per_day`` is "at least", the others "at most" (strictly below for durations).
TIERS: dict[str, tuple[tuple[str, float], ...]] = {
    "deployment_frequency": (("elite", 1.0), ("high", 1 / 7), ("medium", 1 / 30)),
    "lead_time": (("elite", DAY_S), ("high", 7 * DAY_S), ("medium", 30 * DAY_S)),
    "change_failure_rate": (("elite", 0.05), ("high", 0.20), ("medium", 0.40)),
    "recovery_time": (("elite", 3600.0), ("high", DAY_S), ("medium", 7 * DAY_S)),
}


@dataclass(frozen=True)
class Deployment:
    """One rollout to the environment, as DORA needs it."""

    rollout_id: int
    version: str
    started_at: float
    #: succeeded | rolled_back | failed | anything else (in progress)
    outcome: str
    finished_at: float | None = None
    #: first time the version got traffic in this rollout (None: never)
    exposed_at: float | None = None
    commit_time: float | None = None
    #: the release it replaced
    from_version: str | None = None
    #: a restore of an earlier release (``entrega rollback``), not a change
    is_restore: bool = False
    #: the version this release fixes forward (release meta ``fixes``), if any
    fixes: str | None = None
    #: release meta ``hotfix: true``: it fixes the deployment just before it
    hotfix: bool = False
    #: the release group it was part of (None: released alone); in the team's figures
    #: (``insights/team.py``) the members of one group in one environment count once
    group: str | None = None


@dataclass(frozen=True)
class Failure:
    rollout_id: int
    version: str
    how: str
    recovery_s: float | None


@dataclass(frozen=True)
class Metric:
    value: float | None
    tier: str | None
    samples: int
    unit: str


@dataclass(frozen=True)
class DoraReport:
    environment: str
    days: float
    since: float
    until: float
    deployment_frequency: Metric
    lead_time: Metric
    change_failure_rate: Metric
    recovery_time: Metric
    deployments: int
    failures: list[Failure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON data (the API's and the dashboard's), field for field."""
        return _REPORT.dump(self)


_REPORT = Codec[DoraReport](DoraReport, what="a DORA report")


def parse_commit_time(value: object) -> float | None:
    """Unix seconds from ``commit_time`` meta: a number, digits, or ISO 8601 (``Z`` ok)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def judge_tier(metric: str, value: float | None) -> str | None:
    if value is None:
        return None
    for tier, bound in TIERS[metric]:
        if metric == "deployment_frequency":
            if value >= bound:
                return tier
        elif metric == "change_failure_rate":
            if value <= bound:
                return tier
        elif value < bound:
            return tier
    return "low"


def _finished(d: Deployment) -> bool:
    return d.outcome in TERMINAL_PHASES and d.finished_at is not None


def failure_began(d: Deployment, how: str) -> float:
    """When users first got a failed deployment: its first traffic when it failed in its
    own rollout (its promotion when it never had any), its promotion when it was restored
    away from or fixed forward later. Its recovery time runs from here."""
    assert d.finished_at is not None
    if how in (Phase.ROLLED_BACK, Phase.FAILED):
        return min(d.exposed_at, d.finished_at) if d.exposed_at is not None else d.finished_at
    return d.finished_at


def compute_failures(deployments: Sequence[Deployment], *,
                     failure_window_s: float = FAILURE_WINDOW_S) -> list[Failure]:
    """Which deployments failed, how, and how long users had them."""
    ordered = sorted(deployments, key=lambda d: (d.started_at, d.rollout_id))
    failures = []
    for n, d in enumerate(ordered):
        if d.is_restore or not _finished(d):
            continue
        assert d.finished_at is not None
        if d.outcome in (Phase.ROLLED_BACK, Phase.FAILED):
            failures.append(Failure(d.rollout_id, d.version, d.outcome,
                                    d.finished_at - failure_began(d, d.outcome)))
            continue
        for later in ordered[n + 1:]:
            if later.outcome != Phase.SUCCEEDED or later.finished_at is None:
                continue
            if later.started_at - d.finished_at > failure_window_s:
                break
            if later.is_restore and later.from_version == d.version:
                failures.append(Failure(d.rollout_id, d.version, "restored",
                                        later.finished_at - failure_began(d, "restored")))
                break
            if not later.is_restore and (later.fixes == d.version or later.hotfix):
                how = f"fixed forward by {later.version}"
                failures.append(Failure(d.rollout_id, d.version, how,
                                        later.finished_at - failure_began(d, how)))
                break
            if not later.is_restore:
                break  # another change went out on top: not a remediation of this one
    return failures


def compute_keys(*, days: float, changes: int, promoted: int, lead_times: Sequence[float],
                 failed: int, recoveries: Sequence[float],
                 ) -> tuple[Metric, Metric, Metric, Metric]:
    """The four keys, each with its tier, from what was counted: ``changes`` finished
    deployments of a change (restores excluded), ``promoted`` of them at 100%, ``failed``
    of them failures; lead times and recovery times in seconds (their medians are the
    figures). One app's report and the team's (``insights/team.py``) judge alike."""
    per_day = promoted / days if days > 0 else 0.0
    cfr = failed / changes if changes else None
    lead = statistics.median(lead_times) if lead_times else None
    recovery = statistics.median(recoveries) if recoveries else None
    return (Metric(per_day, judge_tier("deployment_frequency", per_day) if promoted else None,
                   promoted, "per day"),
            Metric(lead, judge_tier("lead_time", lead), len(lead_times), "s"),
            Metric(cfr, judge_tier("change_failure_rate", cfr), changes, "ratio"),
            Metric(recovery, judge_tier("recovery_time", recovery), len(recoveries), "s"))


def compute_dora(deployments: Sequence[Deployment], *, environment: str, now: float,
                 days: float = 90, failure_window_s: float = FAILURE_WINDOW_S) -> DoraReport:
    since = now - days * DAY_S
    in_period = [d for d in deployments if d.started_at >= since]
    changes = [d for d in in_period if not d.is_restore and _finished(d)]
    promoted = [d for d in changes if d.outcome == Phase.SUCCEEDED]
    lead_times = [d.finished_at - d.commit_time for d in promoted
                  if d.commit_time is not None and d.finished_at is not None]
    failures = compute_failures(in_period, failure_window_s=failure_window_s)
    recoveries = [f.recovery_s for f in failures if f.recovery_s is not None]
    frequency, lead, cfr, recovery = compute_keys(
        days=days, changes=len(changes), promoted=len(promoted), lead_times=lead_times,
        failed=len(failures), recoveries=recoveries)
    return DoraReport(
        environment=environment, days=days, since=since, until=now,
        deployment_frequency=frequency, lead_time=lead, change_failure_rate=cfr,
        recovery_time=recovery, deployments=len(changes), failures=failures)
