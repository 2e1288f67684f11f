"""The ``local`` target: every instance is a supervised process on this machine.

Each instance has a supervisor of its own (:mod:`entrega.dataplane.instances.supervisor`),
started detached, so instances outlive the controller: after a crash or ``kill -9`` of the
controller, :meth:`LocalTarget.start` and :meth:`LocalTarget.observe` adopt them from
their directories. Nothing about instances is kept in memory that is not also on disk::

    STATE_DIR/run/ENVIRONMENT/VERSION/INSTANCE/
        supervisor.json   supervisor and child pid, port, restarts, status (atomic writes)
        events.jsonl      started / exited / restarted / stopping / killed / stopped
        stdout.log stderr.log supervisor.log

Logs stay after :meth:`LocalTarget.stop`: they are the release's record.

An instance's environment is built, not inherited (:mod:`entrega.procenv`): ``PATH``,
``HOME`` and ``LANG``, the controller's variables named in ``inherit_env``, ``env``
(``run.env``), then ``PORT`` and the ``ENTREGA_*`` variables below. The controller's
secrets (the webhook secret) never reach an app or its supervisor.

Ports: by default each instance gets a port the kernel picks; with ``ports`` (a range,
``target.ports: "20000-20999"``) a free port of that range, never one that an instance of
this environment holds (running, or between two runs of a crashing app), and a clear
:class:`TargetError` when none is left.

Failures of the app itself (a command that is not found, an app that crashes at import)
do not make :meth:`LocalTarget.start` fail: the supervisor keeps restarting the app with
backoff, and :meth:`LocalTarget.ready` reports the instance not ready with a
``last_error`` naming the exit code, the restart count and the tail of ``stderr.log``.
That way an app that fails for a moment (a port still held, a database starting) heals by
itself, and the controller's readiness deadline turns a permanent failure into a failed
rollout with the reason attached. ``start`` raises :class:`TargetError` only when the
instance cannot be supervised at all: the release directory is missing or the supervisor
did not come up (its own log is quoted).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import re
import socket
import sys
import time
from pathlib import Path

import httpx

from entrega.dataplane.instances.supervisor import (
    BACKOFF,
    EXIT_ALREADY_SUPERVISED,
    FAILED,
    FORMER_MODULES,
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
from entrega.errors import TargetError
from entrega.net import Endpoint, free_port
from entrega.procenv import data_plane_env, minimal_env
from entrega.runner import LocalRunner, ProcessRunner, Program
from entrega.targets.base import (
    HealthCheck,
    InstanceHealth,
    InstanceState,
    Readiness,
    ReleaseRef,
    Target,
)
from entrega.targets.probe import HttpProbe
from entrega.waiting import wait_until

#: How long a new supervisor may take to start its app (a Python interpreter or two).
SUPERVISOR_START_TIMEOUT_S = 15.0
#: Slack on top of ``drain_s`` for a supervisor to kill its app and write its last state.
STOP_GRACE_S = 5.0
#: Lines of stderr quoted in errors: enough for a traceback's last frames and message.
STDERR_TAIL_LINES = 8


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class LocalTarget(Target):
    """Runs ``instances`` copies of each release as supervised local processes.

    ``command`` is a shell line run in the release directory with ``$PORT`` (and
    ``ENTREGA_APP``, ``ENTREGA_VERSION``, ``ENTREGA_ENVIRONMENT``, ``ENTREGA_INSTANCE``)
    set on top of ``env``, ``PATH``/``HOME``/``LANG`` and the controller's variables named
    in ``inherit_env``: nothing else of the controller's environment. ``ports`` (low,
    high), inclusive, bounds the instances' ports.
    """

    def __init__(
        self,
        *,
        app: str,
        environment: str,
        command: str,
        env: dict[str, str],
        instances: int,
        health: HealthCheck,
        state_dir: Path,
        host: str = "127.0.0.1",
        inherit_env: tuple[str, ...] = (),
        ports: tuple[int, int] | None = None,
        runner: ProcessRunner | None = None,
    ) -> None:
        if instances < 1:
            raise TargetError(f"local target of {environment}: instances must be at least 1")
        _check_name("environment", environment)
        self.app = app
        self.environment = environment
        self.command = command
        self.env = dict(env)
        self.instances = instances
        self.health = health
        self.host = host
        self.inherit_env = tuple(inherit_env)
        self.ports = ports
        #: starts, finds and stops the instances' supervisors
        self.runner = runner or LocalRunner()
        #: ports chosen for instances whose supervisor has not yet written its state
        self._claimed: set[int] = set()
        self.run_dir = state_dir.resolve() / "run" / environment
        self._probes: dict[str, list[HttpProbe]] = {}
        #: exits of each instance's app when its probe started (version -> instance -> n)
        self._exits_at_probe_start: dict[str, dict[str, int]] = {}
        self._client: httpx.AsyncClient | None = None

    # -- layout ----------------------------------------------------------------------------

    def release_dir(self, version: str) -> Path:
        _check_name("version", version)
        return self.run_dir / version

    def instance_dir(self, version: str, instance: int) -> Path:
        return self.release_dir(version) / str(instance)

    def _instance_dirs(self, version: str) -> list[Path]:
        release_dir = self.release_dir(version)
        if not release_dir.is_dir():
            return []
        return sorted((d for d in release_dir.iterdir() if (d / STATE_FILE).exists()),
                      key=lambda d: (len(d.name), d.name))

    # -- start -----------------------------------------------------------------------------

    async def start(self, *, release: ReleaseRef) -> list[Endpoint]:
        """Start the release's instances, or adopt the running ones (same ports and pids).

        Returns once every supervisor has started its app process; whether the app
        answers is :meth:`ready`'s business. Raises :class:`TargetError` when the release
        directory is missing or a supervisor cannot start.
        """
        if not release.path.is_dir():
            raise TargetError(
                f"cannot start {release.app} {release.version} in {self.environment}: "
                f"release directory {release.path} does not exist",
                hint="unpack the release's artifact there first")
        endpoints = list(await asyncio.gather(
            *(self._start_instance(release, i) for i in range(self.instances))))
        probes = self._probes.get(release.version)
        if probes is not None and [p.endpoint for p in probes] != endpoints:
            await self._cancel_probes(release.version)  # re-created by the next ready()
        return endpoints

    async def _start_instance(self, release: ReleaseRef, instance: int) -> Endpoint:
        directory = self.instance_dir(release.version, instance)
        directory.mkdir(parents=True, exist_ok=True)
        state = read_state(directory)
        if state is None or not self._supervised(state.supervisor_pid, directory):
            port = self._claim_port(release, instance, state.port if state else None)
            try:
                env = self._app_env(release, instance, port)
                code = await asyncio.to_thread(self._spawn_supervisor, release, directory,
                                               port, env)
                if code == EXIT_ALREADY_SUPERVISED:
                    await self._wait_for_other_supervisor(release, directory)
                state = await self._wait_until_spawned(release, directory)
            finally:
                # From here on the state file holds the port (see _held_ports).
                self._claimed.discard(port)
        return Endpoint(self.host, state.port, str(instance))

    def _claim_port(self, release: ReleaseRef, instance: int, previous: int | None) -> int:
        """A free port for a new supervisor; no await, so concurrent starts of one target
        never claim the same one."""
        held = self._claimed | self._held_ports()
        # Coming back on the old port keeps the routes that still point at it valid.
        if previous is not None and previous not in held and self._in_range(previous) \
                and _port_is_free(self.host, previous):
            port = previous
        elif self.ports is None:
            port = free_port(self.host)
        else:
            port = self._free_port_in_range(release, instance, held)
        self._claimed.add(port)
        return port

    def _in_range(self, port: int) -> bool:
        return self.ports is None or self.ports[0] <= port <= self.ports[1]

    def _free_port_in_range(self, release: ReleaseRef, instance: int, held: set[int]) -> int:
        assert self.ports is not None
        low, high = self.ports
        candidates = [p for p in range(low, high + 1) if p not in held]
        # Random order: a port just left by a stopped instance is not handed out at once
        # to the next, where clients of the old one might still reach it.
        random.shuffle(candidates)
        for port in candidates:
            if _port_is_free(self.host, port):
                return port
        size = high - low + 1
        ours = len(held & set(range(low, high + 1)))
        raise TargetError(
            f"no free port in {self.environment}'s range {low}-{high} for {release.app} "
            f"{release.version} instance {instance}: {ours} of its {size} ports are held by "
            f"instances of {self.environment}, the other {size - ours} by other processes "
            f"on {self.host}",
            hint="widen target.ports in entrega.yaml, or stop what holds those ports")

    def _held_ports(self) -> set[int]:
        """Ports of this environment's supervised instances, running or in backoff."""
        held: set[int] = set()
        if not self.run_dir.is_dir():
            return held
        for release_dir in self.run_dir.iterdir():
            for directory in self._instance_dirs(release_dir.name):
                state = read_state(directory)
                if state is not None and state.status != STOPPED \
                        and self._supervised(state.supervisor_pid, directory):
                    held.add(state.port)
        return held

    def _app_env(self, release: ReleaseRef, instance: int, port: int) -> dict[str, str]:
        return {
            **minimal_env(inherit=self.inherit_env),
            **self.env,
            "PORT": str(port),
            "ENTREGA_APP": release.app,
            "ENTREGA_VERSION": release.version,
            "ENTREGA_ENVIRONMENT": self.environment,
            "ENTREGA_INSTANCE": str(instance),
        }

    def _spawn_supervisor(self, release: ReleaseRef, directory: Path, port: int,
                          env: dict[str, str]) -> int:
        """Run the supervisor, which detaches; its first process exits once it is set up.

        Returns 0, or :data:`EXIT_ALREADY_SUPERVISED` when another controller started the
        instance at the same moment; raises :class:`TargetError` otherwise.
        """
        argv = [sys.executable, "-m", MODULE,
                "--dir", str(directory), "--port", str(port),
                "--cwd", str(release.path.resolve()), "--env-stdin", "--", self.command]
        # The app's environment goes through a pipe: the supervisor's own is minimal.
        done = self.runner.run(Program(argv, env=data_plane_env(),
                                       log=directory / SUPERVISOR_LOG,
                                       stdin=json.dumps(env).encode()),
                               timeout_s=SUPERVISOR_START_TIMEOUT_S)
        if done is None:
            raise TargetError(
                f"the supervisor of {self._where(release.version, directory)} did not start "
                f"within {SUPERVISOR_START_TIMEOUT_S:g} s"
                + _quote_tail(directory / SUPERVISOR_LOG),
                hint="is the machine overloaded?")
        if done.exit_code in (0, EXIT_ALREADY_SUPERVISED):
            return done.exit_code
        raise TargetError(
            f"cannot start the supervisor of {self._where(release.version, directory)}: "
            f"it exited with code {done.exit_code}" + _quote_tail(directory / SUPERVISOR_LOG))

    async def _wait_for_other_supervisor(self, release: ReleaseRef, directory: Path) -> None:
        def supervised() -> bool:
            state = read_state(directory)
            return state is not None and self._supervised(state.supervisor_pid, directory)

        if not await wait_until(supervised, timeout_s=SUPERVISOR_START_TIMEOUT_S):
            raise TargetError(
                f"{self._where(release.version, directory)} is locked by a supervisor that "
                "does not write its state", hint=f"look for stray processes holding {directory}")

    async def _wait_until_spawned(self, release: ReleaseRef, directory: Path) -> SupervisorState:
        """Wait until the supervisor has started the app once (it may have exited since)."""
        state: SupervisorState | None = None

        def spawned() -> bool:
            nonlocal state
            state = read_state(directory)
            if state is None:
                return False
            if state.status in (RUNNING, BACKOFF):
                return True
            if state.status == FAILED or not self._supervised(state.supervisor_pid, directory):
                raise TargetError(
                    f"the supervisor of {self._where(release.version, directory)} died "
                    f"before starting the app (status {state.status}"
                    + (f": {state.error}" if state.error else "") + ")"
                    + _quote_tail(directory / SUPERVISOR_LOG) + _quote_tail(directory / STDERR_LOG))
            return False

        if not await wait_until(spawned, timeout_s=SUPERVISOR_START_TIMEOUT_S):
            raise TargetError(
                f"the supervisor of {self._where(release.version, directory)} did not start "
                f"the app within {SUPERVISOR_START_TIMEOUT_S:g} s"
                + _quote_tail(directory / SUPERVISOR_LOG), hint="is the machine overloaded?")
        assert state is not None
        return state

    # -- readiness -------------------------------------------------------------------------

    async def ready(self, *, release: ReleaseRef) -> Readiness:
        """A snapshot of continuous probing; the first call starts the probes.

        Ready when every instance has passed ``healthy_threshold`` probes in a row (and not
        failed ``unhealthy_threshold`` in a row since). Never waits on the network.
        """
        probes = self._probes.get(release.version)
        if probes is None:
            endpoints = self._known_endpoints(release.version)
            if not endpoints:
                return Readiness(ready=False, detail=(
                    f"{release.app} {release.version} has no instances in "
                    f"{self.environment}; start it first"))
            if self._client is None:
                self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
            probes = [HttpProbe(client=self._client, endpoint=e, health=self.health)
                      for e in endpoints]
            for probe in probes:
                probe.start()
            self._probes[release.version] = probes
            self._exits_at_probe_start[release.version] = {
                p.endpoint.instance: self._exits(release.version, p.endpoint.instance)
                for p in probes}
        snapshots = tuple(self._explain(release.version, p.snapshot()) for p in probes)
        healthy = sum(1 for s in snapshots if s.healthy)
        return Readiness(
            ready=len(snapshots) >= self.instances and healthy == len(snapshots),
            instances=snapshots,
            detail=f"{healthy}/{len(snapshots)} instances of {release.version} healthy",
            failure=self._crash_loop(release.version, probes),
        )

    def _exits(self, version: str, instance: str) -> int:
        """How often the instance's app has exited under its supervisor so far."""
        state = read_state(self.release_dir(version) / instance)
        if state is None:
            return 0
        return state.restarts + (1 if state.status == BACKOFF else 0)

    def _crash_loop(self, version: str, probes: list[HttpProbe]) -> str | None:
        """Why the release cannot become ready: an instance whose app exited
        ``max_start_exits`` times since probing began, never healthy in between."""
        limit = self.health.max_start_exits
        if limit <= 0:
            return None
        baseline = self._exits_at_probe_start.get(version, {})
        for probe in probes:
            if probe.ever_healthy:
                continue
            instance = probe.endpoint.instance
            exits = self._exits(version, instance) - baseline.get(instance, 0)
            if exits < limit:
                continue
            directory = self.release_dir(version) / instance
            state = read_state(directory)
            code = state.last_exit_code if state is not None else None
            stderr = _quote_tail(directory / STDERR_LOG,
                                 start=state.stderr_offset if state is not None else 0) \
                or _quote_tail(directory / STDERR_LOG)
            return (f"instance {instance} exited {exits} times without ever passing its "
                    f"health check (last exit code {code}; max_start_exits: {limit})"
                    f"{stderr}")
        return None

    def _known_endpoints(self, version: str) -> list[Endpoint]:
        endpoints = []
        for directory in self._instance_dirs(version):
            state = read_state(directory)
            if state is not None and state.status != STOPPED:
                endpoints.append(Endpoint(self.host, state.port, directory.name))
        return endpoints

    def _explain(self, version: str, health: InstanceHealth) -> InstanceHealth:
        """Add what the supervisor knows to a failing probe's error (exit code, stderr)."""
        if health.healthy or health.last_error is None:
            return health
        directory = self.release_dir(version) / health.endpoint.instance
        state = read_state(directory)
        if state is None:
            return health
        notes = []
        if not self._supervised(state.supervisor_pid, directory):
            notes.append(f"the supervisor is not running (last status {state.status})")
        elif state.status == BACKOFF:
            notes.append(f"the app exited with code {state.last_exit_code} and is being "
                         f"restarted ({state.restarts} restarts so far)")
        elif state.restarts:
            notes.append(f"the app has been restarted {state.restarts} times, last exit code "
                         f"{state.last_exit_code}")
        if not notes:
            return health
        # The current run's output if it has any (a crash loop repeats itself), else the log's.
        stderr = (_quote_tail(directory / STDERR_LOG, start=state.stderr_offset)
                  or _quote_tail(directory / STDERR_LOG))
        error = f"{health.last_error}; {'; '.join(notes)}{stderr}"
        return dataclasses.replace(health, last_error=error)

    async def _cancel_probes(self, version: str) -> None:
        self._exits_at_probe_start.pop(version, None)
        for probe in self._probes.pop(version, []):
            await probe.cancel()

    # -- stop ------------------------------------------------------------------------------

    async def stop(self, *, release: ReleaseRef, drain_s: float) -> None:
        """SIGTERM every instance, SIGKILL those still running after ``drain_s`` seconds.

        Idempotent: instances already stopped (or never started) are skipped. Returns once
        every supervisor and app process of the release has exited. Logs stay.
        """
        await self._cancel_probes(release.version)
        await asyncio.gather(*(self._stop_instance(release.version, d, drain_s)
                               for d in self._instance_dirs(release.version)))

    async def _stop_instance(self, version: str, directory: Path, drain_s: float) -> None:
        state = read_state(directory)
        if state is None or not self._supervised(state.supervisor_pid, directory):
            return
        write_json_atomically(directory / STOP_REQUEST_FILE,
                              {"drain_s": drain_s, "requested_at": time.time()})
        pid = state.supervisor_pid
        marks = _supervisor_marks(pid, directory, self.runner)
        if marks is None:
            return
        if await self.runner.terminate(pid, marks=marks, timeout_s=drain_s + STOP_GRACE_S):
            return
        # The supervisor is stuck (stopped by a debugger, a bug): kill it and its app.
        latest = read_state(directory) or state
        app_group = () if latest.child_pid is None else (latest.child_pid,)
        if not await self.runner.kill(pid, marks=marks, groups=app_group,
                                      timeout_s=STOP_GRACE_S):
            raise TargetError(f"cannot stop {self._where(version, directory)}: supervisor "
                              f"{pid} survives SIGKILL")
        stopped = dataclasses.replace(
            latest, status=STOPPED, child_pid=None, updated_at=time.time(),
            error=f"killed by the controller after {drain_s + STOP_GRACE_S:g} s")
        write_json_atomically(directory / STATE_FILE, dataclasses.asdict(stopped))

    # -- recovery --------------------------------------------------------------------------

    async def observe(self) -> list[InstanceState]:
        """Every instance directory of this environment; ``alive`` means supervised now.

        A supervised instance may be between two runs of its app (``extra["status"]`` is
        ``"backoff"``, ``pid`` is None). ``pid`` is the app's; the supervisor's is in
        ``extra["supervisor_pid"]``.
        """
        if not self.run_dir.is_dir():
            return []
        observed = []
        for release_dir in sorted(self.run_dir.iterdir()):
            for directory in self._instance_dirs(release_dir.name):
                state = read_state(directory)
                if state is None:
                    continue
                alive = (state.status != STOPPED
                         and self._supervised(state.supervisor_pid, directory))
                observed.append(InstanceState(
                    version=release_dir.name,
                    instance=directory.name,
                    endpoint=Endpoint(self.host, state.port, directory.name),
                    alive=alive,
                    pid=state.child_pid if alive else None,
                    restarts=state.restarts,
                    started_at=state.started_at,
                    extra={"status": state.status if alive or state.status == STOPPED
                           else "lost",
                           "supervisor_pid": state.supervisor_pid,
                           "last_exit_code": state.last_exit_code,
                           "directory": str(directory)},
                ))
        return observed

    async def close(self) -> None:
        """Stop probing and close the HTTP client; the instances keep running."""
        for version in list(self._probes):
            await self._cancel_probes(version)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _supervised(self, pid: int, instance_dir: Path) -> bool:
        """True when ``pid`` runs and is the supervisor of ``instance_dir`` (not a reused
        pid)."""
        return supervisor_alive(pid, instance_dir, self.runner)

    def _where(self, version: str, directory: Path) -> str:
        return f"{self.app} {version} instance {directory.name} in {self.environment} ({directory})"


