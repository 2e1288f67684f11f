"""The ``local`` target: every instance is a supervised process on this machine.

Each instance has a supervisor of its own (:mod:`entrega.dataplane.instances.supervisor`),
started detached, so instances outlive the controller: after a crash or ``kill -9`` of the
controller, :meth:`LocalTarget.start` and :meth:`LocalTarget.observe` adopt them from
their directories. All of that is host-side work, done by the host agent
(:mod:`entrega.dataplane.instances.host`), called here in process on the environment's
own threads; the SSH target runs the same agent on each host. What stays here is
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

Threads: the agent's calls block (a start waits for its supervisors, a stop for the
drain), so each environment has threads of its own, not asyncio's shared pool. A server
with many apps would otherwise have six of them draining old releases for 30 s hold
every thread, and every other app's pass wait behind them to read a state file (issue
14: one app's rollout never delays another's). The threads are made when first needed.

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from entrega.dataplane.instances.host import HostInstances
from entrega.dataplane.instances.lookup import check_name
from entrega.dataplane.instances.lookup import supervisor_alive as supervisor_alive
from entrega.dataplane.instances.supervisor import STOPPED
from entrega.dataplane.instances.wire import InstanceReport, ReleaseSpec
from entrega.errors import TargetError
from entrega.net import Endpoint
from entrega.procenv import minimal_env
from entrega.runner import ProcessRunner
from entrega.targets.base import HealthCheck, InstanceState, ReleaseRef
from entrega.targets.supervised import SupervisedTarget

T = TypeVar("T")

#: an environment's own threads: a start, a stop and the controller's reads at once
THREADS_PER_ENVIRONMENT = 3


class LocalTarget(SupervisedTarget):
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
        super().__init__(app=app, environment=environment, instances=instances,
                         health=health)
        self.command = command
        self.env = dict(env)
        self.host = host
        self.inherit_env = tuple(inherit_env)
        self.ports = ports
        #: the host-side work: ports, supervisors, their state files (blocking calls)
        self.agent = HostInstances(app=app, environment=environment, state_dir=state_dir,
                                   address=host, runner=runner)
        self.run_dir = self.agent.run_dir
        self._threads: ThreadPoolExecutor | None = None

    async def _in_thread(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking agent call on this environment's threads (module docstring)."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                THREADS_PER_ENVIRONMENT, thread_name_prefix=f"{self.app}/{self.environment}")
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, lambda: call(*args, **kwargs))

    async def close(self) -> None:
        """Stop probing, close the HTTP client and let the threads go (the instances keep
        running); a later call makes new threads."""
        await super().close()
        if self._threads is not None:
            self._threads.shutdown(wait=False)
            self._threads = None

    # -- layout ----------------------------------------------------------------------------

    def release_dir(self, version: str) -> Path:
        return self.agent.release_dir(version)

    def instance_dir(self, version: str, instance: int) -> Path:
        return self.release_dir(version) / str(instance)

    # -- start -----------------------------------------------------------------------------

    async def start(self, *, release: ReleaseRef,
                    hosts: tuple[str, ...] | None = None) -> list[Endpoint]:
        """Start the release's instances, or adopt the running ones (same ports and pids).

        Returns once every supervisor has started its app process; whether the app
        answers is :meth:`ready`'s business. Raises :class:`TargetError` when the release
        directory is missing or a supervisor cannot start.
        """
        _one_machine(hosts)
        # The controller's variables named in inherit_env are read here, where they are;
        # the host adds its own PATH, HOME and LANG.
        env = {**minimal_env(inherit=self.inherit_env), **self.env}
        spec = ReleaseSpec(version=release.version, path=str(release.path),
                           command=self.command, env=env, instances=self.instances,
                           ports=self.ports)
        endpoints = await self._in_thread(self.agent.start, spec)
        await self._restart_probes_if_moved(release.version, endpoints)
        return endpoints

    # -- what the probes need ----------------------------------------------------------

    async def _running_endpoints(self, version: str) -> list[Endpoint]:
        observed = await self._in_thread(self.agent.observe, version)
        return [Endpoint(self.host, o.port, o.instance) for o in observed
                if o.status != STOPPED]

    async def _reports(self, version: str,
                       hosts: tuple[str, ...] | None = None) -> list[InstanceReport]:
        return await self._in_thread(self.agent.explain, version)

    # -- stop ------------------------------------------------------------------------------

    async def stop(self, *, release: ReleaseRef, drain_s: float,
                   hosts: tuple[str, ...] | None = None) -> None:
        """SIGTERM every instance, SIGKILL those still running after ``drain_s`` seconds.

        Idempotent: instances already stopped (or never started) are skipped. Returns once
        every supervisor and app process of the release has exited. Logs stay.
        """
        _one_machine(hosts)
        await self._cancel_probes(release.version)
        await self._in_thread(self.agent.stop, release.version, drain_s=drain_s)

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
        ) for o in await self._in_thread(self.agent.observe)]


def _one_machine(hosts: tuple[str, ...] | None) -> None:
    if hosts is not None:
        raise TargetError("a local target runs on this machine only: it has no hosts to "
                          "start or stop a release on one by one",
                          hint="rolling needs target: {kind: ssh, hosts: [...]}")
