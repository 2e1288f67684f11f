"""`entrega deploy --artifact` takes the commit's metadata like `release create`, so that
DORA's lead time has data for releases deployed this way."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest

from entrega.rollouts.model import Phase
from tests.cli.conftest import ApiServer, invoke


def build(tmp_path: Path) -> Path:
    path = tmp_path / "build"
    path.mkdir()
    (path / "app.py").write_text("print('shop')\n")
    return path


def test_deploy_records_the_commit_and_dora_has_a_lead_time(api: ApiServer,
                                                             tmp_path: Path) -> None:
    committed = time.time() - 3600
    iso = dt.datetime.fromtimestamp(committed, dt.UTC).isoformat(timespec="seconds")
    result = invoke(api, ["deploy", "v1", "--artifact", str(build(tmp_path)),
                          "--commit-sha", "4f2a9c1", "--commit-time", iso,
                          "--ci-url", "https://ci.example/runs/12"])
    assert result.exit_code == 0, result.output
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live",
                              [("traffic", "router now sends v1 100%")])])

    meta = json.loads(invoke(api, ["releases", "--json"]).stdout)[0]["meta"]
    assert meta["commit_sha"] == "4f2a9c1" and meta["commit_time"] == iso
    assert meta["ci_url"] == "https://ci.example/runs/12"
    lead = json.loads(invoke(api, ["dora", "--json"]).stdout)["lead_time"]
    assert lead["samples"] == 1 and lead["tier"] is not None
    assert lead["value"] == pytest.approx(3600, abs=30)


def test_an_unreadable_commit_time_is_refused_before_anything_is_stored(
        api: ApiServer, tmp_path: Path) -> None:
    result = invoke(api, ["deploy", "v1", "--artifact", str(build(tmp_path)),
                          "--commit-time", "yesterday"])
    assert result.exit_code == 1
    assert str(result.exception).startswith("--commit-time 'yesterday' is not a time")
    assert json.loads(invoke(api, ["releases", "--json"]).stdout) == []


def test_commit_metadata_needs_a_new_release(api: ApiServer) -> None:
    api.release("v1")
    result = invoke(api, ["deploy", "v1", "--commit-sha", "4f2a9c1"])
    assert result.exit_code == 1
    assert "give them with --artifact" in str(result.exception)
