"""A pooled PostgreSQL connection idle for a while is pinged before use (a database
restarted under a running server, a connection its administrator ended), and one in use
a moment ago is not: a round trip more per transaction was a third of the time of a
thousand rollouts checked every second (``store/database.py``, ``bench/scale.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from entrega.store import database
from entrega.store.database import Store

pytestmark = pytest.mark.real


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    store = Store(postgres_url)
    yield store
    store.close()


def backend_pid(store: Store) -> int:
    with store.session() as s:
        return int(s.scalar(text("SELECT pg_backend_pid()")))


def test_a_connection_ended_while_idle_in_the_pool_is_replaced_before_use(
        pg_store: Store, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "PING_IDLE_S", 0.0)  # every checkout counts as idle
    pooled = backend_pid(pg_store)
    other = Store(postgres_url)
    with other.session() as s:
        assert s.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pooled})
    other.close()
    # the pool still holds the ended connection: the ping finds it dead, a new one serves
    assert backend_pid(pg_store) != pooled


def test_a_connection_just_used_is_not_pinged_one_idle_is(
        pg_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    pings: list[object] = []
    ping = pg_store.engine.dialect.do_ping
    monkeypatch.setattr(pg_store.engine.dialect, "do_ping",
                        lambda connection: pings.append(connection) or ping(connection))
    backend_pid(pg_store)
    backend_pid(pg_store)
    assert pings == []
    monkeypatch.setattr(database, "PING_IDLE_S", 0.0)
    backend_pid(pg_store)
    assert len(pings) == 1
