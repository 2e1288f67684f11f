"""Token login for the pages: the form, the cookie, and who is looking.

Login checks the token with the API's own authenticator (``entrega.auth``) and stores it in
the ``entrega_token`` cookie (HttpOnly, so scripts never see it; SameSite=Strict, so
another site cannot make the browser use it). Login and logout write that cookie, so like
every cookie-authenticated change they need the X-Entrega-Actor header (static/forms.js
sends it): another site's form cannot log a browser in with the attacker's token, nor out.

Written once for every set of pages: an app's dashboard (``dashboard.py``, at ``/`` or
``/apps/<app>/``) and a server's overview of its apps (``overview.py``, at the server's
root). The cookie's path is always ``/``: the tokens are one table for the whole server,
so one login serves every app. A token limited to other apps is valid but refused by this
app's pages: its cookie is kept (it still serves those apps) and the login page says why.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from entrega.auth import TOKEN_COOKIE, Authenticator, Caller, from_our_pages
from entrega.errors import EntregaError, Forbidden
from entrega.web.assets import base_path, server_home

#: How long a login lasts, in seconds: a month, so a team's wall screen stays logged in.
LOGIN_MAX_AGE_S = 30 * 86400


class Visitor(NamedTuple):
    """Who is looking at a page, as far as these pages are concerned."""

    #: logged in and allowed to see these pages (None: show the login form)
    caller: Caller | None
    #: why a valid token may not see these pages (it is limited to other apps), or None
    refused: str | None = None


def visitor(auth: Authenticator, request: Request) -> Visitor:
    try:
        caller = auth.caller(request)
    except Forbidden as exc:
        # Only a limited token on a GET gets here (pages are read with GET): the token is
        # good, just not for this app.
        return Visitor(None, exc.message)
    except EntregaError:
        return Visitor(None)  # no longer valid: log in again
    return Visitor(caller if caller is not None and caller.allows("viewer") else None)


def page(templates: Environment, request: Request, name: str, *, app: str | None,
         status_code: int = 200, **context: object) -> HTMLResponse:
    """A page of ``app`` (None: the server's own pages), its links under the request's
    base path (``base``) and the server's home (``home``)."""
    base = base_path(request)
    home = base if app is None else server_home(base, app)
    html = templates.get_template(name).render(app=app, base=base, home=home, **context)
    return HTMLResponse(html, status_code=status_code)


def to_login(request: Request, who: Visitor) -> RedirectResponse:
    """Off to the login form, back here afterwards. A cookie whose token is no longer valid
    is dropped; one that is merely limited to other apps is kept (the form says why)."""
    target = quote(request.url.path, safe="/")
    response = RedirectResponse(f"{base_path(request)}/login?next={target}", status_code=303)
    if request.cookies.get(TOKEN_COOKIE) and who.refused is None:
        response.delete_cookie(TOKEN_COOKIE, path="/")
    return response


def login_router(auth: Authenticator, templates: Environment, *,
                 app: str | None) -> APIRouter:
    """``GET``/``POST /login`` and ``POST /logout`` under the request's base path, for the
    pages of ``app`` (None: the server's own pages, where any valid token may log in)."""
    router = APIRouter(include_in_schema=False)

    def with_hint(refused: str | None) -> str | None:
        return None if refused is None else f"{refused}: log in with a token for {app}."

    def form(request: Request, *, target: str, error: str | None,
             status_code: int = 200) -> HTMLResponse:
        return page(templates, request, "login.html.j2", app=app, open=auth.open,
                    error=error, next=target, caller=None, status_code=status_code)

    def cross_site(request: Request, target: str) -> Response:
        return form(request, target=target, status_code=403,
                    error="Refused: log in and out from entrega's own pages (a form posted "
                          "by another site, or JavaScript is off).")

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str | None = None) -> Response:
        target = safe_next(next, home=f"{base_path(request)}/")
        return form(request, target=target, error=with_hint(visitor(auth, request).refused))

    @router.post("/login")
    async def login(request: Request) -> Response:
        fields = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
        token = (fields.get("token") or [""])[0].strip()
        target = safe_next((fields.get("next") or [""])[0], home=f"{base_path(request)}/")
        if not from_our_pages(request):
            return cross_site(request, target)  # login CSRF: someone else's token in your browser
        caller = auth.token_caller(token) if token else None
        if caller is None:
            return form(request, target=target, error="That token is not valid.",
                        status_code=401)
        if refused := auth.refuses(caller):
            return form(request, target=target, error=with_hint(refused), status_code=403)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https", max_age=LOGIN_MAX_AGE_S)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        base = base_path(request)
        if not from_our_pages(request):
            return cross_site(request, f"{base}/")
        response = RedirectResponse(f"{base}/login", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path="/")
        return response

    return router


def safe_next(target: str | None, *, home: str) -> str:
    """Only local paths: a login link must not redirect to another site."""
    if target and target.startswith("/") and not target.startswith("//") \
            and "\\" not in target:  # a browser reads "/\evil.example" as "//evil.example"
        return target
    return home
