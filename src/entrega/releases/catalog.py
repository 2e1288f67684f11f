"""Creating releases: app + version + digest + commit metadata, immutable.

The same version with the same bytes is a no-op (CI may retry a webhook); the same
version with other bytes is a conflict, never an overwrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from entrega.errors import ReleaseConflict
from entrega.names import check_version
from entrega.releases.artifacts import ArtifactStore, StagedArtifact
from entrega.store.models import Release
from entrega.store.repository import Repository


def create_release(repo: Repository, artifacts: ArtifactStore, *, app: str, version: str,
                   source: Path, meta: dict[str, Any], actor: str,
                   label: str = "the artifact") -> tuple[Release, bool]:
    """Store the artifact and record the release. Returns (release, created). Blocking
    (unpacks and hashes): the API stages in a worker thread, then calls
    :func:`record_release`."""
    check_version(version)
    staged = artifacts.stage(source, label=label)
    try:
        return record_release(repo, artifacts, app=app, version=version, staged=staged,
                              meta=meta, actor=actor)
    finally:
        artifacts.discard(staged)


def record_release(repo: Repository, artifacts: ArtifactStore, *, app: str, version: str,
                   staged: StagedArtifact, meta: dict[str, Any],
                   actor: str) -> tuple[Release, bool]:
    """Check a staged artifact against the catalog, then commit it and record the release.

    A conflict or a retry with the same bytes commits nothing; the caller discards
    ``staged`` afterwards in every case (in a worker thread: a tree can be large). Nothing
    here awaits, so on the event loop the check, the commit and the row are one step that
    no other request interleaves with."""
    existing = repo.release(app, version)
    if existing is not None:
        if existing.digest != staged.digest:
            raise ReleaseConflict(
                f"release {app} {version} exists with other bytes "
                f"({existing.digest[:19]}..., not {staged.digest[:19]}...)",
                hint="releases are immutable: give the new build a new version")
        return existing, False
    _, added = artifacts.commit(staged)
    try:
        link = artifacts.link_release(app, version, staged.digest)
        return repo.add_release(app=app, version=version, digest=staged.digest,
                                artifact_path=str(link), meta=meta, actor=actor), True
    except BaseException:
        if added:  # the bytes would be pointed to by nothing
            artifacts.remove(staged.digest)
        raise
