"""The router benchmark runs end to end (1 s runs) and prints the promised JSON shape.

No timing assertions: the numbers of a 1 s run mean nothing; the default run
(``python -m bench.router --json``) is the one the README quotes. Needs nginx, wrk and
haproxy (scripts/install-system-deps.sh): a missing one fails the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]


def bench_json(module: str, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", module, *args, "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_router_bench_prints_the_json_object() -> None:
    result = bench_json("bench.router", "--duration", "1", "--rounds", "1")
    paths = {"direct", "haproxy", "entrega"}
    assert set(result["rps"]) == set(result["p99_ms"]) == paths
    assert all(result["rps"][p] > 0 and result["p99_ms"][p] > 0 for p in paths)
    assert result["ratio_vs_haproxy"] == pytest.approx(
        result["rps"]["entrega"] / result["rps"]["haproxy"], rel=0.01)
    assert isinstance(result["p99_delta_ms"], float)
    assert set(result["cpu_us_per_request"]) == {"haproxy", "entrega"}
    assert result["weight_changes"] == 100
    assert result["weight_changes_failed"] == 0  # a correctness property, not a timing one
    assert result["failed"] == {"direct": 0, "haproxy": 0, "entrega": 0}
    assert result["router_requests_counted"] > 0


def test_router_path_bench_prints_the_json_object() -> None:
    result = bench_json("bench.router_path", "--requests", "2000", "--rounds", "1")
    assert set(result["us_per_request"]) == {"compiled", "pure"}
    for build in ("compiled", "pure"):
        assert set(result["us_per_request"][build]) == {"wrk", "browser"}
        assert all(v > 0 for v in result["us_per_request"][build].values())
    assert set(result["speedup"]) == {"wrk", "browser"}
    assert isinstance(result["compiled"], bool)
