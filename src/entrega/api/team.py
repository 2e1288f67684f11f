"""The team's DORA over the apps of one server (issue 14): the four keys over every app's
deployments together, and each app's own report beside them (``insights/team.py``).

``GET /api/v1/team/dora`` answers on any server; on a server of several apps
``GET /api/v1/dora`` answers it too, as the natural reading of "DORA" there. A
single-app server keeps ``/api/v1/dora`` as its app's own report, and every app keeps
``/api/v1/apps/<app>/dora``. The figures cover the apps the caller's token may see, each
in ``?environment=`` (an app without it is left out) or by default in its own last
environment, since apps need not name their stages alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Request

from entrega.api.params import Environment
from entrega.auth import Authenticator
from entrega.errors import BadRequest
from entrega.insights.team import compute_team_dora
from entrega.plane import ControlPlane
from entrega.views import TeamDoraView

TEAM_DORA = "/api/v1/team/dora"
MAX_DAYS = 3660


def team_router(plane: ControlPlane, auth: Authenticator, *,
                clock: Callable[[], float] = time.time) -> APIRouter:
    router = APIRouter()

    async def team_dora(request: Request, environment: Environment | None = None,
                        days: float = 90) -> TeamDoraView:
        """DORA's four keys over every app the caller may see (a release group counts
        once), each with its DORA 2024 tier, and each app's own figures."""
        caller = auth.require(request, "viewer")
        if not 0 < days <= MAX_DAYS:  # (also refuses nan)
            raise BadRequest(f"days must be between 0 and {MAX_DAYS}")
        services = [s for s in plane if caller.may_see(s.app)]
        if environment is not None:
            having = [s for s in services
                      if any(e.name == environment for e in s.config.environments)]
            if not having:
                names = sorted({e.name for s in services for e in s.config.environments})
                raise BadRequest(f"no app has an environment named {environment!r}",
                                 hint=f"environments: {', '.join(names) or 'none'}; "
                                      "or leave it out: each app's last environment")
            services = having
        now = clock()
        histories = [s.dora_history(environment=environment, days=days, now=now)
                     for s in services]
        report = compute_team_dora(histories, now=now, days=days)
        return TeamDoraView.model_validate(report.to_dict())

    router.add_api_route(TEAM_DORA, team_dora, methods=["GET"],
                         summary="The team's DORA over every app, and each app's")
    if plane.many:
        router.add_api_route("/api/v1/dora", team_dora, methods=["GET"],
                             summary="The team's DORA over every app, and each app's")
    return router
