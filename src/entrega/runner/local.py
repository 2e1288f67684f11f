"""``LocalRunner``: programs on this machine, through ``subprocess``, signals and ``/proc``.

A started program gets a session of its own (``start_new_session``): it is no longer in the
controller's process group, so a Ctrl-C or a ``kill -9`` of the controller's group reaches
it not, and it survives its parent. Only the file descriptors named (stdin, the log) are
passed on; the environment is exactly the one given (see :mod:`entrega.procenv` for why
nothing is inherited).

Liveness reads ``/proc/<pid>/stat`` (state ``Z``: a zombie is dead) and
``/proc/<pid>/cmdline``. Without ``/proc`` (not Linux) a pid that answers ``kill 0`` is
taken as running: the pid is then all there is to go by.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from entrega.runner.base import Finished, ProcessRunner, Program, Started
from entrega.runner.pidfile import read_pidfile

#: Linux shows every process under /proc; elsewhere a pid is all there is to go by.
_HAS_PROC = Path("/proc/self/stat").exists()


class LocalProcess(Started):
    """A program started by :class:`LocalRunner`: its ``Popen``, which reaps it."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()

    def wait(self, timeout_s: float) -> int | None:
        try:
            return self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None


class LocalRunner(ProcessRunner):
    """Starts and finds programs on this machine."""

    def start(self, program: Program) -> LocalProcess:
        stdin = subprocess.PIPE if program.stdin else subprocess.DEVNULL
        with _output(program) as out:  # the child holds its own copy of the log
            popen = subprocess.Popen(
                list(program.argv), env=dict(program.env), cwd=program.cwd, stdin=stdin,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        if program.stdin:
            assert popen.stdin is not None
            try:
                popen.stdin.write(program.stdin)
            except BrokenPipeError:  # it exited at once; its exit code says why
                pass
            finally:
                popen.stdin.close()
        return LocalProcess(popen)

    def run(self, program: Program, *, timeout_s: float) -> Finished | None:
        with _output(program, capture=True) as out:
            try:
                done = subprocess.run(
                    list(program.argv), env=dict(program.env), cwd=program.cwd,
                    input=program.stdin or None,
                    stdin=None if program.stdin else subprocess.DEVNULL,
                    stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s,
                    start_new_session=True, close_fds=True)
            except subprocess.TimeoutExpired:  # killed and reaped by subprocess.run
                return None
        output = done.stdout.decode(errors="replace") if done.stdout is not None else ""
        return Finished(exit_code=done.returncode, output=output)

    def exists(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's: it exists
            pass
        if not _HAS_PROC:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(") ", 1)[1][:1] != "Z"
        except FileNotFoundError:  # exited between the two looks
            return False
        except (OSError, IndexError):  # hidden from us (hidepid): it exists
            return True

    def command_line(self, pid: int) -> list[bytes] | None:
        if not _HAS_PROC:
            return None
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:  # exited since: no arguments, so no mark matches
            return []
        except OSError:
            return None

    def send_signal(self, pid: int, sig: int, *, group: bool = False) -> bool:
        try:
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def read_pid(self, pidfile: Path) -> int | None:
        return read_pidfile(pidfile)


@contextlib.contextmanager
def _output(program: Program, *, capture: bool = False) -> Iterator[IO[bytes] | int]:
    """Where a program's stdout and stderr go: its log (appended to), a pipe, or nowhere."""
    if program.log is None:
        yield subprocess.PIPE if capture else subprocess.DEVNULL
        return
    with open(program.log, "ab") as log:
        yield log
