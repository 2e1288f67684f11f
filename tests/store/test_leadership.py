"""Leader election on a real PostgreSQL: one leader, fenced writes, takeovers.

Each test has a fresh database of the session's throwaway cluster (bench/postgres.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from entrega.errors import NotLeader
from entrega.store.database import Store
from entrega.store.leadership import Election
from entrega.store.repository import AnalysisRecord, Repository
from entrega.waiting import wait_until_sync

pytestmark = pytest.mark.real

LEASE_S = 1.0


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    store = Store(postgres_url)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def elections(postgres_url: str) -> Iterator[list[Election]]:
    made: list[Election] = []
    yield made
    for election in made:
        election.close()


def election(made: list[Election], url: str, name: str) -> Election:
    made.append(Election(url, identity=name, address=f"http://{name}:7070", lease_s=LEASE_S))
    return made[-1]


def write_event(store: Store, message: str) -> None:
    Repository(store).add_event(app="shop", kind="test", actor="test", message=message)


def test_one_leads_the_others_stand_by_and_see_who(
        pg_store: Store, elections: list[Election]) -> None:
    a = election(elections, pg_store.url, "a")
    b = election(elections, pg_store.url, "b")
    assert a.campaign() is True
    assert b.campaign() is False and not b.holds()
    leader = b.leader()
    assert (leader.epoch, leader.holder, leader.address) == (1, "a", "http://a:7070")
    assert a.holds() and a.renew()


def test_a_leader_writes_with_its_epoch_a_standby_cannot_write(
        pg_store: Store, elections: list[Election], postgres_url: str) -> None:
    a = election(elections, pg_store.url, "a")
    b = election(elections, pg_store.url, "b")
    assert a.campaign()
    pg_store.fence = a.fence
    write_event(pg_store, "by the leader")
    standby_store = Store(postgres_url)
    standby_store.fence = b.fence
    with pytest.raises(NotLeader):
        write_event(standby_store, "by the standby")
    standby_store.close()
    events = Repository(pg_store).events("shop")
    assert [(e.message, e.epoch) for e in events] == [("by the leader", 1)]


def test_a_standby_cannot_write_a_rollout_s_state_or_an_analysis_verdict(
        pg_store: Store, elections: list[Election]) -> None:
    """The controller's hot writes are statements built once on the tables (not the
    mapped classes): the fence sees them too."""
    a = election(elections, pg_store.url, "a")
    b = election(elections, pg_store.url, "b")
    assert a.campaign()
    pg_store.fence = b.fence
    with pytest.raises(NotLeader):
        Repository(pg_store).save_transition(
            1, state={}, phase="progressing", events=[], actor="controller",
            analysis=AnalysisRecord(1, "pass", {}))


def test_a_resigned_leader_is_replaced_at_once_and_its_writes_are_refused(
        pg_store: Store, elections: list[Election]) -> None:
    a = election(elections, pg_store.url, "a")
    b = election(elections, pg_store.url, "b")
    assert a.campaign()
    pg_store.fence = a.fence
    a.resign()
    assert b.campaign(), "the lock of a leader that resigned is free at once"
    with pytest.raises(NotLeader):
        write_event(pg_store, "after resigning")
    assert b.leader().epoch == 2


def test_a_leader_that_stops_renewing_loses_the_lock_after_the_lease(
        pg_store: Store, elections: list[Election]) -> None:
    """A paused leader (no renewal, its session idle): the database ends its session after
    the lease and frees the lock; it knows it does not lead after half the lease."""
    a = election(elections, pg_store.url, "a")
    b = election(elections, pg_store.url, "b")
    assert a.campaign()
    pg_store.fence = a.fence
    started = time.monotonic()
    assert wait_until_sync(lambda: not a.holds(), timeout_s=LEASE_S)
    assert time.monotonic() - started <= LEASE_S / 2 + 0.2
    with pytest.raises(NotLeader, match="lease ran out"):
        write_event(pg_store, "while paused")
    assert wait_until_sync(b.campaign, timeout_s=LEASE_S * 5, interval_s=0.1)
    assert not a.renew(), "the paused leader's session was ended by the database"
    assert b.leader().epoch == 2


def test_a_renewing_leader_keeps_the_lead(pg_store: Store, elections: list[Election]) -> None:
    a = election(elections, pg_store.url, "a")
    b = election(elections, pg_store.url, "b")
    assert a.campaign()
    a.start_renewing()
    deadline = time.monotonic() + LEASE_S * 3
    while time.monotonic() < deadline:
        assert a.holds()
        assert not b.campaign()
        time.sleep(0.1)


def test_a_write_in_flight_when_the_lead_changes_is_not_committed(
        pg_store: Store, elections: list[Election], postgres_url: str) -> None:
    """The old leader read its epoch FOR SHARE before the new one took the lock: the new
    leader's epoch waits for that transaction; a fenced write that starts after the new
    epoch is committed reads it and gives up. Either way, no write of the old epoch lands
    after the new epoch leads."""
    a = election(elections, pg_store.url, "a")
    assert a.campaign()
    a.start_renewing()
    pg_store.fence = a.fence
    entered, release = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def slow_write() -> None:
        try:
            with pg_store.session() as session:
                write_event_in(session)
                entered.set()
                release.wait(5)
            outcome["committed_at"] = time.time()
        except NotLeader as exc:
            outcome["refused"] = exc

    def write_event_in(session: object) -> None:
        from entrega.store.models import Event
        session.add(Event(time=time.time(), app="shop", kind="test",  # type: ignore[attr-defined]
                          actor="test", message="in flight", data={}))
        session.flush()  # type: ignore[attr-defined]

    writer = threading.Thread(target=slow_write)
    writer.start()
    assert entered.wait(5)
    # Another server bumps the epoch (the old leader's lock is broken by hand, as the
    # database does to a paused session): it must wait for the share lock.
    other = Store(postgres_url)
    bumped: dict[str, float] = {}

    def take_over() -> None:
        with other.engine.begin() as connection:
            connection.execute(text("UPDATE leadership SET epoch = epoch + 1 WHERE id = 1"))
        bumped["at"] = time.time()

    taker = threading.Thread(target=take_over)
    taker.start()
    time.sleep(0.3)
    assert "at" not in bumped, "the new epoch did not wait for the old leader's transaction"
    release.set()
    writer.join(5)
    taker.join(5)
    other.close()
    assert "committed_at" in outcome, f"the write in flight was refused: {outcome}"
    assert [(e.message, e.epoch) for e in Repository(pg_store).events("shop")] == [
        ("in flight", 1)]
    # From now on the old leader's writes are refused.
    with pytest.raises(NotLeader, match="another server leads"):
        write_event(pg_store, "after the new epoch")


def test_sqlite_has_no_election_and_events_carry_no_epoch(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    store.migrate()
    assert not store.shared
    write_event(store, "alone")
    [event] = Repository(store).events("shop")
    assert event.epoch is None
    store.close()