def _supervisor_marks(pid: int, instance_dir: Path,
                      runner: ProcessRunner) -> tuple[str, ...] | None:
    """What the supervisor ``pid`` of ``instance_dir`` has on its command line (its program,
    today's or the one it ran under before the data plane was a package of its own, and its
    directory), or None when ``pid`` is no such supervisor (gone, or a reused pid)."""
    for name in (MODULE, *FORMER_MODULES):
        marks = (name, str(instance_dir))
        if runner.is_running(pid, marks=marks):
            return marks
    return None


def supervisor_alive(pid: int, instance_dir: Path, runner: ProcessRunner | None = None) -> bool:
    """True when ``pid`` runs and is the supervisor of ``instance_dir`` (not a reused pid)."""
    return _supervisor_marks(pid, instance_dir, runner or LocalRunner()) is not None


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As servers do, so that connections of a previous run in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _check_name(what: str, name: str) -> None:
    if not _SAFE_NAME.match(name):
        raise TargetError(f"the local target cannot use {what} {name!r} as a directory name",
                          hint="use letters, digits, '.', '_', '+' and '-'")


def _quote_tail(path: Path, *, start: int = 0) -> str:
    """The last lines of a log (from byte ``start`` on), formatted to end an error message."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(start, f.tell() - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()][-STDERR_TAIL_LINES:]
    if not lines:
        return ""
    return f"; {path.name} ends with:\n" + "\n".join(f"  {line}" for line in lines)
