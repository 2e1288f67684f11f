"""`entrega history` and `entrega releases` in process: the audit log and the releases,
as tables or as the API's JSON."""

from __future__ import annotations

import json

from entrega.rollouts.model import Phase
from tests.cli.conftest import ApiServer, invoke


def test_history_lists_who_did_what(api: ApiServer) -> None:
    api.release("v1")
    invoke(api, ["deploy", "v1"])
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live", [("promoted", "v1 promoted")])])

    text = invoke(api, ["history"]).stdout
    assert "production  v1       rollout" in text and "v1 promoted" in text
    events = json.loads(invoke(api, ["history", "--json", "-n", "1"]).stdout)
    assert [e["kind"] for e in events] == ["promoted"]


def test_history_of_an_unknown_environment_is_refused(api: ApiServer) -> None:
    result = invoke(api, ["history", "--env", "qa"])
    assert result.exit_code == 1
    assert "no environment named 'qa' (environments are production)" in str(result.exception)


def test_releases_newest_first(api: ApiServer) -> None:
    api.release("v1")
    api.release("v2", commit_sha="abc")
    lines = invoke(api, ["releases"]).stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["v2", "v1"]
    assert lines[0].split()[-1] == "ci"
    rows = json.loads(invoke(api, ["releases", "--json"]).stdout)
    assert rows[0]["meta"] == {"commit_sha": "abc"}


def test_releases_need_a_reachable_server(api: ApiServer) -> None:
    result = invoke(api, ["releases"], url="http://127.0.0.1:9")
    assert result.exit_code == 1
    assert "cannot reach the entrega server at http://127.0.0.1:9" in str(result.exception)
