"""A small synchronous client of the server's API, for the CLI."""

from __future__ import annotations

import getpass
import os
from typing import Any

import httpx

from entrega.errors import LEADER_HEADER, ApiError, EntregaError, ServerUnreachable

#: Where CI's HMAC-SHA256 signature of a body goes (GitHub's convention).
SIGNATURE_HEADER = "X-Entrega-Signature-256"
API = "/api/v1/"
#: the server's own paths (not an app's): every app's, and release groups, which span apps
SERVER_OWN = (API + "apps", API + "groups")


def server_url(listen: str | None) -> str:
    url = os.environ.get("ENTREGA_SERVER")
    if url:
        return url.rstrip("/")
    if not listen:
        raise EntregaError("no server address: no entrega.yaml here and ENTREGA_SERVER is unset",
                           hint="run in the directory of entrega.yaml or set ENTREGA_SERVER")
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", "", "[::]"):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


class Client:
    """``app``: the app of a server of several; every ``/api/v1/...`` path then goes to
    ``/api/v1/apps/<app>/...``."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0, app: str | None = None,
                 unnamed: EntregaError | None = None) -> None:
        self.base_url = base_url
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
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if path.startswith(API) and not path.startswith(SERVER_OWN):
            if self.app:
                path = f"{API}apps/{self.app}/{path[len(API):]}"
            elif self.unnamed is not None:
                raise self.unnamed
        response = self._send(method, path, **kwargs)
        leader = response.headers.get(LEADER_HEADER)
        if response.status_code == 503 and leader and leader.rstrip("/") != self.base_url:
            # A standby of servers sharing a PostgreSQL store: the leader takes writes.
            for _, upload in (kwargs.get("files") or {}).items():
                stream = upload[1] if isinstance(upload, tuple) else upload
                if hasattr(stream, "seek"):
                    stream.seek(0)
            response = self._send(method, leader.rstrip("/") + path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
                message, hint = body.get("error") or str(body.get("detail")), body.get("hint")
            except ValueError:
                message, hint = response.text[:200], None
            raise ApiError(message, status_code=response.status_code, hint=hint)
        return response.json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise ServerUnreachable(f"cannot reach the entrega server at {self.base_url}",
                                    hint="is `entrega server` running?") from None
        except httpx.TimeoutException:
            raise ServerUnreachable(f"the entrega server at {self.base_url} did not answer "
                                    f"{method} {path} in time") from None
        except httpx.TransportError:
            # Reset or closed mid-answer: a server that was stopped or restarted.
            raise ServerUnreachable(f"the entrega server at {self.base_url} closed the "
                                    f"connection during {method} {path}") from None
        except httpx.HTTPError as exc:
            raise EntregaError(f"request to {self.base_url}{path} failed: {exc}") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items()
                                                  if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body or {})
