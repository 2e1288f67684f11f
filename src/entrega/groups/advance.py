"""The release group's state machine: ``advance(spec, state, observed, now=...)``.

A group is consistent: it enters an environment only when every member passed the
previous one, and if any member fails or is rolled back there, the members already moved
there go back too, in reverse dependency order, and the group stops. Earlier environments
keep the group: it passed them whole.

In an environment a member starts once every member it depends on (directly or through
members skipped there) succeeded there; independent members start together. Each member's
rollout runs by its own app's strategy; the group only reads how it ended. Going back walks
the dependency layers backwards, one layer at a time, each layer's reverts finished before
the next begins: a caller never runs against a dependency older than the one it was
released with. A revert that fails stops the walk (the group is ``failed``): the members
below it stay where they are rather than pull a dependency from under a member that could
not go back.

Like :mod:`entrega.rollouts`, this never awaits, sleeps, reads the clock or logs. The
coordinator commits the returned state, then applies the actions. The contract that makes
a crash between the two harmless:

- ``advance`` issues each deploy and each revert once: the state records it (a member is
  ``deploying`` or ``reverting``), so the same observation fed twice gives no action twice.
- On its first pass after taking over the store (a restart, a new leader), the coordinator
  first applies :func:`unapplied`: the actions the state records as issued whose effect the
  observation does not show (no rollout, no revert), then ``advance``'s. Every action is
  idempotent (deploying a version already rolling out there, or reverting to the version
  already running, changes nothing), so re-applying one that did take effect is harmless.
- A promote is the exception: it is passed on once and not re-derived, as a rollout's
  effect of a promote is not observed; one lost in that window is given again by the user.
"""

from __future__ import annotations

from dataclasses import replace

from entrega.groups.model import (
    DeployMember,
    GroupAction,
    GroupPhase,
    GroupSpec,
    GroupState,
    GroupTransition,
    MemberPhase,
    MemberState,
    ObservedGroup,
    ObservedMember,
    PromoteMember,
    RevertMember,
)
from entrega.groups.order import dependencies, layers

#: How often the coordinator looks again while members' rollouts run. A pass reads a few
#: rows of the store; the rollouts it waits for take seconds to hours.
POLL_S = 1.0

_MOVED = (MemberPhase.SUCCEEDED, MemberPhase.DEPLOYING)
_STOPS_THE_GROUP = (MemberPhase.FAILED, MemberPhase.ROLLED_BACK)


class _Pass:
    """The actions and events one call of ``advance`` collects, in order."""

    def __init__(self, spec: GroupSpec, now: float) -> None:
        self.spec, self.now = spec, now
        self.actions: list[GroupAction] = []
        self.events: list[str] = []

    def done(self, state: GroupState) -> GroupTransition:
        requeue = None if state.phase.terminal else self.now + POLL_S
        return GroupTransition(state, tuple(self.actions), tuple(self.events), requeue)


def advance(spec: GroupSpec, state: GroupState, observed: ObservedGroup, *,
            now: float) -> GroupTransition:
    """The group's next state and the member actions that take the world there."""
    if state.phase.terminal:
        return GroupTransition(state)
    run = _Pass(spec, now)
    if state.phase == GroupPhase.PENDING:
        state = _enter(run, replace(state, phase=GroupPhase.PROGRESSING, phase_started_at=now,
                                    environment_index=0), 0)
        if state.phase.terminal:
            return run.done(state)
    env = spec.environments[state.environment_index]
    seen = observed.members if observed.environment == env else None
    if seen is not None:
        state = _fold(run, state, env, seen)
    if state.phase == GroupPhase.PROGRESSING:
        state = _progress(run, state, env, seen)
    if state.phase == GroupPhase.ROLLING_BACK:
        state = _revert(run, state, env)
    return run.done(state)


