"""What a changed entrega.yaml changes (configdiff.py), by table: each edit of a file and
the changes it makes, each classified live, data plane or server; and the config a
reloaded server runs (the live part of the new file, the rest as it runs)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from unittest.mock import ANY

import pytest

from entrega.config import Config, validate_config
from entrega.configdiff import (
    ChangeKind,
    diff_configs,
    pending_routers,
    running_config,
    with_router,
)
from entrega.errors import ConfigError
from entrega.yamldoc import parse_yaml

LIVE, DATA_PLANE, SERVER = ChangeKind.LIVE, ChangeKind.DATA_PLANE, ChangeKind.SERVER
TOKEN = "a" * 64

BASE = """\
app: shop
server: {listen: "127.0.0.1:7070"}
run:
  command: "python app.py"
environments:
  - name: staging
    router: {kind: embedded, listen: "127.0.0.1:8081"}
  - name: production
    target: {kind: local, instances: 2}
    router: {kind: embedded, listen: "127.0.0.1:8080"}
    strategy:
      canary:
        steps:
          - weight: 10
          - analysis: {duration_s: 10, metrics: [error-rate]}
          - weight: 100
    analysis:
      error-rate: {judge: sequential, max_increase: 0.002}
notify:
  - webhook: {url: "https://hooks.example/secret-path"}
"""


def config(text: str) -> Config:
    data, lines = parse_yaml(textwrap.dedent(text), file="entrega.yaml")
    return validate_config(data, file="entrega.yaml", lines=lines, base_dir=Path("/srv"))


def edited(old: str, new: str) -> Config:
    assert old in BASE, old
    return config(BASE.replace(old, new))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("max_increase: 0.002", "max_increase: 0.01",
         [("environments[production].analysis.error-rate.max_increase", LIVE, "production",
           "0.002", "0.01")]),
        ("- weight: 10\n", "- weight: 20\n",
         [("environments[production].strategy.canary.steps", LIVE, "production", ANY, ANY)]),
        ('"127.0.0.1:8080"}', '"127.0.0.1:8090"}',
         [("environments[production].router.listen", DATA_PLANE, "production",
           "127.0.0.1:8080", "127.0.0.1:8090")]),
        ('listen: "127.0.0.1:8081"}', 'listen: "127.0.0.1:8081", workers: 2}',
         [("environments[staging].router.workers", DATA_PLANE, "staging", "1", "2")]),
        ("instances: 2", "instances: 3",
         [("environments[production].target.instances", SERVER, "production", "2", "3")]),
        ('server: {listen: "127.0.0.1:7070"}', 'server: {listen: "127.0.0.1:7071"}',
         [("server.listen", SERVER, None, "127.0.0.1:7070", "127.0.0.1:7071")]),
        ('server: {listen: "127.0.0.1:7070"}',
         'server: {listen: "127.0.0.1:7070"}\nstore: {url: "sqlite:////tmp/other.db"}',
         [("store.url", SERVER, None, None, "sqlite:////tmp/other.db")]),
        ('command: "python app.py"', 'command: "python app2.py"',
         [("run.command", SERVER, None, "python app.py", "python app2.py")]),
        # secrets are not shown: a webhook URL often carries one, and so does auth
        ("hooks.example/secret-path", "hooks.example/other-path",
         [("notify", LIVE, None, None, None)]),
        ("notify:", f"auth:\n  tokens:\n    ci: {{role: deployer, sha256: {TOKEN}}}\nnotify:",
         [("auth.tokens.ci", LIVE, None, None, None)]),
        ("  - name: staging\n    router: {kind: embedded, listen: \"127.0.0.1:8081\"}\n", "",
         [("environments", SERVER, None, "staging, production", "production")]),
    ],
    ids=["analysis-threshold", "canary-steps", "router-listen", "router-workers",
         "target-instances", "server-listen", "store-url", "run-command", "notify-hidden",
         "tokens-hidden", "environment-removed"],
)
def test_each_change_is_classified(old: str, new: str,
                                   expected: list[tuple[object, ...]]) -> None:
    changes = diff_configs(config(BASE), edited(old, new))
    got = [(c.path, c.kind, c.environment, c.before, c.after) for c in changes]
    assert got == expected


def test_an_unchanged_file_changes_nothing() -> None:
    assert diff_configs(config(BASE), config(BASE)) == []


def test_the_running_config_takes_the_live_part_and_keeps_the_rest() -> None:
    running = config(BASE)
    new = config(BASE.replace("max_increase: 0.002", "max_increase: 0.01")
                 .replace('"127.0.0.1:8080"}', '"127.0.0.1:8090"}')
                 .replace('listen: "127.0.0.1:7070"', 'listen: "127.0.0.1:7071"')
                 .replace("instances: 2", "instances: 3"))
    after = running_config(running, new, shown_as="entrega.yaml")
    production = after.environment("production")
    assert production.metric("error-rate").max_increase == 0.01  # live
    assert production.router.listen == "127.0.0.1:8080"  # waits for an idle environment
    assert production.target.instances == 2  # needs a restart
    assert after.server.listen == "127.0.0.1:7070"
    assert pending_routers(after, new) == {"production": new.environment("production").router}
    applied = with_router(after, "production", new.environment("production").router)
    assert applied.environment("production").router.listen == "127.0.0.1:8090"
    assert pending_routers(applied, new) == {}


def test_a_mix_that_would_open_the_running_server_is_refused() -> None:
    """Tokens removed while the server moves to loopback: the move needs a restart, so the
    running server (beyond loopback) would be open to anyone: refused."""
    tokens = f"auth:\n  tokens:\n    ci: {{role: admin, sha256: {TOKEN}}}\nnotify:"
    running = config(BASE.replace('127.0.0.1:7070', '0.0.0.0:7070').replace("notify:", tokens))
    new = config(BASE)
    with pytest.raises(ConfigError) as caught:
        running_config(running, new, shown_as="entrega.yaml")
    assert str(caught.value).startswith("entrega.yaml: the new file, with the settings that "
                                        "apply only after a server restart kept as they run")
    assert "beyond loopback" in str(caught.value)
