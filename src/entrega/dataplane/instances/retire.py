"""Retiring the router of another kind left running in an environment's router directory.

An environment's router keeps its files in one directory whatever its kind: the embedded
router ``router.pid`` (and its control socket, routes), HAProxy ``haproxy.pid`` and
``haproxy.cfg`` with its log sink's ``logsink.pid``. When ``router.kind`` changes between
two runs of the controller, the old kind's processes still run, and both kinds bind their
listener with SO_REUSEPORT: the new router *joins* the old one's port instead of failing,
and the kernel splits the traffic between the router the controller drives and one that
nobody updates any more (found delivering to a fleet switched from the embedded router to
HAProxy). So once the configured kind serves, the other one is drained and stopped. That
order is hitless: the new router already accepts on the port the old one lets go.

Standard library only: the host agent runs it on every host, the controller on its own
machine.
"""

from __future__ import annotations

import signal
from pathlib import Path

from entrega.runner import LocalRunner
from entrega.waiting import wait_until_sync

#: an embedded router drains for up to 10 s (its ``--drain-s``), HAProxy finishes what it
#: serves: beyond this the retiring process is left to the operator, named
RETIRE_TIMEOUT_S = 30.0
KINDS = ("embedded", "haproxy")


def other_kind_runs(directory: Path, keep: str) -> bool:
    """Whether a router process of another kind than ``keep`` runs in ``directory``: the
    embedded router then starts by joining its port (``--join-listeners``: HAProxy binds
    with SO_REUSEPORT too) instead of waiting for it to be free."""
    runner = LocalRunner()
    return any(runner.is_running(pid, marks=(mark,))
               for what, pidfile, mark, _ in _others(directory, keep)
               if (pid := runner.read_pid(pidfile)) is not None)


def retire_other_kind(directory: Path, keep: str) -> list[str]:
    """Stop (drained) every router process in ``directory`` that is not of kind ``keep``;
    what was stopped, in words (empty: nothing of another kind ran there)."""
    runner = LocalRunner()
    retired = []
    for what, pidfile, mark, sig in _others(directory, keep):
        pid = runner.read_pid(pidfile)
        if pid is None or not runner.is_running(pid, marks=(mark,)):
            continue
        runner.send_signal(pid, sig)
        gone = _exited(runner, pid, mark)
        retired.append(f"{what} (pid {pid})" if gone else
                       f"{what} (pid {pid}), still exiting after {RETIRE_TIMEOUT_S:g} s")
        if gone:
            pidfile.unlink(missing_ok=True)
    return retired


def _others(directory: Path, keep: str) -> list[tuple[str, Path, str, signal.Signals]]:
    """(what, pidfile, a mark of its command line, the signal that drains it) of each
    router process of another kind than ``keep``."""
    if keep not in KINDS:
        raise ValueError(f"unknown router kind {keep!r}; expected one of {', '.join(KINDS)}")
    others: list[tuple[str, Path, str, signal.Signals]] = []
    if keep != "embedded":
        # SIGTERM: the router stops accepting, finishes its requests, exits
        others.append(("embedded router", directory / "router.pid",
                       str(directory / "router.pid"), signal.SIGTERM))
    if keep != "haproxy":
        # SIGUSR1: HAProxy's soft stop (requests in flight finish); then its log sink
        others.append(("HAProxy", directory / "haproxy.pid", str(directory / "haproxy.cfg"),
                       signal.SIGUSR1))
        others.append(("HAProxy's log sink", directory / "logsink.pid",
                       "entrega.dataplane.logsink", signal.SIGTERM))
    return others


def _exited(runner: LocalRunner, pid: int, mark: str) -> bool:
    return wait_until_sync(lambda: not runner.is_running(pid, marks=(mark,)),
                           timeout_s=RETIRE_TIMEOUT_S) is not None
