"""``EmbeddedRouter``: the controller's handle on one embedded router process.

The process is entrega's own data plane (``python -m entrega.dataplane.router``, see
:mod:`entrega.dataplane`); this adapter is all the controller side knows of it: it starts
or adopts it, and speaks to it over its control socket.

Files of a router named ``name`` live in ``state_dir/routers/<name>/``:

    routes.json   the last route table (the router reads it when it starts)
    router.pid    its pid, written once it is ready
    router.log    its stdout/stderr (startup errors, drain summary; no per-request lines)
    router.sock   the control socket
    router.old    the control socket of a router replaced by a changed configuration,
                  renamed so its successor can start beside it (``step_aside``), until
                  it has drained and exited

A unix socket path must fit in 108 bytes (``sun_path``). When ``state_dir`` is too deep
for that, the socket goes to ``/tmp/entrega-<hash>.sock`` instead, where ``<hash>`` is the
first 16 hex digits of sha256 of the preferred path: stable, so a restarted controller
finds the same socket again.

The pid is the supervisor's, which holds the listening sockets and runs ``workers``
worker processes on them (see dataplane/process/router_supervisor.py): a worker that dies is
replaced by the supervisor itself, and each such restart is reported in
``metrics().restarts``.

The router is started detached (its own session, no inherited stdin) so it survives the
controller, even ``kill -9`` of it. ``ensure_running`` adopts a router that answers on the
control socket, and starts one otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from entrega.codec import Codec
from entrega.dataplane import proof
from entrega.dataplane.instances.retire import other_kind_runs, retire_other_kind
from entrega.dataplane.process.listeners import BUSY_PORT_NOTICE
from entrega.errors import InvalidRecord, RouterError, RouterUnreachable
from entrega.net import unix_socket_path
from entrega.procenv import data_plane_env
from entrega.routers.base import Router, RouterMetrics, Routes
from entrega.runner import LocalRunner, ProcessRunner, Program, Started
from entrega.waiting import wait_until

T = TypeVar("T")

START_TIMEOUT_S = 15.0
#: The control API's GET /metrics answer (``started_at``, ``releases``, ``restarts``),
#: validated: it crosses a process, so a wrong field is an error that names it.
_METRICS: Codec[RouterMetrics] = Codec(RouterMetrics, what="the router's metrics")
#: POST /shutdown waits for the drain (10 s by default) plus process exit.
STOP_TIMEOUT_S = 20.0


def control_socket_path(router_dir: Path) -> Path:
    return unix_socket_path(router_dir, "router.sock", fallback_prefix="entrega")


class EmbeddedRouter(Router):
    """Start, adopt, configure and stop one embedded router process.

    Every method is idempotent. Control calls raise ``RouterUnreachable`` (temporary)
    when the router does not answer, ``RouterError`` when it refuses a request.
    """

    def __init__(self, *, name: str, listen: str, preview_listen: str | None,
                 state_dir: Path, app: str = "", upstream_timeout_s: float = 60.0,
                 header_timeout_s: float = 30.0, client_idle_timeout_s: float = 75.0,
                 control_timeout_s: float = 10.0, metrics_listen: str | None = None,
                 control_plane_url: str | None = None, workers: int = 1,
                 runner: ProcessRunner | None = None) -> None:
        self.name = name
        self.listen = listen
        self.preview_listen = preview_listen
        self.app = app
        self.dir = Path(state_dir) / "routers" / name
        self.socket_path = control_socket_path(self.dir)
        self.state_path = self.dir / "routes.json"
        self.pid_path = self.dir / "router.pid"
        #: whether a router of another kind on this one's files was looked for (retire.py)
        self._retire_checked = False
        self.log_path = self.dir / "router.log"
        self.upstream_timeout_s = upstream_timeout_s
        self.header_timeout_s = header_timeout_s
        self.client_idle_timeout_s = client_idle_timeout_s
        self.control_timeout_s = control_timeout_s
        #: HOST:PORT where the router serves Prometheus metrics (None: not served)
        self.metrics_listen = metrics_listen
        #: entrega's server, where ``/.entrega/...`` requests are forwarded (None: 404)
        self.control_plane_url = control_plane_url
        #: worker processes sharing the listeners under the router's supervisor
        self.workers = workers
        #: starts the router process and reads its pidfile
        self.runner = runner or LocalRunner()
        self._client: httpx.AsyncClient | None = None
        self._proc: Started | None = None
        #: a handle on a router that stepped aside for a successor (``step_aside``)
        self._retired = False
        self._place: Path | None = None

    # -- Router ------------------------------------------------------------------------------

    async def ensure_running(self) -> None:
        health = await self._health()
        if health is not None:
            self._check_adopted(health)
            await self._retire_other_kind()  # adopted: it holds its table already
        else:
            # joining the port of an HAProxy of an earlier configuration (retire.py)
            join = await asyncio.to_thread(other_kind_runs, self.dir, "embedded")
            proc, log_offset = self._launch(join=join)
            await self._wait_answering(proc, log_offset)

    async def running_settings(self) -> dict[str, object] | None:
        health = await self._health()
        if health is None:
            return None
        running = health.get("workers")
        return {"listen": health.get("listen"),
                "preview_listen": health.get("preview_listen") or None,
                "metrics_listen": health.get("metrics_listen") or None,
                "workers": running.get("count", 1) if isinstance(running, dict) else 1}

    async def take_over(self, retiring: Router) -> None:
        """Start in place of ``retiring`` (stepped aside, or of another kind), which may
        hold some of this router's addresses. An embedded predecessor's data listeners are
        joined (SO_REUSEPORT: both accept until the old one closes them); other busy
        addresses (a metrics listener, another kind's) are tried again for a few seconds.
        Once the new process answers, or says in its log that it waits for an address,
        ``retiring`` is drained and lets its addresses go."""
        proc, log_offset = self._launch(join=isinstance(retiring, EmbeddedRouter))

        async def waiting_or_done() -> bool:
            return (BUSY_PORT_NOTICE in self._log_text(log_offset)
                    or proc.exit_code() is not None or await self._health() is not None)

        await wait_until(waiting_or_done, timeout_s=START_TIMEOUT_S)
        await retiring.shutdown()
        await self._wait_answering(proc, log_offset)

    def _launch(self, *, join: bool = False) -> tuple[Started, int]:
        self.dir.mkdir(parents=True, exist_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        cmd = [sys.executable, "-m", "entrega.dataplane.router", "--listen", self.listen,
               "--control", str(self.socket_path), "--state", str(self.state_path),
               "--pidfile", str(self.pid_path), "--app", self.app,
               "--upstream-timeout-s", str(self.upstream_timeout_s),
               "--header-timeout-s", str(self.header_timeout_s),
               "--idle-timeout-s", str(self.client_idle_timeout_s),
               "--workers", str(self.workers)]
        if self.preview_listen:
            cmd += ["--preview-listen", self.preview_listen]
        if join:
            cmd += ["--join-listeners"]
        if self.metrics_listen:
            cmd += ["--metrics-listen", self.metrics_listen]
        if self.control_plane_url:
            key = proof.key_path(self.dir.parents[1])  # self.dir: <state>/routers/<name>
            proof.load_or_create_key(key)
            cmd += ["--control-plane-url", self.control_plane_url,
                    "--control-plane-key-file", str(key)]
        self._proc = proc = self.runner.start(
            Program(cmd, env=data_plane_env(), log=self.log_path))
        return proc, log_offset

    async def _wait_answering(self, proc: Started, log_offset: int) -> None:
        async def answers() -> bool:
            if await self._health() is not None:
                return True
            code = proc.exit_code()
            if code is not None:
                raise RouterError(
                    f"embedded router {self.name!r} ({self.listen}) exited with code {code} "
                    f"while starting: {self._log_tail(log_offset)}",
                    hint=f"full log: {self.log_path}")
            return False

        if not await wait_until(answers, timeout_s=START_TIMEOUT_S):
            proc.kill()
            raise RouterError(
                f"embedded router {self.name!r} ({self.listen}) did not answer on "
                f"{self.socket_path} within {START_TIMEOUT_S:g} s: "
                f"{self._log_tail(log_offset)}", hint=f"full log: {self.log_path}")

    async def set_routes(self, routes: Routes) -> None:
        await self._call("PUT", "/routes", json=routes.to_dict())
        await self._retire_other_kind()

    async def _retire_other_kind(self) -> None:
        """An HAProxy of an earlier configuration shares the port (SO_REUSEPORT): once this
        router holds a table (adopted, or given its first one), it is drained and stopped
        (dataplane/instances/retire.py). Not before: a router just started has no table,
        and would answer 503 to its share of the traffic meanwhile."""
        if not self._retire_checked:
            await asyncio.to_thread(retire_other_kind, self.dir, "embedded")
            self._retire_checked = True

    async def get_routes(self) -> Routes:
        return await self._read("/routes", Routes.from_dict, "a table")

    async def metrics(self) -> RouterMetrics:
        return await self._read("/metrics", _METRICS.load, "counters")

    async def _read(self, path: str, parse: Callable[[Any], T], what: str) -> T:
        """GET ``path`` and parse the answer: it crosses a process, so an answer that does
        not read is a router error that names the field."""
        answer = await self._call("GET", path)
        try:
            return parse(answer)
        except (ValueError, InvalidRecord) as exc:
            raise RouterError(f"embedded router {self.name!r}: GET {path} answered {what} "
                              f"that does not read: {exc}") from None

    async def shutdown(self) -> None:
        """Drain and stop the router; returns once it has exited (or was not running)."""
        try:
            await self._call("POST", "/shutdown")
        except RouterUnreachable:
            self._forget_retired()
            return
        async def gone() -> bool:
            return await self._health() is None

        if not await wait_until(gone, timeout_s=STOP_TIMEOUT_S):
            raise RouterError(f"embedded router {self.name!r} still answers "
                              f"{STOP_TIMEOUT_S:g} s after POST /shutdown",
                              hint=f"see {self.log_path}")
        if self._proc is not None:
            await asyncio.to_thread(self._proc.wait, STOP_TIMEOUT_S)
        self._forget_retired()

    def _forget_retired(self) -> None:
        if self._retired:  # the renamed socket is not the router's to remove any more
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def step_aside(self) -> EmbeddedRouter:
        """Rename the control socket (the bound socket keeps answering on its new name), so
        a successor can start on this router's files: it finds the path free, writes its own
        pidfile and reads the same routes.json. This router removes neither when it stops,
        as they are no longer its own (dataplane/process/lifecycle.py); the returned
        handle's ``shutdown`` removes the renamed socket once the router is gone."""
        retiring = copy.copy(self)
        retiring.socket_path = self.socket_path.with_name(self.socket_path.stem + ".old")
        retiring._client = None
        retiring._retired = True
        retiring._place = self.socket_path
        os.replace(self.socket_path, retiring.socket_path)
        return retiring

    def step_back(self) -> None:
        if self._retired and self._place is not None and not self._place.exists():
            os.replace(self.socket_path, self._place)
            self.socket_path, self._retired, self._client = self._place, False, None

    # -- helpers -----------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The pid from the pidfile, if the router wrote one."""
        return self.runner.read_pid(self.pid_path)

    async def _health(self) -> dict[str, object] | None:
        if not self.socket_path.exists():
            return None
        try:
            return await self._call("GET", "/health")
        except RouterError:
            return None

    def _check_adopted(self, health: dict[str, object]) -> None:
        if health.get("listen") != self.listen or (
                health.get("preview_listen") or None) != (self.preview_listen or None):
            raise RouterError(
                f"embedded router {self.name!r} already runs (pid {health.get('pid')}) on "
                f"{health.get('listen')} (preview {health.get('preview_listen')}), not on "
                f"{self.listen} (preview {self.preview_listen})",
                hint="shut it down to restart it with the new addresses")
        running = health.get("workers")
        count = running.get("count") if isinstance(running, dict) else 1
        if count != self.workers:
            raise RouterError(
                f"embedded router {self.name!r} already runs (pid {health.get('pid')}) with "
                f"{count} worker(s), not {self.workers}",
                hint="shut it down to restart it with the new number of workers")

    async def _call(self, method: str, path: str, *,
                    json: object | None = None) -> dict[str, Any]:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(self.socket_path)),
                base_url="http://entrega-router", timeout=self.control_timeout_s)
        try:
            response = await self._client.request(method, path, json=json)
        except httpx.TransportError as exc:
            raise RouterUnreachable(
                f"embedded router {self.name!r} does not answer on {self.socket_path}: "
                f"{exc or 'no answer in time'}", hint=f"see {self.log_path}") from exc
        try:
            data = response.json()
        except ValueError:
            data = {"error": response.text}
        if response.status_code != 200 or not isinstance(data, dict):
            error = data.get("error") if isinstance(data, dict) else data
            raise RouterError(f"embedded router {self.name!r}: {method} {path} answered "
                              f"{response.status_code}: {error}")
        return data

    def _log_text(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _log_tail(self, offset: int, max_lines: int = 10) -> str:
        if not self.log_path.exists():
            return "(no log)"
        text = self._log_text(offset)
        lines = [line for line in text.splitlines() if line.strip()][-max_lines:]
        return " | ".join(lines) or "(log is empty)"
