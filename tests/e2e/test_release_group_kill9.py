"""A release group survives `kill -9` of its server (issue 14): a real `entrega server` of
two apps (``web`` depends on ``api``), the group created with the CLI, the server killed
while the group's first member rolls out, a new server started on the same files: the
group ends as it would have, each member rolled out once, and users calling both routers
the whole time see no failed request."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from entrega.net import free_port
from tests.e2e.conftest import SHOP, Users, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]

APP = """\
  - app: {name}
    depends_on: {depends}
    run:
      command: "{python} app.py"
      health: {{path: /healthz, interval_s: 0.1, healthy_threshold: 2}}
      drain_s: 2
    environments:
      - name: production
        target: {{kind: local, instances: 2}}
        router: {{kind: embedded, listen: "127.0.0.1:{port}"}}
        strategy:
          canary:
            steps:
              - weight: 50
              - pause: {{duration_s: 4}}
              - weight: 100
"""


class Team:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.ports = {"server": free_port(), "api": free_port(), "web": free_port()}
        text = f'server: {{listen: "127.0.0.1:{self.ports["server"]}"}}\napps:\n' + "".join(
            APP.format(name=name, depends=json.dumps(depends), python=sys.executable,
                       port=self.ports[name])
            for name, depends in (("api", []), ("web", ["api"])))
        self.config = root / "entrega.yaml"
        self.config.write_text(text)
        self.server: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.root / "server.log").open("ab")
        self.server = subprocess.Popen([sys.executable, "-m", "entrega", "server", "-c",
                                        str(self.config)], cwd=self.root, stdout=log,
                                       stderr=subprocess.STDOUT)

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{self.ports['server']}/healthz",
                                 timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 90, "the server to answer")

    def kill(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait(timeout=10)

    def cli(self, *args: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "entrega", *args, "-c", str(self.config)],
                              cwd=self.root, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "ENTREGA_SERVER": "", "ENTREGA_APP": "",
                                   "COLUMNS": "200"})
        assert done.returncode == 0, done.stdout + done.stderr + self.log()
        return json.loads(done.stdout) if "--json" in args else done.stdout

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def group(self, name: str, version: str) -> None:
        members = []
        for app in ("api", "web"):
            path = self.root / "builds" / app / version
            path.mkdir(parents=True)
            shutil.copy(SHOP, path / "app.py")
            (path / "VERSION").write_text(version)
            members.append(f"{app}:{version}={path}")
        self.cli("release", "create", "--group", name, *members)


@pytest.fixture
def team(tmp_path: Path) -> Iterator[Team]:
    made = Team(tmp_path / "team")
    made.start()
    yield made
    if made.server is not None and made.server.poll() is None:
        made.server.send_signal(signal.SIGTERM)
        made.server.wait(timeout=30)
    subprocess.run([sys.executable, "-m", "entrega", "down", "-c", str(made.config)],
                   capture_output=True, timeout=120)


def test_a_group_in_flight_when_its_server_is_killed_ends_as_it_would_have(
        team: Team) -> None:
    team.group("2026.12.1", "v1")
    assert team.cli("group", "show", "2026.12.1", "--wait", "--json")["phase"] == "succeeded"
    web = f"http://127.0.0.1:{team.ports['web']}"
    api = f"http://127.0.0.1:{team.ports['api']}"
    with Users(web, rps=30) as web_users, Users(api, rps=30) as api_users:
        team.group("2026.12.2", "v2")
        wait_for(lambda: (team.cli("--app", "api", "status", "--json")["environments"][0]
                          ["rollout"] or {}).get("weights", {}).get("v2"), 60,
                 "api's canary to take traffic")
        team.kill()  # mid-group: api's canary runs, web waits for it
        team.start()
        view = team.cli("group", "show", "2026.12.2", "--wait", "--json")
    assert view["phase"] == "succeeded", (view, team.log())
    for app in ("api", "web"):
        status = team.cli("--app", app, "status", "--json")
        assert status["environments"][0]["current"] == "v2"
        events = team.cli("--app", app, "history", "--json", "--limit", "500")
        requested = [e for e in events if e["kind"] == "rollout" and e["version"] == "v2"]
        assert len(requested) == 1, requested  # rolled out once: nothing done twice
    for users in (web_users, api_users):
        assert users.total > 50 and not users.failures, users.failures[:5]
