"""The ``ssh`` target: a release's instances on every host of a fleet, run by the host agent.

Each host runs ``instances_per_host`` instances of a release, supervised on the host by
the same code as locally (:mod:`.agent`), so they outlive the SSH session and the
controller; the controller adopts them after a restart through :meth:`SshTarget.observe`
and :meth:`SshTarget.start` (a repeated start adopts). Per host, a start is: the agent
installed (by content, once), the release's bytes synced (by content, once, checked and
unpacked on the host), then one ``hostctl start``. Hosts are worked on in parallel,
``max_parallel`` at a time, and every remote call has a timeout. A start on some hosts
only (a rolling batch) sends the release's bytes ahead to the others meanwhile, so a
later batch only starts it: each host is sent a release once per target.

With ``runtime: podman`` the host agent runs each instance as a container of the image in
the release's artifact (:mod:`entrega.dataplane.instances.containers`) instead: the same
operations and records, so nothing else here differs.

An instance is named ``<host name>/<n>`` (``web1/0``) and listens on its host's address
(``$HOST``), where the router in front (embedded or HAProxy, on the controller's machine
or the load balancer's) reaches it; its health is probed from here as locally
(:class:`~entrega.targets.supervised.SupervisedTarget`).

A host that cannot be reached fails the start with a TargetUnreachable naming it (the
controller retries it on the next pass); observing skips it, so the instances of the
hosts that answer are still seen.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from entrega.dataplane.instances.wire import InstanceReport
from entrega.errors import AgentMissing, TargetError
from entrega.net import Endpoint
from entrega.procenv import minimal_env
from entrega.targets.base import HealthCheck, InstanceState, ReleaseRef
from entrega.targets.ssh.agent import call_agent, install_agent, state_dir
from entrega.targets.ssh.connections import Fleet, Host, HostOutcome
from entrega.targets.ssh.transfer import pack_release, release_path, sync_release
from entrega.targets.supervised import SupervisedTarget
from entrega.waiting import stop_task

log = logging.getLogger(__name__)

#: A stop waits for the drain on the host; the command's timeout allows for it.
STOP_GRACE_S = 15.0


class SshTarget(SupervisedTarget):
    """Runs ``instances_per_host`` copies of each release on every host of ``fleet``."""

    # Each report is a command on every host: asked at most every 2 s while a release
    # starts (the crash-loop rule counts exits, which take longer than that anyway).
    REPORTS_TTL_S = 2.0

    def __init__(self, *, app: str, environment: str, fleet: Fleet, command: str,
                 env: dict[str, str], instances_per_host: int, health: HealthCheck,
                 inherit_env: tuple[str, ...] = (), runtime: str = "process") -> None:
        super().__init__(app=app, environment=environment,
                         instances=instances_per_host * len(fleet.hosts), health=health,
                         hosts=len(fleet.hosts))
        self.fleet = fleet
        self.command = command
        self.env = dict(env)
        self.instances_per_host = instances_per_host
        self.inherit_env = tuple(inherit_env)
        #: how an instance runs on a host: ``process`` (supervised) or ``podman``
        self.runtime = runtime
        #: host name -> why its last observation failed
        self._host_errors: dict[str, str] = {}
        #: host name -> when (monotonic) the observations it failed in a row began
        self._failing_since: dict[str, float] = {}
        #: (host name, version) -> the sync of the release's bytes to it (done: it has them)
        self._syncs: dict[tuple[str, str], asyncio.Task[None]] = {}
        #: version -> its tarball being packed, or packed (under _packing_dir)
        self._tarballs: dict[str, asyncio.Future[Path]] = {}
        self._packing_dir: Path | None = None
        #: version -> the task sending it to the hosts a rolling batch has not reached yet
        self._sending_ahead: dict[str, asyncio.Task[None]] = {}

    def hosts(self) -> list[tuple[str, str]]:
        return [(h.name, h.address) for h in self.fleet.hosts]

    def host_errors(self) -> dict[str, str]:
        return dict(self._host_errors)

    def hosts_down_for(self) -> dict[str, float]:
        now = time.monotonic()
        return {host: now - since for host, since in self._failing_since.items()}

    def _where(self, host: Host) -> dict[str, Any]:
        return {"app": self.app, "environment": self.environment,
                "state_dir": state_dir(host, self.app),
                "address": host.address, "runtime": self.runtime}

    def _app_env(self) -> dict[str, str]:
        if self.runtime == "podman":
            # A container has its image's PATH, HOME and LANG: only what the user named.
            inherited = {n: os.environ[n] for n in self.inherit_env if n in os.environ}
            return {**inherited, **self.env}
        return {**minimal_env(inherit=self.inherit_env), **self.env}

    # -- start -----------------------------------------------------------------------------

    def _chosen(self, hosts: tuple[str, ...] | None) -> list[Host] | None:
        """The fleet's hosts named (None: every host); an unknown name is an error."""
        return None if hosts is None else [self.fleet.host(name) for name in hosts]

    async def start(self, *, release: ReleaseRef,
                    hosts: tuple[str, ...] | None = None) -> list[Endpoint]:
        """Install, sync and start (or adopt) the release on every host (or on ``hosts``);
        their endpoints, host by host. Raises the first host's error when any host fails
        (the others have started: a repeated start adopts them)."""
        env = self._app_env()

        async def on(host: Host) -> list[Endpoint]:
            await install_agent(self.fleet, host)
            await asyncio.shield(self._synced(host, release))
            try:
                answer = await call_agent(self.fleet, host, "start", {
                    **self._where(host), "version": release.version,
                    "path": release_path(host, self.app, release.version),
                    "command": self.command, "env": env,
                    "instances": self.instances_per_host})
            except TargetError:
                # The release may have gone from the host behind our back: ask it again.
                self._syncs.pop((host.name, release.version), None)
                raise
            return [_named(host, e) for e in answer["endpoints"]]

        chosen = self._chosen(hosts)
        if chosen == []:
            return []
        if chosen is not None:
            self._send_ahead(release, [h for h in self.fleet.hosts if h not in chosen])
        outcomes = await self.fleet.each(on, chosen)
        _raise_first(outcomes, f"starting {release.version}")
        endpoints = [e for o in outcomes for e in (o.value or [])]
        await self._restart_probes_if_moved(release.version, endpoints, hosts)
        return endpoints

    def _synced(self, host: Host, release: ReleaseRef) -> asyncio.Task[None]:
        """The release's bytes onto ``host``, once: a sync already done (or under way) by
        this target is not asked of the host again."""
        key = (host.name, release.version)
        task = self._syncs.get(key)
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            task = asyncio.create_task(self._sync(host, release),
                                       name=f"sync {release.version} to {host}")
            task.add_done_callback(_retrieved)
            self._syncs[key] = task
        return task

    async def _sync(self, host: Host, release: ReleaseRef) -> None:
        await sync_release(self.fleet, host, app=self.app, version=release.version,
                           digest=release.digest, source=await self._packed(release),
                           likely_absent=True)

    async def _packed(self, release: ReleaseRef) -> Path:
        """The release as the tarball every host is sent, packed once (a tarball artifact
        is sent as it is)."""
        if Path(release.path).is_file():
            return Path(release.path)
        task = self._tarballs.get(release.version)
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            if self._packing_dir is None:
                self._packing_dir = Path(tempfile.mkdtemp(prefix="entrega-sync-"))
            tarball = self._packing_dir / f"{len(self._tarballs)}.tar.gz"
            task = asyncio.ensure_future(
                asyncio.to_thread(pack_release, Path(release.path), tarball))
            task.add_done_callback(_retrieved)
            self._tarballs[release.version] = task
        return await asyncio.shield(task)

    def _send_ahead(self, release: ReleaseRef, hosts: list[Host]) -> None:
        """A start on some hosts (a rolling batch): the release's bytes (and the agent) go
        to the other hosts meanwhile, ``max_parallel`` at a time, so their batches only start it. A
        failure here is only logged: that host's own start syncs again and says why."""
        if not hosts or self._sending_ahead.get(release.version) is not None:
            return

        async def send(host: Host) -> None:
            await install_agent(self.fleet, host)
            await asyncio.shield(self._synced(host, release))

        async def ahead() -> None:
            for outcome in await self.fleet.each(send, hosts):
                if outcome.error is not None:
                    log.info("sending %s ahead to %s: %s", release.version, outcome.host,
                             outcome.error)

        task = asyncio.create_task(ahead(), name=f"send {release.version} ahead")
        task.add_done_callback(_retrieved)
        self._sending_ahead[release.version] = task

    # -- what the probes need ----------------------------------------------------------

    async def _running_endpoints(self, version: str) -> list[Endpoint]:
        return [i.endpoint for i in await self._observe(version)
                if i.endpoint is not None and i.extra.get("status") != "stopped"]

    async def _reports(self, version: str,
                       hosts: tuple[str, ...] | None = None) -> list[InstanceReport]:
        async def on(host: Host) -> list[InstanceReport]:
            answer = await call_agent(self.fleet, host, "explain",
                                      {**self._where(host), "version": version})
            return [InstanceReport(**{**r, "instance": f"{host.name}/{r['instance']}"})
                    for r in answer["instances"]]

        chosen = self._chosen(hosts)
        if chosen == []:
            return []
        return [r for o in await self.fleet.each(on, chosen) if o.ok for r in (o.value or [])]

    # -- stop ------------------------------------------------------------------------------

    async def stop(self, *, release: ReleaseRef, drain_s: float,
                   hosts: tuple[str, ...] | None = None) -> None:
        """Drain and stop the release's instances on every host (or on ``hosts``).
        Idempotent. A host that cannot be reached raises (its instances may still run:
        the next pass retries)."""
        chosen = self._chosen(hosts)
        if chosen == []:
            return
        # Every probe of the release goes: those of the hosts that keep it start again at
        # the next ready(), which is cheaper than keeping two sets apart.
        await self._cancel_probes(release.version)

        async def on(host: Host) -> None:
            await call_agent(self.fleet, host, "stop",
                             {**self._where(host), "version": release.version,
                              "drain_s": drain_s},
                             timeout_s=drain_s + STOP_GRACE_S
                             + self.fleet.settings.command_timeout_s)

        _raise_first(await self.fleet.each(on, chosen), f"stopping {release.version}")

    # -- recovery --------------------------------------------------------------------------

    async def observe(self) -> list[InstanceState]:
        """Every instance on the hosts that answer (a host that does not is logged and
        skipped: its instances are neither alive nor dead to us until it answers)."""
        return await self._observe(None)

    async def _observe(self, version: str | None) -> list[InstanceState]:
        async def on(host: Host) -> list[InstanceState]:
            request = {**self._where(host)}
            if version is not None:
                request["version"] = version
            try:
                answer = await call_agent(self.fleet, host, "observe", request)
            except AgentMissing:  # nothing delivered there yet (a new host)
                return []
            return [InstanceState(
                version=o["version"], instance=f"{host.name}/{o['instance']}",
                endpoint=Endpoint(host.address, o["port"], f"{host.name}/{o['instance']}"),
                alive=o["alive"], pid=o["pid"], restarts=o["restarts"],
                started_at=o["started_at"],
                extra={"status": o["status"], "supervisor_pid": o["supervisor_pid"],
                       "last_exit_code": o["last_exit_code"], "host": host.name,
                       "directory": o["directory"]},
            ) for o in answer["instances"]]

        outcomes = await self.fleet.each(on)
        for outcome in outcomes:
            if outcome.error is not None:
                log.warning("observing instances: %s", outcome.error)
                self._host_errors[outcome.host.name] = str(outcome.error)
                self._failing_since.setdefault(outcome.host.name, time.monotonic())
            else:
                self._host_errors.pop(outcome.host.name, None)
                self._failing_since.pop(outcome.host.name, None)
        return [i for o in outcomes for i in (o.value or [])]

    async def close(self) -> None:
        for task in [*self._sending_ahead.values(), *self._syncs.values()]:
            await stop_task(task)
        if self._packing_dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._packing_dir, ignore_errors=True)
            self._packing_dir = None
            self._tarballs.clear()
        await super().close()
        await self.fleet.close()


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Done callback: a background sync's error is read (its awaiter reports it)."""
    if not task.cancelled():
        task.exception()


def _named(host: Host, endpoint: dict[str, Any]) -> Endpoint:
    return Endpoint(host.address, int(endpoint["port"]), f"{host.name}/{endpoint['instance']}")


def _raise_first(outcomes: list[HostOutcome[Any]], doing: str) -> None:
    failed = [o for o in outcomes if o.error is not None]
    if not failed:
        return
    first = failed[0].error
    assert first is not None
    if len(failed) == 1:
        raise first
    others = ", ".join(o.host.name for o in failed[1:])
    try:
        error = type(first)(f"{first.message} (and {len(failed) - 1} more host(s) failed "
                            f"{doing}: {others})", hint=first.hint)
    except TypeError:  # an error class of another shape: the first one as it is
        error = first
    raise error
