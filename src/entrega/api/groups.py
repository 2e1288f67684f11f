"""Release groups over the HTTP API: ``/api/v1/groups`` (the server's own routes, as a
group spans apps).

Creating a group needs a deployer allowed on every member app, or the CI webhook's
signature over the body (as for an upload); reading one needs a viewer who may see every
member app. The members' releases are created first, one upload per app
(``POST /api/v1/apps/<app>/releases`` with ``deploy: false``): the group then moves those
bytes, as a single app's pipeline does.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from entrega.auth import SIGNATURE_HEADER, Authenticator, Caller
from entrega.errors import Forbidden, Unauthorized
from entrega.names import check_version
from entrega.plane import ControlPlane
from entrega.plane.groups import group_view, visible_groups
from entrega.views import GroupView


class GroupMemberIn(BaseModel):
    app: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=1, max_length=128)


class RestoreIn(BaseModel):
    #: where to restore it (default: the last environment the group went to)
    environment: str | None = Field(default=None, max_length=64)


class GroupIn(BaseModel):
    #: the group's own version (``2026.12.1``): one name, the same rules as a release's
    name: str = Field(min_length=1, max_length=128)
    members: list[GroupMemberIn] = Field(min_length=2, max_length=100)


def groups_router(plane: ControlPlane, auth: Authenticator) -> APIRouter:
    router = APIRouter()

    def allowed(request: Request, role: str, apps: list[str]) -> Caller:
        caller = auth.require(request, role)
        hidden = [app for app in apps if not caller.may_see(app)]
        if hidden:
            raise Forbidden(f"{caller.name}'s token is limited to the apps "
                            f"{', '.join(caller.apps or ())}, not {', '.join(hidden)}")
        return caller

    def member_apps(name: str) -> list[str]:
        return [m.app for m in group_view(plane.groups.group(name)).members]

    @router.post("/api/v1/groups", status_code=201)
    async def create(body: GroupIn, request: Request) -> GroupView:
        """Deliver several apps' releases as one group (``depends_on`` orders them)."""
        raw = await request.body()
        signature = request.headers.get(SIGNATURE_HEADER)
        apps = [m.app for m in body.members]
        if signature is not None:
            if not auth.verify_signature(auth.body_digest(raw), signature):
                raise Unauthorized("the webhook signature does not match the body",
                                   hint=f"{SIGNATURE_HEADER}: sha256=<HMAC-SHA256 of the "
                                        "exact body with the shared secret>")
            actor = "ci"
        else:
            actor = allowed(request, "deployer", apps).name
        check_version(body.name)
        for app in apps:
            plane.service(app)  # 404 naming the apps this server has
        row = plane.groups.create(name=body.name, actor=actor,
                                  members=[(m.app, m.version) for m in body.members])
        return group_view(row)

    @router.get("/api/v1/groups")
    async def list_groups(request: Request, limit: int = 50) -> list[GroupView]:
        return visible_groups(plane, auth.require(request, "viewer"),
                              limit=max(1, min(limit, 500)))

    @router.get("/api/v1/groups/{name}")
    async def show(name: str, request: Request) -> GroupView:
        allowed(request, "viewer", member_apps(name))
        return group_view(plane.groups.group(name))

    @router.post("/api/v1/groups/{name}/promote")
    async def promote(name: str, request: Request) -> GroupView:
        caller = allowed(request, "deployer", member_apps(name))
        return group_view(plane.groups.request(name, actor=caller.name, promote=True))

    @router.post("/api/v1/groups/{name}/abort")
    async def abort(name: str, request: Request) -> GroupView:
        caller = allowed(request, "deployer", member_apps(name))
        return group_view(plane.groups.request(name, actor=caller.name, abort=True))

    @router.post("/api/v1/groups/{name}/restore", status_code=201)
    async def restore(name: str, body: RestoreIn, request: Request) -> GroupView:
        """Put back the releases group ``name`` delivered (``rollback --to GROUP``), as a
        new group: callers first, each member at once."""
        caller = allowed(request, "deployer", member_apps(name))
        return group_view(plane.groups.restore(name, environment=body.environment,
                                               actor=caller.name))

    return router
