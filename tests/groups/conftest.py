"""Builders for the release group tables.

Tables read as (spec, state, observed) -> (group phase, environment, member phases there,
actions). Every test goes through the public ``entrega.groups.advance``.
"""

from __future__ import annotations

from typing import Any

from entrega.groups import advance
from entrega.groups.model import (
    DeployMember,
    GroupPhase,
    GroupSpec,
    GroupState,
    GroupTransition,
    Member,
    MemberPhase,
    MemberState,
    ObservedGroup,
    ObservedMember,
    PromoteMember,
    RevertMember,
)

#: an arbitrary wall-clock origin
T0 = 1_000.0

API = Member("api", "v41")
WORKER = Member("worker", "v9")
WEB = Member("web", "v17", depends_on=("api",))
#: api and worker are independent (layer 0); web calls the api (layer 1)
SHOP = GroupSpec("shop", "2026.12.1", (API, WORKER, WEB), ("staging", "production"))


def group(*members: Member, envs: tuple[str, ...] = ("staging", "production")) -> GroupSpec:
    return GroupSpec("shop", "2026.12.1", members, envs)


def member(phase: str, replaced: str | None = "old", **kw: Any) -> MemberState:
    return MemberState(MemberPhase(phase), replaced=replaced, **kw)


def state(phase: str = "progressing", env: int = 0, members: dict[str, Any] | None = None,
          **kw: Any) -> GroupState:
    """A group in ``env`` (an index into the environments); ``members`` maps environment
    -> app -> a MemberState or a member phase (replacing "old")."""
    stored = {e: {app: m if isinstance(m, MemberState) else member(m) for app, m in apps.items()}
              for e, apps in (members or {}).items()}
    return GroupState(GroupPhase(phase), environment_index=env, members=stored, **kw)


def seen(env: str | None = None, **apps: ObservedMember | str) -> ObservedGroup:
    """An observation of ``env``: app -> an ObservedMember or its rollout's outcome."""
    return ObservedGroup(env, {app: o if isinstance(o, ObservedMember) else
                               ObservedMember(outcome=o)  # type: ignore[arg-type]
                               for app, o in apps.items()})


def go(spec: GroupSpec, st: GroupState, obs: ObservedGroup | None = None, *,
       now: float = T0) -> GroupTransition:
    return advance(spec, st, obs if obs is not None else ObservedGroup(), now=now)


def acts(actions: Any) -> list[str]:
    """Actions as words: ``deploy api v41 to staging``, ``revert web in production to v16``."""
    words = []
    for a in actions:
        if isinstance(a, DeployMember):
            words.append(f"deploy {a.app} {a.version} to {a.environment}")
        elif isinstance(a, RevertMember):
            words.append(f"revert {a.app} in {a.environment} to {a.to_version}")
        elif isinstance(a, PromoteMember):
            words.append(f"promote {a.app} in {a.environment}")
        else:  # pragma: no cover - a new action kind needs a word here
            raise AssertionError(a)
    return words


def summary(spec: GroupSpec, t: GroupTransition) -> tuple[str, str, dict[str, str], list[str]]:
    """(group phase, its environment, member phases there, actions)."""
    env = spec.environments[t.state.environment_index]
    members = {app: str(m.phase) for app, m in t.state.members.get(env, {}).items()}
    return str(t.state.phase), env, members, acts(t.actions)
