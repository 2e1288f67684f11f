"""Retention: which release artifacts are kept restorable, and deleting the others.

Kept: per environment, the last ``keep`` releases it ran successfully, what it runs now
and what that replaced; the ``keep`` newest releases (not deployed yet, perhaps); every
release a rollout or a request still refers to. Release rows stay forever (history,
DORA); only the bytes go, and ``rollback --to`` a pruned release says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from entrega.config import Config
from entrega.releases.artifacts import ArtifactStore
from entrega.store.repository import Repository
from entrega.vocabulary import Phase


def retained(repo: Repository, config: Config) -> set[str]:
    keep = config.retention.keep
    app = config.app
    versions: set[str] = set()
    for env in repo.environments(app):
        ran: list[str] = []
        for rollout in repo.rollouts(app, env.name, limit=1000):
            if rollout.phase == Phase.SUCCEEDED and rollout.version not in ran:
                ran.append(rollout.version)
            if rollout.from_version and rollout.version == env.current_version:
                versions.add(rollout.from_version)
        versions.update(ran[:keep])
        if env.current_version:
            versions.add(env.current_version)
    versions.update(r.version for r in repo.releases(app)[:keep])
    for rollout in repo.active_rollouts():
        versions.add(rollout.version)
        if rollout.from_version:
            versions.add(rollout.from_version)
    versions.update(r.version for r in repo.waiting_requests(app))
    return versions


def prune(repo: Repository, artifacts: ArtifactStore, config: Config) -> list[str]:
    """Delete the artifacts retention does not keep; returns the pruned versions."""
    keep = retained(repo, config)
    releases = repo.releases(config.app)
    # Two versions may share bytes: a digest stays while any kept release uses it, this
    # app's or another's (a server of several apps has one artifact directory).
    kept_digests = {r.digest for r in releases if r.version in keep}
    kept_digests |= repo.digests_in_use(besides=config.app)
    pruned = []
    for release in releases:
        if release.version in keep or release.pruned_at is not None:
            continue
        if release.digest not in kept_digests:
            shutil.rmtree(artifacts.path_for(release.digest), ignore_errors=True)
        Path(release.artifact_path).unlink(missing_ok=True)  # the version's link
        repo.mark_pruned(config.app, release.version)
        pruned.append(release.version)
    return pruned
