"""`entrega pipeline`, `entrega release create` and `entrega token create` in process."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from typer.testing import CliRunner

from entrega.cli.main import app
from entrega.rollouts.model import Phase
from tests.cli.conftest import ApiServer, invoke


def test_pipeline_shows_where_each_release_stands(api: ApiServer) -> None:
    api.release("v1")
    api.release("v2")
    invoke(api, ["deploy", "v1"])
    api.play(api.rollout(), [(Phase.SUCCEEDED, "v1 is live", [])])

    result = invoke(api, ["pipeline", "shop"])

    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:3]}
    assert rows == {"v2": ["-"], "v1": ["succeeded", "●"]}
    view = json.loads(invoke(api, ["pipeline", "--json"]).stdout)
    assert view["releases"][1]["environments"]["production"]["running"] is True


def test_pipeline_of_another_app_is_refused(api: ApiServer) -> None:
    result = invoke(api, ["pipeline", "billing"])
    assert result.exit_code == 1
    assert "delivers 'shop', not 'billing'" in str(result.exception)


def build(tmp_path: Path) -> Path:
    path = tmp_path / "build"
    path.mkdir()
    (path / "app.py").write_text("print('shop')\n")
    return path


def test_release_create_uploads_and_can_deploy(api: ApiServer, tmp_path: Path) -> None:
    artifact = str(build(tmp_path))
    result = invoke(api, ["release", "create", "v1", "-a", artifact, "--commit-sha", "4f2a9c1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("release v1 created: sha256:")
    assert "the pipeline has started" in result.stdout
    assert api.rollout().version == "v1"
    again = json.loads(invoke(api, ["release", "create", "v1", "-a", artifact,
                                    "--json"]).stdout)
    assert again["created"] is False and "deploy" not in again


def test_release_create_of_a_missing_artifact_is_refused(api: ApiServer,
                                                         tmp_path: Path) -> None:
    result = invoke(api, ["release", "create", "v1", "-a", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert "nothing" in str(result.exception)
    assert api.service.repo.releases("shop") == []


def test_token_create_prints_the_token_and_its_digest() -> None:
    result = CliRunner().invoke(app, ["token", "create", "ci", "--role", "deployer"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    token = lines[1]
    assert token.startswith("ent_")
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert f'    ci: {{role: deployer, sha256: "{digest}"}}' in lines


def test_token_create_refuses_an_unknown_role() -> None:
    result = CliRunner().invoke(app, ["token", "create", "ci", "--role", "root"])
    assert result.exit_code == 1
    assert str(result.exception).startswith("unknown role 'root'")
