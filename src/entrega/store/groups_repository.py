"""Release groups in the store: their spec and state (``groups/model.py``, as JSON) and
the rollouts they started (``rollouts.group_id``). Like :class:`Repository`, every method
is one short transaction."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from entrega.errors import Conflict
from entrega.store.database import Store
from entrega.store.models import ReleaseGroup, Rollout


class GroupRepository:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, *, name: str, phase: str, spec: dict[str, Any], state: dict[str, Any],
               actor: str) -> ReleaseGroup:
        now = time.time()
        with self.store.session() as s:
            group = ReleaseGroup(name=name, phase=phase, spec=spec, state=state,
                                 created_at=now, updated_at=now, finished_at=None,
                                 created_by=actor)
            s.add(group)
            try:
                s.flush()
            except IntegrityError:
                raise Conflict(f"a release group named {name} exists already",
                               hint="a group's name is its version: give the new one its "
                                    "own") from None
            return group

    def get(self, name: str) -> ReleaseGroup | None:
        with self.store.session() as s:
            return s.scalar(select(ReleaseGroup).where(ReleaseGroup.name == name))

    def groups(self, *, limit: int = 50) -> list[ReleaseGroup]:
        with self.store.session() as s:
            return list(s.scalars(select(ReleaseGroup).order_by(ReleaseGroup.id.desc())
                                  .limit(limit)))

    def active(self) -> list[ReleaseGroup]:
        with self.store.session() as s:
            return list(s.scalars(select(ReleaseGroup).where(
                ReleaseGroup.finished_at.is_(None)).order_by(ReleaseGroup.id)))

    def save(self, group_id: int, *, phase: str, state: dict[str, Any],
             finished: bool) -> None:
        now = time.time()
        with self.store.session() as s:
            group = s.get(ReleaseGroup, group_id)
            assert group is not None
            group.phase, group.state, group.updated_at = phase, state, now
            if finished and group.finished_at is None:
                group.finished_at = now

    def rollouts(self, group_id: int) -> list[Rollout]:
        """The rollouts the group started, oldest first."""
        with self.store.session() as s:
            return list(s.scalars(select(Rollout).where(Rollout.group_id == group_id)
                                  .order_by(Rollout.id)))
