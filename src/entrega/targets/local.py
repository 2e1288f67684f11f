"""The ``local`` target: every instance is a supervised process on this machine.

Each instance has a supervisor of its own (:mod:`entrega.dataplane.instances.supervisor`),
started detached, so instances outlive the controller: after a crash or ``kill -9`` of the
controller, :meth:`LocalTarget.start` and :meth:`LocalTarget.observe` adopt them from
their directories. All of that is host-side work, done by the host agent
(:mod:`entrega.dataplane.instances.host`), called here in process through
``asyncio.to_thread``; the SSH target runs the same agent on each host. What stays here is
what needs the controller: the health probes (httpx) and readiness. Nothing about
instances is kept in memory that is not also on disk::

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
from pathlib import Path

import httpx

from entrega.dataplane.instances.host import HostInstances
from entrega.dataplane.instances.lookup import check_name
from entrega.dataplane.instances.lookup import supervisor_alive as supervisor_alive
from entrega.dataplane.instances.supervisor import STOPPED
from entrega.dataplane.instances.wire import InstanceReport, ReleaseSpec
from entrega.errors import TargetError
from entrega.net import Endpoint
from entrega.procenv import minimal_env
from entrega.runner import ProcessRunner
from entrega.targets.base import (
    HealthCheck,
    InstanceHealth,
    InstanceState,
    Readiness,
    ReleaseRef,
    Target,
)
from entrega.targets.probe import HttpProbe


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
        check_name("environment", environment)
        self.app = app
        self.environment = environment
        self.command = command
        self.env = dict(env)
        self.instances = instances
        self.health = health
        self.host = host
        self.inherit_env = tuple(inherit_env)
        self.ports = ports
        #: the host-side work: ports, supervisors, their state files (blocking calls)
        self.agent = HostInstances(app=app, environment=environment, state_dir=state_dir,
                                   address=host, runner=runner)
        self.run_dir = self.agent.run_dir
        self._probes: dict[str, list[HttpProbe]] = {}
        #: exits of each instance's app when its probe started (version -> instance -> n)
        self._exits_at_probe_start: dict[str, dict[str, int]] = {}
        self._client: httpx.AsyncClient | None = None

    # -- layout ----------------------------------------------------------------------------

    def release_dir(self, version: str) -> Path:
        return self.agent.release_dir(version)

    def instance_dir(self, version: str, instance: int) -> Path:
        return self.release_dir(version) / str(instance)

    # -- start -----------------------------------------------------------------------------

    async def start(self, *, release: ReleaseRef) -> list[Endpoint]:
        """Start the release's instances, or adopt the running ones (same ports and pids).

        Returns once every supervisor has started its app process; whether the app
        answers is :meth:`ready`'s business. Raises :class:`TargetError` when the release
        directory is missing or a supervisor cannot start.
        """
        # The controller's variables named in inherit_env are read here, where they are;
        # the host adds its own PATH, HOME and LANG.
        env = {**minimal_env(inherit=self.inherit_env), **self.env}
        spec = ReleaseSpec(version=release.version, path=str(release.path),
                           command=self.command, env=env, instances=self.instances,
                           ports=self.ports)
        endpoints = await asyncio.to_thread(self.agent.start, spec)
        probes = self._probes.get(release.version)
        if probes is not None and [p.endpoint for p in probes] != endpoints:
            await self._cancel_probes(release.version)  # re-created by the next ready()
        return endpoints

    # -- readiness -------------------------------------------------------------------------

    async def ready(self, *, release: ReleaseRef) -> Readiness:
        """A snapshot of continuous probing; the first call starts the probes.

        Ready when every instance has passed ``healthy_threshold`` probes in a row (and not
        failed ``unhealthy_threshold`` in a row since). Never waits on the network.
        """
        version = release.version
        if version not in self._probes:
            observed = await asyncio.to_thread(self.agent.observe, version)
            endpoints = [Endpoint(self.host, o.port, o.instance) for o in observed
                         if o.status != STOPPED]
            if not endpoints:
                return Readiness(ready=False, detail=(
                    f"{release.app} {version} has no instances in "
                    f"{self.environment}; start it first"))
            baseline = await asyncio.to_thread(self.agent.explain, version)
            if version not in self._probes:  # no other ready() started them meanwhile
                self._start_probes(version, endpoints, baseline)
        probes = self._probes[version]
        reports = {r.instance: r for r in await asyncio.to_thread(self.agent.explain, version)}
        snapshots = tuple(_explain(p.snapshot(), reports.get(p.endpoint.instance))
                          for p in probes)
        healthy = sum(1 for s in snapshots if s.healthy)
        return Readiness(
            ready=len(snapshots) >= self.instances and healthy == len(snapshots),
            instances=snapshots,
            detail=f"{healthy}/{len(snapshots)} instances of {version} healthy",
            failure=self._crash_loop(version, probes, reports),
        )

    def _start_probes(self, version: str, endpoints: list[Endpoint],
                      reports: list[InstanceReport]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        probes = [HttpProbe(client=self._client, endpoint=e, health=self.health)
                  for e in endpoints]
        for probe in probes:
            probe.start()
        self._probes[version] = probes
        exits = {r.instance: r.exits for r in reports}
        self._exits_at_probe_start[version] = {
            p.endpoint.instance: exits.get(p.endpoint.instance, 0) for p in probes}

    def _crash_loop(self, version: str, probes: list[HttpProbe],
                    reports: dict[str, InstanceReport]) -> str | None:
        """Why the release cannot become ready: an instance whose app exited
        ``max_start_exits`` times since probing began, never healthy in between."""
        limit = self.health.max_start_exits
        if limit <= 0:
            return None
        baseline = self._exits_at_probe_start.get(version, {})
        for probe in probes:
            instance = probe.endpoint.instance
            report = reports.get(instance)
            if probe.ever_healthy or report is None:
                continue
            exits = report.exits - baseline.get(instance, 0)
            if exits < limit:
                continue
            return (f"instance {instance} exited {exits} times without ever passing its "
                    f"health check (last exit code {report.last_exit_code}; "
                    f"max_start_exits: {limit}){report.stderr}")
        return None

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
        await asyncio.to_thread(self.agent.stop, release.version, drain_s=drain_s)

    # -- recovery --------------------------------------------------------------------------

    async def observe(self) -> list[InstanceState]:
        """Every instance directory of this environment; ``alive`` means supervised now.

        A supervised instance may be between two runs of its app (``extra["status"]`` is
        ``"backoff"``, ``pid`` is None). ``pid`` is the app's; the supervisor's is in
        ``extra["supervisor_pid"]``.
        """
        return [InstanceState(
            version=o.version, instance=o.instance,
            endpoint=Endpoint(self.host, o.port, o.instance), alive=o.alive, pid=o.pid,
            restarts=o.restarts, started_at=o.started_at,
            extra={"status": o.status, "supervisor_pid": o.supervisor_pid,
                   "last_exit_code": o.last_exit_code, "directory": o.directory},
        ) for o in await asyncio.to_thread(self.agent.observe)]

    async def close(self) -> None:
        """Stop probing and close the HTTP client; the instances keep running."""
        for version in list(self._probes):
            await self._cancel_probes(version)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _explain(health: InstanceHealth, report: InstanceReport | None) -> InstanceHealth:
    """Add what the supervisor knows to a failing probe's error (exit code, stderr)."""
    if health.healthy or health.last_error is None or report is None or not report.note:
        return health
    return dataclasses.replace(
        health, last_error=f"{health.last_error}; {report.note}{report.stderr}")
