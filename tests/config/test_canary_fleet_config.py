"""``strategy.canary.canary_hosts`` / ``max_failed`` and ``strategy.blue-green.max_failed``:
read, turned into the rollout's fleet spec (the hosts in the config's order), bad values
refused with the file, the line and the field; ``canary_hosts`` on a local target refused
with its line; a target without hosts gives no fleet spec."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from entrega.config import load_config
from entrega.controller.launch import spec_for
from entrega.errors import ConfigError
from entrega.rollouts.model import FleetSpec

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
      default: canary
      canary:
        canary_hosts: 1
        max_failed: "34%"
        steps: [{weight: 10}, {weight: 100}]
      blue-green:
        max_failed: 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "entrega.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_canary_and_blue_green_get_the_fleet_their_config_gives(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FLEET))
    hosts = ("web-2", "web-1", "127.0.1.7")
    production = config.environment("production")
    assert spec_for(production).fleet == FleetSpec(hosts=hosts, canary_hosts=1,
                                                   max_failed="34%")
    assert spec_for(production, "blue-green").fleet == FleetSpec(hosts=hosts, max_failed=2)
    # no fleet settings: every host at once, no host may fail (today's behaviour)
    plain = FLEET.replace('        canary_hosts: 1\n        max_failed: "34%"\n', "")
    assert spec_for(load_config(write(tmp_path, plain)).environment("production")).fleet \
        == FleetSpec(hosts=hosts)
    # a target without hosts has no fleet
    assert spec_for(config.environment("staging")).fleet is None
    assert spec_for(config.environment("staging"), "blue-green").fleet is None


@pytest.mark.parametrize(("old", "new", "line", "expected"), [
    ("canary_hosts: 1", "canary_hosts: 0", 19,
     "environments[1].strategy.canary.canary_hosts: expected at least 1"),
    ("canary_hosts: 1", 'canary_hosts: "0%"', 19, "a share is above 0 to 100%"),
    ("canary_hosts: 1", "canary_hosts: some", 19, 'a share of them (like "25%")'),
    ('max_failed: "34%"', "max_failed: -1", 20,
     "environments[1].strategy.canary.max_failed: expected at least 0"),
    ("max_failed: 2", 'max_failed: "120%"', 23,
     "environments[1].strategy.blue-green.max_failed: a share is from 0 to 100%"),
], ids=["zero-hosts", "zero-share", "not-a-number", "negative-failures", "share-over-100"])
def test_bad_fleet_settings_name_file_line_and_field(tmp_path: Path, old: str, new: str,
                                                     line: int, expected: str) -> None:
    assert old in FLEET
    path = write(tmp_path, FLEET.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message, message


def test_canary_hosts_on_a_local_target_is_refused_with_its_line(tmp_path: Path) -> None:
    text = FLEET.replace('    router: {kind: embedded, listen: "127.0.0.1:8080"}\n',
                         '    router: {kind: embedded, listen: "127.0.0.1:8080"}\n'
                         "    strategy:\n"
                         "      canary:\n"
                         "        canary_hosts: 2\n"
                         "        steps: [{weight: 100}]\n", 1)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:10: environments[0].strategy.canary.canary_hosts: "
                              "canary_hosts picks hosts of a fleet, and a local target has "
                              "no hosts"), message
