"""The analysis checks a controller keeps from the store for a few seconds.

A canary in its analysis is checked every second; most checks move only their own
bookkeeping (how many checks, when the next one is, the latest verdict's words:
``rollouts/analysing.py``, ``CHECK_BOOKKEEPING``). A thousand rollouts writing that every
second were a thousand transactions a second, the larger part of one server's CPU
(``bench/scale.py``). Such a check is kept in memory instead and written with the next
change that matters (a step, a failed check, a metric's evidence, any event) or once
up to ``STORE_WRITE_INTERVAL_S`` have passed since the last write and ``KEEP_CHECKS``
checks were kept, together with its verdict. The second condition is for a loop that
lags: its checks come late, and with a time limit alone every late check would be a
write, and the writes more lag. "Up to": each write draws how long its successor waits
(four fifths of the interval to all of it), so rollouts that began together (a release
group, a benchmark) do not all write in the same second, every few seconds.

Nothing of the evidence waits: it is the window's baseline (stored when the window
begins) and the router's cumulative counters, judged afresh at every check, and what a
check concluded from them (``passed_metrics``, ``failures``) is written at once. A crash
loses at most those seconds of bookkeeping: the next controller checks again at once and
judges the same evidence. Commands write the store directly; the controller knows from
the row's ``updated_at`` whether anyone wrote it since its own last write, and a row
someone else wrote wins over what it kept.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from entrega.store.models import Rollout

if TYPE_CHECKING:
    from entrega.store.repository import Bookkeeping

#: A check that moved only its bookkeeping is kept while the rollout's last write is less
#: than this old (at most; four fifths of it at least). The store's
#: ``status`` lags by as much on a standby; the leader answers from what it keeps...
STORE_WRITE_INTERVAL_S = 5.0
#: ... or fewer checks than this were kept since (a loop that lags writes every fifth)...
KEEP_CHECKS = 5
#: ... and never longer than this.
MAX_KEPT_S = 30.0


@dataclass
class _Written:
    at: float  #: the controller's clock when it last wrote the row
    updated_at: float  #: the row's ``updated_at`` as written then
    kept: dict[str, Any] | None = None  #: a newer state, ahead only in bookkeeping
    checks: int = 0  #: checks kept since the write
    #: how long after ``at`` a check may be kept whatever the count (module docstring)
    keep_for: float = field(
        default_factory=lambda: random.uniform(0.8, 1.0) * STORE_WRITE_INTERVAL_S)


@dataclass(frozen=True)
class Unwritten:
    """A state kept in memory, to write only if the row is still as last written."""

    rollout_id: int
    updated_at: float
    state: dict[str, Any]


class WriteBack:
    """Per rollout: when the controller last wrote it, and what it keeps unwritten."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._rows: dict[int, _Written] = {}
        self.clock = clock

    def may_keep(self, rollout_id: int, now: float) -> bool:
        """A check that moved only its bookkeeping may wait (the row was written by this
        controller recently: module docstring)."""
        written = self._rows.get(rollout_id)
        if written is None:
            return False
        age = now - written.at
        return age < written.keep_for or (written.checks < KEEP_CHECKS
                                                and age < MAX_KEPT_S)

    def keep(self, rollout_id: int, state: dict[str, Any]) -> None:
        written = self._rows[rollout_id]
        written.kept, written.checks = state, written.checks + 1

    def written(self, rollout_id: int, *, at: float, updated_at: float) -> None:
        self._rows[rollout_id] = _Written(at, updated_at)

    def updated_at(self, rollout_id: int) -> float | None:
        """The row's ``updated_at`` as this controller last wrote it (None: it did not)."""
        written = self._rows.get(rollout_id)
        return written.updated_at if written else None

    def written_kept(self, rollout_id: int, write: Bookkeeping, *, updated_at: float) -> None:
        """``write`` (what was kept, ``batched.py``) is in the store now, unless the row
        was written since it was handed over (then ``merged`` finds the row's
        ``updated_at`` is not ours, and the store's row wins)."""
        written = self._rows.get(rollout_id)
        if written is None or written.updated_at != write.if_updated_at:
            return  # forgotten (ended), or written directly since
        newer = written.kept if written.kept is not write.state else None
        self._rows[rollout_id] = _Written(self.clock(), updated_at, kept=newer)

    def merged(self, row: Rollout) -> Rollout:
        """``row`` as just read from the store, with the state kept since this
        controller's last write when nobody else wrote it since (else theirs wins)."""
        written = self._rows.get(row.id)
        if written is None or written.kept is None:
            return row
        if row.updated_at == written.updated_at:
            row.state = written.kept
        else:
            written.kept = None
        return row

    def live_state(self, row: Rollout) -> dict[str, Any]:
        """The state of ``row`` (read from the store) as this controller knows it now."""
        written = self._rows.get(row.id)
        if written is not None and written.kept is not None \
                and row.updated_at == written.updated_at:
            return written.kept
        return row.state

    def unwritten(self) -> list[Unwritten]:
        """Every state kept and not written yet (a stopping controller writes them)."""
        return [Unwritten(rollout_id, w.updated_at, w.kept)
                for rollout_id, w in self._rows.items() if w.kept is not None]

    def forget(self, rollout_id: int) -> None:
        """The rollout ended (its last state was written with its final event)."""
        self._rows.pop(rollout_id, None)
