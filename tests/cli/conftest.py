"""CLI commands run in process (Typer's CliRunner) against a real HTTP API: the server's
FastAPI app on a loopback port, served by uvicorn in a thread over a real store.

No controller runs: a test moves a rollout through its phases itself, the way the
controller records them (:meth:`ApiServer.play`), so each output and exit code can be
checked on its own. The real controller is the business of tests/e2e.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from entrega.api.app import create_app
from entrega.cli.main import app as cli_app
from entrega.config import load_config
from entrega.net import free_port
from entrega.rollouts.model import Phase, initial_state, state_to_dict
from entrega.server import build_service
from entrega.service import Service
from entrega.store.models import Rollout
from entrega.waiting import wait_until_sync

CONFIG = """\
app: shop
server: {{listen: "127.0.0.1:{port}"}}
run:
  command: "python app.py"
environments:
  - name: production
    router: {{kind: embedded, listen: "127.0.0.1:{router}"}}
    strategy:
      canary:
        steps:
          - weight: 20
          - pause: {{}}
          - weight: 100
"""


def state(stable: str | None, canary: str, phase: Phase, message: str = "",
          weights: dict[str, int] | None = None) -> dict[str, Any]:
    begun = initial_state(stable=stable, canary=canary, now=time.time())
    return {**state_to_dict(begun), "phase": phase.value, "message": message,
            "weights": weights or {}}


@dataclass
class ApiServer:
    config: Path
    url: str
    service: Service

    def release(self, version: str, **meta: Any) -> None:
        self.service.repo.add_release(app="shop", version=version,
                                      digest="sha256:" + version.encode().hex().ljust(64, "0"),
                                      artifact_path="/nonexistent", actor="ci", meta=meta)

    def rollout(self, timeout_s: float = 20) -> Rollout:
        """The rollout a command just started (polled: the command runs in a thread)."""
        row = wait_until_sync(lambda: self.service.repo.active_rollout("shop", "production"),
                              timeout_s=timeout_s)
        if row is None:
            raise AssertionError("no rollout was started")
        return row

    def play(self, rollout: Rollout, steps: list[tuple[Phase, str, list[tuple[str, str]]]],
             ) -> None:
        """Record transitions of ``rollout`` as the controller does: (phase, message,
        [(event kind, event message)]), the last one ending it."""
        for phase, message, events in steps:
            weights = {rollout.version: 100} if phase == Phase.SUCCEEDED else \
                ({rollout.from_version: 100} if rollout.from_version else {})
            self.service.repo.save_transition(
                rollout.id, state=state(rollout.from_version, rollout.version, phase,
                                        message, weights),
                phase=phase.value, events=[(k, m, {}) for k, m in events],
                actor="controller", current_version=rollout.version,
                set_current=phase == Phase.SUCCEEDED)

    def invoke_while(self, args: list[str],
                     steps: list[tuple[Phase, str, list[tuple[str, str]]]]) -> Any:
        """Run `entrega ARGS` in process while its rollout goes through ``steps``."""
        def controller() -> None:
            self.play(self.rollout(), steps)

        thread = threading.Thread(target=controller, daemon=True)
        thread.start()
        try:
            return invoke(self, args)
        finally:
            thread.join(timeout=20)


def invoke(server: ApiServer, args: list[str], *, url: str | None = None) -> Any:
    """`entrega ARGS -c entrega.yaml` in process, against ``server`` (or ``url``)."""
    return CliRunner().invoke(cli_app, [*args, "-c", str(server.config)],
                              env={"ENTREGA_SERVER": url or server.url, "COLUMNS": "200"})


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    port = free_port()
    path = tmp_path / "entrega.yaml"
    path.write_text(CONFIG.format(port=port, router=free_port()))
    config = load_config(path)
    service, _store = build_service(config, config_file=path)
    service.repo.sync_app(config.app, [e.name for e in config.environments])
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    def started() -> bool:
        if not thread.is_alive():
            raise AssertionError("the API did not start")
        return server.started

    if not wait_until_sync(started, timeout_s=20):
        raise AssertionError("the API did not start")
    try:
        yield ApiServer(path, f"http://127.0.0.1:{port}", service)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
