"""Releases onto hosts by content: each host receives an artifact's bytes at most once.

``sync_release`` puts release ``version`` of ``app`` at
``<base_dir>/<app>/releases/<version>`` on a host. It first asks the host whether the
release is there with the right digest (the marker file inside the release directory);
if it is, nothing is sent. Otherwise the artifact goes as one tarball streamed on the
stdin of the host-side helper, which checks the sha256 of what arrived, unpacks it under
the same limits as a local unpack (``artifacts:`` in entrega.yaml), checks the unpacked
tree's content digest against the release's and renames it into place (see
:mod:`.hostside` for the invariants). Every step is idempotent: a sync cut at any point
is repaired by the next one, which removes what the cut one left.

``prune_releases`` keeps a host's newest ``keep`` releases (and any it is told to
protect: what the environment runs or may roll back to) and deletes the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import posixpath
import tarfile
import tempfile
from collections.abc import Collection
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from entrega.config import ArtifactsConfig
from entrega.errors import ArtifactError
from entrega.targets.ssh.connections import Fleet, Host
from entrega.targets.ssh.remote import call_hostside


@dataclass(frozen=True)
class SyncResult:
    """What a sync did on one host: the bytes sent (0 when the host had the release)."""

    host: str
    version: str
    sent_bytes: int
    already_present: bool


def releases_path(host: Host, app: str) -> str:
    return posixpath.join(host.base_dir, app, "releases")


def release_path(host: Host, app: str, version: str) -> str:
    return posixpath.join(releases_path(host, app), version)


async def sync_release(fleet: Fleet, host: Host, *, app: str, version: str, digest: str,
                       source: Path, limits: ArtifactsConfig | None = None,
                       likely_absent: bool = False) -> SyncResult:
    """Make ``host`` hold release ``version`` of ``app`` whose content digest is ``digest``
    (``sha256:<hex>``, as ``tree_digest``), from ``source``: a directory or a tarball.
    Idempotent; sends nothing when the host already has it. Raises ArtifactError when the
    host refuses the bytes (corrupted, over the limits, unsafe members) or holds that
    version with other content.

    ``likely_absent``: the caller expects the host to lack it (a release this controller
    has not sent there yet), so it is packed at once and offered in one command that
    answers before any byte is sent, instead of a probe and then a receive (each command
    is a login shell and a Python on the host: on a busy host, seconds)."""
    where = {"base_dir": host.base_dir, "app": app, "version": version, "digest": digest}
    if not likely_absent:
        found, _ = await call_hostside(fleet, host, {"op": "probe", **where})
        if found.get("state") == "present":
            return SyncResult(host=host.name, version=version, sent_bytes=0,
                              already_present=True)
        _refuse_other(host, app, version, found)
    with ExitStack() as stack:
        tarball = source if source.is_file() else \
            await asyncio.to_thread(_pack, source, stack)
        stream_sha256 = await asyncio.to_thread(_file_sha256, tarball)
        args = {"op": "receive", **where, "stream_sha256": stream_sha256,
                "limits": (limits or ArtifactsConfig()).model_dump(),
                **({"ask_first": True} if likely_absent else {})}
        answer, sent = await call_hostside(fleet, host, args, stdin_file=tarball)
    if answer.get("state") == "present":  # it had it, or another sync got there first
        return SyncResult(host=host.name, version=version, sent_bytes=sent,
                          already_present=True)
    _refuse_other(host, app, version, answer)
    return SyncResult(host=host.name, version=version, sent_bytes=sent, already_present=False)


async def prune_releases(fleet: Fleet, host: Host, *, app: str, keep: int,
                         protect: Collection[str] = ()) -> list[str]:
    """Delete ``host``'s releases of ``app`` beyond the ``keep`` most recently installed,
    never one in ``protect``; returns the versions deleted. Idempotent."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    answer, _ = await call_hostside(fleet, host, {
        "op": "prune", "base_dir": host.base_dir, "app": app, "keep": keep,
        "protect": sorted(protect)})
    return [str(v) for v in answer.get("removed", [])]


def _refuse_other(host: Host, app: str, version: str, found: dict[str, object]) -> None:
    state = found.get("state")
    if state == "other":
        raise ArtifactError(
            f"{host} already has release {version} of {app} with other content "
            f"({str(found.get('digest'))[:23]}...): a version's bytes never change",
            hint="deploy a new version; remove the host's copy only if it is known bad")
    if state == "unmarked":
        raise ArtifactError(
            f"{host} has a directory for release {version} of {app} that entrega did not "
            "install (no marker inside)", hint="move it out of the releases directory")


def _pack(tree: Path, stack: ExitStack) -> Path:
    """A gzip tarball of the directory ``tree`` in a temporary file deleted with ``stack``."""
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="entrega-sync-")))
    return pack_release(tree, tmp / "release.tar.gz")


def pack_release(tree: Path, tarball: Path) -> Path:
    """``tarball``: a gzip tarball of the directory ``tree``, what :func:`sync_release`
    sends (a caller that sends one release to many hosts packs it once). Level 1: the
    network, not the CPU, is what a bigger level would save on, and barely."""
    if not tree.is_dir():
        raise ArtifactError(f"the artifact of this release is missing ({tree.name})")
    with tarfile.open(tarball, "w:gz", compresslevel=1) as tar:
        for path in sorted(tree.iterdir()):
            tar.add(path, arcname=path.name)
    return tarball


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
