"""The HAProxy adapter's handle on its log sink (``python -m entrega.dataplane.logsink``).

HAProxy logs every finished request into a ring buffer whose forwarder streams the lines
to the sink (``render.LOG_RING``); the sink turns them into the same per-release
counters, ring of latencies and latency sketch the embedded router keeps (see
``dataplane/accesslog.py``). This module starts it detached (so it outlives the
controller, as HAProxy does), adopts one that answers, and reads its counters. Files,
beside HAProxy's in ``state_dir/routers/<name>/``:

    logs.sock      where HAProxy's ring forwarder streams its log lines
    logsink.sock   the sink's control socket (``metrics``, ``shutdown``)
    logsink.pid    its pid, written once both sockets are bound
    logsink.log    its stdout/stderr (startup errors only: no per-request lines)

The sink is started before HAProxy, so no request of a new HAProxy goes unlogged, and
again by ``metrics()`` when it no longer answers: its new ``started_at`` tells the
windows that its counters restarted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from entrega.codec import Codec
from entrega.errors import InvalidRecord, RouterError, RouterUnreachable
from entrega.net import unix_socket_path
from entrega.procenv import data_plane_env
from entrega.routers.base import DataPlaneRestart, ReleaseMetrics
from entrega.runner import ProcessRunner, Program, Started
from entrega.waiting import wait_until

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
#: the sink answers from memory: anything slower is a stuck sink
ANSWER_TIMEOUT_S = 5.0
#: restarts of the sink kept for ``RouterMetrics.restarts`` (the most recent)
RESTARTS_KEPT = 20


@dataclass(frozen=True)
class SinkCounters:
    """The sink's ``metrics`` answer: per-release counters since ``started_at``."""

    pid: int
    started_at: float
    releases: dict[str, ReleaseMetrics] = field(default_factory=dict)
    #: log lines received, and those that were no request of a release
    lines: int = 0
    ignored: int = 0


_COUNTERS: Codec[SinkCounters] = Codec(SinkCounters, what="the log sink's counters")


#: HAProxy refuses a unix socket path longer than this ("too long (max 97)"), the
#: ``stats socket`` and the ring's ``server ... unix@`` alike, though AF_UNIX takes 107
HAPROXY_MAX_SOCKET_PATH = 97


def log_socket_path(router_dir: Path) -> Path:
    """Where the sink listens for HAProxy's log ring: HAProxy names it in its config, so
    HAProxy's limit applies, not AF_UNIX's (a state directory 100 bytes deep failed)."""
    return unix_socket_path(router_dir, "logs.sock", fallback_prefix="entrega-haproxy-logs",
                            max_bytes=HAPROXY_MAX_SOCKET_PATH)


def control_socket_path(router_dir: Path) -> Path:
    return unix_socket_path(router_dir, "logsink.sock", fallback_prefix="entrega-logsink")


class LogSinkProcess:
    """Start, adopt, read and stop the log sink of one HAProxy router. Idempotent."""

    def __init__(self, *, router: str, dir: Path, runner: ProcessRunner) -> None:
        self.router = router
        self.dir = dir
        self.logs = log_socket_path(dir)
        self.control = control_socket_path(dir)
        self.pidfile = dir / "logsink.pid"
        self.log_path = dir / "logsink.log"
        self.runner = runner
        self._lock = asyncio.Lock()
        #: the sink this controller started, if it did (reaped when it exits)
        self._proc: Started | None = None
        #: sinks started again because the running one stopped answering, oldest first
        self.restarts: list[DataPlaneRestart] = []

    async def ensure_running(self) -> bool:
        """True when it started a sink, False when one already answered."""
        if await self._answers():
            return False
        async with self._lock:
            if await self._answers():
                return False
            self.dir.mkdir(parents=True, exist_ok=True)
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            if self._proc is not None:
                self._proc.exit_code()  # reaps the sink this controller started, now dead
            self._proc = proc = self.runner.start(Program(
                [sys.executable, "-m", "entrega.dataplane.logsink", "--logs", str(self.logs),
                 "--control", str(self.control), "--pidfile", str(self.pidfile)],
                env=data_plane_env(), log=self.log_path))

            async def ready() -> bool:
                if await self._answers():
                    return True
                code = proc.exit_code()
                if code is not None:
                    raise RouterError(f"haproxy router {self.router!r}: its log sink exited "
                                      f"with code {code} while starting: {self._tail(offset)}",
                                      hint=f"full log: {self.log_path}")
                return False

            if not await wait_until(ready, timeout_s=START_TIMEOUT_S):
                proc.kill()
                raise RouterError(f"haproxy router {self.router!r}: its log sink did not "
                                  f"answer on {self.control} within {START_TIMEOUT_S:g} s",
                                  hint=f"full log: {self.log_path}")
            return True

    async def counters(self) -> SinkCounters:
        """The sink's counters; a sink that does not answer is started again first."""
        try:
            answer = await self._ask("metrics")
        except RouterUnreachable:
            if await self.ensure_running():
                self.restarts = [*self.restarts, DataPlaneRestart(
                    what="haproxy log sink", at=time.time(),
                    reason="did not answer on its control socket")][-RESTARTS_KEPT:]
            answer = await self._ask("metrics")
        try:
            return _COUNTERS.load(answer)
        except InvalidRecord as exc:
            raise RouterError(f"haproxy router {self.router!r}: {exc}") from None

    async def shutdown(self) -> None:
        """Stop the sink; returns once it has exited (or was not running)."""
        try:
            await self._ask("shutdown")
        except RouterUnreachable:
            return

        async def gone() -> bool:
            return not await self._answers()

        if not await wait_until(gone, timeout_s=STOP_TIMEOUT_S):
            raise RouterError(f"haproxy router {self.router!r}: its log sink still answers "
                              f"{STOP_TIMEOUT_S:g} s after shutdown",
                              hint=f"see {self.log_path}")
        if self._proc is not None:
            await asyncio.to_thread(self._proc.wait, STOP_TIMEOUT_S)

    def pid(self) -> int | None:
        return self.runner.read_pid(self.pidfile)

    async def _answers(self) -> bool:
        try:
            await self._ask("metrics")
        except RouterError:
            return False
        return True

    async def _ask(self, command: str) -> object:
        line = await self._exchange(command)
        try:
            answer = json.loads(line)
        except ValueError:
            raise RouterUnreachable(f"haproxy router {self.router!r}: its log sink gave no "
                                    f"answer to {command!r} on {self.control}") from None
        if isinstance(answer, dict) and "error" in answer:
            raise RouterError(f"haproxy router {self.router!r}: its log sink refused "
                              f"{command!r}: {answer['error']}")
        return answer

    async def _exchange(self, command: str) -> bytes:
        """The sink's one line of answer to ``command`` on its control socket."""
        if not self.control.exists():
            raise RouterUnreachable(f"haproxy router {self.router!r}: its log sink is not "
                                    f"running (no {self.control})")
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                reader, writer = await asyncio.open_unix_connection(str(self.control))
                try:
                    writer.write(command.encode() + b"\n")
                    await writer.drain()
                    return await reader.readline()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            raise RouterUnreachable(f"haproxy router {self.router!r}: its log sink does not "
                                    f"answer on {self.control}: {exc or 'no answer in time'}"
                                    ) from exc

    def _tail(self, offset: int, lines: int = 8) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return "(no log)"
        kept = [line for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(kept) or "(log is empty)"
