"""The webhook body is an interface: receivers parse it. Its fields and their values are
fixed here, whatever the code that builds them."""

from __future__ import annotations

from entrega.controller.notify import WebhookPayload, payload_for
from entrega.store.models import Event
from entrega.vocabulary import EventKind


def test_a_rollback_event_becomes_this_exact_body() -> None:
    event = Event(id=42, time=1700000000.5, app="shop", environment="production",
                  version="1.2.0", rollout_id=7, kind=EventKind.ROLLED_BACK,
                  actor="controller", message="rolling back to 1.1.0: analysis failed",
                  data={})
    body = payload_for("shop", event)
    assert body == {
        "text": "[shop production] 1.2.0: rolling back to 1.1.0: analysis failed",
        "event": "rolled_back", "app": "shop", "environment": "production",
        "version": "1.2.0", "rollout_id": 7, "actor": "controller",
        "message": "rolling back to 1.1.0: analysis failed", "time": 1700000000.5,
        "event_id": 42}
    assert type(body["event"]) is str  # stored in the outbox as JSON, sent as is
    assert WebhookPayload.model_validate(body).model_dump(mode="json") == body


def test_an_app_wide_event_has_no_environment_or_version() -> None:
    event = Event(id=1, time=5.0, app="shop", environment=None, version=None,
                  rollout_id=None, kind="pruned", actor="controller", message="pruned",
                  data={})
    body = payload_for("shop", event)
    assert body["text"] == "[shop]: pruned"
    assert body["environment"] is None and body["version"] is None
