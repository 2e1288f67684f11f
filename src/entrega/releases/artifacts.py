"""The artifact store: a release's bytes, kept once, named by their sha256.

A digest is taken over the *content* of the unpacked tree (each file's path, executable
bit and sha256, in sorted order), so a directory and a tarball of the same files have the
same digest, whatever the tarball's timestamps or member order. Artifacts are unpacked
to ``<state>/artifacts/<hex>/`` once; ``<state>/releases/<app>/<version>`` links to it.

Stage, check, then commit: an artifact is unpacked and hashed under ``.staging`` first,
and enters the store only once its release is accepted, so a refused request (a version
conflict, a limit, a bad tarball, a client gone mid-upload) leaves no bytes behind.

The directory is the state directory unless ``artifacts.dir`` names another, one that
several servers of one PostgreSQL store share: the artifact a leader received is then
there for whichever server deploys it. Content addressing makes sharing safe (two servers
committing the same digest write the same bytes; the second finds it there), and each
server stages under a ``.staging/<server>`` of its own, so the sweep of a server that
starts never deletes another's uploads in flight.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from entrega.config import ArtifactsConfig, Config
from entrega.errors import ArtifactError
from entrega.releases.unpack import check_tree, unpack_tarball


def tree_digest(root: Path) -> str:
    """``sha256:<hex>`` of a directory's content (paths, exec bits, bytes, links)."""
    outer = hashlib.sha256()
    paths = sorted(p for p in root.rglob("*") if not p.is_dir() or p.is_symlink())
    for path in paths:
        rel = path.relative_to(root).as_posix()
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            entry = f"L {rel}\0{os.readlink(path)}"
        else:
            inner = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    inner.update(chunk)
            kind = "X" if info.st_mode & 0o111 else "F"
            entry = f"{kind} {rel}\0{inner.hexdigest()}"
        outer.update(entry.encode() + b"\n")
    return "sha256:" + outer.hexdigest()


@dataclass(frozen=True)
class StagedArtifact:
    """An artifact unpacked and hashed under ``.staging``, not yet part of the store:
    :meth:`ArtifactStore.commit` moves it in, :meth:`ArtifactStore.discard` deletes it."""

    digest: str
    tree: Path
    staging: Path


