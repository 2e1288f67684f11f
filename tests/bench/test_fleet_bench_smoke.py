"""The fleet benchmark runs end to end (``--quick``: 3 sshd hosts, a 64 KiB artifact) and
prints the promised JSON shape, with both sides having delivered: every host serves the
new version afterwards, entrega's and Ansible's alike.

No timing assertions: the seconds of a 3-host run on a shared machine mean little; the
default run (``python -m bench.fleet --json``, 10 hosts, 1 MB) is the one the README
quotes. Needs openssh-server (scripts/install-system-deps.sh) and ansible-core (the test
extra): a missing one fails the test. The headline figures are computed by
:func:`bench.fleet.summarise`, tested by a table here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.fleet import summarise

ROOT = Path(__file__).resolve().parents[2]

PROMISED = {"hosts", "artifact_bytes", "entrega_s", "ansible_s", "ratio_to_ansible",
            "requests", "failed_requests", "canary_s", "canary_ratio_to_ansible",
            "ansible_requests", "ansible_failed_requests", "command"}


@pytest.mark.real
@pytest.mark.slow
def test_quick_run_delivers_on_both_sides_and_prints_the_json_object() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.fleet", "--json", "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    assert PROMISED <= set(result)
    assert result["hosts"] == 3
    assert 64 * 1024 < result["artifact_bytes"] < 80 * 1024
    assert result["delivered"]["entrega_canary"] is True
    assert result["delivered"]["ansible"] is True
    assert result["canary_s"] > 0 and result["ansible_s"] > 0
    assert result["canary_ratio_to_ansible"] == pytest.approx(
        result["canary_s"] / result["ansible_s"], rel=0.02)
    # traffic ran the whole time on both sides
    assert result["canary_requests"] > 0 and result["ansible_requests"] > 0
    # through the router, a canary to 100% drops nothing: a correctness property
    assert result["canary_failed_requests"] == 0, result.get("first_errors")
    if result["entrega_s"] is None:
        assert result["entrega_rolling"] == "not available"
        assert result["ratio_to_ansible"] is None
    else:
        assert result["delivered"]["entrega_rolling"] is True
        assert result["failed_requests"] == 0, result.get("first_errors")


def traffic(requests: int, failed: int, *errors: str) -> dict[str, Any]:
    return {"requests": requests, "failed_requests": failed, "errors": list(errors)}


CANARY_ONLY = {"canary_s": 2.0, "canary_traffic": traffic(200, 0), "canary_delivered": True,
               "rolling": None}
WITH_ROLLING = {**CANARY_ONLY, "rolling": {"s": 2.5, "traffic": traffic(250, 1, "boom"),
                                           "delivered": True}}
ANSIBLE = {"ansible_s": 10.0, "traffic": traffic(1000, 7, "refused"), "delivered": True}


@pytest.mark.parametrize(("entrega", "expected"), [
    (CANARY_ONLY, {"entrega_s": None, "ratio_to_ansible": None, "requests": 200,
                   "failed_requests": 0, "canary_s": 2.0, "canary_ratio_to_ansible": 0.2,
                   "entrega_rolling": "not available",
                   "first_errors": ["refused"]}),
    (WITH_ROLLING, {"entrega_s": 2.5, "ratio_to_ansible": 0.25, "requests": 250,
                    "failed_requests": 1, "canary_s": 2.0, "canary_ratio_to_ansible": 0.2,
                    "entrega_rolling": None, "first_errors": ["refused", "boom"]}),
], ids=["rolling not in entrega yet: null and a note", "rolling measured: the headline"])
def test_summarise(entrega: dict[str, Any], expected: dict[str, Any]) -> None:
    result = summarise(hosts=10, artifact_bytes=1 << 20, entrega=entrega, ansible=ANSIBLE,
                       command="python -m bench.fleet --json")
    assert {k: result.get(k) for k in expected} == expected
    assert (result["ansible_s"], result["ansible_requests"],
            result["ansible_failed_requests"]) == (10.0, 1000, 7)
