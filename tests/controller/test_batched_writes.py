"""The writes that may wait a moment (controller/batched.py): many rollouts' bookkeeping
and the release samples in one transaction, each row only over what it was derived
from, on SQLite and on PostgreSQL; and an app whose pass reads the store reads all of
its environments with one query (loop.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from bench import scale
from entrega.config.apps import load_apps
from entrega.controller.batched import BatchedWrites
from entrega.controller.writeback import WriteBack
from entrega.errors import NotLeader
from entrega.plane import build_plane
from entrega.store import Store
from entrega.store.models import ReleaseSample
from entrega.store.repository import AnalysisRecord, Repository

ENVIRONMENTS = ["dev", "staging", "production"]


@pytest.fixture
def repo(store: Store) -> Repository:
    repo = Repository(store)
    repo.sync_app("shop", ENVIRONMENTS)
    return repo


def in_analysis(repo: Repository, writeback: WriteBack) -> list[tuple[int, int]]:
    """A rollout in its analysis per environment, last written by ``writeback``'s
    controller: (rollout id, analysis run id)."""
    made = []
    for environment in ENVIRONMENTS:
        rollout = repo.create_rollout(app="shop", environment=environment, version="v2",
                                      from_version="v1", strategy="canary", spec={},
                                      state={"phase": "progressing", "checks": 0},
                                      actor="ci", reason="")
        run = repo.begin_analysis_run(rollout_id=rollout.id, window=1,
                                      metrics=["error-rate"], baseline={})
        updated_at = repo.save_transition(rollout.id, state={"phase": "progressing",
                                                             "checks": 1},
                                          phase="progressing", events=[], actor="controller")
        assert updated_at is not None
        writeback.written(rollout.id, at=0.0, updated_at=updated_at)
        made.append((rollout.id, run.id))
    return made


def sample(environment: str) -> ReleaseSample:
    return ReleaseSample(time=1.0, app="shop", environment=environment, version="v2",
                         router_started_at=0.0, requests=10, errors_5xx=0,
                         latency_buckets=[], latency_sum_ms=0.0, inflight=0, weight=20)


@pytest.fixture
def transactions(store: Store) -> Iterator[list[str]]:
    """The statements that wrote, as the database got them (COMMIT ends each)."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if re.match(r"\s*(UPDATE|INSERT)", statement):
            seen.append(statement.split()[0])

    def commit(_conn: Any) -> None:
        seen.append("COMMIT")

    event.listen(store.engine, "before_cursor_execute", count)
    event.listen(store.engine, "commit", commit)
    yield seen
    event.remove(store.engine, "before_cursor_execute", count)
    event.remove(store.engine, "commit", commit)


def test_many_rollouts_bookkeeping_and_samples_are_one_transaction(
        repo: Repository, transactions: list[str]) -> None:
    writeback, batch = WriteBack(), BatchedWrites(repo)
    made = in_analysis(repo, writeback)
    for rollout_id, run_id in made:
        state = {"phase": "progressing", "checks": 5}
        writeback.keep(rollout_id, state)
        batch.bookkeeping(writeback, rollout_id, state,
                          AnalysisRecord(run_id, "inconclusive", {"checks": 5}))
    batch.samples([sample(e) for e in ENVIRONMENTS])
    transactions.clear()

    batch.flush()

    # three rollouts, three verdicts, three samples: three statements and one commit
    assert transactions == ["UPDATE", "UPDATE", "INSERT", "COMMIT"]
    for rollout_id, run_id in made:
        row = repo.rollout(rollout_id)
        assert row is not None and row.state["checks"] == 5
        assert writeback.merged(row).state["checks"] == 5
        run = repo.analysis_run(rollout_id, 1)
        assert run is not None and run.id == run_id and run.verdict == "inconclusive"
    assert writeback.unwritten() == []  # written: nothing kept any more
    assert batch.waiting == 0 and (batch.flushes, batch.rows) == (1, 6)


def test_a_row_written_since_keeps_what_it_has(repo: Repository) -> None:
    writeback, batch = WriteBack(), BatchedWrites(repo)
    (rollout_id, run_id), *_ = in_analysis(repo, writeback)
    kept = {"phase": "progressing", "checks": 5}
    writeback.keep(rollout_id, kept)
    batch.bookkeeping(writeback, rollout_id, kept, AnalysisRecord(run_id, "inconclusive", {}))
    # a command (another writer) writes the row in between
    repo.save_transition(rollout_id, state={"phase": "paused", "checks": 4}, phase="paused",
                         events=[], actor="alice")

    batch.flush()

    row = repo.rollout(rollout_id)
    assert row is not None and row.phase == "paused" and row.state["checks"] == 4
    assert writeback.merged(row).state == {"phase": "paused", "checks": 4}


