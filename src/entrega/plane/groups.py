"""Release groups: several apps' releases delivered as one by the server of them all.

The coordinator is one asyncio task of the control plane. Each pass, per group in
progress: observe how its members stand in the group's environment (from the store: the
rollouts the group started, each app's current release), apply again what the state says
was issued but did not happen (a crash, an environment busy with another rollout), advance
the pure core (``groups/advance.py``), commit the new state and its events, then apply its
actions through each member app's :class:`~entrega.service.Service`: the same deploy,
abort, rollback and promote a user's CLI calls. So every member rolls out by its own app's
strategy and analysis, in its own app's controller; the group only decides who goes when,
and who goes back.

A group's events are written to every member app's history (kind ``group``), so each app's
``history`` tells the group's story where it touched that app.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from entrega.auth import Caller
from entrega.config import Config
from entrega.errors import EntregaError, InvalidGroup, NotFound
from entrega.groups import advance, layers, unapplied
from entrega.groups.model import (
    DeployMember,
    GroupAction,
    GroupSpec,
    GroupState,
    Member,
    MemberPhase,
    ObservedGroup,
    ObservedMember,
    Outcome,
    PromoteMember,
    RevertMember,
    initial_state,
    spec_from_dict,
    spec_to_dict,
    state_from_dict,
    state_to_dict,
)
from entrega.store.groups_repository import GroupRepository
from entrega.store.models import ReleaseGroup, Rollout
from entrega.views import GroupMemberView, GroupView
from entrega.vocabulary import EventKind, Phase
from entrega.waiting import stop_task, wait_event

if TYPE_CHECKING:
    from entrega.plane import ControlPlane

log = logging.getLogger("entrega.groups")

#: How often groups in progress are looked at when nothing wakes the coordinator.
POLL_S = 1.0


class GroupCoordinator:
    def __init__(self, plane: ControlPlane, repo: GroupRepository, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.plane = plane
        self.repo = repo
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="release-groups")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    def wake(self) -> None:
        self._wake.set()

    # -- commands -------------------------------------------------------------------------

    def create(self, *, name: str, members: Sequence[tuple[str, str]],
               actor: str) -> ReleaseGroup:
        """A new group of ``(app, version)`` releases (each already created); it starts at
        the next pass. Raises InvalidGroup / NotFound naming what is wrong."""
        apps = [app for app, _ in members]
        if len(set(apps)) != len(apps) or len(apps) < 2:
            raise InvalidGroup("a release group names two apps or more, each once "
                               f"(got {', '.join(apps) or 'none'})")
        configs = {app: self.plane.service(app).config for app in apps}
        for app, version in members:
            self.plane.service(app).release(version)  # NotFound when it was not created
        spec = GroupSpec(name=name, version=name, members=tuple(
            Member(app, version, tuple(d for d in configs[app].depends_on if d in configs),
                   tuple(e.name for e in configs[app].environments))
            for app, version in members), environments=())
        order = [app for layer in layers(spec.members) for app in layer]
        spec = GroupSpec(name=spec.name, version=spec.version, members=spec.members,
                         environments=_environments([configs[a] for a in order]))
        row = self.repo.create(name=name, phase="pending", spec=spec_to_dict(spec),
                               state=state_to_dict(initial_state(now=self.clock())),
                               actor=actor)
        self._event(row, spec, f"release group {name} created by {actor}: "
                               f"{', '.join(f'{a} {v}' for a, v in members)} "
                               f"({' then '.join(order)}; through "
                               f"{' -> '.join(spec.environments)})", actor=actor)
        self.wake()
        return row

    def restore(self, name: str, *, environment: str | None, actor: str) -> ReleaseGroup:
        """A new group that puts back, in ``environment`` (default: the group's last), the
        releases group ``name`` delivered: callers first, then what they call, each at
        once (a rollback), and the same consistency (a restore that fails goes back)."""
        target = spec_from_dict(self.group(name).spec)
        env = environment or target.environments[-1]
        if env not in target.environments:
            raise NotFound(f"release group {name} never went to {env}",
                           hint=f"its environments: {', '.join(target.environments)}")
        members = tuple(Member(m.app, m.version, tuple(
            o.app for o in target.members if m.app in o.depends_on), (env,))
            for m in target.members if m.enters(env))
        taken = {g.name for g in self.repo.groups(limit=500)}
        restore = next(f"{name}-restore-{n}" for n in range(1, 1000)
                       if f"{name}-restore-{n}" not in taken)
        spec = GroupSpec(name=restore, version=restore, members=members,
                         environments=(env,), restore=True)
        layers(spec.members)
        row = self.repo.create(name=restore, phase="pending", spec=spec_to_dict(spec),
                               state=state_to_dict(initial_state(now=self.clock())),
                               actor=actor)
        self._event(row, spec, f"{actor} restores release group {name} in {env}: "
                               f"{', '.join(f'{m.app} {m.version}' for m in members)} "
                               f"(group {restore})", actor=actor)
        self.wake()
        return row

    def request(self, name: str, *, actor: str, promote: bool = False,
                abort: bool = False) -> ReleaseGroup:
        """Ask the group to promote its running members, or to go back and stop."""
        row = self.group(name)
        state = state_from_dict(row.state)
        if state.phase.terminal:
            raise NotFound(f"release group {name} has ended ({state.phase.value})")
        state = replace(state, promote_requested=state.promote_requested or promote,
                        abort_requested=state.abort_requested or abort)
        self.repo.save(row.id, phase=state.phase.value, state=state_to_dict(state),
                       finished=False)
        what = "aborted" if abort else "promoted"
        self._event(row, spec_from_dict(row.spec), f"release group {name} {what} by {actor}",
                    actor=actor)
        self.wake()
        return self.group(name)

    def group(self, name: str) -> ReleaseGroup:
        row = self.repo.get(name)
        if row is None:
            raise NotFound(f"no release group named {name}",
                           hint="`entrega group list` shows the groups")
        return row

    # -- the loop -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            await self.pass_once()
            await wait_event(self._wake, timeout_s=POLL_S)

    async def pass_once(self) -> None:
        for row in self.repo.active():
            try:
                await self._pass(row)
            except Exception:  # noqa: BLE001 - one group's fault must not stop the others
                log.exception("release group %s: pass failed", row.name)

    async def _pass(self, row: ReleaseGroup) -> None:
        spec, state = spec_from_dict(row.spec), state_from_dict(row.state)
        observed = self._observe(row.id, spec, state)
        for action in unapplied(spec, state, observed):
            await self._apply(row, spec, action)
        transition = advance(spec, state, observed, now=self.clock())
        after = transition.state
        if after != state or transition.events:
            self.repo.save(row.id, phase=after.phase.value, state=state_to_dict(after),
                           finished=after.phase.terminal)
            for message in transition.events:
                self._event(row, spec, message, actor="controller")
        for action in transition.actions:
            await self._apply(row, spec, action)
        if after.phase.terminal:
            log.info("release group %s %s", row.name, after.phase.value)

    def _observe(self, group_id: int, spec: GroupSpec, state: GroupState) -> ObservedGroup:
        if not spec.environments:
            return ObservedGroup()
        env = spec.environments[state.environment_index]
        started = [r for r in self.repo.rollouts(group_id) if r.environment == env]
        members: dict[str, ObservedMember] = {}
        for member in spec.members_in(env):
            service = self.plane.service(member.app)
            where = service.repo.environment(member.app, env)
            mine = [r for r in started if r.app == member.app]
            # a restore's "deploy" is a rollback to the member's version; a revert is
            # always a rollback to what the member replaced, started after it
            moves = [r for r in mine if r.version == member.version and r.purpose ==
                     ("rollback" if spec.restore else "deploy")]
            deploy = moves[0] if moves else None
            revert = _last(r for r in mine if r.purpose == "rollback" and r is not deploy
                           and (deploy is None or r.id > deploy.id))
            held = state.members.get(env, {}).get(member.app)
            outcome, detail = _outcome(deploy), _message(deploy)
            back: Outcome = "none"
            if held is not None and held.phase == MemberPhase.REVERTING:
                if revert is not None:
                    back, detail = _outcome(revert), _message(revert)
                elif deploy is not None and deploy.phase == Phase.ROLLED_BACK:
                    back = "succeeded"  # its rollout was aborted: it never left stable
                elif held.replaced is None and outcome == "succeeded":
                    back, detail = "failed", (
                        f"{member.app} ran nothing in {env} before the group, and entrega "
                        "does not take an app's only release away (`entrega down` stops it)")
            members[member.app] = ObservedMember(
                running=where.current_version if where else None, outcome=outcome,
                rollout_id=deploy.id if deploy else None, revert=back, detail=detail)
        return ObservedGroup(environment=env, members=members)

    async def _apply(self, row: ReleaseGroup, spec: GroupSpec, action: GroupAction) -> None:
        actor = f"group {row.name}"[:64]
        service = self.plane.service(action.app)
        try:
            if isinstance(action, DeployMember) and spec.restore:
                await service.rollback(environment=action.environment, actor=actor,
                                       to=action.version, group_id=row.id)
            elif isinstance(action, DeployMember):
                await service.deploy(environment=action.environment, version=action.version,
                                     actor=actor, queue=False, group_id=row.id,
                                     reason=f"release group {row.name}")
            elif isinstance(action, RevertMember):
                active = service.repo.active_rollout(action.app, action.environment)
                if active is not None and active.group_id == row.id:
                    await service.abort(environment=action.environment, actor=actor)
                elif action.to_version is not None:
                    await service.rollback(environment=action.environment, actor=actor,
                                           to=action.to_version, group_id=row.id)
            elif isinstance(action, PromoteMember):
                await service.promote(environment=action.environment, actor=actor)
        except EntregaError as exc:
            # The state says it was issued: the next pass finds it unapplied and retries.
            log.warning("release group %s: %s on %s: %s", row.name, type(action).__name__,
                        action.app, exc)

    def _event(self, row: ReleaseGroup, spec: GroupSpec, message: str, *,
               actor: str) -> None:
        for member in spec.members:
            self.plane.service(member.app).repo.add_event(
                app=member.app, kind=EventKind.GROUP, actor=actor, message=message,
                version=member.version, data={"group": row.name, "group_id": row.id})


def _environments(configs: Sequence[Config]) -> tuple[str, ...]:
    """Every member app's environments in one order each app agrees with (members in
    dependency order); an app that lists two of them the other way round is refused."""
    order: list[str] = []
    for config in configs:
        names = [e.name for e in config.environments]
        for name in names:
            if name not in order:
                # after the last environment this app has before it
                before = [n for n in names[:names.index(name)] if n in order]
                at = order.index(before[-1]) + 1 if before else 0
                order.insert(at, name)
        positions = [order.index(n) for n in names]
        if positions != sorted(positions):
            raise InvalidGroup(f"the apps' pipelines disagree on the order of "
                               f"{', '.join(names)}: a group goes through one order")
    return tuple(order)


def _last(rollouts: Iterable[Rollout]) -> Rollout | None:
    found = list(rollouts)
    return found[-1] if found else None


def _outcome(rollout: Rollout | None) -> Outcome:
    if rollout is None:
        return "none"
    if rollout.phase == Phase.SUCCEEDED:
        return "succeeded"
    if rollout.phase == Phase.ROLLED_BACK:
        return "rolled_back"
    if rollout.phase == Phase.FAILED:
        return "failed"
    return "running"


def _message(rollout: Rollout | None) -> str:
    if rollout is None:
        return ""
    message = rollout.state.get("message", "") if isinstance(rollout.state, dict) else ""
    return str(message)


def group_view(row: ReleaseGroup) -> GroupView:
    spec, state = spec_from_dict(row.spec), state_from_dict(row.state)
    return GroupView(
        name=row.name, phase=state.phase.value, message=state.message,
        environment=(spec.environments[state.environment_index]
                     if spec.environments else None),
        members=[GroupMemberView(app=m.app, version=m.version, depends_on=list(m.depends_on))
                 for m in spec.members],
        environments=list(spec.environments),
        progress={env: {app: {"phase": m.phase.value, "rollout_id": m.rollout_id,
                              "replaced": m.replaced, "message": m.message}
                        for app, m in apps.items()}
                  for env, apps in state.members.items()},
        created_at=row.created_at, updated_at=row.updated_at, finished_at=row.finished_at,
        created_by=row.created_by)


def visible_groups(plane: ControlPlane, caller: Caller, *,
                   limit: int) -> list[GroupView]:
    """The ``limit`` most recent release groups, less those with a member ``caller`` may
    not see: exactly what ``GET /api/v1/groups?limit=<limit>`` answers them."""
    views = [group_view(row) for row in plane.groups.repo.groups(limit=limit)]
    return [v for v in views if all(caller.may_see(m.app) for m in v.members)]
