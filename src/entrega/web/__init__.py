"""The web dashboard: server-rendered pages (Jinja2, autoescaped) plus a little plain
JavaScript that polls JSON every 1.5 s for the live parts. No build step: the files under
``static/`` are what the browser runs.

Who may press which button is the API's decision (roles); the page only hides or
disables what the caller's role cannot do, so a stale page never grants anything.
"""

from entrega.web.dashboard import dashboard_router

__all__ = ["dashboard_router"]