class ArtifactStore:
    """``<root>/artifacts/<hex>/`` trees, written only by :meth:`commit`.

    Everything in flight (an upload's body, a tree being unpacked and hashed) lives under
    ``<root>/artifacts/.staging/`` (``.staging/<server>/`` in a shared root), which one
    controller owns (it holds its state directory's lock), so whatever a crash or a
    refused request leaves there is swept at start. Unpacking and
    hashing block: callers on the event loop run :meth:`stage` in a worker thread.
    """

    def __init__(self, root: Path, limits: ArtifactsConfig | None = None, *,
                 server: str | None = None) -> None:
        self.root = root
        self.limits = limits or ArtifactsConfig()
        #: This server's name among those sharing ``root`` (None: root is its own).
        self.server = server

    @property
    def staging_root(self) -> Path:
        staging = self.root / "artifacts" / ".staging"
        return staging if self.server is None else staging / self.server

    def path_for(self, digest: str) -> Path:
        return self.root / "artifacts" / digest.removeprefix("sha256:")

    def new_staging_dir(self, prefix: str) -> Path:
        """A directory of its own under ``.staging``, named with this process's pid."""
        self.staging_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.staging_root, prefix=f"{prefix}{os.getpid()}-"))

    def sweep_staging(self) -> int:
        """Delete what earlier runs left in flight; returns how many entries. Called once,
        at the server's start. An entry of a process that still runs is left: two servers
        of one PostgreSQL store may share a state directory (``entrega server
        --listen``), and the other one's upload is in flight."""
        swept = 0
        # <state>/uploads held request bodies before they moved under .staging.
        legacy = [self.root / "uploads"] if self.server is None else []
        for leftovers in (self.staging_root, *legacy):
            if not leftovers.is_dir():
                continue
            for entry in leftovers.iterdir():
                if _owner_runs(entry.name):
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                swept += 1
        return swept

    def stage(self, source: Path, *, label: str = "the artifact") -> StagedArtifact:
        """Copy or unpack ``source`` (directory or tarball) under ``.staging`` and hash it,
        within ``limits``. Blocking. ``label`` names the artifact in errors (a server path
        never appears in one)."""
        staging = self.new_staging_dir("tree-")
        try:
            tree = staging / "tree"
            if source.is_dir():
                check_tree(source, limits=self.limits, label=label)
                try:
                    shutil.copytree(source, tree, symlinks=True,
                                    ignore=shutil.ignore_patterns("__pycache__", ".entrega"))
                except (shutil.Error, OSError):
                    raise ArtifactError(f"{label} could not be copied (unreadable files, "
                                        "sockets or files changing while read)") from None
            elif source.is_file():
                tree.mkdir()
                unpack_tarball(source, tree, limits=self.limits, label=label)
            else:
                raise ArtifactError(f"{label} does not exist")
            return StagedArtifact(digest=tree_digest(tree), tree=tree, staging=staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def commit(self, staged: StagedArtifact) -> tuple[Path, bool]:
        """Move a staged tree into the store (a rename: fast, fine on the event loop).
        Returns (stored directory, whether this call added it). Idempotent: content
        stored before is kept; the staged copy stays for :meth:`discard`."""
        final = self.path_for(staged.digest)
        if final.exists():
            return final, False
        os.replace(staged.tree, final)
        return final, True

    def discard(self, staged: StagedArtifact) -> None:
        shutil.rmtree(staged.staging, ignore_errors=True)

    def checkout(self, release_path: Path, *, prefix: str) -> Path:
        """A throwaway copy of a release's tree under ``.staging``, for a program that
        may write where it runs (a verification command): the stored tree must keep its
        digest. Blocking. Delete it with :meth:`drop_checkout`; a crash leaves it to the
        next start's sweep."""
        copy = self.new_staging_dir(prefix) / "tree"
        try:
            shutil.copytree(release_path, copy, symlinks=True)
        except (OSError, shutil.Error) as exc:
            shutil.rmtree(copy.parent, ignore_errors=True)
            raise ArtifactError("the release could not be copied to run a check in it",
                                hint="is the disk full?") from exc
        return copy

    def drop_checkout(self, copy: Path) -> None:
        shutil.rmtree(copy.parent, ignore_errors=True)

    def remove(self, digest: str) -> None:
        """Undo a :meth:`commit` whose release could not be recorded."""
        shutil.rmtree(self.path_for(digest), ignore_errors=True)

    def ingest(self, source: Path, *, label: str = "the artifact") -> tuple[str, Path]:
        """Stage and commit in one call. Returns (digest, stored directory)."""
        staged = self.stage(source, label=label)
        try:
            final, _ = self.commit(staged)
        finally:
            self.discard(staged)
        return staged.digest, final

    def link_release(self, app: str, version: str, digest: str) -> Path:
        """``<state>/releases/<app>/<version>`` -> the artifact directory."""
        link = self.root / "releases" / app / version
        link.parent.mkdir(parents=True, exist_ok=True)
        target = self.path_for(digest)
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return link
        tmp = link.with_name(f".{version}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)
        return link

    def verify(self, digest: str) -> Path:
        """The stored directory, after checking its content still has ``digest``."""
        path = self.path_for(digest)
        if not path.is_dir():
            raise ArtifactError(f"artifact {digest} is missing from the artifact store",
                                hint="create the release again from its original bytes")
        actual = tree_digest(path)
        if actual != digest:
            raise ArtifactError(f"artifact {digest} was modified on disk (now {actual})",
                                hint="create the release again from its original bytes")
        return path


def _owner_runs(name: str) -> bool:
    """True when a staging entry (``PREFIX-PID-random``) belongs to another process that
    is alive. Ours, at start, is a leftover of a dead process whose pid we reuse."""
    parts = name.split("-")
    if len(parts) < 3 or not parts[1].isdigit():
        return False  # written before entries carried a pid
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def artifact_store_for(config: Config) -> ArtifactStore:
    """The artifact store of a server: its ``artifacts.dir`` (else its state directory).
    A shared directory stages per server, named by host and state directory: what one
    server's lock protects (controller.lock in its state directory)."""
    if config.artifacts.dir is None:
        return ArtifactStore(config.state_path, config.artifacts)
    owner = hashlib.sha256(str(config.state_path).encode()).hexdigest()[:12]
    return ArtifactStore(config.artifacts_path, config.artifacts,
                         server=f"{socket.gethostname()}-{owner}")
