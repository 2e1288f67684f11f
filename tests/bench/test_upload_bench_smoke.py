"""The upload benchmark runs end to end against a real server (a small artifact) and
prints the promised JSON shape. Its latencies are figures, not asserted (a shared CI
machine); the default run (``python -m bench.upload``, 256 MiB) is the one the README quotes."""

from __future__ import annotations

import json

import pytest
from bench.upload import main

pytestmark = [pytest.mark.real]


def test_quick_run_prints_the_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "--mib", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"artifact_bytes", "upload_s", "healthz_p99_ms", "healthz_max_ms"} <= set(result)
    assert result["artifact_bytes"] > 8 << 20
    assert 0 < result["upload_s"] < 60
    # Measured, not judged: a timed bound here failed once on a loaded CI machine (one
    # sample of eight at 1.1 s); the README's figure comes from the benchmark's own run.
    assert 0 < result["healthz_p99_ms"] <= result["healthz_max_ms"]
