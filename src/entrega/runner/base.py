"""``ProcessRunner``: the life of a program entrega starts and later finds again.

The data plane outlives the control plane (DESIGN.md): the embedded router, HAProxy and the
instances' supervisors run detached, and a restarted controller adopts them from what they
left on disk (a pidfile, a state file) instead of starting them twice. Each of those
programs goes through the same steps, written here once:

    start      detached: its own session, stdin given or empty, output appended to a log
    run        to completion, with a deadline (a starter that daemonizes: ``haproxy -D``)
    adopt      read the pid it left (pidfile) and check that pid still runs *it*
    stop       a signal, a wait with a deadline, then SIGKILL for what did not listen

Liveness is a pid *and* a command line: pids are recycled, and after a reboot or a long
while the pid in a stale pidfile can belong to anything. A program counts as running when
its pid runs, is not a zombie, and every one of the ``marks`` the caller knows it by is
an argument of its command line (the supervisor's module and instance directory,
HAProxy's configuration file).

As invoke's ``Runner`` serves local and remote (fabric) execution alike, the lifecycle
here is a template: :class:`ProcessRunner` implements waiting and stopping once on top of a
few primitives (start, run, look a pid up, send a signal, read a pidfile) that an
implementation provides for its host: :class:`~entrega.runner.local.LocalRunner` for this
machine, an SSH runner for a remote one. The primitives block, as invoke's do: they are
quick locally; a caller on the event loop runs a slow one through ``asyncio.to_thread``.
The waits are async and never block the loop.
"""

from __future__ import annotations

import abc
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from entrega.waiting import wait_until


@dataclass(frozen=True)
class Program:
    """What to run: ``argv`` with exactly ``env`` (nothing inherited), in ``cwd``.

    ``stdin`` is written to the program and then closed (empty: it reads end of file at
    once). With ``log``, stdout and stderr are appended to that file; without, ``run``
    captures them and ``start`` discards them.
    """

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    log: Path | None = None
    stdin: bytes = b""


@dataclass(frozen=True)
class Finished:
    """How a program run to completion ended; ``output`` is its stdout and stderr when it
    had no log file (else empty)."""

    exit_code: int
    output: str = ""


class Started(abc.ABC):
    """A program this runner started and still holds a handle on (its parent's view)."""

    pid: int

    @abc.abstractmethod
    def exit_code(self) -> int | None:
        """Its exit code once it has exited (reaped), None while it runs."""

    @abc.abstractmethod
    def kill(self) -> None:
        """SIGKILL it; nothing happens if it has exited already."""

    @abc.abstractmethod
    def wait(self, timeout_s: float) -> int | None:
        """Block until it exits (its exit code) or ``timeout_s`` passes (None)."""


class ProcessRunner(abc.ABC):
    """Starts, finds, signals and stops programs on one host. Every method is idempotent
    where its name allows: stopping a stopped program, reading a missing pidfile are not
    errors."""

    # -- primitives: one implementation per kind of host ------------------------------------

    @abc.abstractmethod
    def start(self, program: Program) -> Started:
        """Start ``program`` detached (a session of its own, so it outlives the caller and
        a signal to the caller's group never reaches it) and return at once. Raises
        OSError (FileNotFoundError: no such program) when it cannot be started."""

    @abc.abstractmethod
    def run(self, program: Program, *, timeout_s: float) -> Finished | None:
        """Run ``program`` in a session of its own to completion; None when it had not
        finished within ``timeout_s`` seconds (it was then killed and reaped). Raises
        OSError (FileNotFoundError: no such program) when it cannot be started."""

    @abc.abstractmethod
    def exists(self, pid: int) -> bool:
        """True when a process has ``pid`` and is not a zombie (one that exited and waits to
        be reaped is dead for every purpose here)."""

    @abc.abstractmethod
    def command_line(self, pid: int) -> list[bytes] | None:
        """The argv of ``pid``, or None when the host cannot show it (a system without
        ``/proc``; the pid is then all there is to go by)."""

    @abc.abstractmethod
    def send_signal(self, pid: int, sig: int, *, group: bool = False) -> bool:
        """Send ``sig`` to ``pid`` (to its process group with ``group``); False when there
        is no such process (or group), or it is not ours to signal."""

    @abc.abstractmethod
    def read_pid(self, pidfile: Path) -> int | None:
        """The pid a program wrote to ``pidfile`` (the first word of the file); None when
        there is no pidfile or it holds no pid."""

    # -- the lifecycle, written once ----------------------------------------------------------

    def is_running(self, pid: int, *, marks: Sequence[str | Path] = ()) -> bool:
        """True when ``pid`` runs, is not a zombie, and each of ``marks`` is one of the
        arguments of its command line (so a recycled pid running something else does not
        count)."""
        if not self.exists(pid):
            return False
        if not marks:
            return True
        argv = self.command_line(pid)
        if argv is None:
            return True
        # A zombie (or a process exiting right now) shows an empty command line: dead.
        return all(os.fsencode(mark) in argv for mark in marks)

    def adopt(self, pidfile: Path, *, marks: Sequence[str | Path] = ()) -> int | None:
        """The pid in ``pidfile`` if that program still runs (see :meth:`is_running`)."""
        pid = self.read_pid(pidfile)
        if pid is None or not self.is_running(pid, marks=marks):
            return None
        return pid

    async def wait_for_exit(self, pid: int, *, marks: Sequence[str | Path] = (),
                            timeout_s: float) -> bool:
        """True once ``pid`` no longer runs (as :meth:`is_running` sees it); False when it
        still does after ``timeout_s`` seconds."""
        return bool(await wait_until(lambda: not self.is_running(pid, marks=marks),
                                     timeout_s=timeout_s))

    async def terminate(self, pid: int, *, marks: Sequence[str | Path] = (),
                        sig: int = signal.SIGTERM, timeout_s: float) -> bool:
        """Ask ``pid`` to stop with ``sig`` and wait up to ``timeout_s`` seconds for it to
        exit. True when it has (or was not running); False when it still runs: the caller
        decides whether to :meth:`kill` it, and what to say."""
        if not self.is_running(pid, marks=marks):
            return True
        self.send_signal(pid, sig)
        return await self.wait_for_exit(pid, marks=marks, timeout_s=timeout_s)

    async def kill(self, pid: int, *, marks: Sequence[str | Path] = (),
                   groups: Sequence[int] = (), timeout_s: float) -> bool:
        """SIGKILL ``pid`` and the process groups ``groups`` (a supervisor's app, which
        would otherwise outlive it), then wait up to ``timeout_s`` seconds for ``pid`` to
        be gone. False when it survives even that (a process in uninterruptible sleep)."""
        if self.is_running(pid, marks=marks):
            self.send_signal(pid, signal.SIGKILL)
        for group in groups:
            self.send_signal(group, signal.SIGKILL, group=True)
        return await self.wait_for_exit(pid, marks=marks, timeout_s=timeout_s)
