"""Suite-wide rules.

Tests that need a real component (processes, servers) are marked ``real``. Under
``CI=true`` such a test may not be skipped: a skip there means CI did not install or
start something it should have, and the run fails.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import itertools
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.postgres import PostgresCluster, PostgresUnavailable, running_postgres

from entrega.store import Store

_skipped_real: list[str] = []
_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL for the whole session, started by the first test needing it."""
    try:
        with running_postgres() as cluster:
            yield cluster
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL here: {exc}")


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database of the session's cluster (CREATE DATABASE is ~10 ms)."""
    name = f"test_{os.getpid()}_{next(_database_numbers)}"
    yield postgres_cluster.create_database(name)
    postgres_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.real)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty store, once on each engine the store supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated, empty store on SQLite, then on PostgreSQL: every user runs twice."""
    store = Store(store_url)
    store.migrate()
    yield store
    store.close()


def pytest_sessionstart(session: pytest.Session) -> None:
    # The compiled router (setup.py) would run its old code against the new tests.
    from entrega.dataplane import build
    stale = build.stale_modules()
    if stale:
        pytest.exit(f"the compiled router is older than its sources ({', '.join(stale)}): "
                    "run `make install` to rebuild it (or set ENTREGA_PURE_PYTHON=1)",
                    returncode=2)


# A test that hangs must fail the run with a trace, not use up CI's 90 minutes in silence.
# pytest-timeout (pyproject: timeout) fails the test from inside; this watchdog prints where
# every thread and every asyncio task is waiting a little before that, and ends the whole
# run if even the teardown after the timeout hangs.
WATCHDOG_DUMP_S = float(os.environ.get("ENTREGA_TEST_WATCHDOG_S", "420"))
WATCHDOG_EXIT_S = WATCHDOG_DUMP_S + 600


def _dump_where_everything_waits(nodeid: str) -> None:
    sys.stderr.write(f"\n=== watchdog: {nodeid} still running after {WATCHDOG_DUMP_S:.0f}s\n")
    faulthandler.dump_traceback(all_threads=True)
    loops = [o for o in gc.get_objects()
             if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]
    for loop in loops:
        for task in list(asyncio.all_tasks(loop)):
            sys.stderr.write(f"--- task {task.get_name()}: {task.get_coro()!r}\n")
            task.print_stack(file=sys.stderr)
    sys.stderr.flush()


def _give_up(nodeid: str) -> None:
    _dump_where_everything_waits(nodeid)
    sys.stderr.write(f"=== watchdog: {nodeid} did not end {WATCHDOG_EXIT_S:.0f}s after it "
                     "started, even after its timeout: ending the run\n")
    sys.stderr.flush()
    os._exit(3)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    timers = [threading.Timer(WATCHDOG_DUMP_S, _dump_where_everything_waits, (item.nodeid,)),
              threading.Timer(WATCHDOG_EXIT_S, _give_up, (item.nodeid,))]
    for timer in timers:
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        for timer in timers:
            timer.cancel()


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
