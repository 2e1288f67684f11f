"""Bad entrega.yaml files get one clear error: file, line, field, what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from entrega.cli.init_template import render
from entrega.config import config_schema, load_config
from entrega.errors import ConfigError

GOOD = """\
app: shop
run:
  command: "python app.py"
environments:
  - name: production
    target: {kind: local, instances: 2}
    router: {kind: embedded, listen: "127.0.0.1:8080"}
    strategy:
      canary:
        steps:
          - weight: 10
          - analysis: {duration_s: 10, metrics: [error-rate]}
          - weight: 100
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "entrega.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_file_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    env = config.environment("production")
    assert env.strategy.name == "canary"
    assert env.target.instances == 2
    assert env.router.kind == "embedded" and env.router.workers == 1
    assert config.store_url == f"sqlite:///{tmp_path / '.entrega' / 'state.db'}"


@pytest.mark.parametrize(
    ("old", "new", "line", "expected"),
    [
        ("instances: 2", "instances: 0", 6,
         "environments[0].target.instances: Input should be greater than or equal to 1"),
        ("kind: local", "kind: lokal", 6, "environments[0].target: Input tag 'lokal'"),
        ('"127.0.0.1:8080"', '"127.0.0.1:80x"', 7,
         "environments[0].router.listen: expected HOST:PORT"),
        ('listen: "127.0.0.1:8080"}', 'listen: "127.0.0.1:8080", workers: 0}', 7,
         "environments[0].router.workers: Input should be greater than or equal to 1"),
        ("- weight: 10", "- weight: 110", 11,
         "environments[0].strategy.canary.steps[0].weight: Input should be less than or "
         "equal to 100"),
        ("metrics: [error-rate]", "metrics: [error-rat]", 1,
         "analysis metric 'error-rat' is not defined"),
        ("app: shop", "app: Shop_API", 1, "app: use lowercase letters"),
        ("    target:", "    targett:", 6, "environments[0].targett: unknown field"),
        ("  command: \"python app.py\"", "  commando: x", 3, "run.commando: unknown field"),
        ("  command: \"python app.py\"", "  env: {A: b}", 3,
         "run.command: this field is required"),
        ('"python app.py"', '""', 3, "run.command: must not be empty"),
        ("- weight: 100", "- weight: 5", 11, "weights must not go down"),
        ("- weight: 10", "- {weight: 10, pause: {}}", 11,
         "exactly one of weight, pause, analysis, cohort or users"),
        # Never built: refused rather than accepted and ignored.
        ("      canary:\n", "      blue-green: {post_switch_analysis: {metrics: [error-rate]}}\n"
         "      canary:\n", 9, "blue-green.post_switch_analysis: unknown field"),
    ],
    ids=["instances-zero", "unknown-target-kind", "bad-address", "no-workers", "weight-over-100",
         "undefined-metric", "bad-app-name", "misspelt-field", "misspelt-command",
         "missing-command", "empty-command",
         "weights-go-down", "step-with-two-kinds", "post-switch-analysis"],
)
def test_bad_files_name_file_line_and_field(tmp_path: Path, old: str, new: str, line: int,
                                            expected: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message


def test_invalid_yaml_points_at_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    target: {kind: local, instances: 2}",
                                        "    target: {kind: local, instances: 2"))
    with pytest.raises(ConfigError, match=r"entrega.yaml:\d+: not valid YAML"):
        load_config(path)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file.*entrega init"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="the file is empty"):
        load_config(write(tmp_path, "# nothing\n"))
    with pytest.raises(ConfigError, match=":1: expected a mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))


def test_duplicate_environment_names(tmp_path: Path) -> None:
    text = GOOD + GOOD[GOOD.index("  - name"):]
    with pytest.raises(ConfigError, match="environment names must be unique"):
        load_config(write(tmp_path, text))


def test_init_template_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "entrega.yaml"
    path.write_text(render("my-app", 'python -m my_app --port "$PORT"'))
    config = load_config(path)
    assert config.app == "my-app"
    assert config.run.command == 'python -m my_app --port "$PORT"'


def test_schema_names_the_fields() -> None:
    schema = config_schema()
    assert {"app", "run", "environments"} <= set(schema["properties"])
    assert "base_dir" not in schema["properties"]
