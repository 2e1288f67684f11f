"""HAProxy on a fleet host, driven from the controller as the one on its own machine.

With ``router: {kind: haproxy, placement: every_host}`` each host of an ``ssh`` target
runs an HAProxy and its log sink; ``routers/every_host.py`` keeps them in lockstep and
sums their metrics. Each host's HAProxy is a :class:`HostHaproxyRouter`: the same
``HaproxyRouter`` (the same configuration and maps from render.py, the same runtime API
commands, so weights, instances and cohorts change without a reload exactly as on one
machine), with the three things that touch the host's machine moved there:

- the runtime socket and the sink's control socket are reached through a
  :class:`HostAccess` ``exchange`` (for an ``ssh`` target, the pooled SSH connection's
  stream-local forwarding: never an admin port on the network);
- the files (configuration, maps) are written by the host agent (``haproxy-write``), so a
  restarted HAProxy reads the last table set;
- starting, reloading and stopping HAProxy and its sink is the host agent's
  (``haproxy-start``/``-reload``/``-stop``, ``dataplane/instances/hosthaproxy.py``): the
  processes are the host's, detached, so they outlive SSH and the controller, and the
  next controller adopts them (their sockets answer).

What still reloads is what reloads on one machine: a change of listeners or of the
rendered rules (an adopted HAProxy that read another configuration).

How a host is reached is not this module's business (routers and targets never import
each other): the controller gives each router its host's :class:`HostAccess`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from entrega.errors import RouterUnreachable
from entrega.routers.base import Routes
from entrega.routers.haproxy.router import HaproxyRouter
from entrega.routers.haproxy.sink import LogSinkProcess


class HostAccess(Protocol):
    """How the controller reaches one host for its HAProxy."""

    #: the host's name (as status and errors show it)
    name: str
    #: the host agent's state directory of the app on that host (absolute)
    state_dir: str

    async def exchange(self, path: str, request: bytes) -> bytes | None:
        """All that the unix socket ``path`` on the host answers to ``request`` until it
        closes; None when nothing listens there. TargetUnreachable: the host is down."""
        ...

    async def agent(self, operation: str, request: dict[str, object]) -> dict[str, object]:
        """One host agent operation (``haproxy-start``...); its answer. A refusal is a
        TargetError naming the host; a host that cannot be reached, TargetUnreachable."""
        ...


class HostLogSink(LogSinkProcess):
    """The log sink of a host's HAProxy: read through the host's ``exchange``, started
    by the host agent (with HAProxy, when that one is not running either)."""

    def __init__(self, *, router: str, dir: Path, access: HostAccess,
                 start: Callable[[], Awaitable[dict[str, object]]]) -> None:
        # no runner: the host agent starts it (``ensure_running`` below)
        super().__init__(router=router, dir=dir, runner=None)  # type: ignore[arg-type]
        self.access = access
        self._start = start
        self._pid: int | None = None

    async def ensure_running(self) -> bool:
        answer = await self._start()
        pid = answer.get("sink_pid")
        self._pid = pid if isinstance(pid, int) else None
        return answer.get("sink_started") is True

    async def shutdown(self) -> None:
        """Stopped by the agent with HAProxy (:meth:`HostHaproxyRouter.shutdown`)."""

    def pid(self) -> int | None:
        return self._pid

    async def _exchange(self, command: str) -> bytes:
        answer = await self.access.exchange(str(self.control), command.encode() + b"\n")
        if answer is None:
            raise RouterUnreachable(f"haproxy router {self.router!r}: its log sink does not "
                                    f"answer on {self.control}")
        return answer


class HostHaproxyRouter(HaproxyRouter):
    """The HAProxy of one environment on one fleet host. Every method is idempotent."""

    def __init__(self, access: HostAccess, *, app: str, environment: str, listen: str,
                 preview_listen: str | None = None, stats_listen: str | None = None,
                 binary: str = "haproxy") -> None:
        # its files where the agent keeps the app's state on that host; the same directory
        # name as the controller's own HAProxy of the environment
        super().__init__(name=f"{app}-{environment}", listen=listen,
                         preview_listen=preview_listen, state_dir=Path(access.state_dir),
                         app=app, stats_listen=stats_listen, binary=binary)
        self.name = f"{app}-{environment} on host {access.name}"
        self.access = access
        self.environment = environment
        self.sink = HostLogSink(router=self.name, dir=self.dir, access=access,
                                start=self._ensure_on_host)
        self.api.router = self.name
        self.api.exchange = self._runtime_exchange
        #: the agent's last answer to ``haproxy-start`` (pids, what it started)
        self.started: dict[str, object] = {}
        self._starting = asyncio.Lock()

    async def ensure_running(self) -> None:
        await self._ensure_on_host()

    async def shutdown(self) -> None:
        """Soft-stop HAProxy, then its sink (the host agent waits for both)."""
        await self.access.agent("haproxy-stop", self._where())

    def pid(self) -> int | None:
        pid = self.started.get("pid")
        return pid if isinstance(pid, int) else None

    def health(self) -> dict[str, object]:
        """After ``ensure_running``: the master's ``pid`` and whether it was ``started``."""
        return {"pid": self.pid(), "started": self.started.get("started") is True}

    # -- what happens on the host ----------------------------------------------------------

    def _where(self) -> dict[str, object]:
        return {"app": self.app, "environment": self.environment,
                "state_dir": self.access.state_dir, "dir": str(self.dir),
                "socket": str(self.files.socket), "logs": str(self.sink.logs),
                "control": str(self.sink.control), "binary": self.binary}

    async def _ensure_on_host(self) -> dict[str, object]:
        # the files of an empty table, written only where none are (a first start)
        files = self._render(Routes(), {})
        async with self._starting:
            self.started = await self.access.agent("haproxy-start", {**self._where(),
                                                                     "files": files})
        if self.started.get("started") is False:
            await self._retire_other_kind()  # adopted: it holds its table already
        return self.started

    async def _retire_on_host_or_here(self) -> None:
        await self.access.agent("router-retire", {
            "app": self.app, "environment": self.environment,
            "state_dir": self.access.state_dir, "keep": "haproxy"})

    async def _put_files(self, contents: dict[str, str]) -> None:
        await self.access.agent("haproxy-write", {**self._where(), "files": contents})

    async def _signal_reload(self) -> None:
        await self.access.agent("haproxy-reload", self._where())

    async def _answers(self) -> bool:
        try:
            return bool((await self.api.info()).get("Pid"))
        except RouterUnreachable:
            return False

    async def _runtime_exchange(self, request: bytes) -> bytes | None:
        return await self.access.exchange(str(self.files.socket), request)
