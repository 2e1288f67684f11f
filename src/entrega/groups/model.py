"""A release group's data: spec, state, observations, actions, transitions.

A release group carries releases of several apps (``api:v41``, ``web:v17``) through the
environments together. Everything here is a frozen dataclass, like
:mod:`entrega.rollouts.model`. ``GroupSpec`` is fixed when the group is created (editing
entrega.yaml does not change a group in flight); ``GroupState`` is what the store persists,
one JSON document per group, converted only by :func:`state_to_dict` /
:func:`state_from_dict`, so a restarted controller resumes the group where it stood.

The state keeps, per environment entered and per member app there, what the group did to
that member: whether its deploy was issued (so it is never issued twice), the rollout that
carries it, and the version it replaced (what a revert goes back to). The version replaced
is read from an observation of the environment *before* the deploy is issued: a revert
never has to guess it, even when the controller died before it saw the rollout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from entrega.codec import Codec


class GroupPhase(StrEnum):
    """Where a group stands; ``groups.advance`` moves it."""

    PENDING = "pending"            # created; no member deployed yet
    PROGRESSING = "progressing"    # members are delivered through the environments
    ROLLING_BACK = "rolling_back"  # a member failed (or abort): moved members go back
    SUCCEEDED = "succeeded"        # every member passed every environment
    ROLLED_BACK = "rolled_back"    # stopped: the environment is back where it stood
    FAILED = "failed"              # stopped: a revert failed, the environment is mixed
    ABORTED = "aborted"            # stopped by a user: moved members went back

    @property
    def terminal(self) -> bool:
        return self in (GroupPhase.SUCCEEDED, GroupPhase.ROLLED_BACK, GroupPhase.FAILED,
                        GroupPhase.ABORTED)


class MemberPhase(StrEnum):
    """What the group did to one member in one environment."""

    WAITING = "waiting"            # not started: a member it depends on has not passed
    DEPLOYING = "deploying"        # its deploy was issued; its rollout runs by its strategy
    SUCCEEDED = "succeeded"        # its rollout succeeded (or it already ran the version)
    FAILED = "failed"              # its rollout failed, or its revert failed
    ROLLED_BACK = "rolled_back"    # its own rollout rolled back (analysis, a user)
    REVERTING = "reverting"        # the group sends it back to the version it replaced
    REVERTED = "reverted"          # back on the version it replaced (or stopped)


#: The outcome of a member's rollout (or of its revert) as the controller read it.
#: ``none``: no such rollout exists (not applied yet).
Outcome = Literal["none", "running", "succeeded", "rolled_back", "failed"]


# -- spec ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One app's release in the group."""

    app: str
    version: str
    #: members (apps) that must pass an environment before this one starts there
    depends_on: tuple[str, ...] = ()
    #: the environments this app's pipeline has (None: every one of the group's); in the
    #: others the member is skipped
    environments: tuple[str, ...] | None = None

    def enters(self, environment: str) -> bool:
        return self.environments is None or environment in self.environments


@dataclass(frozen=True)
class GroupSpec:
    """What the group delivers and through which environments, in order; fixed at creation."""

    name: str
    version: str
    members: tuple[Member, ...]
    environments: tuple[str, ...]
    #: restores an earlier group's releases (``rollback --to GROUP``): each member's
    #: "deploy" is a rollback to its version, callers first (depends_on reversed)
    restore: bool = False

    def member(self, app: str) -> Member:
        return next(m for m in self.members if m.app == app)

    def members_in(self, environment: str) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.enters(environment))


# -- state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberState:
    """One member in one environment."""

    phase: MemberPhase = MemberPhase.WAITING
    #: the rollout that carries the member's release there (None: not seen yet)
    rollout_id: int | None = None
    #: the version the environment ran before the group's deploy (None: nothing ran;
    #: a revert then stops the app). Recorded when the deploy is issued.
    replaced: str | None = None
    #: its revert failed: which version it runs now is not known (a human looks)
    revert_failed: bool = False
    #: why it stands where it stands (a failure's reason), for status
    message: str = ""
    changed_at: float = 0.0


@dataclass(frozen=True)
class GroupState:
    phase: GroupPhase
    #: index into ``GroupSpec.environments`` of the environment the group is in (once
    #: ended: the last one it was in)
    environment_index: int = 0
    #: environment -> app -> member state, for each environment the group has entered
    members: dict[str, dict[str, MemberState]] = field(default_factory=dict)
    #: set by `promote` on the group; passed on to the members running, then cleared
    promote_requested: bool = False
    #: set by `abort` on the group; the moved members go back, the group ends aborted
    abort_requested: bool = False
    #: while rolling back: the phase the group ends in once every revert finished
    ends_as: GroupPhase | None = None
    message: str = ""
    phase_started_at: float = 0.0


def initial_state(*, now: float) -> GroupState:
    return GroupState(phase=GroupPhase.PENDING, phase_started_at=now)


# -- observations --------------------------------------------------------------------------


@dataclass(frozen=True)
class ObservedMember:
    """One member in the observed environment, as the controller read it from the store."""

    #: the version the app's environment runs now, stable (None: nothing runs there)
    running: str | None = None
    #: the member's rollout of its version there
    outcome: Outcome = "none"
    rollout_id: int | None = None
    #: the revert the group asked for. For a member whose rollout was still running, the
    #: revert is that rollout's abort: its ending rolled back is a revert that succeeded.
    revert: Outcome = "none"
    #: why the rollout or the revert ended as it did (for status and events)
    detail: str = ""


@dataclass(frozen=True)
class ObservedGroup:
    """What the controller saw this pass, in one environment.

    An observation of another environment than the group's current one is stale (taken
    before the group moved on) and ignored: the group waits for one of its environment.
    """

    environment: str | None = None
    members: dict[str, ObservedMember] = field(default_factory=dict)


# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployMember:
    """Deploy the member's release to the environment, by its app's strategy there."""

    app: str
    environment: str
    version: str


@dataclass(frozen=True)
class RevertMember:
    """Send the member back to what it replaced: abort its rollout while it still runs,
    else roll back to ``to_version``; None: nothing ran there before, stop the app."""

    app: str
    environment: str
    to_version: str | None


@dataclass(frozen=True)
class PromoteMember:
    """Promote the member's running rollout (end its pause, or skip its steps)."""

    app: str
    environment: str


GroupAction = DeployMember | RevertMember | PromoteMember


@dataclass(frozen=True)
class GroupTransition:
    state: GroupState
    actions: tuple[GroupAction, ...] = ()
    #: human-readable events (one per thing that happened), recorded in order
    events: tuple[str, ...] = ()
    #: when the coordinator should look again at the latest (None: the group has ended)
    requeue_at: float | None = None


# -- storage -------------------------------------------------------------------------------

_STATE = Codec[GroupState](GroupState, what="the stored state of a release group")
_SPEC = Codec[GroupSpec](GroupSpec, what="the stored spec of a release group")


def state_to_dict(state: GroupState) -> dict[str, Any]:
    return _STATE.dump(state)


def state_from_dict(data: object) -> GroupState:
    """Raises :class:`~entrega.errors.InvalidRecord` naming the field that is wrong."""
    return _STATE.load(data)


def spec_to_dict(spec: GroupSpec) -> dict[str, Any]:
    return _SPEC.dump(spec)


def spec_from_dict(data: object) -> GroupSpec:
    """Raises :class:`~entrega.errors.InvalidRecord` naming the field that is wrong."""
    return _SPEC.load(data)
