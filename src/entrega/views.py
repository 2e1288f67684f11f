"""The read models: what the API answers, the CLI renders and the dashboard shows.

These are the contract between the server and its clients, so they are typed once here
(pydantic) instead of being dicts built in one place and indexed by string in three
others: FastAPI declares them as ``response_model``s, so ``/openapi.json`` describes every
answer; the CLI validates what it receives into them before rendering; the dashboard
builds its page from them.

The JSON field names and their order are an interface (every ``--json`` output, every
script reading the API): a field is added at the end or not at all, never renamed.
Fields that only apply to some answers (a stage's rollout, a new release's deploy) are
left out when they do not apply, never sent as null: :class:`Sparse` keeps that shape.

Values stored as JSON by the controller (analysis results, event data, release meta)
stay ``dict[str, Any]``: their shape belongs to the judge or event that wrote them.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from entrega.rollouts.model import Phase

#: A computed figure, sent as computed: an int stays an int (``0``, not ``0.0``), so the
#: JSON is the same whether or not it went through a view.
Number: TypeAlias = float | int


class View(BaseModel):
    """A read model: frozen (a view is a snapshot), unknown fields ignored (a newer
    server may add fields an older CLI does not know)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Sparse(View):
    """A view whose optional fields are omitted from JSON unless they were given."""

    @model_serializer(mode="wrap")
    def _only_given(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]
        # No return annotation on purpose: pydantic then describes the model's own fields
        # in the OpenAPI document instead of "any object".
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set}


# -- rollouts ------------------------------------------------------------------------------


class CohortView(View):
    name: str | None
    selected: bool
    users_percent: int


class AnalysisView(View):
    """The analysis step in progress: its window and the latest check's verdict."""

    window: int
    checks: int
    failures: int
    verdict: str | None
    reason: str
    #: the latest check's metric verdicts, as the judges wrote them (None before the first)
    metrics: list[dict[str, Any]] | None


class RolloutView(View):
    id: int
    environment: str
    version: str
    from_version: str | None
    strategy: str
    phase: Phase
    weights: dict[str, int]
    preview: str | None
    step_index: int
    #: each step in words ("weight 20%", "pause 60s"); empty for a direct rollout
    steps: list[str]
    message: str
    cohort: CohortView | None
    analysis: AnalysisView | None
    analysis_history: list[dict[str, Any]]
    created_at: float
    updated_at: float
    finished_at: float | None
    created_by: str
    reason: str
    #: a fleet's canary or blue-green: the hosts the new release runs on, and the hosts
    #: left out of the rollout (host -> why), counted against max_failed
    hosts: list[str] = []
    hosts_left_out: dict[str, str] = {}


class EventView(View):
    id: int
    time: float
    environment: str | None
    version: str | None
    rollout_id: int | None
    kind: str
    actor: str
    message: str
    data: dict[str, Any]
    #: the epoch of the leader that wrote it, on servers sharing a PostgreSQL store
    epoch: int | None = None


class RolloutDetail(RolloutView):
    """One rollout with its events (``GET /api/v1/rollouts/{id}``)."""

    events: list[EventView]


class HostRouterView(View):
    """A host's own router (``placement: every_host``) as the controller last saw it."""

    listen: str
    #: "in step" (it holds the current table), "behind" (another table: set next pass),
    #: "not answering" (the host answers, its router does not: started again next pass),
    #: "unreachable" (the host does not answer: it gets the table when it is back)
    state: str
    #: the generation of the table it holds (0: none the controller set since it started)
    generation: int = 0
    pid: int | None = None
    error: str | None = None


class HostView(View):
    """One host of a fleet (``target: {kind: ssh}``) as the server last observed it."""

    name: str
    address: str
    reachable: bool
    #: why the host could not be observed (None when it answered)
    error: str | None = None
    #: live instances per release version
    instances: dict[str, int] = {}
    #: the host's own router, when the environment runs one on every host
    router: HostRouterView | None = None


class EnvironmentStatus(View):
    name: str
    current: str | None
    rollout: RolloutView | None
    #: the latest rollout, shown when none is in progress
    last_rollout: RolloutView | None
    #: per host, for a fleet (empty for the local target); observed every 2 s
    hosts: list[HostView] = []


