"""The dashboard's routes: pages, the JSON the page polls, token login, static files.

Pages need the viewer role, like the API's reads. Everything shown comes from the
service's read models (``entrega.views``), as the API's answers do. Login checks the token
with the API's own authenticator (``entrega.auth``) and stores it in the ``entrega_token``
cookie (HttpOnly, so scripts never see it; SameSite=Strict, so another site cannot make
the browser use it). Login and logout write that cookie, so like every
cookie-authenticated change they need the X-Entrega-Actor header (static/forms.js sends
it): another site's form cannot log a browser in with the attacker's token, nor out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel

from entrega.auth import TOKEN_COOKIE, Authenticator, Caller, from_our_pages
from entrega.insights.report import (
    format_clock,
    format_duration,
    format_figure,
    render_report_html,
)
from entrega.service import Service
from entrega.views import EnvironmentStatus, EventView, View

#: How often the page polls, in ms: live enough to watch a canary step, cheap for the server.
POLL_MS = 1500
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml"}
HISTORY_ROWS = 25


def _templates() -> Environment:
    env = Environment(loader=PackageLoader("entrega.web", "templates"),
                      autoescape=select_autoescape(default=True), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["clock"] = format_clock
    env.filters["duration"] = format_duration
    env.filters["figure"] = format_figure
    return env


class CallerView(View):
    """Who is looking, and what the page may offer them (the API decides regardless)."""

    name: str
    role: str
    can_deploy: bool
    #: no tokens configured: the page says the API is open
    open: bool


class LiveEnvironment(EnvironmentStatus):
    #: releases waiting at this environment's manual gate
    awaiting_approval: list[str]


class ReleaseFeedback(View):
    count: int
    mean_rating: float | None
    low: int


class LiveState(View):
    """What the page polls (``/ui/state.json``): environments with their live rollouts,
    recent history (oldest first), and feedback per release."""

    app: str
    time: float
    environments: list[LiveEnvironment]
    history: list[EventView]
    feedback: dict[str, ReleaseFeedback]


def caller_view(caller: Caller | None, auth: Authenticator) -> CallerView | None:
    if caller is None:
        return None
    return CallerView(name=caller.name, role=caller.role,
                      can_deploy=caller.allows("deployer"), open=auth.open)


def live_state(service: Service) -> LiveState:
    waiting = service.awaiting_approval()
    return LiveState(
        app=service.app, time=time.time(),
        environments=[LiveEnvironment(**dict(env), awaiting_approval=waiting.get(env.name, []))
                      for env in service.status().environments],
        history=service.history(limit=HISTORY_ROWS)[::-1],
        feedback={v: ReleaseFeedback(count=s.count, mean_rating=s.mean_rating,
                                     low=s.low_ratings)
                  for v, s in service.feedback_summary().items()})


def _json(view: BaseModel | None) -> Any:
    return None if view is None else view.model_dump(mode="json")


def dashboard_router(service: Service, auth: Authenticator, *,
                     clock: Callable[[], float] = time.time) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    templates = _templates()

    def page(name: str, **context: Any) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(**context))

    def viewer(request: Request) -> Caller | None:
        caller = auth.caller_or_none(request)
        return caller if caller is not None and caller.allows("viewer") else None

    def to_login(request: Request) -> RedirectResponse:
        response = RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        if request.cookies.get(TOKEN_COOKIE):
            response.delete_cookie(TOKEN_COOKIE, path="/")
        return response

    @router.get("/", response_class=HTMLResponse)
    async def dashboard(request: Request) -> Response:
        caller = viewer(request)
        if caller is None:
            return to_login(request)
        now = clock()
        environments = [e.name for e in service.config.environments]
        last = environments[-1]
        comments = [f for f in service.feedback(limit=50).feedback if f.comment][:10]
        return page("dashboard.html.j2", app=service.app,
                    caller=_json(caller_view(caller, auth)),
                    state=_json(live_state(service)),
                    releases=service.releases()[:20],
                    dora=_json(service.dora(environment=last, days=90, now=now)),
                    comments=comments, poll_ms=POLL_MS)

    @router.get("/ui/state.json")
    async def state(request: Request) -> Response:
        caller = viewer(request)
        if caller is None:
            return JSONResponse({"error": "log in again", "login": "/login"}, status_code=401)
        return JSONResponse({**_json(live_state(service)),
                             "caller": _json(caller_view(caller, auth))})

    @router.get("/releases/{version}", response_class=HTMLResponse)
    async def release_report(version: str, request: Request,
                             environment: str | None = None,
                             rollout: int | None = None) -> Response:
        if viewer(request) is None:
            return to_login(request)
        report = service.report(version, environment=environment, rollout_id=rollout,
                                now=clock())
        return HTMLResponse(render_report_html(report.model_dump(), back_url="/"))

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/") -> Response:
        return page("login.html.j2", app=service.app, open=auth.open, error=None,
                    next=_safe_next(next), caller=None)

    def cross_site(target: str) -> Response:
        refused = page("login.html.j2", app=service.app, open=auth.open, next=target,
                       caller=None, error="Refused: log in and out from entrega's own pages "
                                          "(a form posted by another site, or JavaScript "
                                          "is off).")
        refused.status_code = 403
        return refused

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        target = _safe_next((form.get("next") or ["/"])[0])
        if not from_our_pages(request):
            return cross_site(target)  # login CSRF: someone else's token in your browser
        caller = auth.token_caller(token) if token else None
        if caller is None:
            refused = page("login.html.j2", app=service.app, open=auth.open,
                           error="That token is not valid.", next=target, caller=None)
            refused.status_code = 401
            return refused
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https", max_age=30 * 86400)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        if not from_our_pages(request):
            return cross_site("/")
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path="/")
        return response

    @router.get("/ui/static/{name}")
    async def static(name: str) -> Response:
        suffix = name[name.rfind("."):] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            return Response("not found", status_code=404)
        try:
            body = resources.files("entrega.web").joinpath("static", name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return Response("not found", status_code=404)
        return Response(body, media_type=STATIC_TYPES[suffix],
                        headers={"Cache-Control": "no-cache"})

    return router


def _safe_next(target: str) -> str:
    """Only local paths: a login link must not redirect to another site."""
    return target if target.startswith("/") and not target.startswith("//") else "/"
