"""Receiving a release from CI: the signed body, the artifact, the metadata.

The body is streamed to a file under the artifact store's ``.staging`` while its size is
counted (over the limit: 413, before anything is stored) and its HMAC-SHA256 is computed,
so a signature can be checked on exactly the bytes received without holding them in
memory. Only then is the body parsed, in a worker thread: ``multipart/form-data`` with an
``artifact`` file part written straight to the request's staging directory, or JSON
naming a location (refused unless ``auth.artifact_sources`` allows it). Whatever is
refused or fails, the request's staging directory is deleted: nothing stays on disk.
"""

from __future__ import annotations

import hashlib
import hmac
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import anyio.to_thread
from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from entrega.errors import ArtifactError, ConfigError, PayloadTooLarge
from entrega.jsonin import loads_json
from entrega.releases.artifacts import ArtifactStore
from entrega.releases.spool import Spool

META_FIELDS = ("commit_sha", "commit_time", "ci_url", "branch", "author")
#: Form fields besides the artifact: version, deploy, the metadata; a few more are fine.
MAX_FORM_FIELDS = 32
#: A JSON body names a release and its metadata; the artifact itself is never in it.
MAX_JSON_BYTES = 1 << 20
#: A field is a version, a URL or a JSON object of metadata, never megabytes.
MAX_FIELD_BYTES = 64 * 1024


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
    #: The uploaded artifact (in the request's staging directory), or None when the body
    #: names a ``location`` instead.
    artifact: Path | None
    meta: dict[str, Any] = field(default_factory=dict)
    deploy: bool = True
    location: str | None = None


async def receive_body(request: Request, *, limit: int, secret: bytes | None,
                       artifacts: ArtifactStore) -> ReceivedBody:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {int(declared)} bytes; the limit is {limit}",
                              hint="raise auth.max_body_bytes in entrega.yaml")
    workdir = await anyio.to_thread.run_sync(artifacts.new_staging_dir, "upload-")
    path = workdir / "body"
    mac = hmac.new(secret, digestmod=hashlib.sha256) if secret else None
    try:
        async with Spool(path, mac=mac) as spool:
            async for chunk in request.stream():
                await spool.write(chunk)
                if spool.size > limit:
                    raise PayloadTooLarge(f"the body is over the limit of {limit} bytes",
                                          hint="raise auth.max_body_bytes in entrega.yaml")
    except BaseException:
        # A refusal, an error or a client gone mid-upload (ClientDisconnect): no bytes stay.
        # One file: deleting it here is quick, and works in a cancelled task too.
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return ReceivedBody(path=path, size=spool.size, digest=mac, workdir=workdir)


def _meta(fields: dict[str, Any]) -> dict[str, Any]:
    meta = {k: str(fields[k]) for k in META_FIELDS if fields.get(k) not in (None, "")}
    extra = fields.get("meta")
    if isinstance(extra, str) and extra:
        try:
            extra = loads_json(extra)
        except ValueError:
            raise ConfigError("meta is not a JSON object", file="request") from None
    if isinstance(extra, dict):
        meta.update({str(k): v for k, v in extra.items()})
    return meta


def _flag(value: Any, default: bool = True) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() not in ("0", "false", "no", "off")


async def parse_upload(request: Request, body: ReceivedBody) -> ReleaseUpload:
    """The release a received body describes. Parsing runs in a worker thread."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        fields, artifact = await anyio.to_thread.run_sync(read_form, body.path, content_type,
                                                          body.workdir / "artifact")
        if artifact is None:
            raise ArtifactError("the form has no `artifact` file part",
                                hint="curl -F artifact=@build.tar.gz -F version=...")
        return ReleaseUpload(version=fields.get("version", ""), artifact=artifact,
                             meta=_meta(fields), deploy=_flag(fields.get("deploy")))
    if body.size > MAX_JSON_BYTES:
        raise PayloadTooLarge(f"a JSON body is at most {MAX_JSON_BYTES} bytes",
                              hint="upload the artifact as multipart/form-data")
    data = await anyio.to_thread.run_sync(_read_json, body.path)
    if not isinstance(data, dict) or not data.get("artifact"):
        raise ArtifactError("the JSON needs `version` and `artifact`",
                            hint="upload the artifact as multipart/form-data instead")
    return ReleaseUpload(version=str(data.get("version", "")), artifact=None,
                         location=str(data["artifact"]), meta=_meta(data),
                         deploy=_flag(data.get("deploy")))


def _read_json(path: Path) -> Any:
    try:
        return loads_json(path.read_bytes() or b"{}")
    except ValueError as exc:
        raise ArtifactError(f"the body is not JSON ({exc})",
                            hint="send multipart/form-data or a JSON object") from None


class _Form:
    """Callbacks of python-multipart's parser: text fields into a dict, the one file part
    named ``artifact`` straight into a file. Blocking (writes): runs in a worker thread."""

    def __init__(self, artifact: Path) -> None:
        self.artifact_path = artifact
        self.fields: dict[str, str] = {}
        self.artifact: BinaryIO | None = None
        self.stored = False
        self.ended = False
        self._headers: dict[str, str] = {}
        self._header_field = b""
        self._header_value = b""
        self._name = ""
        self._value = bytearray()
        self._to_file = False

    def on_part_begin(self) -> None:
        self._headers = {}
        self._value = bytearray()
        self._to_file = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = \
            self._header_value.decode("latin-1")
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        kind, options = parse_options_header(self._headers.get("content-disposition", ""))
        if kind != b"form-data" or b"name" not in options:
            raise ArtifactError("a form part has no `Content-Disposition: form-data; name=`")
        self._name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            if self._name != "artifact" or self.stored:
                raise ArtifactError(f"unexpected file part {self._name!r}",
                                    hint="send one file part, named `artifact`")
            self.artifact = self.artifact_path.open("wb")
            self._to_file = True
        elif len(self.fields) >= MAX_FORM_FIELDS:
            raise ArtifactError(f"the form has more than {MAX_FORM_FIELDS} fields")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._to_file and self.artifact is not None:
            self.artifact.write(data[start:end])
            return
        self._value += data[start:end]
        if len(self._value) > MAX_FIELD_BYTES:
            raise ArtifactError(f"form field {self._name!r} is over {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if self._to_file and self.artifact is not None:
            self.artifact.close()
            self.artifact = None
            self.stored = True
        else:
            self.fields[self._name] = self._value.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True


def read_form(body: Path, content_type: str, artifact: Path) -> tuple[dict[str, str],
                                                                       Path | None]:
    """Parse a ``multipart/form-data`` body file: (text fields, the artifact's file or
    None). Blocking."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ArtifactError("multipart/form-data without a boundary")
    form = _Form(artifact)
    callbacks = {name: getattr(form, name) for name in dir(form) if name.startswith("on_")}
    parser = MultipartParser(boundary, callbacks=callbacks)  # type: ignore[arg-type]
    try:
        with body.open("rb") as f:
            while chunk := f.read(1 << 20):
                parser.write(chunk)
        parser.finalize()
    except ArtifactError:
        raise
    except Exception:  # the parser's own errors: a malformed body, whatever its kind
        raise ArtifactError("the multipart body is malformed",
                            hint="curl -F artifact=@build.tar.gz -F version=...") from None
    finally:
        if form.artifact is not None:
            form.artifact.close()
    if not form.ended:
        raise ArtifactError("the multipart body ends before its closing boundary")
    return form.fields, (artifact if form.stored else None)
