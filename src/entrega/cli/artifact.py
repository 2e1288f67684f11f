"""Uploading an artifact: what `deploy --artifact` and `release create` send.

The server takes artifacts only as uploaded bytes (it never reads a path the client
names), so a directory is packed into a gzip tarball here and sent as the ``artifact``
part of ``POST /api/v1/releases``; a tarball is sent as it is.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx

from entrega.cli.client import SIGNATURE_HEADER, Client
from entrega.errors import EntregaError

#: Receiving, unpacking and hashing a large artifact takes the server a while after the
#: last byte; the client's usual 30 s would give up on a build it is still storing.
UPLOAD_TIMEOUT = httpx.Timeout(30.0, read=600.0)


def pack(directory: Path, into: Path) -> Path:
    target = into / "artifact.tar.gz"
    with tarfile.open(target, "w:gz", compresslevel=6) as tar:
        for path in sorted(directory.iterdir()):
            if path.name in ("__pycache__", ".entrega"):
                continue
            tar.add(path, arcname=path.name)
    return target


def upload_release(client: Client, version: str, artifact: Path, *, deploy: bool,
                   fields: dict[str, str] | None = None, secret: str | None = None,
                   app: str | None = None) -> Any:
    """Create release ``version`` from the directory or tarball ``artifact``; ``deploy``
    starts the pipeline at once. Returns the server's answer (version, digest, created).

    ``secret``: the CI webhook's secret, when this shell has it and no ``ENTREGA_TOKEN``
    is set: the body is then signed as CI signs it (a server with a secret takes unsigned
    uploads only with a deployer's token)."""
    if not artifact.exists():
        raise EntregaError(f"artifact {artifact} does not exist")
    where = f"/api/v1/apps/{app}/releases" if app else "/api/v1/releases"
    form = {"version": version, "deploy": "true" if deploy else "false", **(fields or {})}
    try:
        form.setdefault("author", getpass.getuser())
    except (KeyError, OSError):  # no passwd entry (containers)
        pass
    with tempfile.TemporaryDirectory() as tmp:
        path = pack(artifact, Path(tmp)) if artifact.is_dir() else artifact
        with path.open("rb") as f:
            if secret is None or os.environ.get("ENTREGA_TOKEN"):
                return client.request("POST", where, data=form,
                                      files={"artifact": (path.name, f)},
                                      timeout=UPLOAD_TIMEOUT)
            # The signature covers the exact bytes sent: build the multipart body first.
            request = httpx.Request("POST", "http://entrega/", data=form,
                                    files={"artifact": (path.name, f)})
            body = request.read()
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return client.request("POST", where, content=body, timeout=UPLOAD_TIMEOUT,
                              headers={"Content-Type": request.headers["Content-Type"],
                                       SIGNATURE_HEADER: f"sha256={signature}"})


def commit_meta(*, commit_sha: str | None, commit_time: str | None,
                ci_url: str | None) -> dict[str, str]:
    """A release's commit metadata from the command line (`release create`, `deploy`). A
    commit time that cannot be read is refused here: stored, it would only show later as
    DORA's lead time with "no data"."""
    from entrega.insights.dora import parse_commit_time

    if commit_time and parse_commit_time(commit_time) is None:
        raise EntregaError(f"--commit-time {commit_time!r} is not a time",
                           hint="give ISO 8601 (2024-05-01T12:00:00Z, as `git show -s "
                                "--format=%cI` prints) or Unix seconds")
    fields = (("commit_sha", commit_sha), ("commit_time", commit_time), ("ci_url", ci_url))
    return {key: value for key, value in fields if value}


def parse_member(text: str) -> tuple[str, str, Path]:
    """``api:v41=build/api`` -> (app, version, artifact path)."""
    app, _, rest = text.partition(":")
    version, _, path = rest.partition("=")
    if not app or not version or not path:
        raise EntregaError(f"{text!r}: a group member is APP:VERSION=ARTIFACT",
                           hint="e.g. api:v41=build/api web:v17=build/web.tar.gz")
    return app, version, Path(path)


def create_group(client: Client, name: str, members: list[str], *,
                 fields: dict[str, str] | None = None, secret: str | None = None) -> Any:
    """Upload each member's release to its app (not deployed), then create the group,
    which delivers them together. Returns the group (the server's answer)."""
    parsed = [parse_member(m) for m in members]
    for app, version, artifact in parsed:
        upload_release(client, version, artifact, deploy=False, fields=fields,
                       secret=secret, app=app)
    body = json.dumps({"name": name, "members": [{"app": a, "version": v}
                                                 for a, v, _ in parsed]}).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None and not os.environ.get("ENTREGA_TOKEN"):
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        headers[SIGNATURE_HEADER] = f"sha256={digest}"
    return client.request("POST", "/api/v1/groups", content=body, headers=headers)
