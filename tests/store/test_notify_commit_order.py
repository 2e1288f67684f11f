"""Notifications on PostgreSQL, where ids are handed out before commit: an event whose id
is lower than one already committed (two requests writing at once) is still sent."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from entrega.config import load_config
from entrega.controller.notify import COMMIT_GRACE_S, Notifier
from entrega.store.database import Store
from entrega.store.models import Event
from entrega.store.repository import Repository

pytestmark = pytest.mark.real

CONFIG = """\
app: shop
store: {{url: "{url}"}}
run: {{command: "true"}}
notify:
  - webhook: {{url: "http://127.0.0.1:9/hook", events: ["*"]}}
environments:
  - name: production
    router: {{kind: embedded, listen: "127.0.0.1:1"}}
"""


def test_an_event_committed_after_a_later_id_is_not_skipped(
        tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "entrega.yaml"
    path.write_text(CONFIG.format(url=postgres_url))
    config = load_config(path)
    store = Store(postgres_url)
    store.migrate()
    repo = Repository(store)
    notifier = Notifier(config, repo)
    repo.set_cursor("notify", 0)

    with store.session() as slow:  # a request that took its id first, commits last
        slow.add(Event(time=time.time(), app="shop", kind="first", actor="t", message="1",
                       data={}))
        slow.flush()
        repo.add_event(app="shop", kind="second", actor="t", message="2")
        notifier.scan()  # sees only "second", too young for the cursor to pass it
    time.sleep(COMMIT_GRACE_S + 0.1)
    notifier.scan()

    sent = sorted(n.payload["event"] for n in repo.notifications())
    assert sent == ["first", "second"]
    store.close()
