"""The HTTP API: parse, call the service layer, render JSON. Nothing else lives here."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from entrega import __version__
from entrega.errors import EntregaError
from entrega.service import Service

log = logging.getLogger("entrega.api")


class ReleaseIn(BaseModel):
    version: str = Field(min_length=1, max_length=128)
    #: a directory or tarball the server can read
    artifact: str
    meta: dict[str, Any] = {}


class DeployIn(BaseModel):
    version: str
    #: create the release from this artifact first (same bytes again is a no-op)
    artifact: str | None = None
    strategy: str | None = None
    meta: dict[str, Any] = {}


class PromoteIn(BaseModel):
    full: bool = False


class RollbackIn(BaseModel):
    to: str | None = None


def create_app(service: Service) -> FastAPI:
    app = FastAPI(title="entrega", version=__version__, openapi_url="/openapi.json")

    @app.exception_handler(EntregaError)
    async def _entrega_error(_: Request, exc: EntregaError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "hint": exc.hint},
                            status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}",
                             "hint": "see the server's log"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "app": service.app, "passes": service.controller.passes}

    @app.get("/api/v1/status")
    async def status() -> dict[str, Any]:
        return service.status()

    @app.get("/api/v1/releases")
    async def releases() -> list[dict[str, Any]]:
        return service.releases()

    @app.post("/api/v1/releases", status_code=201)
    async def create_release(body: ReleaseIn, request: Request) -> dict[str, Any]:
        release, created = service.create_release(
            version=body.version, artifact=Path(body.artifact), meta=body.meta,
            actor=_actor(request))
        return {"version": release.version, "digest": release.digest, "created": created}

    @app.post("/api/v1/environments/{environment}/deploy", status_code=201)
    async def deploy(environment: str, body: DeployIn, request: Request) -> dict[str, Any]:
        actor = _actor(request)
        if body.artifact:
            service.create_release(version=body.version, artifact=Path(body.artifact),
                                   meta=body.meta, actor=actor)
        rollout = await service.deploy(environment=environment, version=body.version,
                                       strategy=body.strategy, actor=actor)
        return service.rollout_view(rollout)

    @app.post("/api/v1/environments/{environment}/promote")
    async def promote(environment: str, body: PromoteIn, request: Request) -> dict[str, Any]:
        row = await service.promote(environment=environment, full=body.full,
                                    actor=_actor(request))
        return {"rollout": row.id}

    @app.post("/api/v1/environments/{environment}/abort")
    async def abort(environment: str, request: Request) -> dict[str, Any]:
        row = await service.abort(environment=environment, actor=_actor(request))
        return {"rollout": row.id}

    @app.post("/api/v1/environments/{environment}/rollback")
    async def rollback(environment: str, body: RollbackIn, request: Request) -> dict[str, Any]:
        row = await service.rollback(environment=environment, to=body.to,
                                     actor=_actor(request))
        return {"rollout": row.id, "version": row.version}

    @app.get("/api/v1/rollouts/{rollout_id}")
    async def rollout(rollout_id: int) -> dict[str, Any]:
        return service.rollout(rollout_id)

    @app.get("/api/v1/history")
    async def history(environment: str | None = None, limit: int = 100,
                      after_id: int = 0) -> list[dict[str, Any]]:
        return service.history(environment=environment, limit=min(limit, 1000),
                               after_id=after_id)

    return app


def _actor(request: Request) -> str:
    # Token auth with named tokens comes with the API's roles; until then the caller
    # names itself (the CLI sends its user name).
    return request.headers.get("x-entrega-actor", "api")[:64]
