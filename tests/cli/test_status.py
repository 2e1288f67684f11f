"""`entrega status` in process: what each environment runs and the live rollout, as a
panel or as the API's JSON."""

from __future__ import annotations

import json

from entrega.rollouts.model import Phase
from tests.cli.conftest import ApiServer, invoke


def test_status_shows_the_rollout_in_progress(api: ApiServer) -> None:
    api.release("v1")
    api.release("v2")
    invoke(api, ["deploy", "v1"])
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live", [])])
    invoke(api, ["deploy", "v2"])

    result = invoke(api, ["status"])

    assert result.exit_code == 0, result.output
    assert "app shop" in result.stdout and "production  runs v1" in result.stdout
    assert "rollout 2: v1 → v2 (canary) pending" in result.stdout
    assert "steps:  weight 20%  pause  weight 100%" in result.stdout


def test_status_json_is_the_apis_answer(api: ApiServer) -> None:
    api.release("v1")
    invoke(api, ["deploy", "v1"])
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live", [])])
    data = json.loads(invoke(api, ["status", "--json"]).stdout)
    assert data == api.service.status().model_dump(mode="json")
    (production,) = data["environments"]
    assert production["last_rollout"]["message"] == "v1 is live"


def test_status_without_a_server_says_so(api: ApiServer) -> None:
    result = invoke(api, ["status"], url="http://127.0.0.1:9")
    assert result.exit_code == 1
    assert "127.0.0.1:9" in str(result.exception)
