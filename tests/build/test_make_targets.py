"""`make demo` installs what the demo needs and no more (entrega and its `stats` extra: the
demo's latency analysis is the mann-whitney judge, which needs scipy); `make test` adds the
`test` extra on top, also after `make demo`, without building entrega again.

Checked with `make -n` (what make would run) on a venv path of the test's own."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def dry_run(target: str, venv: Path) -> list[str]:
    result = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def installs(lines: list[str]) -> list[str]:
    return [line for line in lines if re.search(r"pip install .*(-e|-r) ", line)]


def test_demo_installs_entrega_with_stats_only(tmp_path: Path) -> None:
    lines = dry_run("demo", tmp_path / "venv")
    assert installs(lines) == [f"{tmp_path}/venv/bin/python -m pip install -q -e '.[stats]'"]
    assert lines[-1].endswith("examples/demo.py")


def test_test_installs_the_test_extra_too(tmp_path: Path) -> None:
    lines = dry_run("install", tmp_path / "venv")
    assert [line.split()[-1] for line in installs(lines)] == \
        ["'.[stats]'", f"{tmp_path}/venv/test-requirements.txt"]
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["test"]
    assert "playwright>=1.40" in extra and "pytest>=8" in extra  # what that file lists


def test_test_after_demo_adds_only_the_test_extra(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed-demo").touch()  # `make demo` ran: newer than every source
    lines = dry_run("install", venv)
    assert [line.split()[-1] for line in installs(lines)] == \
        [f"{venv}/test-requirements.txt"]
    assert not any("-m venv" in line for line in lines)
