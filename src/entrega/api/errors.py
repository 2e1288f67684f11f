"""How errors leave the API: every answer is ``{"error": sentence, "hint": ...}``.

- An :class:`EntregaError` is the user's to fix or to know: its status and sentence as they
  are (they name what and where, never a server path or an exception class).
- A request that does not fit the OpenAPI schema: 422 with each field's problem.
- Anything else is our bug: a 500 that says only that, with a request id; the traceback
  goes to the server's log under that id. Exception text often holds server paths
  (``shutil.Error`` lists every file it could not copy), so none of it is sent.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from entrega.errors import LEADER_HEADER, EntregaError, NotLeader

log = logging.getLogger("entrega.api")

REQUEST_ID_HEADER = "X-Request-Id"


def problems(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic's errors without what they echo of the input or their internals."""
    out = []
    for e in errors:
        message = str(e.get("msg", "invalid"))
        # our own validators raise InvalidName (a ValueError): pydantic prefixes it
        message = message.removeprefix("Value error, ")
        reason = (e.get("ctx") or {}).get("error")
        if e.get("type") == "json_invalid" and isinstance(reason, str) and reason:
            # json's own words (where it stopped), or ours: a duplicate key, too deep
            message = f"{message}: {reason}"
        out.append({"loc": [str(p) for p in e.get("loc", ())], "msg": message,
                    "type": str(e.get("type", ""))})
    return out


def _where(loc: list[str]) -> str:
    # ("body", "version") -> "version"; ("path", "environment") -> "environment"
    parts = loc[1:] if loc and loc[0] in ("body", "path", "query", "header") else loc
    return ".".join(parts) or "body"


def error_response(exc: EntregaError) -> JSONResponse:
    if isinstance(exc, NotLeader):
        return JSONResponse({"error": exc.message, "hint": exc.hint, "leader": exc.leader},
                            status_code=exc.status_code,
                            headers={LEADER_HEADER: exc.leader} if exc.leader else None)
    return JSONResponse({"error": exc.message, "hint": exc.hint},
                        status_code=exc.status_code)


def install(app: FastAPI) -> None:
    """Register the handlers and the catch-all on ``app``."""

    @app.exception_handler(EntregaError)
    async def _entrega_error(_: Request, exc: EntregaError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        found = problems(exc.errors())
        message = "; ".join(f"{_where(p['loc'])}: {p['msg']}" for p in found)
        return JSONResponse({"error": f"invalid request: {message}",
                             "hint": "see /docs for what this endpoint takes",
                             "detail": found}, status_code=422)

    app.add_middleware(CatchAll)


class CatchAll:
    """ASGI middleware: an exception nothing else handled becomes a generic 500.

    (Starlette's own last-resort handler re-raises after answering, and answers with the
    exception's text in debug mode; this one answers and stops there.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            request_id = secrets.token_hex(6)
            log.exception("unexpected error answering %s %s (request id %s)",
                          scope.get("method"), scope.get("path"), request_id)
            if started:
                raise  # half an answer is out: only closing the connection tells the client
            response = JSONResponse(
                {"error": "internal error: the server failed to answer this request",
                 "hint": f"the server's log has the details under request id {request_id}",
                 "request_id": request_id},
                status_code=500, headers={REQUEST_ID_HEADER: request_id})
            await response(scope, receive, send)
