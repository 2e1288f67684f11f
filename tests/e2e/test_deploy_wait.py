"""`entrega deploy --wait` as CI runs it: a real CLI process whose output is a pipe, a real
server killed (-9) and restarted while it waits, a real canary that goes on meanwhile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import PAUSED_CANARY, Deployment, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]

TIMED_CANARY = """\
      canary:
        steps:
          - weight: 20
          - pause: {duration_s: 15}
          - weight: 100
"""
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \S+ +\S")


def deploy_wait(dep: Deployment, version: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "entrega", "deploy", version, "--artifact",
         str(dep.artifact(version)), "--wait", "-c", str(dep.config)],
        cwd=dep.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"})


def active(dep: Deployment) -> Any:
    status = httpx.get(dep.api + "/api/v1/status", timeout=10).json()
    return status["environments"][0]["rollout"]


def finish(process: subprocess.Popen[str], timeout_s: float = 90) -> tuple[int, list[str]]:
    stdout, stderr = process.communicate(timeout=timeout_s)
    assert stdout.endswith("\n"), f"the last line has no newline: {stdout[-200:]!r}"
    lines = stdout.splitlines()
    assert all(LINE.match(line) for line in lines), stdout + stderr
    return process.returncode, lines


def test_wait_survives_a_server_restart(make_deployment: Callable[[str], Deployment]) -> None:
    dep = make_deployment(TIMED_CANARY)
    code, lines = finish(deploy_wait(dep, "v1"))
    assert code == 0, lines
    assert "v1 (first release: straight to 100%)" in lines[0]
    assert not any("weight" in line or "pause" in line for line in lines), lines
    assert lines[-1].endswith("rollout 1: v1 promoted in production")

    waiting = deploy_wait(dep, "v2")
    # Polled through the API, not the CLI: a loaded machine must not make the poll miss
    # the pause (long enough for a kill and a restart).
    wait_for(lambda: (r := active(dep)) and "pause" in r["message"], 60,
             "the canary to reach its pause")
    dep.kill_server()
    dep.start_server()
    code, lines = finish(waiting)

    text = "\n".join(lines)
    assert code == 0, text + dep.server_log()
    assert "lost the server (" in text and "reconnected after" in text, text
    assert "step 1/3: v2 receives 20% of traffic" in text
    assert lines[-1].endswith("rollout 2: v2 promoted in production"), text
    ids = [line for line in lines if "promoted" in line.split()[1]]
    assert len(ids) == 1, text  # each event once, even across the reconnection


def test_a_pause_for_a_person_exits_3(make_deployment: Callable[[str], Deployment]) -> None:
    dep = make_deployment(PAUSED_CANARY)
    assert finish(deploy_wait(dep, "v1"))[0] == 0
    code, lines = finish(deploy_wait(dep, "v2"))
    assert code == 3, lines
    assert "paused in production (step 2/3: paused until promoted)" in lines[-1]
    assert dep.rollout()["phase"] == "paused"  # the rollout waits; only the CLI ended
