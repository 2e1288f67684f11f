"""Receiving a release from CI: the signed body, the artifact, the metadata.

The body is streamed to a temporary file while its size is counted (over the limit:
413, before anything is stored) and its HMAC-SHA256 is computed, so a signature can be
checked on exactly the bytes received without holding them in memory. Only then is the
body parsed: ``multipart/form-data`` with an ``artifact`` file part, or JSON naming an
artifact the server can read (a path, ``file://`` or ``http(s)://`` URL).
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
import tempfile
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser

from entrega.errors import ArtifactError, ConfigError, PayloadTooLarge
from entrega.jsonin import loads_json

CHUNK = 1 << 16
META_FIELDS = ("commit_sha", "commit_time", "ci_url", "branch", "author")


@dataclass
class ReceivedBody:
    path: Path
    size: int
    digest: hmac.HMAC | None
    workdir: Path

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class ReleaseUpload:
    version: str
    artifact: Path
    meta: dict[str, Any] = field(default_factory=dict)
    deploy: bool = True


async def receive_body(request: Request, *, limit: int, secret: bytes | None,
                       spool_dir: Path) -> ReceivedBody:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {int(declared)} bytes; the limit is {limit}",
                              hint="raise auth.max_body_bytes in entrega.yaml")
    spool_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(dir=spool_dir, prefix="upload-"))
    path = workdir / "body"
    digest = hmac.new(secret, digestmod=hashlib.sha256) if secret else None
    size = 0
    try:
        with path.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body is over the limit of {limit} bytes",
                                          hint="raise auth.max_body_bytes in entrega.yaml")
                if digest is not None:
                    digest.update(chunk)
                out.write(chunk)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return ReceivedBody(path=path, size=size, digest=digest, workdir=workdir)


async def _file_stream(path: Path) -> AsyncGenerator[bytes, None]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _meta(fields: dict[str, Any]) -> dict[str, Any]:
    meta = {k: str(fields[k]) for k in META_FIELDS if fields.get(k) not in (None, "")}
    extra = fields.get("meta")
    if isinstance(extra, str) and extra:
        try:
            extra = loads_json(extra)
        except ValueError as exc:
            raise ConfigError(f"meta is not JSON: {exc}", file="request") from exc
    if isinstance(extra, dict):
        meta.update({str(k): v for k, v in extra.items()})
    return meta


def _flag(value: Any, default: bool = True) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() not in ("0", "false", "no", "off")


async def parse_upload(request: Request, body: ReceivedBody, *, limit: int) -> ReleaseUpload:
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        parser = MultiPartParser(request.headers, _file_stream(body.path), max_files=1,
                                 max_fields=32)
        form = await parser.parse()
        upload = form.get("artifact")
        if not isinstance(upload, UploadFile):
            raise ArtifactError("the form has no `artifact` file part",
                                hint="curl -F artifact=@build.tar.gz -F version=...")
        artifact = body.workdir / "artifact"
        with artifact.open("wb") as out:
            shutil.copyfileobj(upload.file, out)
        await upload.close()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        version = fields.get("version", "")
        return ReleaseUpload(version=version, artifact=artifact, meta=_meta(fields),
                             deploy=_flag(fields.get("deploy")))
    try:
        data = loads_json(body.path.read_bytes() or b"{}")
    except ValueError as exc:
        raise ArtifactError(f"the body is not JSON: {exc}",
                            hint="send multipart/form-data or a JSON object") from exc
    if not isinstance(data, dict) or not data.get("artifact"):
        raise ArtifactError("the JSON needs `version` and `artifact` (a path or URL)")
    artifact = await fetch_artifact(str(data["artifact"]), workdir=body.workdir, limit=limit)
    return ReleaseUpload(version=str(data.get("version", "")), artifact=artifact,
                         meta=_meta(data), deploy=_flag(data.get("deploy")))


async def fetch_artifact(location: str, *, workdir: Path, limit: int) -> Path:
    """A path the server can read as it is, or a URL downloaded (within the limit)."""
    if location.startswith("file://"):
        return Path(location.removeprefix("file://"))
    if not location.startswith(("http://", "https://")):
        return Path(location)
    target = workdir / "artifact"
    size = 0
    try:
        async with httpx.AsyncClient(follow_redirects=True, timeout=60) as client, \
                client.stream("GET", location) as response:
            if response.status_code != 200:
                raise ArtifactError(f"GET {location} answered {response.status_code}")
            with target.open("wb") as out:
                async for chunk in response.aiter_bytes(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"{location} is over the limit of {limit} bytes")
                    out.write(chunk)
    except httpx.HTTPError as exc:
        raise ArtifactError(f"cannot download {location}: {exc}") from exc
    return target
