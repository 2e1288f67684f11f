"""The artifact store: a release's bytes, kept once, named by their sha256.

A digest is taken over the *content* of the unpacked tree (each file's path, executable
bit and sha256, in sorted order), so a directory and a tarball of the same files have the
same digest, whatever the tarball's timestamps or member order. Artifacts are unpacked
to ``<state>/artifacts/<hex>/`` once; ``<state>/releases/<app>/<version>`` links to it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path

from entrega.errors import ArtifactError


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


def _unpack(tarball: Path, into: Path) -> None:
    try:
        with tarfile.open(tarball, "r:*") as tar:
            for member in tar.getmembers():
                # The "data" filter below would quietly strip a leading "/"; an artifact
                # that names absolute paths is a mistake or an attack either way.
                parts = Path(member.name).parts
                if member.name.startswith("/") or ".." in parts:
                    raise ArtifactError(f"{tarball}: refused unsafe member {member.name!r} "
                                        "(absolute or outside the artifact)")
            # The "data" filter refuses absolute paths, "..", links that leave the tree
            # and device files: an artifact cannot write outside its own directory.
            tar.extractall(into, filter="data")
    except tarfile.FilterError as exc:
        raise ArtifactError(f"{tarball}: refused unsafe member: {exc}") from exc
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"{tarball}: not a readable tarball: {exc}") from exc


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: str) -> Path:
        return self.root / "artifacts" / digest.removeprefix("sha256:")

    def ingest(self, source: Path) -> tuple[str, Path]:
        """Copy or unpack ``source`` (directory or .tar/.tar.gz) into the store.

        Returns (digest, stored directory). Idempotent: the same content is stored once.
        """
        if not source.exists():
            raise ArtifactError(f"artifact {source} does not exist")
        staging_root = self.root / "artifacts" / ".staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=staging_root))
        try:
            tree = staging / "tree"
            if source.is_dir():
                shutil.copytree(source, tree, symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__", ".entrega"))
            elif tarfile.is_tarfile(source):
                tree.mkdir()
                _unpack(source, tree)
            else:
                raise ArtifactError(f"artifact {source} is neither a directory nor a tarball")
            digest = tree_digest(tree)
            final = self.path_for(digest)
            if not final.exists():
                os.replace(tree, final)
            return digest, final
        finally:
            shutil.rmtree(staging, ignore_errors=True)

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
            raise ArtifactError(f"artifact {digest} is missing from {path.parent}")
        actual = tree_digest(path)
        if actual != digest:
            raise ArtifactError(f"artifact {digest} was modified on disk (now {actual})",
                                hint="create the release again from its original bytes")
        return path
