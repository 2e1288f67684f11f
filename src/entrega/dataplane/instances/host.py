"""The instances of one environment on one host: what the host agent does there.

Every operation on instances that has to happen *on* the host they run on lives here:
claiming ports, spawning the detached supervisors (:mod:`.supervisor`), waiting until they
started their app, adopting the running ones, reading their state files, stopping them
with drain, and explaining a failing one from its state and stderr. The local target
calls it in process (through ``asyncio.to_thread``: it blocks); on a remote host the same
code runs as ``python -m entrega.dataplane.instances.hostctl OPERATION``, one command per
operation, so instances outlive SSH sessions and the controller alike (DESIGN.md). What
stays controller-side is what needs the controller: health probes over HTTP and readiness.

Inputs and outputs are plain data (strings, numbers, lists, and the records of
:mod:`.wire`, which ``dataclasses.asdict`` turns into JSON) and every operation is
idempotent: a repeated start adopts the running instances (same ports, same pids), a
repeated stop does nothing.

A remote host has only Python and entrega's wheel: this module imports the standard
library and entrega's stdlib-only modules, nothing else (an import-linter contract and a
test that runs ``hostctl`` under ``python -S -I`` hold it). Its layout on disk::

    STATE_DIR/run/ENVIRONMENT/VERSION/INSTANCE/        one directory per instance (supervisor.py)
    STATE_DIR/run/ENVIRONMENT/VERSION/INSTANCE/work/   the copy of the release it runs in

An instance never runs in its release's directory: that tree is content-addressed (its
digest is checked before every start), and apps write where they run (Python's
``__pycache__``, a cache, a log file), which would make the release fail that check the
next time it is started (a restore, a rollback to it). Each start of an instance runs it
in a fresh copy of the release, like a container started from its image; the copy goes
when the instance stops.

Starts of one environment on one host are serialised by a lock on its ``run`` directory
(``flock``), held from claiming ports until every supervisor has written its port: two
starts (two threads of a controller, two controllers, two SSH commands) can never pick the
same free port, and a start that finds an instance just started by another adopts it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from entrega.dataplane.instances.lookup import (
    SAFE_NAME,
    check_name,
    port_is_free,
    quote_tail,
    supervisor_marks,
)
from entrega.dataplane.instances.supervisor import (
    BACKOFF,
    EXIT_ALREADY_SUPERVISED,
    FAILED,
    MODULE,
    RUNNING,
    STATE_FILE,
    STDERR_LOG,
    STOP_REQUEST_FILE,
    STOPPED,
    SUPERVISOR_LOG,
    SupervisorState,
    read_state,
    write_json_atomically,
)
from entrega.dataplane.instances.wire import InstanceReport, ObservedInstance, ReleaseSpec
from entrega.errors import TargetError
from entrega.net import Endpoint, free_port
from entrega.procenv import data_plane_env, minimal_env
from entrega.runner import LocalRunner, ProcessRunner, Program, Started
from entrega.waiting import wait_until_sync

#: How long a new supervisor may take to start its app (a Python interpreter or two).
SUPERVISOR_START_TIMEOUT_S = 15.0
#: Slack on top of ``drain_s`` for a supervisor to kill its app and write its last state.
STOP_GRACE_S = 5.0
#: How often a stop looks whether the supervisors have exited (s).
STOP_POLL_S = 0.05
#: The instance's working directory under its instance directory: a copy of the release.
WORK_DIR = "work"


class HostInstances:
    """The instances of ``app`` in ``environment`` on this host, under ``state_dir``.

    ``address`` is the host's address the instances' ports are on (and bound to when a
    port is checked free). Every method blocks and is idempotent.
    """

    def __init__(self, *, app: str, environment: str, state_dir: Path,
                 address: str = "127.0.0.1", runner: ProcessRunner | None = None) -> None:
        check_name("environment", environment)
        self.app = app
        self.environment = environment
        self.address = address
        self.run_dir = state_dir.resolve() / "run" / environment
        #: starts, finds and stops the instances' supervisors
        self.runner = runner or LocalRunner()

    # -- layout ----------------------------------------------------------------------------

    def release_dir(self, version: str) -> Path:
        check_name("version", version)
        return self.run_dir / version

    def instance_dirs(self, version: str) -> list[Path]:
        """The release's instance directories that hold a state, in instance order."""
        release_dir = self.release_dir(version)
        if not release_dir.is_dir():
            return []
        return sorted((d for d in release_dir.iterdir() if (d / STATE_FILE).exists()),
                      key=lambda d: (len(d.name), d.name))

    def versions(self) -> list[str]:
        if not self.run_dir.is_dir():
            return []
        return sorted(d.name for d in self.run_dir.iterdir()
                      if d.is_dir() and SAFE_NAME.match(d.name))

    def supervised(self, pid: int, instance_dir: Path) -> bool:
        """True when ``pid`` runs and is the supervisor of ``instance_dir`` (not a reused
        pid)."""
        return supervisor_marks(pid, instance_dir, self.runner) is not None

    # -- start -----------------------------------------------------------------------------

    def check_startable(self, release: ReleaseSpec) -> None:
        """What every runtime refuses before starting anything: a bad version name, no
        instance wanted, a release directory that is not there."""
        check_name("version", release.version)
        if release.instances < 1:
            raise TargetError(f"cannot start {self.app} {release.version} in "
                              f"{self.environment}: instances must be at least 1")
        if not Path(release.path).is_dir():
            raise TargetError(
                f"cannot start {self.app} {release.version} in {self.environment}: "
                f"release directory {release.path} does not exist",
                hint="unpack the release's artifact there first")

    def start(self, release: ReleaseSpec) -> list[Endpoint]:
        """Start the release's instances, or adopt the running ones (same ports and pids).

        Returns once every supervisor has started its app process; whether the app
        answers is the controller's business. Raises :class:`TargetError` when the release
        directory is missing, no port is free, or a supervisor cannot start.
        """
        self.check_startable(release)
        directories = [self.release_dir(release.version) / str(i)
                       for i in range(release.instances)]
        adopted: dict[Path, SupervisorState] = {}
        spawned: list[tuple[Path, Started]] = []
        with self._start_lock():
            claimed: set[int] = set()
            for instance, directory in enumerate(directories):
                directory.mkdir(parents=True, exist_ok=True)
                state = read_state(directory)
                if state is not None and self.supervised(state.supervisor_pid, directory):
                    adopted[directory] = state
                    continue
                port = self._claim_port(release, instance, state.port if state else None,
                                        claimed)
                work = self._working_copy(release, directory)
                spawned.append((directory,
                                self._spawn_supervisor(release, directory, port, work)))
            # Once the supervisors' first processes have exited, the state files hold the
            # ports (see _held_ports): the next start may claim.
            codes = [(d, self._setup_exit_code(release, d, s)) for d, s in spawned]
        for directory, code in codes:
            if code == EXIT_ALREADY_SUPERVISED:
                self._wait_for_other_supervisor(release, directory)
        endpoints = []
        for directory in directories:
            state = adopted.get(directory) or self._wait_until_spawned(release, directory)
            endpoints.append(Endpoint(self.address, state.port, directory.name))
        return endpoints

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # each open() is a lock of its own, threads too
            yield
        finally:
            os.close(fd)  # releases the lock

    def _claim_port(self, release: ReleaseSpec, instance: int, previous: int | None,
                    claimed: set[int]) -> int:
        held = claimed | self._held_ports()
        # Coming back on the old port keeps the routes that still point at it valid.
        if previous is not None and previous not in held \
                and _in_range(previous, release.ports) and port_is_free(self.address, previous):
            port = previous
        elif release.ports is None:
            port = free_port(self.address)
        else:
            port = self._free_port_in_range(release, instance, release.ports, held)
        claimed.add(port)
        return port

    def _free_port_in_range(self, release: ReleaseSpec, instance: int, ports: tuple[int, int],
                            held: set[int]) -> int:
        low, high = ports
        candidates = [p for p in range(low, high + 1) if p not in held]
        # Random order: a port just left by a stopped instance is not handed out at once
        # to the next, where clients of the old one might still reach it.
        random.shuffle(candidates)
        for port in candidates:
            if port_is_free(self.address, port):
                return port
        size = high - low + 1
        ours = len(held & set(range(low, high + 1)))
        raise TargetError(
            f"no free port in {self.environment}'s range {low}-{high} for {self.app} "
            f"{release.version} instance {instance}: {ours} of its {size} ports are held by "
            f"instances of {self.environment}, the other {size - ours} by other processes "
            f"on {self.address}",
            hint="widen target.ports in entrega.yaml, or stop what holds those ports")

    def _held_ports(self) -> set[int]:
        """Ports of this environment's supervised instances, running or in backoff."""
        held: set[int] = set()
        for version in self.versions():
            for directory in self.instance_dirs(version):
                state = read_state(directory)
                if state is not None and state.status != STOPPED \
                        and self.supervised(state.supervisor_pid, directory):
                    held.add(state.port)
        return held

    def _app_env(self, release: ReleaseSpec, instance: str, port: int) -> dict[str, str]:
        return {
            **minimal_env(),
            **release.env,
            "PORT": str(port),
            # the address to listen on: on a fleet host, that host's own (not 0.0.0.0)
            "HOST": self.address,
            "ENTREGA_APP": self.app,
            "ENTREGA_VERSION": release.version,
            "ENTREGA_ENVIRONMENT": self.environment,
            "ENTREGA_INSTANCE": instance,
        }

    def _working_copy(self, release: ReleaseSpec, directory: Path) -> Path:
        """A fresh copy of the release's tree for one instance to run in (see the module
        docstring for why). What an earlier run of the instance wrote is gone."""
        work = directory / WORK_DIR
        try:
            if work.exists():
                shutil.rmtree(work)
            shutil.copytree(release.path, work, symlinks=True)
        except (OSError, shutil.Error) as exc:
            shutil.rmtree(work, ignore_errors=True)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise TargetError(
                f"cannot prepare the working directory of "
                f"{self._where(release.version, directory)}: {reason}",
                hint="is the disk full? each instance runs in its own copy of the release"
            ) from exc
        return work

    def _spawn_supervisor(self, release: ReleaseSpec, directory: Path, port: int,
                          work: Path) -> Started:
        """Start the supervisor, which detaches; its first process exits once it is set up.

        Started, not run: the supervisors of a release's instances come up side by side."""
        argv = [sys.executable, "-m", MODULE,
                "--dir", str(directory), "--port", str(port),
                "--cwd", str(work), "--env-stdin", "--",
                release.command]
        env = self._app_env(release, directory.name, port)
        # The app's environment goes through a pipe: the supervisor's own is minimal.
        try:
            return self.runner.start(Program(argv, env=data_plane_env(),
                                             log=directory / SUPERVISOR_LOG,
                                             stdin=json.dumps(env).encode()))
        except OSError as exc:
            raise TargetError(f"cannot start the supervisor of "
                              f"{self._where(release.version, directory)}: {exc.strerror}"
                              ) from exc

    def _setup_exit_code(self, release: ReleaseSpec, directory: Path, started: Started) -> int:
        """0, or :data:`EXIT_ALREADY_SUPERVISED` when another controller started the
        instance at the same moment; raises :class:`TargetError` otherwise."""
        code = started.wait(SUPERVISOR_START_TIMEOUT_S)
        if code is None:
            started.kill()
            started.wait(STOP_GRACE_S)
            raise TargetError(
                f"the supervisor of {self._where(release.version, directory)} did not start "
                f"within {SUPERVISOR_START_TIMEOUT_S:g} s"
                + quote_tail(directory / SUPERVISOR_LOG), hint="is the machine overloaded?")
        if code in (0, EXIT_ALREADY_SUPERVISED):
            return code
        raise TargetError(
            f"cannot start the supervisor of {self._where(release.version, directory)}: "
            f"it exited with code {code}" + quote_tail(directory / SUPERVISOR_LOG))

    def _wait_for_other_supervisor(self, release: ReleaseSpec, directory: Path) -> None:
        def supervised() -> bool:
            state = read_state(directory)
            return state is not None and self.supervised(state.supervisor_pid, directory)

        if not wait_until_sync(supervised, timeout_s=SUPERVISOR_START_TIMEOUT_S):
            raise TargetError(
                f"{self._where(release.version, directory)} is locked by a supervisor that "
                "does not write its state", hint=f"look for stray processes holding {directory}")

    def _wait_until_spawned(self, release: ReleaseSpec, directory: Path) -> SupervisorState:
        """Wait until the supervisor has started the app once (it may have exited since)."""

        def spawned() -> SupervisorState | None:
            state = read_state(directory)
            if state is None:
                return None
            if state.status in (RUNNING, BACKOFF):
                return state
            if state.status == FAILED or not self.supervised(state.supervisor_pid, directory):
                raise TargetError(
                    f"the supervisor of {self._where(release.version, directory)} died "
                    f"before starting the app (status {state.status}"
                    + (f": {state.error}" if state.error else "") + ")"
                    + quote_tail(directory / SUPERVISOR_LOG) + quote_tail(directory / STDERR_LOG))
            return None

        state = wait_until_sync(spawned, timeout_s=SUPERVISOR_START_TIMEOUT_S)
        if state is None:
            raise TargetError(
                f"the supervisor of {self._where(release.version, directory)} did not start "
                f"the app within {SUPERVISOR_START_TIMEOUT_S:g} s"
                + quote_tail(directory / SUPERVISOR_LOG), hint="is the machine overloaded?")
        return state

    # -- observe and explain -----------------------------------------------------------------

    def observe(self, version: str | None = None) -> list[ObservedInstance]:
        """Every instance directory of this environment (of ``version`` only, if given)."""
        observed = []
        for name in self.versions() if version is None else [version]:
            for directory in self.instance_dirs(name):
                state = read_state(directory)
                if state is None:
                    continue
                alive = (state.status != STOPPED
                         and self.supervised(state.supervisor_pid, directory))
                observed.append(ObservedInstance(
                    version=name, instance=directory.name, port=state.port, alive=alive,
                    status=state.status if alive or state.status == STOPPED else "lost",
                    pid=state.child_pid if alive else None,
                    supervisor_pid=state.supervisor_pid, restarts=state.restarts,
                    started_at=state.started_at, last_exit_code=state.last_exit_code,
                    directory=str(directory)))
        return observed

    def explain(self, version: str) -> list[InstanceReport]:
        """What the supervisors of the release know: exits, exit code, stderr, in words."""
        reports = []
        for directory in self.instance_dirs(version):
            state = read_state(directory)
            if state is None:
                continue
            notes = []
            if not self.supervised(state.supervisor_pid, directory):
                notes.append(f"the supervisor is not running (last status {state.status})")
            elif state.status == BACKOFF:
                notes.append(f"the app exited with code {state.last_exit_code} and is being "
                             f"restarted ({state.restarts} restarts so far)")
            elif state.restarts:
                notes.append(f"the app has been restarted {state.restarts} times, last exit "
                             f"code {state.last_exit_code}")
            # The current run's output if it has any (a crash loop repeats itself), else
            # the log's.
            stderr = (quote_tail(directory / STDERR_LOG, start=state.stderr_offset)
                      or quote_tail(directory / STDERR_LOG))
            reports.append(InstanceReport(
                instance=directory.name,
                exits=state.restarts + (1 if state.status == BACKOFF else 0),
                restarts=state.restarts, last_exit_code=state.last_exit_code,
                note="; ".join(notes), stderr=stderr))
        return reports

    # -- stop ------------------------------------------------------------------------------

    def stop(self, version: str, *, drain_s: float) -> list[str]:
        """SIGTERM every instance, SIGKILL those still running after ``drain_s`` seconds.

        Returns the instances that were running. Idempotent: instances already stopped (or
        never started) are skipped. Returns once every supervisor and app process of the
        release has exited. Logs stay: they are the release's record; the instances'
        working copies go.
        """
        stopping: dict[Path, tuple[SupervisorState, tuple[str, ...]]] = {}
        for directory in self.instance_dirs(version):
            state = read_state(directory)
            if state is None or not self.supervised(state.supervisor_pid, directory):
                continue
            write_json_atomically(directory / STOP_REQUEST_FILE,
                                  {"drain_s": drain_s, "requested_at": time.time()})
            marks = supervisor_marks(state.supervisor_pid, directory, self.runner)
            if marks is not None:
                stopping[directory] = (state, marks)
                self.runner.send_signal(state.supervisor_pid, signal.SIGTERM)

        def all_exited() -> bool:
            return not any(self.runner.is_running(s.supervisor_pid, marks=m)
                           for s, m in stopping.values())

        # Signalled side by side: the release takes one drain, not one per instance.
        if not wait_until_sync(all_exited, timeout_s=drain_s + STOP_GRACE_S,
                               interval_s=STOP_POLL_S):
            for directory, (state, marks) in stopping.items():
                if self.runner.is_running(state.supervisor_pid, marks=marks):
                    self._kill_stuck(version, directory, state, marks, drain_s)
        self._remove_working_copies(version)
        return [d.name for d in stopping]

    def _remove_working_copies(self, version: str) -> None:
        """Delete the working copies of the release's stopped instances (disk: one copy
        of the release per instance). Under the start lock: a start of the same release
        at this moment makes its copy either before or after, never during."""
        with self._start_lock():
            for directory in self.instance_dirs(version):
                state = read_state(directory)
                if state is not None and self.supervised(state.supervisor_pid, directory):
                    continue
                shutil.rmtree(directory / WORK_DIR, ignore_errors=True)

    def _kill_stuck(self, version: str, directory: Path, state: SupervisorState,
                    marks: tuple[str, ...], drain_s: float) -> None:
        """Kill a supervisor that did not stop (stopped by a debugger, a bug) and its app."""
        pid = state.supervisor_pid
        latest = read_state(directory) or state
        self.runner.send_signal(pid, signal.SIGKILL)
        if latest.child_pid is not None:
            self.runner.send_signal(latest.child_pid, signal.SIGKILL, group=True)
        if not wait_until_sync(lambda: not self.runner.is_running(pid, marks=marks),
                               timeout_s=STOP_GRACE_S, interval_s=STOP_POLL_S):
            raise TargetError(f"cannot stop {self._where(version, directory)}: supervisor "
                              f"{pid} survives SIGKILL")
        stopped = dataclasses.replace(
            latest, status=STOPPED, child_pid=None, updated_at=time.time(),
            error=f"killed by the controller after {drain_s + STOP_GRACE_S:g} s")
        write_json_atomically(directory / STATE_FILE, dataclasses.asdict(stopped))

    def _where(self, version: str, directory: Path) -> str:
        return f"{self.app} {version} instance {directory.name} in {self.environment} ({directory})"


def _in_range(port: int, ports: tuple[int, int] | None) -> bool:
    return ports is None or ports[0] <= port <= ports[1]
