"""The rollout state machine's data: spec, state, observations, actions, transitions.

Everything here is a frozen dataclass. ``RolloutState`` is what the store persists (one
JSON document per rollout, converted only by :func:`state_to_dict` / :func:`state_from_dict`),
so a restarted controller resumes any rollout exactly where it stood. ``RolloutSpec`` is
fixed when the rollout is created: editing entrega.yaml does not change a rollout in
flight. Both documents are validated when read back (``entrega.codec``): a damaged row is
an error naming the field, not a crash three calls later. The stored shape of a step is
``{kind: value}`` (``{"weight": 5}``, ``{"pause": {"duration_s": 60}}``), as in
entrega.yaml; the annotations on :data:`Step` say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Tag, WrapSerializer

from entrega.codec import Codec
from entrega.vocabulary import Phase  # the store's word; the state machines decide it

Strategy = Literal["canary", "blue-green", "direct", "rolling"]


# -- steps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightStep:
    weight: int


@dataclass(frozen=True)
class PauseStep:
    duration_s: float | None = None  # None: until promoted


@dataclass(frozen=True)
class AnalysisStep:
    metrics: tuple[str, ...]
    duration_s: float
    check_every_s: float = 1.0
    failure_limit: int = 0
    inconclusive_limit: int = 2


@dataclass(frozen=True)
class CohortStep:
    """Send the selected users (a header, an allowlist) to the canary, whatever the weight."""

    name: str


@dataclass(frozen=True)
class UsersStep:
    """Send this share of users to the canary, chosen by a stable hash of their id."""

    percent: int


def _stored_as(kind: str, only: str | None = None) -> tuple[Any, ...]:
    """Pydantic metadata storing a step as ``{kind: value}``: ``value`` is the step's one
    field ``only``, or all its fields."""

    def unwrap(raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        value = raw[kind]
        return {only: value} if only else value

    def wrap(step: Any, fields: Any) -> dict[str, Any]:
        data = fields(step)
        return {kind: data[only] if only else data}

    return BeforeValidator(unwrap), WrapSerializer(wrap), Tag(kind)


_STEP_KINDS = {WeightStep: "weight", PauseStep: "pause", AnalysisStep: "analysis",
               CohortStep: "cohort", UsersStep: "users"}


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((kind for kind in _STEP_KINDS.values() if kind in value), None)
    return _STEP_KINDS.get(type(value))


Step = Annotated[
    Annotated[WeightStep, *_stored_as("weight", "weight")]
    | Annotated[PauseStep, *_stored_as("pause")]
    | Annotated[AnalysisStep, *_stored_as("analysis")]
    | Annotated[CohortStep, *_stored_as("cohort", "name")]
    | Annotated[UsersStep, *_stored_as("users", "percent")],
    Discriminator(_step_kind, custom_error_type="step",
                  custom_error_message="a step is one of weight, pause, analysis, cohort "
                                       "or users"),
]


@dataclass(frozen=True)
class Cohort:
    """Who the selected users are (from the environment's config)."""

    header: str | None = "X-Entrega-Cohort"
    value: str | None = "beta"
    user_header: str | None = "X-User-Id"
    user_cookie: str | None = None
    users: tuple[str, ...] = ()


@dataclass(frozen=True)
class CohortRoute:
    """The cohort part of a route table: the selected users (``selected``) and a share of
    all users (``percent``) go to the canary."""

    selected: bool = False
    percent: int = 0


@dataclass(frozen=True)
class RollingSpec:
    """Rolling over hosts: which hosts, in what order, and how many at a time.

    ``hosts`` is the fleet as configured when the rollout was created (its order is the
    batches' order); ``batch`` and ``max_failed`` are as written in entrega.yaml (a count,
    or a share like ``"25%"``) and turned into host counts by :mod:`entrega.rollouts.rolling`.
    """

    hosts: tuple[str, ...]
    batch: int | str = 1
    max_failed: int | str = 0
    pause_between_batches_s: float = 0.0
    #: hosts that may be out of every route table at once (None: a whole batch)
    max_unavailable: int | str | None = None
    #: analysis of the new release against the old once a batch serves (None: none)
    analysis: AnalysisStep | None = None


@dataclass(frozen=True)
class FleetSpec:
    """Canary and blue-green over the hosts of a fleet (``target: {kind: ssh}``).

    ``canary_hosts``: the new release starts on this many hosts first (a count or a share
    like ``"25%"``, rounded up; None: every host), the first in ``hosts`` order that can
    run it; ``max_failed``: hosts that may be left out (unreachable, crash loop, not ready
    by the deadline) before the rollout fails. Both as written in entrega.yaml and turned
    into host counts by :mod:`entrega.rollouts.fleet`.
    """

    hosts: tuple[str, ...]
    canary_hosts: int | str | None = None
    max_failed: int | str = 0


@dataclass(frozen=True)
class RolloutSpec:
    """How this rollout proceeds; fixed at creation."""

    strategy: Strategy
    steps: tuple[Step, ...] = ()
    #: blue-green: switch without waiting for `promote` once verification passed
    auto_promote: bool = True
    #: blue-green: how long the old release stays warm after the switch
    scale_down_delay_s: float = 30.0
    #: run the environment's verification: blue-green on the preview before the switch;
    #: canary and direct once the release has all traffic, before the old one is stopped
    verify: bool = False
    #: the new release must be ready within this many seconds, or the rollout fails
    progress_deadline_s: float = 300.0
    #: who `cohort` and `users` steps select
    cohort: Cohort = Cohort()
    #: rolling: the hosts and their batches (None for the other strategies)
    rolling: RollingSpec | None = None
    #: canary, blue-green: the fleet's hosts, canary hosts and failure budget (None for
    #: a target without hosts)
    fleet: FleetSpec | None = None


# -- state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisProgress:
    """Where the current analysis step stands. A *window* is one measurement period whose
    baseline the controller snapshots when told (``BeginAnalysis``)."""

    window: int
    started_at: float
    next_check_at: float
    checks: int = 0
    failures: int = 0
    extensions: int = 0
    last_verdict: str | None = None
    last_reason: str = ""
    #: metrics whose evidence has reached a pass in this window. The judges' pass side is
    #: valid however often it is checked (Ville), so evidence once reached stays reached:
    #: the step passes at its end when every metric has passed at some check and none
    #: has failed since.
    passed_metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class RollingProgress:
    """Where a rolling rollout stands over its hosts (``step_index`` is the batch number).

    ``done`` hosts run the new release and are in its route table; ``batch`` hosts are
    being moved now; ``failed`` hosts failed their batch and were given back to the old
    release. With ``restoring`` the rollout has failed and the old release is being
    started again on the ``done`` hosts before the route table goes back to it.
    """

    batch: tuple[str, ...] = ()
    done: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    restoring: bool = False
    #: when the pause between batches ends (None: no pause in progress)
    next_batch_at: float | None = None


@dataclass(frozen=True)
class FleetProgress:
    """Where the new release of a canary or blue-green rollout stands on a fleet.

    ``hosts`` run it (started, or being started); ``serving`` take its traffic (they were
    ready); ``failed`` were left out of the rollout (host -> why), counted against
    ``max_failed`` and named in status. The hosts of ``hosts`` not ``serving`` are the
    ones the rollout waits for (phase ``starting``).
    """

    hosts: tuple[str, ...] = ()
    serving: tuple[str, ...] = ()
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutState:
    phase: Phase
    #: release the environment ran before (None for the first release)
    stable: str | None
    #: release being rolled out
    canary: str
    step_index: int = 0
    #: desired traffic split (percent per release), what the router must show
    weights: dict[str, int] = field(default_factory=dict)
    #: release served on the preview listener (blue-green)
    preview: str | None = None
    phase_started_at: float = 0.0
    step_started_at: float = 0.0
    analysis: AnalysisProgress | None = None
    #: analysis windows begun so far; window numbers are unique within the rollout, so a
    #: late verdict for an earlier step's window is never taken for the current one
    analysis_windows: int = 0
    verification: str | None = None  # None | "running" | "passed" | "failed"
    promote_requested: bool = False
    promote_full: bool = False
    abort_requested: bool = False
    scale_down_at: float | None = None
    message: str = ""
    #: analysis windows whose verdicts are final, for `status` and reports
    analysis_history: tuple[dict[str, Any], ...] = ()
    #: cohort routing in force: the selected users and a share of users go to the canary
    cohort: CohortRoute | None = None
    #: the name of the cohort step that selected them (shown in status)
    cohort_name: str | None = None
    #: rolling: the hosts' progress (None for the other strategies)
    rolling: RollingProgress | None = None
    #: canary, blue-green on a fleet: the new release's hosts (None without a fleet)
    fleet: FleetProgress | None = None


def initial_state(*, stable: str | None, canary: str, now: float) -> RolloutState:
    weights = {stable: 100} if stable else {}
    return RolloutState(phase=Phase.PENDING, stable=stable, canary=canary, weights=weights,
                        phase_started_at=now, step_started_at=now)


# -- observations --------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisVerdict:
    """The judged result of one analysis window, computed by the controller (pure judges)."""

    window: int
    #: the judges' ``AnalysisOutcome`` (entrega.analysis.judges), for this window
    verdict: Literal["pass", "fail", "inconclusive"]
    reason: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observed:
    """What the controller saw this pass."""

    canary_ready: bool = False
    #: why the canary cannot run (e.g. its command exits at once); fails the rollout
    canary_error: str | None = None
    #: why the canary is not running yet that may pass (a host that does not answer)
    canary_problem: str = ""
    analysis: AnalysisVerdict | None = None
    verification: str | None = None  # None | "passed" | "failed"
    verification_detail: str = ""
    #: rolling, a fleet's canary: the hosts (of those waited on) whose instances are all
    #: ready
    hosts_ready: tuple[str, ...] = ()
    #: rolling, a fleet's canary: host -> why the release cannot become ready there (crash
    #: loop, start error) or why it no longer serves (it stopped answering)
    host_failures: dict[str, str] = field(default_factory=dict)
    #: rolling, a fleet's canary: host -> why, for the hosts that have not answered the
    #: controller for a while (down, not slow): those waited on are left out at once
    #: while the budget allows
    hosts_down: dict[str, str] = field(default_factory=dict)


# -- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartInstances:
    release: str
    #: the hosts to start it on (None: every host of the target)
    hosts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class SetRoutes:
    weights: dict[str, int]
    preview: str | None = None
    #: selected users to the canary (None: no cohort rule)
    cohort: CohortRoute | None = None
    #: release -> the only hosts whose instances take its traffic (absent: every host)
    hosts: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class StopInstances:
    release: str
    #: the hosts to stop it on (None: every host of the target)
    hosts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BeginAnalysis:
    window: int
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class RunVerification:
    release: str
    #: True: check the preview address (blue-green, before the switch); False: the
    #: environment's own address, once the release has all traffic.
    on_preview: bool = True


Action = StartInstances | SetRoutes | StopInstances | BeginAnalysis | RunVerification


@dataclass(frozen=True)
class Transition:
    state: RolloutState
    actions: tuple[Action, ...] = ()
    #: human-readable events (one per thing that happened), recorded in order
    events: tuple[str, ...] = ()
    #: when the controller should look again at the latest (None: on the next command)
    requeue_at: float | None = None


# -- storage -------------------------------------------------------------------------------

_STATE = Codec[RolloutState](RolloutState, what="the stored state of a rollout")
_SPEC = Codec[RolloutSpec](RolloutSpec, what="the stored spec of a rollout")


def state_to_dict(state: RolloutState) -> dict[str, Any]:
    return _STATE.dump(state)


def state_from_dict(data: object) -> RolloutState:
    """Raises :class:`~entrega.errors.InvalidRecord` naming the field that is wrong."""
    return _STATE.load(data)


def spec_to_dict(spec: RolloutSpec) -> dict[str, Any]:
    return _SPEC.dump(spec)


def spec_from_dict(data: object) -> RolloutSpec:
    """Raises :class:`~entrega.errors.InvalidRecord` naming the field that is wrong."""
    return _SPEC.load(data)
