"""Creating releases: app + version + digest + commit metadata, immutable.

The same version with the same bytes is a no-op (CI may retry a webhook); the same
version with other bytes is a conflict, never an overwrite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from entrega.errors import ReleaseConflict
from entrega.names import check_version
from entrega.releases.artifacts import ArtifactStore
from entrega.store.models import Release
from entrega.store.repository import Repository


def create_release(repo: Repository, artifacts: ArtifactStore, *, app: str, version: str,
                   source: Path, meta: dict[str, Any], actor: str) -> tuple[Release, bool]:
    """Store the artifact and record the release. Returns (release, created)."""
    check_version(version)
    digest, _ = artifacts.ingest(source)
    existing = repo.release(app, version)
    if existing is not None:
        if existing.digest != digest:
            raise ReleaseConflict(
                f"release {app} {version} exists with other bytes "
                f"({existing.digest[:19]}..., not {digest[:19]}...)",
                hint="releases are immutable: give the new build a new version")
        return existing, False
    link = artifacts.link_release(app, version, digest)
    return repo.add_release(app=app, version=version, digest=digest, artifact_path=str(link),
                            meta=meta, actor=actor), True
