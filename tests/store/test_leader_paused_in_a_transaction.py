"""A leader frozen inside a fenced transaction must not hold the next leader back.

Every write of the leader first reads the leadership row ``FOR SHARE``
(``Election.fence``); the next leader's ``UPDATE leadership SET epoch = epoch + 1`` waits
for that share lock. A leader paused (SIGSTOP, a long GC) between its fence and its commit
leaves its transaction idle and the lock held: unless the database ends such a
transaction after the lease (``idle_in_transaction_session_timeout``, set on the leader's
pooled sessions by ``LeaderRole``), no standby can lead until the paused one wakes up.
``python -m bench.failover`` showed it: one pause in a dozen had no takeover in 30 s.
"""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
from sqlalchemy.exc import SQLAlchemyError

from entrega.plane.leader import LeaderRole
from entrega.store.database import Store
from entrega.store.leadership import Election

pytestmark = pytest.mark.real

LEASE_S = 1.0


def test_a_standby_leads_while_the_old_leader_sleeps_inside_a_fenced_transaction(
        postgres_url: str) -> None:
    store = Store(postgres_url)
    store.migrate()
    old = Election(postgres_url, identity="old", address="http://127.0.0.1:1",
                   lease_s=LEASE_S)
    new = Election(postgres_url, identity="new", address="http://127.0.0.1:2",
                   lease_s=LEASE_S)
    try:
        # what the server does for the leader it may become (plane/leader.py)
        LeaderRole(cast(Any, None), store, old)
        assert old.campaign()
        store.fence = old.fence
        # Woken up, the old leader's transaction is gone: its commit fails, nothing of it
        # is written.
        with pytest.raises(SQLAlchemyError, match="idle-in-transaction timeout"), \
                store.session() as frozen:
            assert old.fence(frozen) == old.epoch
            # Frozen here: no renewal, no commit; the transaction holds the share lock.
            deadline = time.monotonic() + 6 * LEASE_S
            while not new.campaign() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert new.epoch == 2, "no standby could lead while the old leader slept " \
                                   "inside a transaction"
            assert time.monotonic() < deadline
    finally:
        for election in (old, new):
            election.close()
        store.close()
