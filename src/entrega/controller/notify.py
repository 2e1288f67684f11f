"""Outgoing webhooks: an outbox in the store, delivered in the background.

Events are turned into outbox rows by a cursor over the event log, so nothing is sent
twice or skipped across restarts; rows are retried with exponential backoff (1 s, 2 s,
4 s... capped at 5 min) until ``max_attempts``. Delivery runs in a task of its own: a slow
or dead receiver never delays a rollout. The payload carries a Slack-compatible ``text``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict

from entrega.config import Config
from entrega.store.models import Event
from entrega.store.repository import Repository
from entrega.waiting import stop_task, wait_event

log = logging.getLogger("entrega.notify")

CURSOR = "notify"
BACKOFF_CAP_S = 300.0
#: How often the outbox is looked at when nothing else wakes the notifier.
POLL_S = 0.5
#: On PostgreSQL, how old an event must be before the cursor passes it (see ``scan``).
COMMIT_GRACE_S = 1.0


class WebhookPayload(BaseModel):
    """The JSON body a webhook receives: an interface (receivers parse it), stored in the
    outbox as it will be sent, so a retry after a restart sends the same bytes."""

    model_config = ConfigDict(frozen=True)

    #: one line for chat tools (Slack's ``text``)
    text: str
    #: the event's kind (``vocabulary.EventKind``), what ``notify[].webhook.events`` selects
    event: str
    app: str
    environment: str | None
    version: str | None
    rollout_id: int | None
    actor: str
    message: str
    #: Unix seconds
    time: float
    event_id: int


def payload_for(app: str, event: Event) -> dict[str, Any]:
    where = f" {event.environment}" if event.environment else ""
    version = f" {event.version}" if event.version else ""
    return WebhookPayload(
        text=f"[{app}{where}]{version}: {event.message}", event=event.kind, app=app,
        environment=event.environment, version=event.version, rollout_id=event.rollout_id,
        actor=event.actor, message=event.message, time=event.time, event_id=event.id,
    ).model_dump(mode="json")


class Notifier:
    def __init__(self, config: Config, repo: Repository) -> None:
        self.config = config
        self.repo = repo
        self.hooks = [n.webhook for n in config.notify]
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        #: False on a server that does not lead (any more): nothing is sent
        self.may_act: Callable[[], bool] = lambda: True

    def start(self) -> None:
        if not self.hooks:
            return
        if self.repo.cursor(CURSOR) is None:
            # First start with notifications: history is not news.
            self.repo.set_cursor(CURSOR, self.repo.last_event_id())
        self._task = asyncio.create_task(self._run(), name="entrega-notify")

    def use(self, config: Config) -> None:
        """Send by ``config``'s hooks from the next event on (a reloaded config). Rows
        already in the outbox keep their URL; a hook that is gone gets one last attempt."""
        self.config = config
        self.hooks = [n.webhook for n in config.notify]
        if self._task is None or self._task.done():
            self.start()

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        await stop_task(self._task)

    def scan(self) -> None:
        """Turn new events into outbox rows (one transaction with the cursor)."""
        cursor = self.repo.cursor(CURSOR) or 0
        while True:
            events = self.repo.events_after(cursor)
            if self.repo.store.shared:
                # PostgreSQL hands ids out before commit: an event with a lower id may
                # commit just after a higher one (two requests writing at once), and a
                # cursor past it would skip it for good. Events younger than the grace
                # wait for the next scan; a transaction of the leader lasts milliseconds.
                horizon = time.time() - COMMIT_GRACE_S
                young = next((i for i, e in enumerate(events) if e.time > horizon), None)
                events = events if young is None else events[:young]
            if not events:
                return
            rows = []
            for event in events:
                for hook in self.hooks:
                    if "*" in hook.events or event.kind in hook.events:
                        rows.append((event.id, hook.url, payload_for(self.config.app, event)))
            cursor = events[-1].id
            self.repo.enqueue_notifications(rows, (CURSOR, cursor))

    async def deliver_due(self, client: httpx.AsyncClient) -> None:
        now = time.time()
        due = self.repo.due_notifications(now)
        if due:
            await asyncio.gather(*(self._deliver(client, n.id, n.url, n.payload, n.attempts)
                                   for n in due))

    async def _deliver(self, client: httpx.AsyncClient, notification_id: int, url: str,
                       payload: dict[str, Any], attempts: int) -> None:
        hook = next((h for h in self.hooks if h.url == url), None)
        timeout = hook.timeout_s if hook else 5.0
        max_attempts = hook.max_attempts if hook else 1
        error: str | None = None
        if not self.may_act():
            return  # a leader that woke from a pause: the next leader sends it
        try:
            # The row's id names the delivery: a receiver can drop a repeat (a leader
            # killed between sending and recording it; delivery is at least once).
            response = await client.post(url, json=payload, timeout=timeout,
                                         headers={"X-Entrega-Delivery": str(notification_id)})
            if response.status_code >= 300:
                error = f"HTTP {response.status_code}"
        except httpx.TimeoutException:
            error = f"no answer within {timeout:g} s"
        except httpx.HTTPError as exc:  # in words: the error is shown to operators
            error = f"the request failed ({exc})" if str(exc) else "the request failed"
        if error is None:
            self.repo.record_delivery(notification_id, ok=True, error=None, retry_at=None)
            return
        retry_at = None
        if attempts + 1 < max_attempts:
            retry_at = time.time() + min(BACKOFF_CAP_S, 2.0 ** attempts)
        log.warning("notification %s to %s failed (attempt %d): %s", notification_id, url,
                    attempts + 1, error)
        self.repo.record_delivery(notification_id, ok=False, error=error, retry_at=retry_at)

    async def _run(self) -> None:
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                self._wake.clear()
                try:
                    self.scan()
                    await self.deliver_due(client)
                except Exception:  # noqa: BLE001 - notifying must never stop
                    log.exception("notification pass failed")
                next_at = self.repo.next_notification_at()
                delay = POLL_S if next_at is None else min(POLL_S, next_at - time.time())
                await wait_event(self._wake, timeout_s=max(0.05, delay))
