"""A small synchronous client of the server's API, for the CLI.

Servers that share one PostgreSQL store (README: "Running two servers") are named
together: ``ENTREGA_SERVER=http://a:7070,http://b:7070``. The client asks the first; one
that cannot be connected to (the request was never sent, so nothing can happen twice)
is skipped for the next, and the one that answered is asked first from then on, as etcd's
and Patroni's clients do with their endpoint lists. A standby that answers a write with
503 names the leader (``X-Entrega-Leader``), and the write goes there. A server that took
the request and then failed or timed out is not asked again elsewhere: the request may
have been done.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

import httpx

from entrega.errors import LEADER_HEADER, ApiError, EntregaError, ServerUnreachable
from entrega.net import local_url

#: Where CI's HMAC-SHA256 signature of a body goes (GitHub's convention).
SIGNATURE_HEADER = "X-Entrega-Signature-256"
API = "/api/v1/"
#: the server's own paths (not an app's): every app's, and release groups, which span apps
SERVER_OWN = (API + "apps", API + "groups")


def server_url(listen: str | None) -> str:
    """The server(s) to ask: ``ENTREGA_SERVER`` (one URL, or several separated by commas),
    else the address ``server.listen`` gives."""
    url = os.environ.get("ENTREGA_SERVER")
    if url:
        return ",".join(_servers(url))
    if not listen:
        raise EntregaError("no server address: no entrega.yaml here and ENTREGA_SERVER is unset",
                           hint="run in the directory of entrega.yaml or set ENTREGA_SERVER")
    try:
        return local_url(listen)
    except ValueError as exc:
        raise EntregaError(f"server.listen: {exc}",
                           hint="set it to HOST:PORT, or set ENTREGA_SERVER") from None


class Client:
    """``base_url``: one server's URL, or several separated by commas (module docstring).
    ``app``: the app of a server of several; every ``/api/v1/...`` path then goes to
    ``/api/v1/apps/<app>/...``."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0, app: str | None = None,
                 unnamed: EntregaError | None = None) -> None:
        self.servers = _servers(base_url)
        if not self.servers:
            raise EntregaError(f"no server address in {base_url!r}",
                               hint="ENTREGA_SERVER=http://HOST:PORT[,http://HOST2:PORT]")
        self.app = app
        #: why no app is named (several in the file): raised by an app's API call only
        self.unnamed = unnamed
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (containers)
            user = "cli"
        headers = {"X-Entrega-Actor": f"cli:{user}"[:64]}
        token = os.environ.get("ENTREGA_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(timeout=timeout_s, headers=headers)

    @property
    def base_url(self) -> str:
        """The server asked first: the last one that answered."""
        return self.servers[0]

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if path.startswith(API) and not path.startswith(SERVER_OWN):
            if self.app:
                path = f"{API}apps/{self.app}/{path[len(API):]}"
            elif self.unnamed is not None:
                raise self.unnamed
        response = self._send_to_a_server(method, path, **kwargs)
        leader = response.headers.get(LEADER_HEADER)
        if response.status_code == 503 and leader and leader.rstrip("/") != self.base_url:
            # A standby of servers sharing a PostgreSQL store: the leader takes writes.
            _rewind(kwargs)
            response = self._send(method, leader.rstrip("/"), path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
                message, hint = body.get("error") or str(body.get("detail")), body.get("hint")
            except ValueError:
                message, hint = response.text[:200], None
            raise ApiError(message, status_code=response.status_code, hint=hint)
        return response.json()

    def _send_to_a_server(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The first server that can be connected to, in order; it is asked first from
        now on. Only a refused connection moves on (module docstring)."""
        refused: list[str] = []
        for server in list(self.servers):
            try:
                response = self._send(method, server, path, **kwargs)
            except ServerUnreachable as exc:
                if not exc.not_sent or server == self.servers[-1]:
                    if refused:
                        raise ServerUnreachable(
                            f"cannot reach any entrega server: {', '.join(refused)} refused "
                            f"the connection; {exc.message}", hint=exc.hint) from None
                    raise
                refused.append(server)
                _rewind(kwargs)
                continue
            if server != self.servers[0]:
                self.servers.remove(server)
                self.servers.insert(0, server)
            return response
        raise AssertionError("unreachable: the last server's error is raised")

    def _send(self, method: str, server: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, server + path, **kwargs)
        except httpx.ConnectError:
            raise ServerUnreachable(f"cannot reach the entrega server at {server}",
                                    hint="is `entrega server` running?",
                                    not_sent=True) from None
        except httpx.TimeoutException:
            raise ServerUnreachable(f"the entrega server at {server} did not answer "
                                    f"{method} {path} in time") from None
        except httpx.TransportError:
            # Reset or closed mid-answer: a server that was stopped or restarted.
            raise ServerUnreachable(f"the entrega server at {server} closed the "
                                    f"connection during {method} {path}") from None
        except httpx.HTTPError as exc:
            raise EntregaError(f"request to {server}{path} failed: {exc}") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items()
                                                  if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body or {})


def _servers(text: str) -> list[str]:
    """The URLs of a comma-separated list, without blanks or trailing slashes."""
    return [u.strip().rstrip("/") for u in text.split(",") if u.strip()]


def _rewind(kwargs: dict[str, Any]) -> None:
    """An upload sent again starts from its first byte."""
    for _, upload in (kwargs.get("files") or {}).items():
        stream = upload[1] if isinstance(upload, tuple) else upload
        if hasattr(stream, "seek"):
            stream.seek(0)