class StatusView(View):
    app: str
    environments: list[EnvironmentStatus]


class WindowView(View):
    """One analysis window of a rollout, as `entrega analysis explain` shows it."""

    window: int
    metrics_asked: list[str]
    started_at: float
    updated_at: float
    #: the canary step (1-based) the window belonged to, None while unknown
    step: int | None
    verdict: str | None
    result: dict[str, Any] | None
    #: the window's last check (its step has ended), not merely the latest so far
    final: bool


class RolloutAnalysis(View):
    rollout: RolloutView
    steps: int
    #: each metric asked, with the environment's judge settings for it
    environment_metrics: dict[str, dict[str, Any]]
    windows: list[WindowView]


# -- deploys -------------------------------------------------------------------------------


class DeployRequestView(View):
    id: int
    environment: str
    version: str
    status: str
    actor: str
    reason: str
    forced: bool
    rollout_id: int | None
    created_at: float


class DeployStarted(View):
    rollout: RolloutView


class DeployQueued(View):
    queued: DeployRequestView


class Approved(View):
    approved: str
    environment: str


class RolloutRef(View):
    """The rollout a command acted on (promote, abort)."""

    rollout: int


class RolledBack(View):
    rollout: int
    version: str


# -- releases and the pipeline -------------------------------------------------------------


class ReleaseView(View):
    version: str
    digest: str
    meta: dict[str, Any]
    created_at: float
    created_by: str


class ReleaseCreated(Sparse):
    version: str
    digest: str
    #: False: the same version with the same bytes existed already (a no-op)
    created: bool
    #: only when the upload asked to deploy a new release to the first environment
    deploy: DeployStarted | DeployQueued | None = None


class StageView(Sparse):
    """One cell of the pipeline: where a release stands in an environment."""

    #: a rollout phase, a deploy request's status, or "-" (never there)
    status: str
    rollout_id: int | None = None
    since: float | None = None
    #: the release runs there now
    running: bool
    message: str | None = None


class PipelineRelease(View):
    version: str
    digest: str
    created_at: float
    meta: dict[str, Any]
    #: its artifact is still stored (a pruned release cannot be deployed again)
    retained: bool
    environments: dict[str, StageView]


class PipelineView(View):
    app: str
    environments: list[str]
    releases: list[PipelineRelease]


class ConfigChangeView(View):
    """One setting a reload found changed; ``before``/``after`` are JSON text (null: unset,
    or not shown: tokens and webhook URLs)."""

    path: str
    environment: str | None
    before: str | None
    after: str | None


class ConfigReloaded(View):
    """What ``POST /api/v1/config/reload`` did with the new entrega.yaml."""

    #: applied now (strategy, analysis, verification, gate, notify, auth, retention)
    applied: list[ConfigChangeView]
    #: router changes: applied once their environment has no rollout in progress
    waiting: list[ConfigChangeView]
    #: kept as they run until the server is restarted
    needs_restart: list[ConfigChangeView]
    #: environment -> what its router change waits for ("applying now" when idle)
    waiting_for: dict[str, str]
    #: one sentence saying all of the above
    message: str


class Health(View):
    ok: bool
    #: the app of a single-app server ("" when it delivers several: see ``apps``)
    app: str
    #: reconcile passes since the server started (summed over its apps)
    passes: int
    #: every app the server delivers
    apps: list[str] = []


# -- practice 5: feedback, DORA -------------------------------------------------------------


class FeedbackView(View):
    id: int
    time: float
    environment: str | None
    version: str
    claimed_version: str | None
    rating: int | None
    comment: str | None
    user_id: str | None
    tags: list[str]


class FeedbackSummary(View):
    count: int
    rated: int
    mean_rating: float | None
    low_ratings: int


class FeedbackList(View):
    app: str
    feedback: list[FeedbackView]
    summary: dict[str, FeedbackSummary]


class FeedbackAccepted(View):
    id: int
    version: str
    environment: str | None


class DoraMetric(View):
    value: Number | None
    tier: str | None
    samples: int
    unit: str


class DoraFailure(View):
    rollout_id: int
    version: str
    how: str
    recovery_s: Number | None


