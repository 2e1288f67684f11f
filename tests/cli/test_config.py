"""`entrega init`, `config validate` and `config schema` in process (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from entrega.cli.main import app

runner = CliRunner(env={"COLUMNS": "200"})


def test_init_writes_a_config_that_validates(tmp_path: Path) -> None:
    path = tmp_path / "entrega.yaml"
    result = runner.invoke(app, ["init", "--app", "shop", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.stdout.replace("\n", "")
    valid = runner.invoke(app, ["config", "validate", "-c", str(path)])
    assert valid.exit_code == 0, valid.output
    assert "valid (shop, environments: production)" in valid.stdout


def test_init_does_not_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "entrega.yaml"
    path.write_text("app: mine\n")
    result = runner.invoke(app, ["init", "-c", str(path)])
    assert result.exit_code == 1
    assert str(result.exception) == f"{path} exists already (use --force to overwrite it)"
    assert path.read_text() == "app: mine\n"


def test_config_validate_names_the_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "entrega.yaml"
    path.write_text("app: shop\nenvironments:\n  - name: production\n    router: {kind: "
                    "embedded, listen: '127.0.0.1:8080'}\n")
    result = runner.invoke(app, ["config", "validate", "-c", str(path)])
    assert result.exit_code == 1
    assert str(result.exception).startswith(f"{path}:1: run: this field is required")


def test_config_schema_is_json_schema() -> None:
    result = runner.invoke(app, ["config", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert "environments" in schema["properties"] and "app" in schema["required"]


def test_config_schema_takes_no_arguments() -> None:
    result = runner.invoke(app, ["config", "schema", "extra"])
    assert result.exit_code == 2
    assert "unexpected extra argument" in result.output.lower()
