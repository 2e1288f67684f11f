"""The store's words are enums whose values are the strings already in existing rows,
webhook payloads and API JSON: renaming a member is free, changing a value is not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import entrega.store
from entrega.store.models import ACTIVE_ROLLOUT
from entrega.vocabulary import (
    FINAL_EVENT,
    TERMINAL_PHASES,
    EventKind,
    NotificationStatus,
    Phase,
    RequestStatus,
)


def test_phases_keep_their_stored_values() -> None:
    assert [p.value for p in Phase] == [
        "pending", "starting", "progressing", "verifying", "paused", "scaling_down",
        "succeeded", "rolled_back", "failed"]
    assert {p for p in Phase if p.terminal} == set(TERMINAL_PHASES) == {
        "succeeded", "rolled_back", "failed"}


def test_event_kinds_keep_their_stored_values() -> None:
    assert {k.value for k in EventKind} == {
        "release", "rollout", "step", "command", "traffic", "promoted", "rolled_back",
        "failed", "verified", "verification_failed", "analysis", "stopped",
        "instance_restarted", "router_restarted", "adopted", "error", "queued", "forced",
        "approval_needed", "approved", "superseded", "released", "pruned",
        "config_reloaded", "config_refused", "config_applied", "group"}
    assert FINAL_EVENT == {"succeeded": "promoted", "rolled_back": "rolled_back",
                           "failed": "failed"}


def test_statuses_keep_their_stored_values() -> None:
    assert {s.value for s in RequestStatus} == {
        "queued", "awaiting_approval", "started", "superseded", "cancelled"}
    assert {s.value for s in NotificationStatus} == {"pending", "sent", "failed"}


def test_the_one_active_rollout_index_is_the_migrations() -> None:
    """The partial index is built from TERMINAL_PHASES; migration 0004 wrote it out."""
    path = (Path(entrega.store.__file__).parent / "migrations" / "versions"
            / "0004_one_active_rollout.py")
    spec = importlib.util.spec_from_file_location("migration_0004", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert ACTIVE_ROLLOUT == migration.ACTIVE_ROLLOUT
