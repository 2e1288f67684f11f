"""Who is calling: bearer tokens with roles, the dashboard's login cookie, and the CI
webhook's HMAC signature.

Roles are ordered: viewer (read) < deployer (release, deploy, promote, abort, rollback,
approve) < admin (force a release past the order of environments). Tokens are compared
by their sha256 in constant time; the token and the webhook secret are never logged,
stored in events, or echoed in a response.

One module below both interfaces: the API (``api/``) and the dashboard (``web/``) ask the
same :class:`Authenticator`, so a token means the same thing on a page and in a request.

A server of several apps has one set of tokens; a token may be limited to some apps
(``apps: [api, web]``). Each app's API and pages ask the authenticator ``for_app`` their
app, which refuses (403) such a token for any other app; the tokens themselves stay one
table, so a reload changes them for every app at once.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field

from fastapi import Request

from entrega.config import AuthConfig
from entrega.errors import EntregaError, Forbidden, Unauthorized

ROLES = ("viewer", "deployer", "admin")
SIGNATURE_HEADER = "X-Entrega-Signature-256"
TOKEN_COOKIE = "entrega_token"
#: A cookie-writing or cookie-authenticated POST must carry this header. A browser sends
#: cookies with any form another site posts here, but such a form cannot add a header
#: (and a cross-site fetch that adds one needs a CORS preflight, which we never grant).
ACTOR_HEADER = "x-entrega-actor"


def from_our_pages(request: Request) -> bool:
    """True when the request carries the header only our own pages' scripts add."""
    return ACTOR_HEADER in request.headers


@dataclass(frozen=True)
class Caller:
    name: str
    role: str
    #: the apps the caller's token is limited to (None: every app)
    apps: tuple[str, ...] | None = None

    def allows(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def may_see(self, app: str) -> bool:
        return self.apps is None or app in self.apps


@dataclass
class _Tokens:
    """The token table every app's authenticator shares (swapped whole by a reload)."""

    config: AuthConfig
    by_digest: dict[str, Caller] = field(default_factory=dict)


def new_token() -> tuple[str, str]:
    """A fresh token and its sha256 (what goes into entrega.yaml)."""
    token = "ent_" + secrets.token_urlsafe(32)
    return token, hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(self, config: AuthConfig, *, app: str | None = None,
                 tokens: _Tokens | None = None) -> None:
        #: the app whose API asks (None: the server's own pages, every app)
        self.app = app
        self._tokens = tokens or _Tokens(config)
        if tokens is None:
            self.use(config)

    def for_app(self, app: str) -> Authenticator:
        """The same tokens as one app's API sees them."""
        return Authenticator(self.config, app=app, tokens=self._tokens)

    @property
    def config(self) -> AuthConfig:
        return self._tokens.config

    def use(self, config: AuthConfig) -> None:
        """Check tokens against ``config`` from the next request on (a reloaded config):
        a removed token is refused at once, a new one accepted at once."""
        self._tokens.config = config
        self._tokens.by_digest = {
            t.sha256: Caller(name, t.role, None if t.apps is None else tuple(t.apps))
            for name, t in config.tokens.items()}

    @property
    def open(self) -> bool:
        """No tokens configured: every caller is trusted (loopback only, see config)."""
        return not self._tokens.by_digest

    def webhook_secret(self) -> bytes | None:
        name = self.config.webhook_secret_env
        value = os.environ.get(name) if name else None
        return value.encode() if value else None

    @property
    def webhook_signed(self) -> bool:
        """A webhook secret is configured, so an upload must be signed (or come with a
        deployer's token), even while its variable is empty: an empty variable must not
        turn the configured check into an open door."""
        return self.config.webhook_secret_env is not None

    def webhook_secret_problem(self) -> str | None:
        """Why the configured webhook secret cannot be used, or None: the server logs it at
        start, and a signed webhook is refused with it."""
        name = self.config.webhook_secret_env
        if not name or os.environ.get(name):
            return None
        state = "empty" if name in os.environ else "not set"
        return (f"auth.webhook_secret_env names {name}, which is {state} in the server's "
                f"environment: signed webhooks are refused (401) and unsigned uploads need "
                f"a deployer's token, until {name} is set and the server restarted")

    def caller(self, request: Request) -> Caller | None:
        header = request.headers.get("authorization", "")
        bearer = header.lower().startswith("bearer ")
        token = header[7:].strip() if bearer else request.cookies.get(TOKEN_COOKIE, "")
        if token and not bearer and request.method not in ("GET", "HEAD", "OPTIONS") \
                and not from_our_pages(request):
            # A browser sends the cookie along with any form another site posts; the
            # dashboard's own calls add this header, which a cross-site form cannot.
            raise Forbidden("a change made with the login cookie needs the X-Entrega-Actor "
                            "header (cross-site request?)")
        if token:
            caller = self.token_caller(token)
            if caller is None:
                raise Unauthorized("the token is not valid", hint="check ENTREGA_TOKEN")
            if refused := self.refuses(caller):
                raise Forbidden(refused)
            return caller
        if self.open:
            actor = request.headers.get(ACTOR_HEADER, "local")[:64]
            return Caller(actor, "admin")
        return None

    def refuses(self, caller: Caller) -> str | None:
        """Why ``caller``'s token may not be used for this authenticator's app (limited to
        other apps), or None."""
        if self.app is None or caller.may_see(self.app):
            return None
        return (f"{caller.name}'s token is limited to the apps "
                f"{', '.join(caller.apps or ())}, not {self.app}")

    def token_caller(self, token: str) -> Caller | None:
        """Who ``token`` belongs to, or None (compared by sha256, in constant time)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        found: Caller | None = None
        for known, caller in self._tokens.by_digest.items():
            if hmac.compare_digest(known, digest):
                found = caller
        return found

    def caller_or_none(self, request: Request) -> Caller | None:
        """The caller, or None when not logged in or the cookie's token is no longer valid
        (a page then offers the login form instead of an error)."""
        try:
            return self.caller(request)
        except EntregaError:
            return None

    def require(self, request: Request, role: str) -> Caller:
        caller = self.caller(request)
        if caller is None:
            raise Unauthorized("this needs a token",
                               hint="send Authorization: Bearer <token> (ENTREGA_TOKEN)")
        if not caller.allows(role):
            raise Forbidden(f"{caller.name} is a {caller.role}; this needs {role}")
        return caller

    def body_digest(self, body: bytes) -> hmac.HMAC | None:
        """The HMAC of a whole ``body`` under the webhook secret (None: no secret)."""
        secret = self.webhook_secret()
        return hmac.new(secret, body, hashlib.sha256) if secret else None

    def verify_signature(self, body_digest: hmac.HMAC | None, header: str | None) -> bool:
        """True if ``header`` is ``sha256=<hex>`` of the body under the webhook secret."""
        if body_digest is None or not header or not header.startswith("sha256="):
            return False
        return hmac.compare_digest(body_digest.hexdigest(), header.removeprefix("sha256="))
