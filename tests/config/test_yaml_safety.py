"""YAML that is not plain data is refused with ``file:line``, quickly, never a traceback.

A duplicate key once turned authentication off (a second ``auth:`` replaced the first and
`config validate` said the file was valid); an alias bomb hung `config validate` and the
server; a ``!!python/...`` tag gave a traceback. Each case goes through ``load_config`` and
through the real ``entrega config validate`` command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from entrega.config import load_config
from entrega.errors import ConfigError
from entrega.yamldoc import MAX_YAML_VALUES, parse_yaml

GOOD = """\
app: shop
auth:
  tokens:
    ci: {role: deployer, sha256: "%s"}
  webhook_secret_env: SHOP_WEBHOOK_SECRET
run:
  command: "python app.py"
environments:
  - name: production
    router: {kind: embedded, listen: "127.0.0.1:8080"}
""" % ("0" * 64)

LAUGHS = "\n".join(
    [f'l0: &l0 [{", ".join(["lol"] * 9)}]']
    + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)])

#: (file text, line, what the message says) for every kind of refused YAML.
REFUSED = [
    pytest.param(GOOD + "auth:\n  max_body_bytes: 2048\n", 11,
                 "duplicate key 'auth': it is also at {file}:2", id="second-auth-block"),
    pytest.param(GOOD.replace("    router:", "    name: staging\n    router:"), 10,
                 "duplicate key 'name': it is also at {file}:9", id="duplicate-nested-key"),
    pytest.param(GOOD.replace("role: deployer,", "role: deployer, role: admin,"), 4,
                 "duplicate key 'role': it is also at {file}:4", id="duplicate-in-flow-map"),
    pytest.param(GOOD + LAUGHS + "\n", 11, "more than 100000 values (an alias bomb?)",
                 id="billion-laughs"),
    pytest.param(GOOD.replace("app: shop", "app: !!python/object/apply:os.system [id]"), 1,
                 "unknown tag !!python/object/apply:os.system", id="python-tag-on-sequence"),
    pytest.param(GOOD.replace('"python app.py"', "!!python/name:os.system ''"), 7,
                 "unknown tag !!python/name:os.system", id="python-tag-on-scalar"),
    pytest.param(GOOD.replace("  tokens:", "  tokens: !!python/object:dict"), 3,
                 "unknown tag !!python/object:dict", id="python-tag-on-mapping"),
    pytest.param(GOOD.replace("run:\n", "run: !custom\n"), 6, "unknown tag !custom",
                 id="custom-tag"),
    pytest.param(GOOD.replace("app: shop", "app: !!set {shop: null}"), 1,
                 "unknown tag !!set", id="set-tag"),
    pytest.param(GOOD + "x: &x {y: [*x]}\n", 11, "refers to a mapping or list that contains it",
                 id="recursive-alias"),
    pytest.param(GOOD + "? [a, b]\n: 1\n", 11, "a key must be a plain word or string",
                 id="sequence-as-key"),
    pytest.param(GOOD.replace("app: shop", "app: !!int shop"), 1, "'shop' is not a valid !!int",
                 id="bad-explicit-int"),
    pytest.param(GOOD + "defaults: &d {x: 1}\nmore:\n  <<: *d\n", 13,
                 "merge keys (<<) are not supported", id="merge-key"),
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "entrega.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_good_file_loads_with_its_auth(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert set(config.auth.tokens) == {"ci"}
    assert config.auth.webhook_secret_env == "SHOP_WEBHOOK_SECRET"


def test_aliases_within_the_limit_still_work(tmp_path: Path) -> None:
    text = GOOD.replace('command: "python app.py"', 'command: &cmd "python app.py"')
    text += "    verify:\n      - command: *cmd\n"
    config = load_config(write(tmp_path, text))
    assert config.environments[0].verify[0].command == "python app.py"


@pytest.mark.parametrize(("text", "line", "expected"), REFUSED)
def test_load_config_refuses(tmp_path: Path, text: str, line: int, expected: str) -> None:
    path = write(tmp_path, text)
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert time.monotonic() - started < 2.0
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected.format(file=path) in message


@pytest.mark.real
@pytest.mark.parametrize(("text", "line", "expected"), REFUSED)
def test_config_validate_command_refuses(tmp_path: Path, text: str, line: int,
                                         expected: str) -> None:
    path = write(tmp_path, text)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "entrega", "config", "validate", "-c", path.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
        env={**os.environ, "COLUMNS": "400", "NO_COLOR": "1"})
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    output = done.stdout + done.stderr
    lines = [x for x in output.splitlines() if x.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"error: entrega.yaml:{line}: "), output
    assert expected.format(file="entrega.yaml") in output
    assert "Traceback" not in output and "Error:" not in output
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_the_expansion_limit_counts_aliased_values() -> None:
    # 50 x 50 x 50 = 125,000 values from a 4-line file: over the limit.
    text = ("a: &a [" + ", ".join(["x"] * 50) + "]\n"
            "b: &b [" + ", ".join(["*a"] * 50) + "]\n"
            "c: [" + ", ".join(["*b"] * 50) + "]\n")
    with pytest.raises(ConfigError, match="alias bomb"):
        parse_yaml(text, file="f.yaml")
    # 20 x 50 x 50 = 50,000: within it, and built in full.
    data, _ = parse_yaml(text.replace("c: [" + ", ".join(["*b"] * 50),
                                      "c: [" + ", ".join(["*b"] * 20)), file="f.yaml")
    assert [len(b) for b in data["c"]] == [50] * 20 and data["c"][19][49] == ["x"] * 50
    assert 20 * 50 * 50 < MAX_YAML_VALUES


@pytest.mark.real
def test_server_refuses_an_alias_bomb_at_once(tmp_path: Path) -> None:
    """`entrega server` loads the same way: it exits with the error instead of growing."""
    path = write(tmp_path, GOOD + LAUGHS + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "entrega", "server", "-c", path.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "400", "NO_COLOR": "1"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error: entrega.yaml:11: YAML aliases expand this file to more than 100000 values" \
        in done.stderr, done.stderr
    assert not (tmp_path / ".entrega").exists()  # nothing started, nothing written
