"""What the router's supervisor remembers of the workers it restarted, and how fast it may
restart the next one.

A worker that dies is replaced at once: the listening sockets are the supervisor's, so new
connections wait in the backlog meanwhile, and every millisecond of pause is a millisecond
they wait. Pausing is only right when restarting does not help: a worker that cannot start
or dies on every table would otherwise burn a core forever. :func:`compute_restart_pause_s`
tells the two apart by counting deaths in a sliding window: the first ``FREE_RESTARTS`` in
``WINDOW_S`` (a kill, an OOM, a chaos test) are free; beyond them the pause doubles up to
``MAX_PAUSE_S``, and it comes back to zero once the window holds few deaths again.

:class:`RestartLog` keeps the most recent restarts for the control API's ``GET /metrics``
(``"restarts"``), so the controller can record each one as an event in ``history``; it is
bounded, and a consumer records the entries newer than the last one it saw.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from entrega.dataplane.reports import DataPlaneRestart

#: deaths within the window that are restarted without any pause
FREE_RESTARTS = 5
#: how far back deaths count; a router killed now and then never pauses
WINDOW_S = 60.0
#: the first pause beyond the free restarts, doubled for each further death in the window
FIRST_PAUSE_S = 0.5
#: a crash-looping worker is retried at least this often (a fix may be deployed meanwhile)
MAX_PAUSE_S = 10.0
#: restarts kept for ``GET /metrics``; the controller polls far more often than this fills
KEPT_RESTARTS = 64


def compute_restart_pause_s(deaths: Iterable[float], *, now: float) -> float:
    """Seconds to wait before replacing a worker, given the monotonic times of worker
    deaths (this one included). Pure."""
    recent = sum(1 for at in deaths if now - at < WINDOW_S)
    beyond = recent - FREE_RESTARTS
    if beyond <= 0:
        return 0.0
    return min(FIRST_PAUSE_S * 2 ** (beyond - 1), MAX_PAUSE_S)


class CrashGuard:
    """The deaths of the last ``WINDOW_S`` and the pause they call for."""

    def __init__(self) -> None:
        self._deaths: deque[float] = deque()

    def record_death(self, *, now: float) -> float:
        """Note a death at monotonic ``now``; return the pause before the next start."""
        self._deaths.append(now)
        while self._deaths and now - self._deaths[0] >= WINDOW_S:
            self._deaths.popleft()
        return compute_restart_pause_s(self._deaths, now=now)


def describe_exit(returncode: int) -> str:
    """``asyncio`` returncode -> the reason a person reads (negative: killed by a signal)."""
    if returncode < 0:
        return f"exited with signal {-returncode}"
    return f"exited with code {returncode}"


class RestartLog:
    """The most recent restarts, oldest first."""

    def __init__(self, kept: int = KEPT_RESTARTS) -> None:
        self._entries: deque[DataPlaneRestart] = deque(maxlen=kept)

    def record(self, restart: DataPlaneRestart) -> None:
        self._entries.append(restart)

    def to_list(self) -> list[dict[str, object]]:
        """The JSON form served in ``GET /metrics``: ``[{what, at, reason}]``."""
        return [{"what": r.what, "at": r.at, "reason": r.reason} for r in self._entries]
