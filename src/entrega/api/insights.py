"""HTTP API of practice 5: user feedback, release reports, DORA, /metrics, and the dashboard.

``insights_router(service, auth)`` returns one router with all of it; the server mounts it
beside the rollout API. Feedback intake is public (no token) and bounded: a body size
limit, a token bucket per client, CORS as configured. Everything else needs the viewer
role. Like the rollout API, it reads through the service, never the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError

from entrega.api.params import MAX_ID, Environment, Limit, Version
from entrega.auth import Authenticator
from entrega.codec import from_config
from entrega.dataplane import proof
from entrega.errors import (
    BadFeedback,
    BadRequest,
    EntregaError,
    PayloadTooLarge,
    RateLimited,
)
from entrega.feedback import FeedbackIn, FeedbackSettings
from entrega.feedback.intake import (
    ENVIRONMENT_HEADER,
    RELEASE_COOKIE,
    RELEASE_HEADER,
)
from entrega.insights.report import render_report_html
from entrega.jsonin import loads_json
from entrega.service import Service
from entrega.views import DoraView, FeedbackAccepted, FeedbackList, ReleaseReport
from entrega.web import dashboard_router

FEEDBACK_PATHS = ("/api/v1/feedback", "/.entrega/feedback")
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def feedback_settings(config: object) -> FeedbackSettings:
    """Settings from the config's ``feedback:`` section when it has one (same field names
    as :class:`FeedbackSettings`), else the defaults."""
    section = getattr(config, "feedback", None)
    return FeedbackSettings() if section is None else from_config(FeedbackSettings, section)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) more than ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"feedback is limited to {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"feedback is limited to {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_feedback(body: bytes, content_type: str) -> FeedbackIn:
    """JSON (any content type: ``text/plain`` posts need no CORS preflight) or a form."""
    try:
        if content_type.startswith("application/x-www-form-urlencoded"):
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            raw: Any = {**form, "tags": [t for t in form.get("tags", "").split(",") if t]}
        else:
            raw = loads_json(body or b"null")
        if not isinstance(raw, dict):
            raise BadFeedback("send a JSON object like {\"rating\": 4, \"comment\": \"...\"}")
        return FeedbackIn.model_validate(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ValidationError):
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                                 for e in exc.errors())
            raise BadFeedback(f"invalid feedback: {problems}") from None
        raise BadFeedback(f"the body is not valid JSON ({exc})",
                          hint='send {"rating": 4, "comment": "..."}') from None


def insights_router(service: Service, auth: Authenticator, *,
                    settings: FeedbackSettings | None = None,
                    clock: Callable[[], float] = time.time) -> APIRouter:
    router = APIRouter()
    settings = settings or feedback_settings(service.config)
    intake = service.feedback_intake(
        settings=settings,
        router_key=proof.load_or_create_key(proof.key_path(service.config.state_path)),
        clock=clock)

    def cors(request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        if not origin:
            return {}
        if "*" in settings.cors_origins:
            return {"Access-Control-Allow-Origin": "*"}
        if origin in settings.cors_origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {}

    async def submit(request: Request) -> Response:
        headers = cors(request)
        try:
            body = parse_feedback(await read_body(request, settings.max_body_bytes),
                                  request.headers.get("content-type", ""))
            client = intake.client_of(request.client.host if request.client else None,
                                      request.headers.get("x-forwarded-for"),
                                      request.headers.getlist(proof.HEADER))
            row = intake.submit(body, client=client,
                                header_release=request.headers.get(RELEASE_HEADER),
                                cookie_release=request.cookies.get(RELEASE_COOKIE),
                                header_environment=request.headers.get(ENVIRONMENT_HEADER))
        except RateLimited as exc:
            return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=429,
                                headers={**headers,
                                         "Retry-After": str(max(1, round(exc.retry_after_s)))})
        except EntregaError as exc:
            return JSONResponse({"error": exc.message, "hint": exc.hint},
                                status_code=exc.status_code, headers=headers)
        accepted = FeedbackAccepted(id=row.id, version=row.version,
                                    environment=row.environment)
        return JSONResponse(accepted.model_dump(mode="json"), status_code=201,
                            headers=headers)

    async def preflight(request: Request) -> Response:
        headers = cors(request)
        if headers:
            headers.update({"Access-Control-Allow-Methods": "POST, OPTIONS",
                            "Access-Control-Allow-Headers": "Content-Type, X-Entrega-Release",
                            "Access-Control-Max-Age": "600"})
        return Response(status_code=204, headers=headers)

    for path in FEEDBACK_PATHS:
        router.add_api_route(path, submit, methods=["POST"], status_code=201,
                             response_model=FeedbackAccepted,
                             summary="Send a rating and/or a comment (public)")
        router.add_api_route(path, preflight, methods=["OPTIONS"], include_in_schema=False)

    @router.get("/.entrega/feedback.js", include_in_schema=False)
    async def widget() -> Response:
        script = resources.files("entrega.web").joinpath("static", "feedback.js").read_bytes()
        return Response(script, media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "public, max-age=300"})

    @router.get("/api/v1/feedback")
    async def list_feedback(request: Request, version: Version | None = None,
                            environment: Environment | None = None,
                            limit: Limit = 200) -> FeedbackList:
        auth.require(request, "viewer")
        return service.feedback(version=version, environment=environment,
                                limit=max(1, min(limit, 5000)))

    @router.get("/api/v1/releases/{version}/report", response_model=ReleaseReport,
                responses={200: {"content": {"text/html": {}},
                                 "description": "the report (format=html: one page)"}})
    async def report(version: Version, request: Request,
                     format: str = "json",
                     environment: Environment | None = None,
                     rollout: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
                     ) -> Response | ReleaseReport:
        """One rollout of the release (default: its latest) against the release it
        replaced in that rollout."""
        auth.require(request, "viewer")
        if format not in ("json", "html"):
            raise BadRequest(f"unknown format {format!r}", hint="use json or html")
        if environment:
            service.config.environment(environment)
        data = service.report(version, environment=environment, rollout_id=rollout,
                              now=clock())
        if format == "html":
            return HTMLResponse(render_report_html(data.model_dump()))
        return data

    @router.get("/api/v1/dora")
    async def dora(request: Request, environment: Environment | None = None,
                   days: float = 90) -> DoraView:
        auth.require(request, "viewer")
        if environment:
            service.config.environment(environment)
        if not 0 < days <= 3660:  # (also refuses nan)
            raise BadRequest("days must be between 0 and 3660")
        return service.dora(environment=environment, days=days, now=clock())

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        auth.require(request, "viewer")
        return Response(service.metrics_text(), media_type=PROMETHEUS_CONTENT_TYPE)

    router.include_router(dashboard_router(service, auth, clock=clock))
    return router
