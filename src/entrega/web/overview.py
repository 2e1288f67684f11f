"""The overview of a server of several apps, at its root: every app the caller may see,
each with its environments (the release each runs, the rollout in progress: phase,
weights, step), linking to the app's own dashboard at ``/apps/<app>/``.

The page starts from the same read models ``GET /api/v1/apps`` answers (each app's
``status``), and ``static/overview.js`` polls that endpoint (same origin, the login cookie)
to keep it live: the page and the API cannot disagree on what an app is doing. Which apps
a caller sees is the token's business (``Caller.may_see``); the page never lists an app the
API would refuse. Its login is the dashboard's (``login.py``), at the server's root: one
login serves every app.

Below the apps, the team's panels (``team.py``): the team's DORA over the apps the caller
may see, and the recent release groups, the latter kept live by the same poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from entrega.auth import Authenticator, Caller
from entrega.plane import ControlPlane
from entrega.views import StatusView
from entrega.web.assets import static_router, templates
from entrega.web.dashboard import POLL_MS, caller_view
from entrega.web.login import login_router, page, to_login, visitor
from entrega.web.team import RECENT_GROUPS, team_dora, visible_groups


def visible_apps(plane: ControlPlane, caller: Caller) -> list[StatusView]:
    """Each app ``caller`` may see, in the configuration's order (``GET /api/v1/apps``)."""
    return [plane.service(name).status() for name in plane.names if caller.may_see(name)]


def overview_router(plane: ControlPlane, auth: Authenticator, *,
                    clock: Callable[[], float] = time.time) -> APIRouter:
    """``/`` (the overview), ``/login``, ``/logout`` and the static files at the root of a
    server of several apps; ``auth`` is the server's own (every app's tokens), ``clock``
    the end of the team's DORA window."""
    router = APIRouter(include_in_schema=False)
    pages = templates()

    @router.get("/", response_class=HTMLResponse)
    async def overview(request: Request) -> Response:
        who = visitor(auth, request)
        if who.caller is None:
            return to_login(request, who)
        apps = [status.model_dump(mode="json") for status in visible_apps(plane, who.caller)]
        caller = caller_view(who.caller, auth)
        dora = team_dora(plane, who.caller, now=clock())
        groups = [g.model_dump(mode="json")
                  for g in visible_groups(plane, who.caller, limit=RECENT_GROUPS)]
        return page(pages, request, "overview.html.j2", app=None,
                    caller=None if caller is None else caller.model_dump(mode="json"),
                    apps=apps, total=len(plane.names), poll_ms=POLL_MS,
                    dora=dora.model_dump(mode="json"), groups=groups,
                    groups_limit=RECENT_GROUPS)

    router.include_router(login_router(auth, pages, app=None))
    router.include_router(static_router())
    return router