def test_a_write_of_the_controller_takes_the_waiting_bookkeeping_and_its_verdict_back(
        repo: Repository, transactions: list[str]) -> None:
    writeback, batch = WriteBack(), BatchedWrites(repo)
    (rollout_id, run_id), *_ = in_analysis(repo, writeback)
    verdict = AnalysisRecord(run_id, "inconclusive", {})
    batch.bookkeeping(writeback, rollout_id, {"checks": 5}, verdict)
    # a newer check without a verdict of its own keeps the waiting one
    batch.bookkeeping(writeback, rollout_id, {"checks": 6}, None)
    assert batch.withdraw(rollout_id) == verdict
    assert batch.withdraw(rollout_id) is None
    transactions.clear()
    batch.flush()
    assert transactions == []  # nothing waited: no transaction at all


def test_a_server_that_leads_no_more_writes_nothing_and_keeps_its_checks(
        repo: Repository, store: Store) -> None:
    writeback, batch = WriteBack(), BatchedWrites(repo)
    (rollout_id, run_id), *_ = in_analysis(repo, writeback)
    writeback.keep(rollout_id, {"checks": 5})
    batch.bookkeeping(writeback, rollout_id, {"checks": 5}, None)

    def lost_the_lead(_session: Any) -> int:
        raise NotLeader("this server lost the lead", leader=None)

    store.fence = lost_the_lead
    batch.flush()
    store.fence = None

    row = repo.rollout(rollout_id)
    assert row is not None and row.state["checks"] == 1
    # still kept: its controller hands it over again with its next check
    assert [u.rollout_id for u in writeback.unwritten()] == [rollout_id]
    assert batch.waiting == 0


@pytest.mark.real
def test_reads_without_a_transaction_refuse_to_write(postgres_url: str) -> None:
    """PostgreSQL's reads run in autocommit, unfenced: a write there would be a bug."""
    store = Store(postgres_url)
    try:
        store.migrate()
        with pytest.raises(RuntimeError, match="a write in a read session"), \
                store.read() as s:
            s.execute(ReleaseSample.__table__.delete())
    finally:
        store.close()


ROLLOUT_READS = re.compile(r"\bFROM (rollouts|environments|deploy_requests)\b")


async def test_a_pass_that_reads_reads_every_environment_of_the_app_at_once(
        tmp_path: Path) -> None:
    """Four environments, each with a canary in its analysis, on the scale benchmark's
    stand-in data plane: a pass that must read them reads them with one query (before:
    one per environment), and the checks' bookkeeping waits for the batch."""
    config = load_apps(scale.write_config(tmp_path, apps=1, environments=4, analysis_s=600,
                                          store_url=f"sqlite:///{tmp_path / 'state.db'}",
                                          real=False))
    plane, store = build_plane(config)
    scale.use_stand_ins(plane)
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if ROLLOUT_READS.search(statement):
            reads.append(statement)

    try:
        await plane.start()
        await scale.release(plane, tmp_path, "v1")
        await scale.release(plane, tmp_path, "v2")
        await scale.deploy_everywhere(plane, "v1")
        await scale.wait_for(lambda: scale.phases(plane, "v1").get("succeeded", 0) == 4,
                             timeout_s=60, what="v1 everywhere")
        await scale.deploy_everywhere(plane, "v2")
        await scale.wait_for(lambda: scale.phases(plane, "v2").get("analysing", 0) == 4,
                             timeout_s=60, what="four canaries in their analysis")
        controller = next(iter(plane)).controller
        event.listen(store.engine, "before_cursor_execute", count)
        await controller.reconcile_once(read_all=True)
        event.remove(store.engine, "before_cursor_execute", count)
        assert len(reads) == 1, reads
        # the server's batch wrote the checks' bookkeeping and samples as they came due
        await scale.wait_for(lambda: controller.batch.flushes > 0, timeout_s=30,
                             what="a batch of bookkeeping written")
    finally:
        await plane.stop()
        store.close()
