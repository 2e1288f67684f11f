"""Analysis checks that moved only their bookkeeping are kept a few seconds, not written
at every check (controller/writeback.py): the pure rules by table, then a controller on
a real data plane: the store lags by those checks, ``status`` does not, and a stopping
controller writes them with their verdict."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from entrega.controller.writeback import KEEP_CHECKS, MAX_KEPT_S, STORE_WRITE_INTERVAL_S, WriteBack
from entrega.rollouts.model import state_from_dict
from entrega.service import Service
from entrega.views import DeployStarted
from tests.controller.conftest import artifact, wait_until
from tests.controller.test_restart_events import released
from tests.controller.test_restart_repairs_first import CANARY


@dataclass
class Row:
    """What WriteBack reads of a rollout row as the store returns it."""

    id: int
    updated_at: float
    state: dict[str, Any] = field(default_factory=dict)


@pytest.mark.parametrize(("age_s", "kept_checks", "keeps"), [
    (0.0, 0, True),
    (0.8 * STORE_WRITE_INTERVAL_S - 0.1, 100, True),  # young: kept however many checks
    (STORE_WRITE_INTERVAL_S + 1, KEEP_CHECKS - 1, True),  # a loop that lags: five checks
    (STORE_WRITE_INTERVAL_S + 1, KEEP_CHECKS, False),
    (STORE_WRITE_INTERVAL_S, 100, False),
    (MAX_KEPT_S, 0, False),  # never longer than this
])
def test_a_check_is_kept_while_the_last_write_is_young_or_few_checks_were_kept(
        age_s: float, kept_checks: int, keeps: bool) -> None:
    writeback = WriteBack()
    writeback.written(7, at=100.0, updated_at=1.5)
    for _ in range(kept_checks):
        writeback.keep(7, {"checks": 1})
    assert writeback.may_keep(7, 100.0 + age_s) is keeps


def test_a_rollout_never_written_by_this_controller_is_written() -> None:
    assert not WriteBack().may_keep(7, 0.0)  # after a start, the first check writes


def test_a_row_read_again_keeps_the_kept_state_unless_someone_else_wrote_it() -> None:
    writeback = WriteBack()
    writeback.written(7, at=100.0, updated_at=1.5)
    writeback.keep(7, {"checks": 3})
    as_written = Row(7, updated_at=1.5, state={"checks": 0})
    assert writeback.live_state(as_written) == {"checks": 3}
    assert writeback.merged(as_written).state == {"checks": 3}
    assert [u.rollout_id for u in writeback.unwritten()] == [7]

    # a command wrote the row since: its state wins, what was kept is dropped
    commanded = Row(7, updated_at=2.5, state={"checks": 0, "promote_requested": True})
    assert writeback.merged(commanded).state == {"checks": 0, "promote_requested": True}
    assert writeback.live_state(Row(7, updated_at=1.5)) == {}
    assert writeback.unwritten() == []


def test_a_write_drops_what_was_kept_and_an_ended_rollout_is_forgotten() -> None:
    writeback = WriteBack()
    writeback.written(7, at=100.0, updated_at=1.5)
    writeback.keep(7, {"checks": 3})
    writeback.written(7, at=101.0, updated_at=2.0)
    assert writeback.unwritten() == []
    writeback.forget(7)
    assert not writeback.may_keep(7, 101.0)


@pytest.mark.real
async def test_the_store_gets_checks_late_status_at_once_and_a_stop_writes_them(
        services: Callable[[str], Service]) -> None:
    service = services(CANARY)
    controller = service.controller
    await controller.start()
    try:
        await released(service, "v1")
        root = service.config.base_dir
        await service.create_release(version="v2", artifact=artifact(root, "v2"), meta={},
                                     actor="ci")
        started = await service.deploy(environment="production", version="v2", actor="ci")
        assert isinstance(started, DeployStarted)

        def live_checks() -> int:
            analysis = service.status().environments[0].rollout.analysis  # type: ignore[union-attr]
            return analysis.checks if analysis is not None else 0

        # no traffic: each check is inconclusive, nothing but the bookkeeping moves
        await wait_until(lambda: live_checks() >= 3, what="three analysis checks")
        live = live_checks()
        assert live < KEEP_CHECKS, "the test must look before a write is due"
        stored = state_from_dict(service.repo.rollout(started.rollout.id).state)  # type: ignore[union-attr]
        assert stored.analysis is not None and stored.analysis.checks < live
    finally:
        await controller.stop()
    stored = state_from_dict(service.repo.rollout(started.rollout.id).state)  # type: ignore[union-attr]
    assert stored.analysis is not None and stored.analysis.checks >= live
    run = service.repo.analysis_run(started.rollout.id, stored.analysis.window)
    assert run is not None and run.verdict == stored.analysis.last_verdict
