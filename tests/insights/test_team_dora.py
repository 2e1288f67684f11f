"""The team's DORA over several apps: tables of histories -> the team's four keys, a
release group counted once, and each app's own report unchanged."""

from __future__ import annotations

import pytest

from entrega.insights.dora import DAY_S, Deployment, compute_dora
from entrega.insights.team import AppHistory, compute_team_dora, group_deployments

H = 3600.0
NOW = 1_000 * DAY_S
T = NOW - 10 * DAY_S
FINISHED = ("succeeded", "rolled_back", "failed")


def dep(n: int, version: str, at: float, outcome: str = "succeeded", *, took: float = 600,
        exposed_after: float | None = 60, commit_age: float | None = 2 * H,
        **kw: object) -> Deployment:
    return Deployment(rollout_id=n, version=version, started_at=at, outcome=outcome,
                      finished_at=at + took if outcome in FINISHED else None,
                      exposed_at=at + exposed_after if exposed_after is not None else None,
                      commit_time=at - commit_age if commit_age is not None else None,
                      **kw)  # type: ignore[arg-type]


def api(*deployments: Deployment, environment: str = "production") -> AppHistory:
    return AppHistory("api", environment, deployments)


def web(*deployments: Deployment, environment: str = "production") -> AppHistory:
    return AppHistory("web", environment, deployments)


def worker(*deployments: Deployment, environment: str = "production") -> AppHistory:
    return AppHistory("worker", environment, deployments)


#: (histories, (team deployments, promoted, lead-time median, failures, recovery median))
CASES: list[tuple[list[AppHistory], tuple[int, int, float | None, int, float | None]]] = [
    # every app's deployments together: 2 + 1 promoted, lead times 2 h + 10 min each
    ([api(dep(1, "v1", T), dep(2, "v2", T + H)), web(dep(3, "w1", T + 2 * H))],
     (3, 3, 2 * H + 600, 0, None)),
    # one app's rolled-back canary is one failure in three of the team's deployments
    ([api(dep(1, "v1", T), dep(2, "v2", T + H, "rolled_back", took=300, exposed_after=100)),
      web(dep(3, "w1", T))],
     (3, 2, 2 * H + 600, 1, 200.0)),
    # a group of two apps released together is one deployment of the team; its lead
    # times run from each member's commit to when the last member served 100%
    ([api(dep(1, "a2", T, group="g1", took=600)),
      web(dep(2, "w2", T + 900, group="g1", took=600, commit_age=H))],
     (1, 1, ((T + 1500) - (T - 2 * H) + (T + 1500) - (T + 900 - H)) / 2, 0, None)),
    # a group that failed is one failure: from the first member's traffic to the last
    # member's rollback (api, already at 100%, restored by the group 1 h after web's
    # canary got traffic and was rolled back 5 min later)
    ([api(dep(1, "a1", T - DAY_S), dep(2, "a2", T, group="g1"),
          dep(4, "a1", T + 900 + H, took=60, is_restore=True, from_version="a2",
              group="g1")),
      web(dep(3, "w2", T + 900, "rolled_back", group="g1", took=300, exposed_after=60))],
     (2, 1, 2 * H + 600, 1, (T + 900 + H + 60) - (T + 600))),
    # the same group key in another environment is another deployment
    ([api(dep(1, "a2", T, group="g1")), web(dep(2, "w2", T, group="g1"),
                                            environment="staging")],
     (2, 2, 2 * H + 600, 0, None)),
    # a group with a member still rolling out is not counted yet (nor its done member)
    ([api(dep(1, "a2", T, group="g1")), web(dep(2, "w2", T + 900, "progressing",
                                               group="g1"))],
     (0, 0, None, 0, None)),
    # a restore is not a change, for the team as for one app
    ([api(dep(1, "v1", T), dep(2, "v2", T + H), dep(3, "v1", T + 2 * H, is_restore=True,
                                                    from_version="v2")),
      worker()],
     (2, 2, 2 * H + 600, 1, 2 * H + 600 - (H + 600))),
    # before the period: not counted
    ([api(dep(1, "v1", NOW - 100 * DAY_S)), web(dep(2, "w1", T))],
     (1, 1, 2 * H + 600, 0, None)),
    ([api(), web()], (0, 0, None, 0, None)),
]


