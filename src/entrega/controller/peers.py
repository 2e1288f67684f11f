"""Reading other apps' routers for metrics that name them (``app: web``).

An analysis window of this app judges the other app's counts during the window against a
stretch of the same length just before it (``analysis/peers.py``). The "before" stretch
begins in the past, so the controller keeps a short history of the other app's cumulative
snapshots: one per reconcile pass at most every ``SAMPLE_EVERY_S``, for as long as this
app's longest analysis step (the longest "before" any window can ask for). Only the other
apps' environments some metric names are watched, and nothing is persisted here: a window
copies the two snapshots it needs into its baseline row when it begins.

The routers themselves belong to the other apps' controllers; ``lookup`` (set by the
control plane, ``plane.py``) finds them. A single-app server has none to find.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from entrega.analysis.peers import peer_key
from entrega.analysis.providers.builtin import snapshot
from entrega.config import Config
from entrega.errors import EntregaError
from entrega.routers.base import Router

log = logging.getLogger("entrega.controller")

#: Finds another app's router in one of its environments (None: no such app here).
PeerLookup = Callable[[str, str], Router | None]
#: A second between snapshots is as fine as the windows' own checks (every second).
SAMPLE_EVERY_S = 1.0


def watched_peers(config: Config) -> set[tuple[str, str]]:
    """The (app, environment) pairs this app's metrics name."""
    return {peer for env in config.environments for cfg in env.analysis.values()
            if (peer := cfg.peer(env.name)) is not None}


def longest_analysis_s(config: Config) -> float:
    """This app's longest analysis step: the longest "before" stretch it may need."""
    longest = 0.0
    for env in config.environments:
        steps = [s.analysis for s in (env.strategy.canary.steps if env.strategy.canary
                                      else []) if s.analysis is not None]
        if env.strategy.rolling is not None and env.strategy.rolling.analysis is not None:
            steps.append(env.strategy.rolling.analysis)
        longest = max([longest, *(s.duration_s for s in steps)])
    return longest


class PeerWatch:
    """Recent snapshots of the other apps' routers this app's metrics name."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.lookup: PeerLookup | None = None
        #: the controller's clock: the history's times and a window's start are one scale
        self.clock = clock
        self._history: dict[str, deque[tuple[float, dict[str, Any]]]] = {}
        self.use(config)

    def use(self, config: Config) -> None:
        """Watch what ``config``'s metrics name (at start, and after a reload)."""
        self.watched = watched_peers(config)
        self.keep_s = longest_analysis_s(config) + 2 * SAMPLE_EVERY_S

    def router(self, app: str, environment: str) -> Router | None:
        return self.lookup(app, environment) if self.lookup is not None else None

    async def latest(self, app: str, environment: str) -> dict[str, Any] | None:
        """The other app's snapshot now; None when it is not here or does not answer
        (its metric is then ``no-data``, never a pass)."""
        router = self.router(app, environment)
        if router is None:
            return None
        try:
            return await snapshot(router)
        except EntregaError as exc:
            log.warning("reading %s's router: %s", peer_key(app, environment), exc)
            return None

    async def sample(self, *, now: float) -> None:
        """Add a snapshot of each watched router, at most one every SAMPLE_EVERY_S, and
        forget what no window can ask for any more."""
        for app, environment in sorted(self.watched):
            history = self._history.setdefault(peer_key(app, environment), deque())
            if history and now - history[-1][0] < SAMPLE_EVERY_S:
                continue
            snap = await self.latest(app, environment)
            if snap is not None:
                history.append((now, snap))
            while history and history[0][0] < now - self.keep_s:
                history.popleft()

    def before(self, app: str, environment: str, *, now: float,
               length_s: float) -> tuple[float, dict[str, Any]] | None:
        """The snapshot that begins the "before" stretch of a window starting ``now``:
        the oldest one no more than ``length_s`` ago, with when it was taken."""
        for taken_at, snap in self._history.get(peer_key(app, environment), ()):
            if taken_at >= now - length_s and taken_at < now:
                return taken_at, snap
        return None

    async def begin(self, metrics: list[tuple[str, str]], *, length_s: float,
                    now: float | None = None) -> dict[str, Any]:
        """The ``peers`` record of a window's baseline for these (app, environment), the
        window starting ``now`` (default: the clock's now)."""
        now = self.clock() if now is None else now
        record: dict[str, Any] = {}
        for app, environment in sorted(set(metrics)):
            start = await self.latest(app, environment)
            found = self.before(app, environment, now=now, length_s=length_s)
            record[peer_key(app, environment)] = {
                "start": start, "before": found[1] if found else None,
                "before_s": round(now - found[0], 3) if found else 0.0}
        return record