def unapplied(spec: GroupSpec, state: GroupState,
              observed: ObservedGroup) -> tuple[GroupAction, ...]:
    """The deploys and reverts the state records as issued whose effect ``observed`` does
    not show: to re-apply on a coordinator's first pass (see the module's contract)."""
    if state.phase.terminal or not spec.environments:
        return ()
    env = spec.environments[state.environment_index]
    if observed.environment != env:
        return ()
    actions: list[GroupAction] = []
    for app, member in state.members.get(env, {}).items():
        seen = observed.members.get(app, ObservedMember())
        if member.phase == MemberPhase.DEPLOYING and seen.outcome == "none":
            actions.append(DeployMember(app, env, spec.member(app).version))
        elif member.phase == MemberPhase.REVERTING and seen.revert == "none":
            actions.append(RevertMember(app, env, member.replaced))
    return tuple(actions)


# -- environments ----------------------------------------------------------------------------


def _enter(run: _Pass, state: GroupState, index: int) -> GroupState:
    """Enter the environment at ``index``, skipping those no member's app has; past the
    last one the group has succeeded (and stays at the last environment it was in)."""
    spec = run.spec
    while index < len(spec.environments):
        env = spec.environments[index]
        members = spec.members_in(env)
        if members:
            run.events.append(f"group {spec.name} {spec.version} enters {env}")
            entered = {m.app: MemberState(changed_at=run.now) for m in members}
            return replace(state, environment_index=index,
                           members={**state.members, env: entered},
                           message=f"delivering to {env}")
        run.events.append(f"no member of group {spec.name} has environment {env}: skipped")
        index += 1
    message = f"group {spec.name} {spec.version} passed every environment"
    run.events.append(message)
    return replace(state, phase=GroupPhase.SUCCEEDED, phase_started_at=run.now,
                   message=message)


def _set(state: GroupState, env: str, app: str, member: MemberState) -> GroupState:
    return replace(state, members={**state.members, env: {**state.members[env], app: member}})


# -- reading the members' rollouts -------------------------------------------------------------


def _fold(run: _Pass, state: GroupState, env: str,
          seen: dict[str, ObservedMember]) -> GroupState:
    """Record how the members' rollouts and reverts in ``env`` ended."""
    for app, member in state.members[env].items():
        obs = seen.get(app)
        if obs is None:
            continue
        new = member
        if member.rollout_id is None and obs.rollout_id is not None:
            new = replace(new, rollout_id=obs.rollout_id)
        version = run.spec.member(app).version
        why = f": {obs.detail}" if obs.detail else ""
        if member.phase == MemberPhase.DEPLOYING and obs.outcome in ("succeeded", "failed",
                                                                      "rolled_back"):
            phase = MemberPhase(obs.outcome)
            said = {"succeeded": "passed", "failed": "failed in",
                    "rolled_back": "was rolled back in"}[obs.outcome]
            message = f"{app} {version} {said} {env}{why}"
            new = replace(new, phase=phase, message=message, changed_at=run.now)
            run.events.append(message)
        elif member.phase == MemberPhase.REVERTING and obs.revert in ("succeeded", "failed",
                                                                       "rolled_back"):
            back = f"back on {member.replaced}" if member.replaced else "stopped"
            if obs.revert == "failed":
                message = f"{app} could not go back from {version} in {env}{why}"
                state = replace(state, message=message)
                new = replace(new, phase=MemberPhase.FAILED, revert_failed=True,
                              message=message)
            else:
                message = f"{app} is {back} in {env}"
                new = replace(new, phase=MemberPhase.REVERTED, message=message)
            new = replace(new, changed_at=run.now)
            run.events.append(message)
        if new != member:
            state = _set(state, env, app, new)
    return state


# -- moving forward ----------------------------------------------------------------------------


def _progress(run: _Pass, state: GroupState, env: str,
              seen: dict[str, ObservedMember] | None) -> GroupState:
    members = state.members[env]
    if state.abort_requested:
        return _stop(run, state, GroupPhase.ABORTED, "aborted by a user")
    stopped = [m.message for m in members.values() if m.phase in _STOPS_THE_GROUP]
    if stopped:
        return _stop(run, state, GroupPhase.ROLLED_BACK, "; ".join(stopped))
    if state.promote_requested:
        running = [app for app, m in members.items() if m.phase == MemberPhase.DEPLOYING]
        run.actions.extend(PromoteMember(app, env) for app in running)
        run.events.append(f"promoting {', '.join(running)} in {env}" if running
                          else f"promote: no member is rolling out in {env}")
        state = replace(state, promote_requested=False)
    if seen is not None:
        # Deploys are issued from an observation of this environment only: what a member
        # replaces (its revert's target) is read there first.
        state = _start(run, state, env, seen)
    if all(m.phase == MemberPhase.SUCCEEDED for m in state.members[env].values()):
        run.events.append(f"group {run.spec.name} {run.spec.version} passed {env}")
        return _enter(run, state, state.environment_index + 1)
    return state


