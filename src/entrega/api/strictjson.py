"""Request bodies parsed by FastAPI (deploy, promote, rollback, approve) refuse duplicate
keys too, like every other JSON entrega takes from users (see :mod:`entrega.jsonin`).

FastAPI reads a JSON body with ``await request.json()``; the route class below hands its
handlers a request whose ``json()`` refuses a repeated key. A refusal is raised as
``json.JSONDecodeError``, so FastAPI answers 422 ``json_invalid`` with the reason, as for
any body that is not JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from entrega.jsonin import loads_json


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = loads_json(body)
            except json.JSONDecodeError:
                raise
            except ValueError as exc:  # a duplicate key
                raise json.JSONDecodeError(str(exc), body.decode(errors="replace"), 0) from exc
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
