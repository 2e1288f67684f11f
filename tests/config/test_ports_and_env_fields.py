"""``target.ports`` and ``run.inherit_env``: what they accept, and file:line errors otherwise."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from entrega.config import load_config, parse_port_range
from entrega.errors import ConfigError

GOOD = """\
app: shop
run:
  command: "python app.py"
  env: {GREETING: hola}
  inherit_env: [SHOP_DATABASE_URL, TZ]
environments:
  - name: production
    target:
      kind: local
      instances: 2
      ports: "20000-20999"
    router: {kind: embedded, listen: "127.0.0.1:8080"}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "entrega.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_good_file_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.run.inherit_env == ["SHOP_DATABASE_URL", "TZ"]
    target = config.environments[0].target
    assert target.ports == "20000-20999" and target.port_range == (20000, 20999)


def test_ports_default_to_any_free_port(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD.replace('      ports: "20000-20999"\n', "")))
    assert config.environments[0].target.port_range is None


@pytest.mark.parametrize(("old", "new", "line", "expected"), [
    pytest.param('"20000-20999"', '"20000"', 11, 'expected a port range LOW-HIGH like '
                 '"20000-20999", got \'20000\'', id="single-port"),
    pytest.param('"20000-20999"', '"abc-def"', 11, "expected a port range LOW-HIGH",
                 id="not-numbers"),
    pytest.param('"20000-20999"', '"20999-20000"', 11, "starts above its end",
                 id="reversed"),
    pytest.param('"20000-20999"', '"0-100"', 11, "ports go from 1 to 65535", id="port-zero"),
    pytest.param('"20000-20999"', '"65000-70000"', 11, "ports go from 1 to 65535",
                 id="beyond-65535"),
    pytest.param('"20000-20999"', '"20000-20002"', 11,
                 "20000-20002 holds 3 port(s); 2 instance(s) need 4", id="too-small-for-a-rollout"),
    pytest.param('"20000-20999"', "[20000, 20999]", 11, "Input should be a valid string",
                 id="a-list"),
    pytest.param("TZ]", "TZ, 2BAD]", 5, "'2BAD' is not an environment variable name",
                 id="bad-inherit-name"),
    pytest.param("{GREETING: hola}", '{"MY-VAR": x}', 4,
                 "'MY-VAR' is not an environment variable name", id="bad-env-name"),
])
def test_bad_values_name_file_line_and_field(tmp_path: Path, old: str, new: str, line: int,
                                             expected: str) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message


@pytest.mark.parametrize(("text", "expected"), [
    ("20000-20999", (20000, 20999)), (" 1024 - 1025 ", (1024, 1025)), ("80-80", (80, 80)),
])
def test_parse_port_range(text: str, expected: tuple[int, int]) -> None:
    assert parse_port_range(text) == expected


def test_the_webhook_secret_cannot_be_inherited(tmp_path: Path) -> None:
    text = GOOD.replace("run:\n", "auth: {webhook_secret_env: SHOP_HOOK}\nrun:\n").replace(
        "[SHOP_DATABASE_URL, TZ]", "[SHOP_DATABASE_URL, SHOP_HOOK]")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match="run.inherit_env names SHOP_HOOK, the webhook "
                                          "secret") as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:1: ")
