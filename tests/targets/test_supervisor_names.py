"""The controller recognises an instance's supervisor by its program name and directory in
``/proc/<pid>/cmdline``: by today's name, and by the one it ran under before the data plane
was a package of its own, so a controller upgraded under running instances adopts them."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from entrega.dataplane.instances.supervisor import FORMER_MODULES, MODULE
from entrega.targets.local import supervisor_alive

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(),
                                reason="needs /proc (Linux)")


def _sleeper(*argv: str) -> subprocess.Popen[bytes]:
    """A stand-in with a supervisor's command line (``python -c ... NAME --dir DIR``), once
    the kernel shows it (``cmdline`` is empty for a moment while the process execs)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *argv])
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    deadline = time.monotonic() + 10
    while argv[0].encode() not in cmdline.read_bytes().split(b"\0"):
        assert time.monotonic() < deadline, "the stand-in did not start within 10 s"
        time.sleep(0.01)
    return process


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


@pytest.mark.parametrize("module", [MODULE, *FORMER_MODULES])
def test_a_supervisor_is_recognised_by_its_name_and_directory(
        running: list[subprocess.Popen[bytes]], tmp_path: Path, module: str) -> None:
    running.append(process := _sleeper(module, "--dir", str(tmp_path)))
    assert supervisor_alive(process.pid, tmp_path)
    assert not supervisor_alive(process.pid, tmp_path / "another-instance")


def test_another_program_on_the_same_directory_is_not_a_supervisor(
        running: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    running.append(process := _sleeper("entrega.something.else", "--dir", str(tmp_path)))
    assert not supervisor_alive(process.pid, tmp_path)
