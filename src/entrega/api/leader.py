"""Servers sharing a PostgreSQL store: which one leads, and writes only there.

A standby serves every read (the store is the same) and answers a write with 503, the
leader's address in ``X-Entrega-Leader`` and the body's ``leader`` (the CLI sends the
request there: ``cli/client.py``). Two paths tell a load balancer or an operator who
leads, as Patroni's ``/primary`` does for PostgreSQL:

- ``GET /api/v1/leader``: this server's role and the leader's identity, address and epoch;
- ``GET /healthz/leader``: 200 on the leader, 503 elsewhere (an HAProxy ``httpchk`` in
  front of the servers sends clients to the leader alone).

A server alone on its store (SQLite) leads by definition.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from entrega.api.errors import error_response
from entrega.errors import EntregaError
from entrega.plane import ControlPlane

LEADER_API = "/api/v1/leader"
LEADER_HEALTH = "/healthz/leader"
#: What a standby serves as it is: reads, and the dashboard's login (a signed cookie).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATHS = ("/login", "/logout")


class LeaderGate:
    """ASGI, in front of everything the server answers (see the module docstring)."""

    def __init__(self, app: ASGIApp, plane: ControlPlane) -> None:
        self.app = app
        self.plane = plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in (LEADER_API, LEADER_HEALTH) and scope["method"] in SAFE_METHODS:
            await self._answer_who_leads(path, send)
            return
        role = self.plane.role
        if role is not None and scope["method"] not in SAFE_METHODS \
                and not path.endswith(LOGIN_PATHS) and not role.leads:
            try:
                leader = await role.leader()
            except EntregaError:
                leader = None
            await error_response(role.not_leader(leader))(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _answer_who_leads(self, path: str, send: Send) -> None:
        role = self.plane.role
        body: dict[str, Any]
        if role is None:
            body = {"role": "leader", "shared_store": False, "leader": None}
            leads = True
        else:
            leads = role.leads
            leader: dict[str, object] | None
            if leads:  # no query: the answer must not wait behind a takeover's work
                leader = role.as_leader().to_dict()
            else:
                try:
                    leader = (await role.leader()).to_dict()
                except EntregaError:
                    leader = None  # the database does not answer: who leads is not known
            body = {"role": "leader" if leads else "standby", "shared_store": True,
                    "leader": leader, "this_server": role.election.identity,
                    "leading_since": role.leading_since}
        status = 200 if path == LEADER_API or leads else 503
        raw = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(raw)).encode())]})
        await send({"type": "http.response.body", "body": raw})
