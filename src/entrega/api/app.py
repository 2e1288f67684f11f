"""The HTTP API: authenticate, parse, call the service layer, render JSON.

Reads need a viewer, changes a deployer, forcing the pipeline's order and reloading the
configuration an admin. The CI
webhook (``POST /api/v1/releases``) may instead sign its body with the shared secret.
Every answer is a read model of ``entrega.views``, declared as the route's response model,
so ``/openapi.json`` describes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, field_validator
from starlette.types import ASGIApp

from entrega import __version__
from entrega.api import errors
from entrega.api.apps import AppDispatch, server_routes
from entrega.api.insights import insights_router
from entrega.api.leader import LeaderGate
from entrega.api.params import MAX_ID, Environment, Limit, RowId, Version
from entrega.api.strictjson import StrictJsonRoute
from entrega.api.uploads import parse_upload, receive_body
from entrega.auth import SIGNATURE_HEADER, Authenticator, Caller
from entrega.config import Config
from entrega.errors import Unauthorized
from entrega.feedback.intake import FeedbackSettings
from entrega.names import check_version
from entrega.plane import ControlPlane
from entrega.service import Service
from entrega.views import (
    Approved,
    ConfigReloaded,
    DeployQueued,
    EventView,
    Health,
    PipelineView,
    ReleaseCreated,
    ReleaseView,
    RolledBack,
    RolloutAnalysis,
    RolloutDetail,
    RolloutRef,
    RolloutView,
    StatusView,
)

log = logging.getLogger("entrega.api")
MAX_META_NESTING = 8


class DeployIn(BaseModel):
    version: Version
    #: create the release first from this server-side path or URL (same bytes again is a
    #: no-op); refused unless auth.artifact_sources allows it: clients upload the bytes to
    #: POST /api/v1/releases instead, as `entrega deploy --artifact` does
    artifact: str | None = None
    strategy: str | None = None
    meta: dict[str, Any] = {}
    #: false: answer 409 instead of queueing behind a rollout in progress
    queue: bool = True
    #: admin only: skip the pipeline's order (needs a reason, recorded)
    force: bool = False
    reason: str = ""

    @field_validator("meta")
    @classmethod
    def _shallow(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Stored as JSON and shown in reports: commit metadata is a few flat fields.
        if nesting(value) > MAX_META_NESTING:
            raise ValueError(f"meta nests more than {MAX_META_NESTING} levels deep")
        return value


def nesting(value: object) -> int:
    """How many levels of lists and objects ``value`` has (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
        deepest = max(deepest, depth)
    return deepest


class PromoteIn(BaseModel):
    full: bool = False


class RollbackIn(BaseModel):
    to: Version | None = None


class ApproveIn(BaseModel):
    version: Version


def create_app(served: ControlPlane | Service, auth: Authenticator | None = None, *,
               feedback: FeedbackSettings | None = None,
               clock: Callable[[], float] = time.time) -> ASGIApp:
    """The whole HTTP surface of a server: each app's (:func:`app_api`), by the prefix
    that names it (``api/apps.py``). ``feedback`` and ``clock`` override the config's
    feedback settings and the wall clock (tests of rate limits)."""
    plane = served if isinstance(served, ControlPlane) else ControlPlane([served])
    auth = auth or Authenticator(next(iter(plane)).config.auth)
    apps = {s.app: app_api(s, auth.for_app(s.app), feedback=feedback, clock=clock)
            for s in plane}
    only = apps[plane.only.app] if plane.only is not None else None
    return LeaderGate(AppDispatch(apps, server_routes(plane, auth), only=only), plane)


def app_api(service: Service, auth: Authenticator, *,
            feedback: FeedbackSettings | None = None,
            clock: Callable[[], float] = time.time) -> FastAPI:
    """One app's API, dashboard and feedback intake, as a single-app server serves them;
    ``auth`` is the server's authenticator as this app sees it (``for_app``)."""

    def use_reloaded(config: Config) -> None:
        auth.use(config.auth)
        if problem := auth.webhook_secret_problem():
            log.warning(problem)

    service.on_reload.append(use_reloaded)
    if problem := auth.webhook_secret_problem():
        log.warning(problem)
    app = FastAPI(title="entrega", version=__version__, openapi_url="/openapi.json")
    app.router.route_class = StrictJsonRoute  # JSON bodies refuse duplicate keys
    app.state.service = service
    app.state.auth = auth

    def viewer(request: Request) -> Caller:
        return auth.require(request, "viewer")

    def deployer(request: Request) -> Caller:
        return auth.require(request, "deployer")

    errors.install(app)

    @app.get("/healthz")
    async def healthz() -> Health:
        return Health(ok=True, app=service.app, passes=service.controller.passes,
                      apps=[service.app])

    @app.get("/api/v1/status")
    async def status(request: Request) -> StatusView:
        viewer(request)
        return service.status()

    @app.get("/api/v1/pipeline")
    async def pipeline(request: Request, limit: Limit = 20) -> PipelineView:
        viewer(request)
        return service.pipeline(limit=min(limit, 200))

    @app.get("/api/v1/releases")
    async def releases(request: Request) -> list[ReleaseView]:
        viewer(request)
        return service.releases()

    @app.post("/api/v1/releases", status_code=201, response_model=ReleaseCreated,
              responses={200: {"model": ReleaseCreated,
                               "description": "the same version with the same bytes "
                                              "existed already: nothing changed"}})
    async def create_release(request: Request) -> JSONResponse:
        """The CI webhook: multipart (artifact file + fields) or JSON, signed with
        ``X-Entrega-Signature-256: sha256=<hex HMAC of the body>`` or sent with a token."""
        secret = auth.webhook_secret()
        signature = request.headers.get(SIGNATURE_HEADER)
        if signature is None:
            # Unsigned: only a deployer's token will do (or an open, loopback-only API
            # without a webhook secret).
            if auth.webhook_signed and (auth.open or auth.caller(request) is None):
                raise Unauthorized("the webhook is not signed",
                                   hint=f"send {SIGNATURE_HEADER} or a deployer's token")
            actor = deployer(request).name
        elif secret is None:
            # Configured but empty: the details (the variable's name) go to the log only.
            raise Unauthorized("a signed webhook, but the server has no webhook secret to "
                               "check it with" + (" (its variable is empty: see the server's "
                                                  "log)" if auth.webhook_signed else ""),
                               hint="set auth.webhook_secret_env and that variable")
        else:
            actor = "ci"  # checked against the body once it has arrived, below
        body = await receive_body(request, limit=service.config.auth.max_body_bytes,
                                  secret=secret, artifacts=service.artifacts)
        try:
            if signature is not None and not auth.verify_signature(body.digest, signature):
                raise Unauthorized("the webhook signature does not match the body",
                                   hint=f"{SIGNATURE_HEADER}: sha256=<HMAC-SHA256 of the "
                                        "exact body with the shared secret>")
            upload = await parse_upload(request, body)
            check_version(upload.version)
            if upload.artifact is None:
                release, created = await service.create_release_from(
                    version=upload.version, location=upload.location or "",
                    meta=upload.meta, actor=actor)
            else:
                release, created = await service.create_release(
                    version=upload.version, artifact=upload.artifact, meta=upload.meta,
                    actor=actor)
        finally:
            with anyio.CancelScope(shield=True):  # nothing of a refused request stays
                await anyio.to_thread.run_sync(body.cleanup)
        answer: dict[str, Any] = {"version": release.version, "digest": release.digest,
                                  "created": created}
        if created and upload.deploy:
            first = service.config.environments[0].name
            answer["deploy"] = await service.deploy(environment=first,
                                                    version=release.version, actor=actor,
                                                    reason="new release")
        return JSONResponse(ReleaseCreated.model_validate(answer).model_dump(mode="json"),
                            status_code=201 if created else 200)

    @app.post("/api/v1/environments/{environment}/deploy", status_code=201,
              response_model=RolloutView,
              responses={202: {"model": DeployQueued,
                               "description": "queued behind the rollout in progress"}})
    async def deploy(environment: Environment, body: DeployIn, request: Request) -> JSONResponse:
        caller = deployer(request)
        if body.artifact:
            await service.create_release_from(version=body.version, location=body.artifact,
                                              meta=body.meta, actor=caller.name)
        result = await service.deploy(environment=environment, version=body.version,
                                      strategy=body.strategy, actor=caller.name,
                                      queue=body.queue, force=body.force, reason=body.reason,
                                      admin=caller.allows("admin"))
        if isinstance(result, DeployQueued):
            return JSONResponse(result.model_dump(mode="json"), status_code=202)
        return JSONResponse(result.rollout.model_dump(mode="json"), status_code=201)

    @app.post("/api/v1/environments/{environment}/approve")
    async def approve(environment: Environment, body: ApproveIn,
                      request: Request) -> Approved:
        return await service.approve(environment=environment, version=body.version,
                                     actor=deployer(request).name)

    @app.post("/api/v1/environments/{environment}/promote")
    async def promote(environment: Environment, body: PromoteIn,
                      request: Request) -> RolloutRef:
        row = await service.promote(environment=environment, full=body.full,
                                    actor=deployer(request).name)
        return RolloutRef(rollout=row.id)

    @app.post("/api/v1/environments/{environment}/abort")
    async def abort(environment: Environment, request: Request) -> RolloutRef:
        row = await service.abort(environment=environment, actor=deployer(request).name)
        return RolloutRef(rollout=row.id)

    @app.post("/api/v1/environments/{environment}/rollback")
    async def rollback(environment: Environment, body: RollbackIn,
                       request: Request) -> RolledBack:
        row = await service.rollback(environment=environment, to=body.to,
                                     actor=deployer(request).name)
        return RolledBack(rollout=row.id, version=row.version)

    @app.get("/api/v1/rollouts/{rollout_id}")
    async def rollout(rollout_id: RowId, request: Request) -> RolloutDetail:
        viewer(request)
        return service.rollout(rollout_id)

    @app.get("/api/v1/rollouts/{rollout_id}/analysis")
    async def analysis(rollout_id: RowId, request: Request) -> RolloutAnalysis:
        viewer(request)
        return service.analysis(rollout_id)

    @app.get("/api/v1/history")
    async def history(request: Request, environment: Environment | None = None,
                      limit: Limit = 100, after_id: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
                      ) -> list[EventView]:
        viewer(request)
        return service.history(environment=environment, limit=min(limit, 1000),
                               after_id=after_id)

    @app.post("/api/v1/config/reload")
    async def reload_config(request: Request) -> ConfigReloaded:
        """Read entrega.yaml again (as SIGHUP does): admin only, as a changed file can
        change who may do what. A file with a mistake answers 400 with its file:line."""
        caller = auth.require(request, "admin")
        return service.reload_config(actor=caller.name)

    # Feedback, reports, DORA, /metrics and the dashboard (at /).
    app.include_router(insights_router(service, auth, settings=feedback, clock=clock))
    return app
