"""The team's panels on the overview of a server of several apps: the team's DORA and the
recent release groups.

Both are the read models the API answers, computed the same way, so the page and
``GET /api/v1/dora`` / ``GET /api/v1/groups`` cannot disagree: the team's four keys over
every app the caller may see (``insights/team.py``: a release group counts once), each
app's own keys beside them, and the groups whose every member the caller may see (a
group with one hidden member is hidden whole, as the API hides it). The DORA panel is
drawn once with the page (90 days move slowly); the groups panel is redrawn by
``static/overview.js`` from ``GET /api/v1/groups?limit=10`` with each poll.
"""

from __future__ import annotations

from entrega.auth import Caller
from entrega.insights.team import compute_team_dora
from entrega.plane import ControlPlane
from entrega.plane.groups import visible_groups as visible_groups
from entrega.views import TeamDoraView

#: The window of the team's DORA panel, in days: the single-app dashboard's.
TEAM_DORA_DAYS = 90
#: How many of the most recent release groups the panel shows (the poll asks as many).
RECENT_GROUPS = 10


def team_dora(plane: ControlPlane, caller: Caller, *, now: float,
              days: float = TEAM_DORA_DAYS) -> TeamDoraView:
    """The team's DORA over the apps ``caller`` may see, each in its own last environment
    (``GET /api/v1/dora`` without ``?environment=``)."""
    histories = [s.dora_history(days=days, now=now) for s in plane if caller.may_see(s.app)]
    report = compute_team_dora(histories, now=now, days=days)
    return TeamDoraView.model_validate(report.to_dict())
