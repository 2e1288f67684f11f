"""The router of one fleet host: started, adopted and stopped by the host agent.

With ``router: {kind: embedded, placement: every_host}`` every host of an ``ssh`` target
runs its own embedded router (``python -m entrega.dataplane.router``, the same program as
on the controller's machine), behind the user's own load balancer. The agent starts it
here, from the agent's own sources and with the host's ``python3`` (the router's
pure-Python path needs only the standard library: ``dataplane/http1parse.py`` stands in
for httptools, asyncio's loop for uvloop), detached in a session of its own, so it outlives
the SSH command that started it and the controller. A later ``router-start`` finds it
answering on its control socket and adopts it.

Files, as the controller's own embedded router keeps them, under the agent's state
directory of the app: ``routers/<app>-<environment>/`` holds ``routes.json`` (the last
table: a restarted router serves it at once), ``router.pid``, ``router.log`` and the
control socket ``router.sock`` (or its /tmp fallback when the path is too long for
AF_UNIX, :func:`entrega.net.unix_socket_path`, computed the same way by the controller).

The controller never reaches the router through a TCP port: it speaks HTTP to the control
socket through its SSH connection (direct stream-local forwarding). Only this module
speaks to the socket from the host itself, to tell when a router it started answers and to
ask one to stop. Standard library only (``pyproject.toml``'s import contracts): this
module never imports the router, it runs it.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from entrega.dataplane.instances.retire import other_kind_runs
from entrega.errors import TargetError
from entrega.net import unix_socket_path
from entrega.procenv import data_plane_env
from entrega.runner import LocalRunner, Program, Started
from entrega.waiting import wait_until_sync

ROUTER_MODULE = "entrega.dataplane.router"
#: The router binds its listeners, loads its table and starts its workers in well under
#: a second; a slow host (or one starting many processes at once) gets this long.
START_TIMEOUT_S = 15.0
#: It drains requests in flight for up to 10 s on shutdown, then exits.
STOP_TIMEOUT_S = 20.0
CONTROL_TIMEOUT_S = 5.0


def router_dir(state_dir: Path, app: str, environment: str) -> Path:
    return state_dir / "routers" / f"{app}-{environment}"


def control_path(state_dir: Path, app: str, environment: str) -> Path:
    """Where the router of ``app``'s ``environment`` answers (the controller computes the
    same path to reach it)."""
    return unix_socket_path(router_dir(state_dir, app, environment), "router.sock",
                            fallback_prefix="entrega")


class HostRouter:
    """One environment's router on this host. Every method is idempotent."""

    def __init__(self, *, app: str, environment: str, state_dir: Path, listen: str,
                 preview_listen: str | None = None, metrics_listen: str | None = None,
                 workers: int = 1) -> None:
        self.app = app
        self.environment = environment
        self.dir = router_dir(state_dir, app, environment)
        self.control = control_path(state_dir, app, environment)
        self.listen = listen
        self.preview_listen = preview_listen
        self.metrics_listen = metrics_listen
        self.workers = workers
        self.log = self.dir / "router.log"

    def where(self) -> str:
        return f"the router of {self.app} {self.environment} ({self.listen})"

    def ensure(self) -> dict[str, object]:
        """Adopt the router answering on the control socket, or start one; its health
        (``pid``, ``listen``...) plus ``control`` and ``started`` (True: started now)."""
        health = self.health()
        if health is not None:
            if health.get("listen") != self.listen:
                raise TargetError(
                    f"{self.where()}: a router already runs (pid {health.get('pid')}) on "
                    f"{health.get('listen')}, not on {self.listen}",
                    hint="stop it (entrega down) to start it on the new address")
            return {**health, "control": str(self.control), "started": False}
        started = self._launch()

        def answering() -> dict[str, object] | None:
            found = self.health()
            if found is None and started.exit_code() is not None:
                raise TargetError(f"{self.where()} exited with code {started.exit_code()} "
                                  f"while starting: {self._log_tail()}",
                                  hint=f"its log on the host: {self.log}")
            return found

        health = wait_until_sync(answering, timeout_s=START_TIMEOUT_S)
        if health is None:
            started.kill()
            raise TargetError(f"{self.where()} did not answer within {START_TIMEOUT_S:g} s: "
                              f"{self._log_tail()}", hint=f"its log on the host: {self.log}")
        return {**health, "control": str(self.control), "started": True}

    def stop(self) -> bool:
        """Drain and stop the router; False when none was running."""
        if self.health() is None:
            return False
        self._request("POST", "/shutdown")
        if wait_until_sync(lambda: self.health() is None, timeout_s=STOP_TIMEOUT_S) is None:
            raise TargetError(f"{self.where()} still answers {STOP_TIMEOUT_S:g} s after "
                              "it was asked to stop", hint=f"its log on the host: {self.log}")
        return True

    def health(self) -> dict[str, object] | None:
        """``GET /health`` of the running router, None when none answers."""
        try:
            status, answer = self._request("GET", "/health")
        except OSError:
            return None
        return answer if status == 200 else None

    # -- helpers -----------------------------------------------------------------------

    def _launch(self) -> Started:
        self.dir.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", ROUTER_MODULE, "--listen", self.listen,
                "--control", str(self.control), "--state", str(self.dir / "routes.json"),
                "--pidfile", str(self.dir / "router.pid"), "--app", self.app,
                "--workers", str(self.workers)]
        if self.preview_listen:
            argv += ["--preview-listen", self.preview_listen]
        if self.metrics_listen:
            argv += ["--metrics-listen", self.metrics_listen]
        if other_kind_runs(self.dir, "embedded"):
            argv += ["--join-listeners"]  # HAProxy of an earlier configuration (retire.py)
        try:
            return LocalRunner().start(Program(argv, env=data_plane_env(), log=self.log))
        except OSError as exc:
            raise TargetError(f"cannot start {self.where()}: {exc.strerror}") from exc

    def _request(self, method: str, path: str) -> tuple[int, dict[str, object]]:
        """One request to the control socket (HTTP/1.1, closed after the answer)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONTROL_TIMEOUT_S)
            sock.connect(str(self.control))
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: entrega-router\r\n"
                         "Connection: close\r\nContent-Length: 0\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
            answer = json.loads(body)
        except (IndexError, ValueError):
            raise OSError("the router's control socket answered something else") from None
        return status, answer if isinstance(answer, dict) else {}

    def _log_tail(self, max_lines: int = 8) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(line for line in lines[-max_lines:] if line.strip()) or "(empty log)"
