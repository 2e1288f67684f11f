"""What the dashboard needs of the API's authenticator (``api.auth.Authenticator``),
as a protocol: the web layer sits below the API and never imports it."""

from __future__ import annotations

from typing import Protocol

from fastapi import Request

from entrega.errors import EntregaError

TOKEN_COOKIE = "entrega_token"
#: A cookie-writing or cookie-authenticated POST must carry this header. A browser sends
#: cookies with any form another site posts here, but such a form cannot add a header
#: (and a cross-site fetch that adds one needs a CORS preflight, which we never grant).
ACTOR_HEADER = "x-entrega-actor"


def from_our_pages(request: Request) -> bool:
    """True when the request carries the header only our own pages' scripts add."""
    return ACTOR_HEADER in request.headers


class CallerLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    def allows(self, role: str) -> bool: ...


class AuthLike(Protocol):
    @property
    def open(self) -> bool: ...

    def caller(self, request: Request) -> CallerLike | None: ...

    def require(self, request: Request, role: str) -> CallerLike: ...


def caller_or_none(auth: AuthLike, request: Request) -> CallerLike | None:
    """The caller, or None when not logged in or the cookie's token is no longer valid."""
    try:
        return auth.caller(request)
    except EntregaError:
        return None


def check_token(auth: AuthLike, token: str) -> CallerLike | None:
    """Who ``token`` belongs to, asking the authenticator exactly as the API would."""
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"",
             "headers": [(b"authorization", f"Bearer {token}".encode("latin-1", "replace"))]}
    try:
        return auth.caller(Request(scope))
    except EntregaError:
        return None