@pytest.mark.parametrize(("histories", "expected"), CASES, ids=[
    "every-app-together", "one-apps-failure", "group-counts-once", "group-failed-once",
    "group-in-two-environments", "group-in-progress", "restore-not-a-change",
    "before-the-period", "no-deployments"])
def test_team_keys(histories: list[AppHistory],
                   expected: tuple[int, int, float | None, int, float | None]) -> None:
    deployments, promoted, lead, failures, recovery = expected
    team = compute_team_dora(histories, now=NOW, days=30).team
    assert team.deployments == deployments
    assert team.deployment_frequency.samples == promoted
    assert team.deployment_frequency.value == pytest.approx(promoted / 30)
    assert team.lead_time.value == (None if lead is None else pytest.approx(lead))
    assert len(team.failures) == failures == round(
        (team.change_failure_rate.value or 0) * deployments)
    assert team.recovery_time.value == (None if recovery is None else pytest.approx(recovery))


@pytest.mark.parametrize(("histories", "units"), [
    ([api(dep(1, "a2", T, group="g1")), web(dep(2, "w2", T, group="g1"))],
     [[("api", 1), ("web", 2)]]),
    ([api(dep(1, "a2", T, group="g1")), web(dep(2, "w2", T, group="g2"))],
     [[("api", 1)], [("web", 2)]]),
    # same rollout id in two apps (two stores' ids, in a table): still two deployments
    ([api(dep(1, "a2", T + 1)), web(dep(1, "w2", T))], [[("web", 1)], [("api", 1)]]),
    ([api(dep(1, "a2", T, group="g1"), dep(2, "a1", T + H, is_restore=True, group="g1"))],
     [[("api", 1)], [("api", 2)]]),
    ([api(dep(1, "a2", T, group="g1")), web(dep(2, "w2", T, group="g1"),
                                            environment="staging")],
     [[("api", 1)], [("web", 2)]]),
], ids=["same-group-same-environment", "two-groups", "same-id-two-apps",
        "restore-under-the-groups-key", "same-group-two-environments"])
def test_which_deployments_are_one(histories: list[AppHistory],
                                   units: list[list[tuple[str, int]]]) -> None:
    merged = group_deployments(histories, since=T - DAY_S)
    assert [[(app, d.rollout_id) for app, d in members] for members in merged] == units


def test_each_apps_figures_are_its_own_report() -> None:
    histories = [api(dep(1, "v1", T), dep(2, "v2", T + H, "rolled_back")),
                 web(dep(3, "w1", T, group="g1"), environment="prod")]
    report = compute_team_dora(histories, now=NOW, days=30)
    assert list(report.apps) == ["api", "web"]
    for h in histories:
        assert report.apps[h.app] == compute_dora(h.deployments, environment=h.environment,
                                                  now=NOW, days=30)
    data = report.to_dict()
    assert data["apps"]["web"]["environment"] == "prod"
    assert set(data["apps"]["api"]) == set(compute_dora([], environment="x", now=NOW)
                                           .to_dict())
    assert data["team"]["failures"] == [{"releases": {"api": "v2"}, "group": None,
                                         "how": "rolled_back", "recovery_s": 540.0}]


def test_a_failed_group_names_each_member_and_the_tiers_are_judged() -> None:
    histories = [api(dep(1, "a2", T, group="g1", took=300)),
                 web(dep(2, "w2", T + 300, "rolled_back", group="g1", took=300,
                         exposed_after=60))]
    team = compute_team_dora(histories, now=NOW, days=30).team
    assert team.change_failure_rate.value == 1.0 and team.change_failure_rate.tier == "low"
    # web's canary had traffic for 4 min: elite recovery; api, at 100% in the group, is
    # no failure of its own until the group restores it (not recorded in this table)
    assert [(f.releases, f.group, f.how) for f in team.failures] == [
        ({"web": "w2"}, "g1", "web rolled_back")]
    assert team.recovery_time.value == pytest.approx(240) and \
        team.recovery_time.tier == "elite"
    assert team.deployment_frequency.tier is None  # nothing promoted: no data, not "low"
