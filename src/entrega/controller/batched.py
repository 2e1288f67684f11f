"""The writes that may wait a moment, of every app of a server, in one transaction.

Two kinds of write carry nothing a restart would miss if they came a fraction of a second
later, and a server of many apps makes many of them: an analysis check's bookkeeping
once it is due to be written (``writeback.py``: every rollout in its analysis, every few
seconds) and the routers' release samples (``insights/collector.py``: every app, every
few seconds). Each was a transaction of its own, and on PostgreSQL a transaction is
three round trips more than its statements (BEGIN, COMMIT, the leader's fence): at a
thousand rollouts, two hundred transactions a second, the larger part of the loop's time
(``bench/scale.py``). Here they wait, keyed by rollout, and every ``interval_s`` the
first controller to end a pass writes them all: two statements of many rows.

What a crash loses is what ``writeback.py`` already lets go: seconds of bookkeeping (the
next leader checks again at once and judges the same evidence) and the last sample or
two of a release's traffic (the router's counters are cumulative: the next sample has
them). Nothing that moves a rollout waits here: a step, an event, a verdict that failed
a metric are written by the controller at once, and it first takes back what of that
rollout waits here (``withdraw``), so nothing older is written over them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from entrega.controller.writeback import WriteBack
from entrega.store.insights_repository import InsightsRepository
from entrega.store.models import ReleaseSample
from entrega.store.repository import AnalysisRecord, Bookkeeping, Repository

log = logging.getLogger("entrega.controller")

#: How long a server of many apps lets these writes gather (build_plane). A lone
#: controller writes them at the end of each pass (0: nothing waits for a clock).
PLANE_INTERVAL_S = 0.25


class BatchedWrites:
    def __init__(self, repo: Repository, *, interval_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.repo = repo
        self.insights = InsightsRepository(repo.store)
        self.interval_s = interval_s
        self.clock = clock
        #: rollout id -> (its controller's write-back, what waits to be written)
        self._bookkeeping: dict[int, tuple[WriteBack, Bookkeeping]] = {}
        self._samples: list[ReleaseSample] = []
        self._last_flush = clock()
        #: how many transactions and rows it wrote (tests/controller/test_batched_writes.py)
        self.flushes = 0
        self.rows = 0

    def bookkeeping(self, writeback: WriteBack, rollout_id: int, state: dict[str, Any],
                    analysis: AnalysisRecord | None) -> None:
        """A check's bookkeeping to write over the row as ``writeback`` last wrote it.
        A newer check of the same rollout replaces it (keeping its verdict if it has
        none of its own)."""
        updated_at = writeback.updated_at(rollout_id)
        assert updated_at is not None, "only a row this controller wrote waits here"
        waiting = self._bookkeeping.get(rollout_id)
        if analysis is None and waiting is not None:
            analysis = waiting[1].analysis
        self._bookkeeping[rollout_id] = (
            writeback, Bookkeeping(rollout_id, state, updated_at, analysis))

    def withdraw(self, rollout_id: int) -> AnalysisRecord | None:
        """Take back what of ``rollout_id`` waits (its controller writes the row itself
        now); returns the verdict that waited with it, for that write to carry."""
        waiting = self._bookkeeping.pop(rollout_id, None)
        return waiting[1].analysis if waiting else None

    def samples(self, rows: Sequence[ReleaseSample]) -> int:
        self._samples.extend(rows)
        return len(rows)

    @property
    def waiting(self) -> int:
        return len(self._bookkeeping) + len(self._samples)

    def flush_if_due(self) -> None:
        if self.waiting and self.clock() - self._last_flush >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """Write everything waiting, in one transaction. A failure (the store is down,
        this server leads no more) loses it: each controller still keeps its checks
        (``writeback.py``) and hands them here again with its next check."""
        self._last_flush = self.clock()
        waiting, self._bookkeeping = self._bookkeeping, {}
        samples, self._samples = self._samples, []
        if not waiting and not samples:
            return
        try:
            with self.repo.store.session() as s:
                written_at = self.repo.save_bookkeeping(
                    [w for _, w in waiting.values()], session=s) if waiting else 0.0
                self.insights.add_samples(samples, session=s)
        except Exception as exc:  # noqa: BLE001 - the store down, a lost lease: said, not raised
            log.warning("writing %d checks' bookkeeping and %d release samples: %s",
                        len(waiting), len(samples), exc)
            return
        self.flushes += 1
        self.rows += len(waiting) + len(samples)
        for rollout_id, (writeback, write) in waiting.items():
            writeback.written_kept(rollout_id, write, updated_at=written_at)