def _start(run: _Pass, state: GroupState, env: str,
           seen: dict[str, ObservedMember]) -> GroupState:
    """Start every waiting member whose dependencies passed ``env``; a member already
    running its version there has nothing to deploy and passes at once."""
    needs = dependencies(run.spec.members)
    for layer in layers(run.spec.members):
        for app in layer:
            members = state.members[env]
            if app not in members or members[app].phase != MemberPhase.WAITING:
                continue
            if any(members[d].phase != MemberPhase.SUCCEEDED for d in needs[app] if d in members):
                continue
            version = run.spec.member(app).version
            running = seen.get(app, ObservedMember()).running
            if running == version:
                message = f"{app} already runs {version} in {env}"
                new = MemberState(MemberPhase.SUCCEEDED, replaced=running, message=message,
                                  changed_at=run.now)
            else:
                over = f" (replacing {running})" if running else ""
                message = f"deploying {app} {version} to {env}{over}"
                new = MemberState(MemberPhase.DEPLOYING, replaced=running, message=message,
                                  changed_at=run.now)
                run.actions.append(DeployMember(app, env, version))
            run.events.append(message)
            state = _set(state, env, app, new)
    return state


# -- going back --------------------------------------------------------------------------------


def _stop(run: _Pass, state: GroupState, ends_as: GroupPhase, reason: str) -> GroupState:
    env = run.spec.environments[state.environment_index]
    run.events.append(f"group {run.spec.name} {run.spec.version} stops in {env}: {reason}")
    return replace(state, phase=GroupPhase.ROLLING_BACK, ends_as=ends_as,
                   promote_requested=False, phase_started_at=run.now, message=reason)


def _revert(run: _Pass, state: GroupState, env: str) -> GroupState:
    """Revert the moved members of ``env`` layer by layer, the last layer first."""
    spec = run.spec
    for layer in reversed(layers(spec.members)):
        members = state.members[env]
        here = [app for app in layer if app in members]
        if any(members[app].phase == MemberPhase.REVERTING for app in here):
            return state
        moved = [app for app in here if _moved(spec, app, members[app])]
        if not moved:
            continue
        failed = _revert_failures(state, env)
        if failed:
            return _end(run, state, GroupPhase.FAILED,
                        f"{'; '.join(failed)}; left as they are: "
                        f"{', '.join(a for a, m in members.items() if _moved(spec, a, m))}")
        for app in moved:
            to = members[app].replaced
            run.actions.append(RevertMember(app, env, to))
            message = f"reverting {app} in {env} " + (f"to {to}" if to else "(stopping it)")
            run.events.append(message)
            state = _set(state, env, app, replace(members[app], phase=MemberPhase.REVERTING,
                                                  message=message, changed_at=run.now))
        return state
    failed = _revert_failures(state, env)
    if failed:
        return _end(run, state, GroupPhase.FAILED, "; ".join(failed))
    ends_as = state.ends_as or GroupPhase.ROLLED_BACK
    said = "aborted" if ends_as == GroupPhase.ABORTED else "rolled back"
    return _end(run, state, ends_as, f"group {spec.name} {spec.version} {said} in {env}")


def _moved(spec: GroupSpec, app: str, member: MemberState) -> bool:
    """The group changed what ``app`` runs here (or is changing it): it has to go back."""
    return member.phase in _MOVED and member.replaced != spec.member(app).version


def _revert_failures(state: GroupState, env: str) -> list[str]:
    return [m.message for m in state.members[env].values() if m.revert_failed]


def _end(run: _Pass, state: GroupState, phase: GroupPhase, message: str) -> GroupState:
    run.events.append(message)
    return replace(state, phase=phase, ends_as=None, phase_started_at=run.now,
                   message=message)
