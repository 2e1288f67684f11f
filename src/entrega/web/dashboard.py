"""The dashboard's routes: pages, the JSON the page polls, token login, static files.

Pages need the viewer role, like the API's reads. Login checks the token with the API's
own authenticator and stores it in the ``entrega_token`` cookie (HttpOnly, so scripts
never see it; SameSite=Strict, so another site cannot make the browser use it). Login and
logout write that cookie, so like every cookie-authenticated change they need the
X-Entrega-Actor header (static/forms.js sends it): another site's form cannot log a
browser in with the attacker's token, nor out.
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

from entrega.insights.gather import Sources, build_dora, build_report
from entrega.insights.report import (
    format_clock,
    format_duration,
    format_figure,
    render_report_html,
)
from entrega.service import Service
from entrega.store.insights_repository import InsightsRepository
from entrega.web.auth import (
    TOKEN_COOKIE,
    AuthLike,
    CallerLike,
    caller_or_none,
    check_token,
    from_our_pages,
)

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


def caller_view(caller: CallerLike | None, auth: AuthLike) -> dict[str, Any] | None:
    if caller is None:
        return None
    return {"name": caller.name, "role": caller.role, "can_deploy": caller.allows("deployer"),
            "open": auth.open}


def live_state(service: Service, insights: InsightsRepository) -> dict[str, Any]:
    """What the page polls: environments with their live rollouts, recent history, and
    feedback per release."""
    totals = insights.feedback_totals(service.app)
    waiting: dict[str, list[str]] = {}
    for request in service.repo.requests(service.app, limit=200):
        if request.status == "awaiting_approval":
            waiting.setdefault(request.environment, []).append(request.version)
    environments = [{**env, "awaiting_approval": waiting.get(env["name"], [])}
                    for env in service.status()["environments"]]
    return {
        "app": service.app, "time": time.time(),
        "environments": environments,
        "history": service.history(limit=HISTORY_ROWS)[::-1],
        "feedback": {v: {"count": t.count, "mean_rating": t.mean_rating, "low": t.low}
                     for v, t in totals.items()},
    }


def dashboard_router(service: Service, auth: AuthLike, *,
                     clock: Callable[[], float] = time.time) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    templates = _templates()
    insights = InsightsRepository(service.repo.store)
    sources = Sources(service.app, service.repo, insights)

    def page(name: str, **context: Any) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(**context))

    def viewer(request: Request) -> CallerLike | None:
        caller = caller_or_none(auth, request)
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
        comments = [f for f in insights.feedback(service.app, limit=50) if f.comment][:10]
        return page("dashboard.html.j2", app=service.app, caller=caller_view(caller, auth),
                    state=live_state(service, insights),
                    releases=service.releases()[:20],
                    dora=build_dora(sources, environment=last, days=90, now=now).to_dict(),
                    comments=comments, poll_ms=POLL_MS)

    @router.get("/ui/state.json")
    async def state(request: Request) -> Response:
        caller = viewer(request)
        if caller is None:
            return JSONResponse({"error": "log in again", "login": "/login"}, status_code=401)
        return JSONResponse({**live_state(service, insights),
                             "caller": caller_view(caller, auth)})

    @router.get("/releases/{version}", response_class=HTMLResponse)
    async def release_report(version: str, request: Request,
                             environment: str | None = None,
                             rollout: int | None = None) -> Response:
        if viewer(request) is None:
            return to_login(request)
        report = build_report(sources, version, environment=environment, rollout_id=rollout,
                              now=clock())
        return HTMLResponse(render_report_html(report, back_url="/"))

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
        caller = check_token(auth, token) if token else None
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
