"""`entrega report VERSION [--rollout ID]` in process: one rollout of a release deployed
three times, and the others named so that the user can pick one."""

from __future__ import annotations

import json

from tests.cli.conftest import ApiServer, invoke
from tests.insights.test_report_rollouts import seed_redeployments


def test_report_one_rollout_of_three(api: ApiServer) -> None:
    seed_redeployments(api.service)

    latest = json.loads(invoke(api, ["report", "v2", "--json"]).stdout)
    assert (latest["rollout"]["id"], latest["previous_version"]) == (5, "v3")
    second = json.loads(invoke(api, ["report", "v2", "--rollout", "2", "--json"]).stdout)
    assert (second["rollout"]["id"], second["previous_version"]) == (2, "v1")
    assert second["verdict"]["outcome"] == "rolled back"

    text = invoke(api, ["report", "v2", "--rollout", "3"]).stdout
    assert "shop v2 vs v1 in production: promoted" in text
    assert "rollout 3 (other rollouts of v2 here: 2, 5; see one with --rollout ID)" in text

    wrong = invoke(api, ["report", "v2", "--rollout", "4"])
    assert wrong.exit_code == 1
    assert "rollout 4 is not a rollout of v2 (its rollouts: 2, 3, 5)" in str(wrong.exception)
