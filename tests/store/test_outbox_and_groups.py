"""The notification outbox, its cursor and release groups in the store, on SQLite and on
PostgreSQL (the ``store`` fixture): the same rows, the same order, the same refusals."""

from __future__ import annotations

import pytest

from entrega.errors import Conflict
from entrega.store import Store
from entrega.store.groups_repository import GroupRepository
from entrega.store.repository import Repository


@pytest.fixture
def repo(store: Store) -> Repository:
    repo = Repository(store)
    repo.sync_app("shop", ["production"])
    return repo


def test_the_outbox_delivers_in_order_and_retries(repo: Repository) -> None:
    assert repo.last_event_id() == 0 and repo.cursor("notify") is None
    for message in ("one", "two", "three"):
        repo.add_event(app="shop", kind="promoted", actor="controller", message=message,
                       environment="production", data={"weight_pct": 100, "ok": True})
    events = repo.events_after(0)
    assert [e.message for e in events] == ["one", "two", "three"]
    assert events[0].data == {"weight_pct": 100, "ok": True}  # JSON, types kept
    assert repo.last_event_id() == events[-1].id

    repo.enqueue_notifications([(e.id, "http://127.0.0.1:9/hook", {"m": e.message})
                                for e in events[:2]], cursor=("notify", events[1].id))
    assert repo.cursor("notify") == events[1].id
    assert [e.message for e in repo.events_after(events[1].id)] == ["three"]
    due = repo.due_notifications(now=float("inf"))
    assert [n.payload for n in due] == [{"m": "one"}, {"m": "two"}]
    first_at = repo.next_notification_at()
    assert first_at is not None and first_at == min(n.next_attempt_at for n in due)

    repo.record_delivery(due[0].id, ok=True, error=None, retry_at=None)
    repo.record_delivery(due[1].id, ok=False, error="HTTP 503", retry_at=first_at + 1.5)
    assert repo.due_notifications(now=first_at + 1.0) == []
    [retried] = repo.due_notifications(now=first_at + 1.5)
    assert (retried.attempts, retried.last_error) == (1, "HTTP 503")
    assert retried.next_attempt_at == first_at + 1.5  # a float column keeps its precision
    repo.record_delivery(retried.id, ok=False, error="gave up", retry_at=None)
    assert repo.next_notification_at() is None
    assert {n.status for n in repo.notifications()} == {"sent", "failed"}
    repo.set_cursor("notify", events[2].id)
    assert repo.cursor("notify") == events[2].id


def test_release_groups_refuse_a_second_name_and_keep_their_rollouts(
        store: Store, repo: Repository) -> None:
    groups = GroupRepository(store)
    group = groups.create(name="2026.12.1", phase="pending", spec={"members": ["shop"]},
                          state={"phase": "pending"}, actor="ci")
    with pytest.raises(Conflict, match="2026.12.1 exists already"):
        groups.create(name="2026.12.1", phase="pending", spec={}, state={}, actor="ci")
    # The refused one rolled its transaction back: the store goes on working.
    other = groups.create(name="2026.12.2", phase="pending", spec={}, state={}, actor="ci")
    assert [g.name for g in groups.groups()] == ["2026.12.2", "2026.12.1"]
    rollout = repo.create_rollout(app="shop", environment="production", version="v1",
                                  from_version=None, strategy="direct", spec={},
                                  state={"phase": "pending"}, actor="ci", reason="",
                                  group_id=group.id)
    assert [r.id for r in groups.rollouts(group.id)] == [rollout.id]
    groups.save(group.id, phase="succeeded", state={"phase": "succeeded"}, finished=True)
    assert [g.id for g in groups.active()] == [other.id]
    saved = groups.get("2026.12.1")
    assert saved is not None and saved.finished_at is not None
    assert saved.state == {"phase": "succeeded"}
