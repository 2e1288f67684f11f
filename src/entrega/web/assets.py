"""What every set of pages of a server shares: the Jinja2 templates, the static files, and
the base path the pages are served under.

An app's pages are served at ``/`` by a single-app server and at ``/apps/<app>/`` by a
server of several apps (``api/apps.py`` sets the ASGI scope's ``root_path``); the
server's own overview and login live at its root. So no page, script or redirect names an
absolute path of its own: each is the request's base path (:func:`base_path`) plus the
path inside the app. Templates get it as ``base``, scripts as ``<body data-base>``.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response
from jinja2 import Environment, PackageLoader, select_autoescape

from entrega.insights.report import format_clock, format_duration, format_figure

STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".svg": "image/svg+xml"}
#: where an app's pages live inside a server of several apps (api/apps.py's prefix)
APPS_PREFIX = "/apps/"


def base_path(request: Request) -> str:
    """The path these pages are served under: "" at a server's root, ``/apps/<app>`` for
    one app of several (never a trailing slash: links are ``base + "/path"``)."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def server_home(base: str, app: str) -> str:
    """The server's own root as seen from ``app``'s pages at ``base``: the overview of a
    server of several apps (or, for a single-app server, the dashboard itself)."""
    return base.removesuffix(APPS_PREFIX + app)


def templates() -> Environment:
    env = Environment(loader=PackageLoader("entrega.web", "templates"),
                      autoescape=select_autoescape(default=True), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["clock"] = format_clock
    env.filters["duration"] = format_duration
    env.filters["figure"] = format_figure
    return env


def static_router() -> APIRouter:
    """``/ui/static/<name>``: the stylesheet and scripts, from the package (no build step)."""
    router = APIRouter(include_in_schema=False)

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