class DoraView(View):
    environment: str
    days: Number
    since: Number
    until: Number
    deployments: int
    deployment_frequency: DoraMetric
    lead_time: DoraMetric
    change_failure_rate: DoraMetric
    recovery_time: DoraMetric
    failures: list[DoraFailure]


class TeamDoraFailure(View):
    #: app -> the version that failed (several apps: a release group)
    releases: dict[str, str]
    group: str | None
    how: str
    recovery_s: Number | None


class TeamDoraFigures(View):
    """The four keys over every app's deployments together, a release group once."""

    deployments: int
    deployment_frequency: DoraMetric
    lead_time: DoraMetric
    change_failure_rate: DoraMetric
    recovery_time: DoraMetric
    failures: list[TeamDoraFailure]


class TeamDoraView(View):
    """The team's DORA (``GET /api/v1/dora`` of a server of several apps): ``team`` over
    every app the caller may see, ``apps`` each one's own report."""

    days: Number
    since: Number
    until: Number
    team: TeamDoraFigures
    apps: dict[str, DoraView]


# -- practice 5: a release's report ---------------------------------------------------------


class ReportRelease(View):
    digest: str | None
    meta: dict[str, Any]
    created_at: float | None


class RolloutSummary(View):
    id: int
    phase: str
    strategy: str
    from_version: str | None
    created_at: float
    finished_at: float | None
    created_by: str
    reason: str


class ReportRollout(RolloutSummary):
    #: when the release stopped serving here (None: it still does)
    serving_until: Number | None


class ReportVerdict(View):
    #: "promoted", "rolled back", "failed", a phase in progress, or "never rolled out"
    outcome: str
    phase: str | None
    reason: str
    #: worse, better, mixed, or no significant change
    quality: str


class ReportFigure(View):
    name: str
    label: str
    unit: str
    current: Number | None
    previous: Number | None
    change: Number | None
    change_ratio: Number | None
    higher_is_better: bool | None
    significant: bool | None
    direction: str | None
    reason: str


class TimelineEntry(View):
    time: float
    kind: str
    actor: str
    message: str
    version: str | None


class ReportAnalysis(View):
    rollout_id: int
    window: int
    verdict: str | None
    metrics: list[dict[str, Any]]


class WeightMark(View):
    time: float
    weights: dict[str, int]


class SeriesPoint(View):
    time: Number
    requests: Number
    errors: Number
    rps: Number
    error_rate: Number | None
    p50_ms: Number | None
    p95_ms: Number | None
    p99_ms: Number | None


class ReportSeries(View):
    start: Number
    end: Number
    current: list[SeriesPoint]
    previous: list[SeriesPoint]


class ReportRatings(View):
    #: how many ratings of each value, "1" to "5"
    current: dict[str, int]
    previous: dict[str, int]


class ReportComment(View):
    time: float
    rating: int | None
    comment: str | None
    user_id: str | None
    tags: list[str]


class ReleaseReport(View):
    """One rollout of a release against the release it replaced (``insights.gather``)."""

    app: str
    version: str
    environment: str
    previous_version: str | None
    generated_at: Number
    release: ReportRelease
    rollout: ReportRollout | None
    verdict: ReportVerdict
    figures: list[ReportFigure]
    #: seconds at each weight (keys are weights in percent, as strings)
    time_at_weight: dict[str, Number]
    rollouts: list[RolloutSummary]
    timeline: list[TimelineEntry]
    analysis: list[ReportAnalysis]
    weight_marks: list[WeightMark]
    series: ReportSeries
    ratings: ReportRatings
    comments: list[ReportComment]


class GroupMemberView(View):
    app: str
    version: str
    #: members that pass each environment before this one
    depends_on: list[str]


class GroupView(View):
    """A release group: its members, the environments it goes through, and where each
    member stands in each environment it entered."""

    name: str
    phase: str
    #: the environment the group is in (once ended: the last it was in)
    environment: str | None
    message: str
    members: list[GroupMemberView]
    environments: list[str]
    #: environment -> app -> {phase, rollout_id, replaced, message}
    progress: dict[str, dict[str, dict[str, Any]]]
    created_at: float
    updated_at: float
    finished_at: float | None
    created_by: str
