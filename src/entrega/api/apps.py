"""One server, several apps: which app a request is for.

Every app has its whole HTTP surface (API, dashboard, feedback intake, /metrics) as a
single-app server has it, under its own prefix:

- ``/api/v1/apps/<app>/...``: the app's API (``/api/v1/apps/api/status`` is the ``api``
  app's ``/api/v1/status``);
- ``/apps/<app>/...``: everything else of the app (its dashboard at ``/apps/<app>/``, the
  feedback its routers forward, ``/apps/<app>/api/v1/...`` as well), served with
  ``root_path`` ``/apps/<app>`` so its pages link within it.

A single-app server also answers every path as it always did (``/api/v1/status``,
``/``). A server of several apps answers the rest itself: ``/api/v1/apps`` (every app the
caller may see, with its environments and rollouts in progress: the overview),
``/healthz``, ``/metrics`` (each family once, a sample per app), and for any other
``/api/v1/...`` a 404 that names the apps and how to pick one; and its own pages: the
overview of every app at ``/``, with a login at ``/login`` (``web/overview.py``). Paths
are matched here once, by prefix, so twenty apps cost one dictionary lookup, not twenty
route tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from entrega.api import errors
from entrega.api.groups import groups_router
from entrega.api.team import TEAM_DORA, team_router
from entrega.auth import Authenticator
from entrega.insights.prometheus import render_metrics
from entrega.plane import ControlPlane
from entrega.views import Health, View
from entrega.web.overview import overview_router, visible_apps

API = "/api/v1"
APPS_API = "/api/v1/apps/"
APPS = "/apps/"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GROUPS = "/api/v1/groups"
ANY = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


class AppsView(View):
    """Every app the caller may see, as ``GET /api/v1/apps/<app>/status`` shows each."""

    apps: list[Any]


class AppDispatch:
    """ASGI: a request to the app it names (by prefix), else to the server's own routes
    (``top``), else (a single-app server) to its only app."""

    def __init__(self, apps: Mapping[str, ASGIApp], top: ASGIApp, *,
                 only: ASGIApp | None = None) -> None:
        self.apps = apps
        self.top = top
        self.only = only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await (self.only or self.top)(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(APPS_API):
            name, _, rest = path[len(APPS_API):].partition("/")
            path = f"{APPS}{name}{API}/{rest}" if rest else f"{APPS}{name}{API}"
            scope = {**scope, "path": path, "raw_path": path.encode()}
        if path.startswith(APPS):
            name = path[len(APPS):].partition("/")[0]
            app = self.apps.get(name)
            if app is not None:
                root = scope.get("root_path", "") + APPS + name
                await app({**scope, "root_path": root}, receive, send)
                return
        await (self.only if self.only is not None and not _server_own(path)
               else self.top)(scope, receive, send)


def _server_own(path: str) -> bool:
    return path in (API + "/apps", API + "/apps/", TEAM_DORA) \
        or path.startswith((APPS, GROUPS))


def server_routes(plane: ControlPlane, auth: Authenticator, *,
                  openapi: Callable[[], dict[str, Any]] | None = None) -> FastAPI:
    """What the server answers itself: the overview of its apps; with several apps also
    its pages (the overview at /, login), /healthz, /metrics and a clear 404 for an API
    path that names no app."""
    top = FastAPI(title="entrega", openapi_url=None, docs_url=None, redoc_url=None)
    errors.install(top)

    def visible(request: Request) -> list[str]:
        caller = auth.require(request, "viewer")
        return [name for name in plane.names if caller.may_see(name)]

    @top.get(API + "/apps")
    async def apps(request: Request) -> AppsView:
        return AppsView(apps=visible_apps(plane, auth.require(request, "viewer")))

    top.include_router(groups_router(plane, auth))

    top.include_router(team_router(plane, auth))

    # (the catch-alls are answers about paths, not API: not in the schema)
    @top.api_route(APPS + "{name}", methods=ANY, include_in_schema=False)
    @top.api_route(APPS + "{name}/{rest:path}", methods=ANY, include_in_schema=False)
    async def no_such_app(name: str) -> JSONResponse:
        return JSONResponse({"error": f"this server delivers no app named {name!r}",
                             "hint": f"apps: {', '.join(plane.names)}"}, status_code=404)

    if not plane.many:
        return top

    top.include_router(overview_router(plane, auth))

    @top.get("/healthz")
    async def healthz() -> Health:
        return Health(ok=True, app="", passes=sum(s.controller.passes for s in plane),
                      apps=list(plane.names))

    @top.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        service = next(iter(plane))
        return Response(render_metrics(visible(request), service.insights),
                        media_type=PROMETHEUS_CONTENT_TYPE)

    @top.api_route(API + "/{rest:path}", methods=ANY, include_in_schema=False)
    @top.api_route("/.entrega/{rest:path}", methods=ANY, include_in_schema=False)
    async def which_app(rest: str) -> JSONResponse:
        return JSONResponse({
            "error": f"this server delivers {len(plane.names)} apps "
                     f"({', '.join(plane.names)}): name the app in the path",
            "hint": "use /api/v1/apps/<app>/... (the CLI: entrega --app NAME, or "
                    "ENTREGA_APP)"}, status_code=404)

    return top
