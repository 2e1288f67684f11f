"""One fleet host's router as the controller reaches it: through the host's SSH connection.

``routers/every_host.py`` keeps a router on every host in lockstep; it knows nothing of
SSH. This module is its transport for an ``ssh`` target (routers and targets never import
each other; the controller joins them, ``controller/runtime.py``):

- start or adopt: the host agent's ``router-start`` (the agent is installed first, by
  content, as for instances: :mod:`.agent`), which starts the router detached on the host
  so it outlives this connection and the controller;
- control: one HTTP/1.1 request to the router's unix control socket on the host, carried
  by the pooled SSH connection (direct stream-local forwarding, :meth:`Fleet.unix_exchange`),
  so no admin port is ever open on the network;
- stop: the agent's ``router-stop``.

An HAProxy on every host is driven by its own adapter (``routers/haproxy/on_host.py``),
which reaches the host through :class:`SshHostAccess`: the same agent and connection.

Errors keep their meaning for the caller: a host that cannot be reached is
TargetUnreachable (the host is down: lockstep goes on without it and catches it up when it
is back); a reachable host whose router does not answer is RouterUnreachable (the
controller starts it again).
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path

from entrega.errors import RouterError, RouterUnreachable
from entrega.net import unix_socket_path
from entrega.targets.ssh.agent import call_agent, install_agent, state_dir
from entrega.targets.ssh.connections import Fleet, Host

#: A control call's bound: the router answers in milliseconds; the SSH link may not.
CONTROL_TIMEOUT_S = 10.0


def host_listen(host: Host, port: int) -> str:
    """``HOST:PORT`` on the host's own address."""
    return f"[{host.address}]:{port}" if ":" in host.address else f"{host.address}:{port}"


class SshHostRouter:
    """The environment's router on one host (implements ``routers.every_host.HostRouterLink``)."""

    def __init__(self, fleet: Fleet, host: Host, *, app: str, environment: str, port: int,
                 preview_port: int | None = None, metrics_port: int | None = None,
                 workers: int = 1) -> None:
        self.fleet = fleet
        self.host = host
        self.name = host.name
        self.app = app
        self.environment = environment
        self.listen = host_listen(host, port)
        self.preview_listen = host_listen(host, preview_port) if preview_port else None
        self.metrics_listen = host_listen(host, metrics_port) if metrics_port else None
        self.workers = workers
        # The same path the host agent computes (dataplane/instances/hostrouter.py): a
        # restarted controller reaches a running router before asking the agent anything.
        self.router_dir = posixpath.join(state_dir(host, app), "routers",
                                         f"{app}-{environment}")
        self.control_path = str(unix_socket_path(Path(self.router_dir), "router.sock",
                                                 fallback_prefix="entrega"))
        #: whether an HAProxy of an earlier configuration was looked for (retire.py)
        self._retire_checked = False

    def __str__(self) -> str:
        return f"the router on {self.host} ({self.listen})"

    def _request(self) -> dict[str, object]:
        request: dict[str, object] = {
            "app": self.app, "environment": self.environment,
            "state_dir": state_dir(self.host, self.app), "address": self.host.address,
            "listen": self.listen, "workers": self.workers}
        if self.preview_listen:
            request["preview_listen"] = self.preview_listen
        if self.metrics_listen:
            request["metrics_listen"] = self.metrics_listen
        return request

    async def ensure(self) -> dict[str, object]:
        """Start the host's router, or adopt the one running; its health. Idempotent."""
        await install_agent(self.fleet, self.host)
        answer = await call_agent(self.fleet, self.host, "router-start", self._request())
        router = answer.get("router")
        if isinstance(router, dict) and router.get("started") is False:
            await self._retire_other_kind()  # adopted: it holds its table already
        return router if isinstance(router, dict) else {}

    async def stop(self) -> None:
        await call_agent(self.fleet, self.host, "router-stop", self._request())

    async def control(self, method: str, path: str, body: object | None = None
                      ) -> dict[str, object]:
        """One control API call; its JSON answer. RouterUnreachable when no router
        answers on the host, RouterError when it refuses the request."""
        payload = b"" if body is None else json.dumps(body).encode()
        request = (f"{method} {path} HTTP/1.1\r\nHost: entrega-router\r\n"
                   f"Connection: close\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
        answer = await self.fleet.unix_exchange(self.host, self.control_path, request,
                                                timeout_s=CONTROL_TIMEOUT_S)
        if not answer:
            raise RouterUnreachable(
                f"{self} does not answer", hint="the controller starts it again; its log "
                f"on the host: {self.router_dir}/router.log")
        head, _, text = answer.partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
            data = json.loads(text)
        except (IndexError, ValueError):
            raise RouterUnreachable(f"{self} answered {method} {path} with something "
                                    "other than its control API's JSON") from None
        if status != 200 or not isinstance(data, dict):
            error = data.get("error") if isinstance(data, dict) else data
            raise RouterError(f"{self}: {method} {path} answered {status}: {error}")
        if (method, path) == ("PUT", "/routes"):
            await self._retire_other_kind()
        return data

    async def _retire_other_kind(self) -> None:
        """An HAProxy of an earlier configuration shares the port (SO_REUSEPORT): once this
        router holds a table (adopted, or given its first one), the agent drains and stops
        it (dataplane/instances/retire.py)."""
        if not self._retire_checked:
            await call_agent(self.fleet, self.host, "router-retire", {
                "app": self.app, "environment": self.environment,
                "state_dir": state_dir(self.host, self.app), "keep": "embedded"})
            self._retire_checked = True


class SshHostAccess:
    """One host as a router driven from the controller reaches it (implements
    ``routers.haproxy.on_host.HostAccess``): the host agent for what happens on the host,
    the pooled SSH connection for its unix sockets."""

    def __init__(self, fleet: Fleet, host: Host, *, app: str) -> None:
        self.fleet = fleet
        self.host = host
        self.name = host.name
        self.state_dir = state_dir(host, app)

    async def exchange(self, path: str, request: bytes) -> bytes | None:
        return await self.fleet.unix_exchange(self.host, path, request,
                                              timeout_s=CONTROL_TIMEOUT_S)

    async def agent(self, operation: str, request: dict[str, object]) -> dict[str, object]:
        await install_agent(self.fleet, self.host)
        answer: dict[str, object] = await call_agent(self.fleet, self.host, operation,
                                                     request)
        return answer
