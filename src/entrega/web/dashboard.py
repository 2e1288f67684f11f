"""The dashboard's routes: pages, the JSON the page polls, token login, static files.

Pages need the viewer role, like the API's reads. Everything shown comes from the
service's read models (``entrega.views``), as the API's answers do. Login and the static
files are the ones every set of pages shares (``login.py``, ``assets.py``).

The same pages serve a single-app server at ``/`` and one app of several at
``/apps/<app>/``: every link, form, fetch and redirect is under the request's base path
(``assets.base_path``), so nothing here names an absolute path of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from entrega.auth import Authenticator, Caller
from entrega.insights.report import render_report_html
from entrega.service import Service
from entrega.views import EnvironmentStatus, EventView, View
from entrega.web.assets import base_path, static_router, templates
from entrega.web.login import login_router, page, to_login, visitor

#: How often the page polls, in ms: live enough to watch a canary step, cheap for the server.
POLL_MS = 1500
HISTORY_ROWS = 25


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
    pages = templates()

    @router.get("/", response_class=HTMLResponse)
    async def dashboard(request: Request) -> Response:
        who = visitor(auth, request)
        if who.caller is None:
            return to_login(request, who)
        now = clock()
        environments = [e.name for e in service.config.environments]
        last = environments[-1]
        comments = [f for f in service.feedback(limit=50).feedback if f.comment][:10]
        return page(pages, request, "dashboard.html.j2", app=service.app,
                    caller=_json(caller_view(who.caller, auth)),
                    state=_json(live_state(service)),
                    releases=service.releases()[:20],
                    dora=_json(service.dora(environment=last, days=90, now=now)),
                    comments=comments, poll_ms=POLL_MS)

    @router.get("/ui/state.json")
    async def state(request: Request) -> Response:
        who = visitor(auth, request)
        if who.caller is None:
            login = f"{base_path(request)}/login"
            if who.refused is not None:
                return JSONResponse({"error": who.refused, "login": login}, status_code=403)
            return JSONResponse({"error": "log in again", "login": login}, status_code=401)
        return JSONResponse({**_json(live_state(service)),
                             "caller": _json(caller_view(who.caller, auth))})

    @router.get("/releases/{version}", response_class=HTMLResponse)
    async def release_report(version: str, request: Request,
                             environment: str | None = None,
                             rollout: int | None = None) -> Response:
        who = visitor(auth, request)
        if who.caller is None:
            return to_login(request, who)
        report = service.report(version, environment=environment, rollout_id=rollout,
                                now=clock())
        return HTMLResponse(render_report_html(report.model_dump(),
                                               back_url=f"{base_path(request)}/"))

    router.include_router(login_router(auth, pages, app=service.app))
    router.include_router(static_router())
    return router
