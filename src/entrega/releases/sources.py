"""Artifacts named by location (a server-side path or a URL) instead of uploaded.

Artifacts enter the store as bytes a client uploads. Letting a request name a path or a
URL instead would let any deployer (or anyone holding the webhook secret) copy the
server's own files into the store and probe the ports it can reach, past the upload size
limit. So a location is refused unless ``auth.artifact_sources`` allows it, and refused
with one message whatever the location is: whether a path exists or a port is open is
not something a refusal may tell. The state directory is never a source, even inside an
allowed one.

``judge_path`` and ``judge_url`` are pure given resolved paths; ``fetch_artifact`` does
the I/O (a download, written through a :class:`~entrega.releases.spool.Spool`).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from entrega.config import ArtifactSourcesConfig
from entrega.errors import ArtifactError, PayloadTooLarge
from entrega.releases.spool import Spool

_DEFAULT_PORTS = {"http": 80, "https": 443}


def refusal() -> ArtifactError:
    """The one refusal for every location that is not allowed (no oracle)."""
    return ArtifactError(
        "this server takes artifacts as uploaded bytes: a server-side path or URL is not "
        "accepted here",
        hint="upload the artifact (`entrega deploy VERSION --artifact DIR`, or POST "
             "/api/v1/releases as multipart/form-data); an admin can allow locations with "
             "auth.artifact_sources in entrega.yaml")


def judge_path(candidate: Path, *, allowed: list[Path], state_dir: Path) -> bool:
    """Pure: may the resolved absolute path ``candidate`` be read as an artifact, given
    the resolved ``allowed`` directories? Never the state directory, anything in it, or a
    directory holding it (copying that would copy the state)."""
    if candidate == state_dir or state_dir in candidate.parents \
            or candidate in state_dir.parents:
        return False
    return any(candidate == root or root in candidate.parents for root in allowed)


def judge_url(url: str, *, allowed: list[str]) -> bool:
    """Pure: is ``url`` under one of the ``allowed`` prefixes? Scheme, host and port match
    exactly and the path is within the prefix's path: ``https://a.example/b/`` allows
    ``https://a.example/b/x.tgz``, not ``https://a.example.evil/b/`` nor
    ``https://user@a.example/b/`` (userinfo is refused outright)."""
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname or "@" in parts.netloc:
        return False
    if "/../" in f"{parts.path}/" or "%2e" in parts.path.lower():
        return False
    for prefix in allowed:
        want = urlsplit(prefix)
        want_port = want.port or _DEFAULT_PORTS.get(want.scheme)
        if (want.scheme, want.hostname, want_port) != (parts.scheme, parts.hostname, port):
            continue
        base = want.path or "/"
        if parts.path == base or parts.path.startswith(base if base.endswith("/")
                                                       else base + "/"):
            return True
    return False


def local_source(location: str, *, sources: ArtifactSourcesConfig, base_dir: Path,
                 state_dir: Path) -> Path:
    """The allowed server-side path ``location`` (absolute, or ``file://``) names, or the
    one refusal."""
    path = location.removeprefix("file://") if location.startswith("file://") else location
    if not sources.paths or not os.path.isabs(path):
        raise refusal()
    candidate = Path(os.path.realpath(path))
    allowed = [Path(os.path.realpath(base_dir / p)) for p in sources.paths]
    if not judge_path(candidate, allowed=allowed, state_dir=Path(os.path.realpath(state_dir))):
        raise refusal()
    return candidate


async def fetch_artifact(location: str, *, sources: ArtifactSourcesConfig, base_dir: Path,
                         state_dir: Path, workdir: Path, limit_bytes: int) -> Path:
    """The local file or directory of an allowed location: an allowed path as it is, an
    allowed URL downloaded into ``workdir`` (at most ``limit_bytes``, no redirects)."""
    if not location.startswith(("http://", "https://")):
        return local_source(location, sources=sources, base_dir=base_dir, state_dir=state_dir)
    if not judge_url(location, allowed=sources.urls):
        raise refusal()
    target = workdir / "download"
    try:
        async with httpx.AsyncClient(follow_redirects=False, timeout=60) as client, \
                client.stream("GET", location) as response:
            if response.is_redirect:
                raise ArtifactError(f"{location} answered a redirect",
                                    hint="name the final URL (redirects are not followed)")
            if response.status_code != 200:
                raise ArtifactError(f"GET {location} answered {response.status_code}")
            async with Spool(target) as spool:
                async for chunk in response.aiter_bytes():
                    await spool.write(chunk)
                    if spool.size > limit_bytes:
                        raise PayloadTooLarge(f"{location} is over the limit of "
                                              f"{limit_bytes} bytes",
                                              hint="raise auth.max_body_bytes in entrega.yaml")
    except httpx.HTTPError:
        raise ArtifactError(f"cannot download {location}") from None
    return target
