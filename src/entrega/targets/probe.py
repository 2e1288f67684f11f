"""Continuous HTTP health probing of one instance, shared by targets that run HTTP apps.

A probe is a background task that GETs the health path every ``interval_s`` and keeps
counts of consecutive successes and failures; readiness is a snapshot of those counts, so
asking for it never waits on the network. The hysteresis of :class:`HealthCheck` (N
successes to become healthy, M failures to stop being healthy) is applied here and
nowhere else.
"""

from __future__ import annotations

import asyncio

import httpx

from entrega.net import Endpoint
from entrega.targets.base import HealthCheck, InstanceHealth
from entrega.waiting import stop_task

#: Longest error text kept per probe; the full story is in the instance's logs.
MAX_ERROR_CHARS = 300


class HttpProbe:
    """Probes one endpoint until cancelled; :meth:`snapshot` reads the current verdict."""

    def __init__(self, *, client: httpx.AsyncClient, endpoint: Endpoint,
                 health: HealthCheck) -> None:
        self.client = client
        self.endpoint = endpoint
        self.health = health
        self.url = f"http://{endpoint.address}{health.path}"
        self.healthy = False
        #: healthy at least once since the probe started (a crash loop never was)
        self.ever_healthy = False
        self.consecutive_successes = 0
        self.consecutive_failures = 0
        self.last_error: str | None = "not probed yet"
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"probe {self.url}")

    async def cancel(self) -> None:
        await stop_task(self._task)
        self._task = None

    def record(self, *, ok: bool, error: str | None = None) -> None:
        """Count one probe result and apply the thresholds."""
        if ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            if self.consecutive_successes >= self.health.healthy_threshold:
                self.healthy = self.ever_healthy = True
                self.last_error = None
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            self.last_error = error
            if self.consecutive_failures >= self.health.unhealthy_threshold:
                self.healthy = False

    def snapshot(self) -> InstanceHealth:
        return InstanceHealth(
            endpoint=self.endpoint,
            healthy=self.healthy,
            consecutive_successes=self.consecutive_successes,
            consecutive_failures=self.consecutive_failures,
            last_error=self.last_error,
        )

    async def probe_once(self) -> tuple[bool, str | None]:
        try:
            response = await self.client.get(self.url, timeout=self.health.timeout_s)
        except Exception as exc:  # a probe must never die: any failure is a failed probe
            text = str(exc) or "no answer in time"
            return False, f"GET {self.url}: {text}"[:MAX_ERROR_CHARS]
        if response.status_code < 400:  # 2xx and 3xx (redirects are not followed)
            return True, None
        return False, f"GET {self.url}: HTTP {response.status_code}"

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            ok, error = await self.probe_once()
            self.record(ok=ok, error=error)
            await asyncio.sleep(max(0.0, self.health.interval_s - (loop.time() - began)))
