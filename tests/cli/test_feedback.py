"""`entrega feedback` and `entrega dora` in process: what users said, and DORA's keys."""

from __future__ import annotations

import json

from entrega.rollouts.model import Phase
from entrega.store.insights_repository import InsightsRepository
from tests.cli.conftest import ApiServer, invoke


def test_feedback_per_release_and_each_comment_as_written(api: ApiServer) -> None:
    insights = InsightsRepository(api.service.repo.store)
    for rating, comment in ((5, "[bold]fast[/]"), (1, None), (2, "slow")):
        insights.add_feedback(app="shop", version="v1", environment="production",
                              claimed_version=None, rating=rating, comment=comment,
                              user_id="u-1", tags=["checkout"], client="c")
    result = invoke(api, ["feedback"])
    assert result.exit_code == 0, result.output
    assert ["v1", "3", "2.67", "2"] in [line.split() for line in result.stdout.splitlines()]
    assert "[bold]fast[/]" in result.stdout  # shown as written, never as markup
    data = json.loads(invoke(api, ["feedback", "--json", "-v", "v1"]).stdout)
    assert data["summary"]["v1"] == {"count": 3, "rated": 3, "mean_rating": 8 / 3,
                                     "low_ratings": 2}


def test_feedback_of_another_app_is_refused(api: ApiServer) -> None:
    result = invoke(api, ["feedback", "--app", "billing"])
    assert result.exit_code == 1
    assert "delivers 'shop', not 'billing'" in str(result.exception)


def test_dora_shows_the_four_keys(api: ApiServer) -> None:
    api.release("v1")
    invoke(api, ["deploy", "v1"])
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live",
                              [("traffic", "router now sends v1 100%")])])
    result = invoke(api, ["dora", "--days", "7"])
    assert result.exit_code == 0, result.output
    assert "DORA production, last 7 days: 1 deployments" in result.stdout
    assert "deployment frequency" in result.stdout and "0.14/day" in result.stdout


def test_dora_refuses_a_period_out_of_range(api: ApiServer) -> None:
    result = invoke(api, ["dora", "--days", "0"])
    assert result.exit_code == 1
    assert str(result.exception) == "days must be between 0 and 3660"
