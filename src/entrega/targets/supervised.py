"""What every target whose instances are run by host agents does on the controller's side.

The local and the ssh target differ in where the host agent runs (in this process, or on
a fleet host over SSH) but not in what the controller does with the instances it reports:
it probes their health over HTTP, turns the probes into readiness, and judges a crash loop
(an app that exits ``max_start_exits`` times before it was first healthy cannot become
ready, so its release fails at once with the app's own last words). That part is here,
once; a subclass says how to list a release's endpoints and the agents' reports.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses

import httpx

from entrega.dataplane.instances.wire import InstanceReport
from entrega.net import Endpoint
from entrega.targets.base import (
    HealthCheck,
    InstanceHealth,
    Readiness,
    ReleaseRef,
    Target,
    host_of,
)
from entrega.targets.probe import HttpProbe


class SupervisedTarget(Target):
    """Probes the instances its host agents run; ``instances`` is how many a release has
    when it is whole (on every host together)."""

    #: How long the agents' reports on a release are reused while it is not ready (s).
    REPORTS_TTL_S = 0.0

    def __init__(self, *, app: str, environment: str, instances: int,
                 health: HealthCheck, hosts: int = 1) -> None:
        self.app = app
        self.environment = environment
        self.instances = instances
        #: every host runs as many instances of a release
        self.instances_per_host = instances // max(1, hosts)
        self.health = health
        self._probes: dict[str, list[HttpProbe]] = {}
        #: exits of each instance's app when its probe started (version -> instance -> n)
        self._exits_at_probe_start: dict[str, dict[str, int]] = {}
        self._client: httpx.AsyncClient | None = None
        self._report_cache: dict[tuple[str, tuple[str, ...] | None],
                                 tuple[float, dict[str, InstanceReport]]] = {}

    @abc.abstractmethod
    async def _running_endpoints(self, version: str) -> list[Endpoint]:
        """The endpoints of the release's instances that are not stopped."""

    @abc.abstractmethod
    async def _reports(self, version: str,
                       hosts: tuple[str, ...] | None = None) -> list[InstanceReport]:
        """What the host agents know of each instance of the release (exits, stderr); of
        ``hosts`` only, when given (a fleet's other hosts are not asked)."""

    # -- readiness -------------------------------------------------------------------------

    async def ready(self, *, release: ReleaseRef,
                    hosts: tuple[str, ...] | None = None) -> Readiness:
        """A snapshot of continuous probing; the first call starts the probes.

        Ready when every instance (of ``hosts``, when given) has passed
        ``healthy_threshold`` probes in a row (and not failed ``unhealthy_threshold`` in a
        row since). Never waits on an instance.
        """
        version = release.version
        if version not in self._probes:
            endpoints = await self._running_endpoints(version)
            if not endpoints:
                return Readiness(ready=False, detail=(
                    f"{release.app} {version} has no instances in "
                    f"{self.environment}; start it first"))
            baseline = await self._reports(version)
            if version not in self._probes:  # no other ready() started them meanwhile
                self._start_probes(version, endpoints, baseline)
        probes = self._probes[version]
        expected = self.instances
        if hosts is not None:
            probes = [p for p in probes if host_of(p.endpoint.instance) in hosts]
            expected = self.instances_per_host * len(hosts)
        reports = await self._cached_reports(version, hosts, probes)
        snapshots = tuple(_explain(p.snapshot(), reports.get(p.endpoint.instance))
                          for p in probes)
        healthy = sum(1 for s in snapshots if s.healthy)
        return Readiness(
            ready=len(snapshots) >= expected and healthy == len(snapshots),
            instances=snapshots,
            detail=f"{healthy}/{len(snapshots)} instances of {version} healthy",
            failure=self._crash_loop(version, probes, reports),
        )

    async def _cached_reports(self, version: str, hosts: tuple[str, ...] | None,
                              probes: list[HttpProbe]) -> dict[str, InstanceReport]:
        """The agents' reports, asked only while some instance is not healthy (they
        explain failures and count a crash loop's exits), and at most every
        ``REPORTS_TTL_S``: on a fleet each ask is a command on every host."""
        if all(p.healthy for p in probes):
            return {}
        loop = asyncio.get_running_loop()
        key = (version, hosts)
        cached = self._report_cache.get(key)
        if cached is not None and loop.time() - cached[0] < self.REPORTS_TTL_S:
            return cached[1]
        reports = {r.instance: r for r in await self._reports(version, hosts)}
        self._report_cache[key] = (loop.time(), reports)
        return reports

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

    async def _restart_probes_if_moved(self, version: str, endpoints: list[Endpoint],
                                       hosts: tuple[str, ...] | None = None) -> None:
        """After a start: probes of other endpoints (an instance came back on another
        port, a host started the release) are dropped, and the next ready() probes the
        new ones. ``hosts``: the start was on these hosts only."""
        probes = self._probes.get(version)
        if probes is None:
            return
        probed = [p.endpoint for p in probes
                  if hosts is None or host_of(p.endpoint.instance) in hosts]
        if probed != endpoints:
            await self._cancel_probes(version)

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
        for key in [k for k in self._report_cache if k[0] == version]:
            del self._report_cache[key]
        for probe in self._probes.pop(version, []):
            await probe.cancel()

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
