"""DORA's four keys from deployment records: tables of histories -> metrics and tiers."""

from __future__ import annotations

import pytest

from entrega.insights.dora import (
    DAY_S,
    Deployment,
    compute_dora,
    compute_failures,
    judge_tier,
    parse_commit_time,
)

H = 3600.0
NOW = 1_000 * DAY_S


def dep(n: int, version: str, at: float, outcome: str = "succeeded", *, took: float = 600,
        exposed_after: float | None = 60, commit_age: float | None = 2 * H,
        **kw: object) -> Deployment:
    return Deployment(rollout_id=n, version=version, started_at=at, outcome=outcome,
                      finished_at=at + took if outcome in ("succeeded", "rolled_back",
                                                           "failed") else None,
                      exposed_at=at + exposed_after if exposed_after is not None else None,
                      commit_time=at - commit_age if commit_age is not None else None,
                      **kw)  # type: ignore[arg-type]


T = NOW - 10 * DAY_S


@pytest.mark.parametrize(("history", "expected"), [
    ([dep(1, "v1", T), dep(2, "v2", T + H)], []),
    ([dep(1, "v1", T), dep(2, "v2", T + H, "rolled_back", took=300, exposed_after=100)],
     [("v2", "rolled_back", 200.0)]),
    ([dep(1, "v1", T), dep(2, "v2", T + H, "failed", took=50, exposed_after=None)],
     [("v2", "failed", 0.0)]),
    # promoted, then restored away from by `entrega rollback` 2 h later
    ([dep(1, "v1", T), dep(2, "v2", T + H),
      dep(3, "v1", T + 3 * H, took=30, is_restore=True, from_version="v2")],
     [("v2", "restored", 3 * H + 30 - (H + 600))]),
    # the restore came after the failure window: not counted
    ([dep(1, "v1", T), dep(2, "v2", T + H),
      dep(3, "v1", T + 3 * DAY_S, is_restore=True, from_version="v2")], []),
    # fixed forward by a release that says so
    ([dep(1, "v1", T), dep(2, "v2", T + H), dep(3, "v3", T + 2 * H, fixes="v2")],
     [("v2", "fixed forward by v3", 2 * H + 600 - (H + 600))]),
    ([dep(1, "v1", T), dep(2, "v2", T + H), dep(3, "v3", T + 2 * H, hotfix=True)],
     [("v2", "fixed forward by v3", H)]),
    # a later ordinary release is not a fix; a fix of v2 after it does not count either
    ([dep(1, "v1", T), dep(2, "v2", T + H), dep(3, "v3", T + 2 * H),
      dep(4, "v4", T + 3 * H, fixes="v2")], []),
    # an aborted restore is not a remediation
    ([dep(1, "v1", T), dep(2, "v2", T + H),
      dep(3, "v1", T + 2 * H, "rolled_back", is_restore=True, from_version="v2")], []),
], ids=["clean", "rolled-back-canary", "failed-before-traffic", "restored-later",
        "restored-after-window", "fix-forward", "hotfix", "unrelated-release-in-between",
        "restore-aborted"])
def test_failures(history: list[Deployment], expected: list[tuple[str, str, float]]) -> None:
    failures = compute_failures(history)
    assert [(f.version, f.how, pytest.approx(f.recovery_s)) for f in failures] == expected


@pytest.mark.parametrize(("metric", "value", "tier"), [
    ("deployment_frequency", 3.0, "elite"), ("deployment_frequency", 1.0, "elite"),
    ("deployment_frequency", 0.5, "high"), ("deployment_frequency", 1 / 7, "high"),
    ("deployment_frequency", 0.1, "medium"), ("deployment_frequency", 0.01, "low"),
    ("lead_time", 2 * H, "elite"), ("lead_time", DAY_S, "high"),
    ("lead_time", 3 * DAY_S, "high"), ("lead_time", 10 * DAY_S, "medium"),
    ("lead_time", 60 * DAY_S, "low"),
    ("change_failure_rate", 0.0, "elite"), ("change_failure_rate", 0.05, "elite"),
    ("change_failure_rate", 0.06, "high"), ("change_failure_rate", 0.2, "high"),
    ("change_failure_rate", 0.3, "medium"), ("change_failure_rate", 0.45, "low"),
    ("recovery_time", 300, "elite"), ("recovery_time", H, "high"),
    ("recovery_time", 5 * H, "high"), ("recovery_time", 2 * DAY_S, "medium"),
    ("recovery_time", 8 * DAY_S, "low"), ("lead_time", None, None),
], ids=lambda v: str(v))
def test_tiers(metric: str, value: float | None, tier: str | None) -> None:
    assert judge_tier(metric, value) == tier


@pytest.mark.parametrize(("raw", "expected"), [
    (1_700_000_000, 1_700_000_000.0), ("1700000000.5", 1_700_000_000.5),
    ("2023-11-14T22:13:20Z", 1_700_000_000.0), ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
    ("2023-11-14T22:13:20", 1_700_000_000.0), ("yesterday", None), (None, None), (True, None),
    ("", None),
], ids=["int", "digits", "iso-z", "iso-offset", "iso-naive-is-utc", "garbage", "none", "bool",
        "empty"])
def test_commit_time(raw: object, expected: float | None) -> None:
    assert parse_commit_time(raw) == expected


def test_four_keys_over_a_period() -> None:
    history = [
        dep(1, "v1", NOW - 100 * DAY_S),  # before the period: ignored
        dep(2, "v2", NOW - 80 * DAY_S, commit_age=3 * H),
        dep(3, "v3", NOW - 60 * DAY_S, "rolled_back", took=900, exposed_after=300),
        dep(4, "v4", NOW - 40 * DAY_S, commit_age=5 * H),
        dep(5, "v2", NOW - 40 * DAY_S + 2 * H, took=20, is_restore=True, from_version="v4"),
        dep(6, "v5", NOW - 20 * DAY_S, commit_age=30 * H),
        dep(7, "v6", NOW - DAY_S, "progressing"),  # still running: not counted yet
    ]
    report = compute_dora(history, environment="production", now=NOW, days=90)
    assert report.deployments == 4  # v2, v3, v4, v5 (the restore and v6 are not changes)
    assert report.deployment_frequency.value == pytest.approx(3 / 90)  # v2, v4, v5 promoted
    assert report.deployment_frequency.tier == "medium"
    # the median of 3 h, 5 h and 30 h from commit (+10 min of rollout each)
    assert report.lead_time.value == pytest.approx(5 * H + 600)
    assert report.lead_time.tier == "elite"
    # v3 rolled back, v4 restored
    assert report.change_failure_rate.value == pytest.approx(2 / 4)
    assert report.change_failure_rate.tier == "low"
    assert [f.version for f in report.failures] == ["v3", "v4"]
    assert report.recovery_time.value == pytest.approx((600 + (2 * H + 20 - 600)) / 2)
    assert report.recovery_time.tier == "high"  # just over an hour


def test_no_history_is_no_data_not_a_tier() -> None:
    report = compute_dora([], environment="production", now=NOW)
    assert report.deployments == 0
    assert report.deployment_frequency.tier is None
    assert report.change_failure_rate.value is None and report.recovery_time.value is None
