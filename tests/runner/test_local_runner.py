"""The local runner on real processes: start, run, liveness by pid and command line,
stopping with a deadline, pidfiles."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from entrega.runner import LocalRunner, Program
from entrega.runner.pidfile import read_pidfile, remove_pidfile, write_pidfile
from entrega.waiting import wait_until_sync

pytestmark = pytest.mark.real

#: A program that ignores SIGTERM (as a stuck supervisor would) until told otherwise.
STUBBORN = textwrap.dedent("""
    import signal, sys, time
    if sys.argv[1] == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(60)
""")


def python(*args: str, log: Path | None = None, stdin: bytes = b"") -> Program:
    return Program([sys.executable, *args], env={"PATH": os.environ.get("PATH", "")},
                   log=log, stdin=stdin)


def test_run_gives_the_exit_code_and_the_output_or_none_after_the_deadline() -> None:
    runner = LocalRunner()
    done = runner.run(python("-c", "import sys; print('out'); sys.exit(3)"), timeout_s=10)
    assert done is not None and done.exit_code == 3 and done.output.strip() == "out"
    echoed = runner.run(python("-c", "import sys; print(sys.stdin.read())", stdin=b"given"),
                        timeout_s=10)
    assert echoed is not None and echoed.output.strip() == "given"
    assert runner.run(python("-c", "import time; time.sleep(30)"), timeout_s=0.3) is None
    with pytest.raises(FileNotFoundError):
        runner.run(Program(["/nonexistent/program"]), timeout_s=1)


def test_run_appends_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "program.log"
    log.write_text("before\n")
    code = "import sys; print('x', flush=True); print('y', file=sys.stderr)"
    done = LocalRunner().run(python("-c", code, log=log), timeout_s=10)
    assert done is not None and done.output == ""
    assert log.read_text().split() == ["before", "x", "y"]


async def test_a_started_program_runs_detached_in_its_own_session(tmp_path: Path) -> None:
    runner = LocalRunner()
    started = runner.start(python("-c", STUBBORN, "obey", log=tmp_path / "log"))
    try:
        assert started.exit_code() is None
        assert os.getsid(started.pid) == started.pid != os.getsid(0)
        assert runner.is_running(started.pid, marks=["obey"])
        assert await runner.terminate(started.pid, marks=["obey"], timeout_s=10)
        # reaped by its handle: the exit code of a SIGTERM
        assert started.wait(5) == -signal.SIGTERM
    finally:
        started.kill()


def test_a_recycled_pid_or_a_zombie_does_not_count_as_running(tmp_path: Path) -> None:
    runner = LocalRunner()
    # This process runs, but it is not the program the marks name: a recycled pid.
    assert runner.is_running(os.getpid())
    assert not runner.is_running(os.getpid(), marks=["entrega.dataplane.instances.supervisor"])
    assert not runner.is_running(os.getpid(), marks=[str(tmp_path)])
    # An exited child nobody has reaped yet is a zombie: dead.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        assert not runner.exists(child.pid)
        assert not runner.is_running(child.pid)
    finally:
        child.wait()
    assert not runner.is_running(child.pid)


async def test_terminate_then_kill_a_program_that_ignores_sigterm(tmp_path: Path) -> None:
    runner = LocalRunner()
    started = runner.start(python("-c", STUBBORN, "ignore", log=tmp_path / "log"))
    try:
        assert _wait_ready(tmp_path / "log")
        assert not await runner.terminate(started.pid, timeout_s=0.3)
        assert runner.is_running(started.pid)
        assert await runner.kill(started.pid, timeout_s=10)
        assert started.wait(5) == -signal.SIGKILL
        # stopping what is stopped is not an error
        assert await runner.terminate(started.pid, timeout_s=1)
    finally:
        started.kill()


def test_pidfiles(tmp_path: Path) -> None:
    runner = LocalRunner()
    pidfile = tmp_path / "x.pid"
    assert read_pidfile(pidfile) is None and runner.adopt(pidfile) is None
    write_pidfile(pidfile)
    assert runner.read_pid(pidfile) == os.getpid()
    ours = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()
    assert runner.adopt(pidfile, marks=[ours]) == os.getpid()
    assert runner.adopt(pidfile, marks=["not-on-our-command-line"]) is None
    pidfile.write_text("12345 678\n")  # HAProxy lists its workers after the master
    assert read_pidfile(pidfile) == 12345
    remove_pidfile(pidfile)  # not ours: stays
    assert pidfile.exists()
    write_pidfile(pidfile)
    remove_pidfile(pidfile)
    assert not pidfile.exists()
    pidfile.write_text("garbage")
    assert read_pidfile(pidfile) is None


def _wait_ready(log: Path) -> bool:
    return bool(wait_until_sync(lambda: log.exists() and "ready" in log.read_text(),
                                timeout_s=10))
