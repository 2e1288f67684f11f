"""Suite-wide rules.

Tests that need a real component (processes, servers) are marked ``real``. Under
``CI=true`` such a test may not be skipped: a skip there means CI did not install or
start something it should have, and the run fails.
"""

from __future__ import annotations

import os

import pytest

_skipped_real: list[str] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    # The compiled router (setup.py) would run its old code against the new tests.
    from entrega.dataplane import build
    stale = build.stale_modules()
    if stale:
        pytest.exit(f"the compiled router is older than its sources ({', '.join(stale)}): "
                    "run `make install` to rebuild it (or set ENTREGA_PURE_PYTHON=1)",
                    returncode=2)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "real" in report.keywords:
        _skipped_real.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") == "true" and _skipped_real:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _skipped_real:
        verdict = "FAILS the run under CI=true" if os.environ.get("CI") == "true" else \
            "would fail under CI=true"
        terminalreporter.write_line(
            f"{len(_skipped_real)} test(s) needing a real component were skipped "
            f"({verdict}):", red=True)
        for nodeid in _skipped_real:
            terminalreporter.write_line(f"  {nodeid}")
