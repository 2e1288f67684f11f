"""`python examples/services_demo.py --json` (issue 14's demo) runs whole: a real
`entrega server` of three apps, release groups through the CLI, simulated users through
the routers. Its JSON line is an interface (field names from the issue)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.real, pytest.mark.slow]

DEMO = Path(__file__).resolve().parents[2] / "examples" / "services_demo.py"


def test_the_services_demo_delivers_groups_and_rolls_a_broken_one_back_whole() -> None:
    run = subprocess.run([sys.executable, str(DEMO), "--json"], capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(result) >= {"deliveries", "requests", "failed_requests", "duration_s"}
    promoted, second, worker, broken = result["deliveries"]
    assert promoted["group"] == "2026.12.1" and promoted["outcome"] == "promoted"
    assert second["outcome"] == "promoted" and second["running"] == {"api": "v2", "web": "v2"}
    assert worker == {"app": "worker", "version": "v2", "outcome": "promoted",
                      "rolled_back_apps": [], "running": {"worker": "v2"}}
    assert broken["outcome"] == "rolled_back" and broken["rolled_back_apps"] == ["api"]
    assert broken["running"] == {"api": "v2", "web": "v2"}  # both back where they were
    assert result["failed_requests"] == 0 and result["requests"] > 1000
    assert result["injected_failures"] > 0  # the web front's 502s: what caught api v3
