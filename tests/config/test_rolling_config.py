"""``strategy: {rolling: {batch, max_failed, max_unavailable, pause_between_batches_s,
analysis}}``: read, turned into the rollout's spec (the hosts in the config's order), and
bad values refused with the file, the line and the field; rolling on a local target
refused with its line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from entrega.config import RollingConfig, load_config
from entrega.controller.launch import spec_for
from entrega.errors import ConfigError, Conflict
from entrega.rollouts.model import AnalysisStep, RollingSpec

FLEET = """\
app: shop
run:
  command: "python app.py"
environments:
  - name: staging
    target: {kind: local}
    router: {kind: embedded, listen: "127.0.0.1:8080"}
  - name: production
    target:
      kind: ssh
      hosts:
        - {name: web-2, address: 127.0.1.6}
        - {name: web-1, address: 127.0.1.5}
        - 127.0.1.7
    router: {kind: embedded, listen: "127.0.0.1:8081"}
    strategy:
      rolling:
        batch: "25%"
        max_failed: 1
        pause_between_batches_s: 30
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "entrega.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_rolling_is_read_and_becomes_the_rollouts_spec(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FLEET))
    env = config.environment("production")
    assert env.strategy.rolling == RollingConfig(batch="25%", max_failed=1,
                                                 pause_between_batches_s=30)
    assert env.strategy.name == "rolling"
    spec = spec_for(env)
    assert spec.strategy == "rolling"
    assert spec.rolling == RollingSpec(hosts=("web-2", "web-1", "127.0.1.7"), batch="25%",
                                       max_failed=1, pause_between_batches_s=30)


def test_rolling_asked_of_a_local_environment_is_a_conflict(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FLEET))
    with pytest.raises(Conflict, match="staging's local target has no hosts"):
        spec_for(config.environment("staging"), "rolling")
    # an ssh environment without rolling configured rolls one host at a time
    plain = FLEET.split("    strategy:")[0]
    spec = spec_for(load_config(write(tmp_path, plain)).environment("production"), "rolling")
    assert spec.rolling is not None and (spec.rolling.batch, spec.rolling.max_failed) == (1, 0)


@pytest.mark.parametrize(("old", "new", "line", "expected"), [
    ('batch: "25%"', "batch: 0", 18, "environments[1].strategy.rolling.batch: expected at "
     "least 1"),
    ('batch: "25%"', 'batch: "0%"', 18, "a share is above 0 to 100%"),
    ('batch: "25%"', "batch: half", 18, 'a share of them (like "25%")'),
    ("max_failed: 1", 'max_failed: "150%"', 19, "environments[1].strategy.rolling."
     "max_failed: a share is from 0 to 100%"),
    ("max_failed: 1", "max_failed: -1", 19, "expected at least 0"),
    ("pause_between_batches_s: 30", "pause_between_batches_s: -1", 20,
     "greater than or equal to 0"),
    ("pause_between_batches_s: 30", "serial: 2", 20, "rolling.serial: unknown field"),
], ids=["zero-batch", "zero-share", "not-a-number", "share-over-100", "negative-failures",
        "negative-pause", "misspelt-field"])
def test_bad_rolling_settings_name_file_line_and_field(tmp_path: Path, old: str, new: str,
                                                       line: int, expected: str) -> None:
    assert old in FLEET
    path = write(tmp_path, FLEET.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message, message


def test_rolling_on_a_local_target_is_refused_with_its_line(tmp_path: Path) -> None:
    text = FLEET.replace('    router: {kind: embedded, listen: "127.0.0.1:8080"}\n',
                         '    router: {kind: embedded, listen: "127.0.0.1:8080"}\n'
                         "    strategy: {rolling: {batch: 1}}\n", 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:8: environments[0].strategy.rolling: rolling moves "
                              "a release host by host, and a local target has no hosts"), \
        message


def test_several_strategies_with_rolling_need_a_default(tmp_path: Path) -> None:
    text = FLEET.replace("    strategy:\n", "    strategy:\n      canary: {steps: "
                         "[{weight: 100}]}\n", 1)
    with pytest.raises(ConfigError, match="canary and rolling are configured"):
        load_config(write(tmp_path, text))
    chosen = text.replace("    strategy:\n", "    strategy:\n      default: rolling\n", 1)
    assert load_config(write(tmp_path, chosen)).environment("production") \
        .strategy.name == "rolling"


def test_max_unavailable_and_the_analysis_between_batches_reach_the_spec(
        tmp_path: Path) -> None:
    text = FLEET.replace("        pause_between_batches_s: 30\n",
                         "        pause_between_batches_s: 30\n"
                         '        max_unavailable: "50%"\n'
                         "        analysis: {duration_s: 90, metrics: [error-rate]}\n")
    env = load_config(write(tmp_path, text)).environment("production")
    spec = spec_for(env)
    assert spec.rolling is not None
    assert spec.rolling.max_unavailable == "50%"
    assert spec.rolling.analysis == AnalysisStep(metrics=("error-rate",), duration_s=90)
    # neither given: a whole batch may be unavailable, and no analysis (as before them)
    plain = spec_for(load_config(write(tmp_path, FLEET)).environment("production"))
    assert plain.rolling is not None
    assert (plain.rolling.max_unavailable, plain.rolling.analysis) == (None, None)
    zero = load_config(write(tmp_path, text.replace('"50%"', "0")))
    assert zero.environment("production").strategy.rolling == RollingConfig(
        batch="25%", max_failed=1, pause_between_batches_s=30, max_unavailable=0,
        analysis={"duration_s": 90, "metrics": ["error-rate"]})


@pytest.mark.parametrize(("added", "line", "expected"), [
    ("max_unavailable: -1", 21, "rolling.max_unavailable: expected at least 0"),
    ('max_unavailable: "120%"', 21, "max_unavailable: a share is from 0 to 100%"),
    ("analysis: {metrics: []}", 21, "rolling.analysis.metrics: List should have at least 1"),
    ("analysis: {metrics: [error-rate], duration_s: 0}", 21,
     "rolling.analysis.duration_s: Input should be greater than 0"),
    ("analysis: {metrics: [errors]}", None, "analysis metric 'errors' is not defined"),
], ids=["negative-unavailable", "share-over-100", "no-metric", "zero-duration",
        "unknown-metric"])
def test_bad_max_unavailable_or_analysis_is_refused_with_its_field(
        tmp_path: Path, added: str, line: int | None, expected: str) -> None:
    path = write(tmp_path, FLEET + f"        {added}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    if line is not None:
        assert message.startswith(f"{path}:{line}: "), message
    assert expected in message, message
