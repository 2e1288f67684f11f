"""The store: migrations, the single-controller lock, immutable content-addressed releases."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import inspect

from entrega.config import load_config
from entrega.errors import ArtifactError, ControllerLocked, ReleaseConflict
from entrega.releases.artifacts import ArtifactStore, artifact_store_for, tree_digest
from entrega.releases.catalog import create_release
from entrega.store import Store
from entrega.store.database import ControllerLock
from entrega.store.models import Base
from entrega.store.repository import Repository


@pytest.fixture
def repo(store: Store) -> Repository:
    repo = Repository(store)
    repo.sync_app("shop", ["staging", "production"])
    return repo


def make_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_migrated_schema_matches_models(store: Store) -> None:
    store.migrate()  # idempotent (the fixture migrated it once)
    inspector = inspect(store.engine)
    for table in Base.metadata.sorted_tables:
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        assert columns == {c.name for c in table.columns}, table.name
        indexes = {i["name"] for i in inspector.get_indexes(table.name)
                   if not i.get("duplicates_constraint")}  # PostgreSQL: UNIQUE(...)
        assert indexes == {i.name for i in table.indexes}, table.name
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as connection:
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        assert mode == "wal"


def test_environments_keep_configured_order(repo: Repository) -> None:
    assert [e.name for e in repo.environments("shop")] == ["staging", "production"]
    repo.sync_app("shop", ["production", "staging"])
    assert [e.name for e in repo.environments("shop")] == ["production", "staging"]


def test_digest_is_content_not_packaging(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "a", {"app.py": "print(1)\n", "lib/x.txt": "x"})
    tarball = tmp_path / "a.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tree, arcname=".")
    store = ArtifactStore(tmp_path / "state")
    digest_dir, path_dir = store.ingest(tree)
    digest_tar, path_tar = store.ingest(tarball)
    assert digest_dir == digest_tar == tree_digest(tree)
    assert path_dir == path_tar and (path_dir / "lib" / "x.txt").read_text() == "x"


def test_same_version_same_bytes_is_a_noop_other_bytes_a_conflict(
        tmp_path: Path, repo: Repository) -> None:
    store = ArtifactStore(tmp_path / "state")
    tree = make_tree(tmp_path / "v1", {"app.py": "print(1)\n"})
    release, created = create_release(repo, store, app="shop", version="v1", source=tree,
                                      meta={"commit": "abc"}, actor="ci")
    assert created and release.digest.startswith("sha256:")
    again, created = create_release(repo, store, app="shop", version="v1", source=tree,
                                    meta={}, actor="ci")
    assert not created and again.digest == release.digest
    other = make_tree(tmp_path / "v1b", {"app.py": "print(2)\n"})
    with pytest.raises(ReleaseConflict, match="exists with other bytes"):
        create_release(repo, store, app="shop", version="v1", source=other, meta={},
                       actor="ci")
    assert Path(repo.release("shop", "v1").artifact_path).resolve() == \
        store.path_for(release.digest)


def test_tampered_artifact_is_detected(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "state")
    digest, path = store.ingest(make_tree(tmp_path / "v1", {"app.py": "print(1)\n"}))
    assert store.verify(digest) == path
    (path / "app.py").write_text("print('evil')\n")
    with pytest.raises(ArtifactError, match="modified on disk"):
        store.verify(digest)


@pytest.mark.parametrize("member", ["../escape.txt", "/etc/evil.txt"])
def test_unsafe_tarballs_are_refused(tmp_path: Path, member: str) -> None:
    tarball = tmp_path / "evil.tar"
    with tarfile.open(tarball, "w") as tar:
        info = tarfile.TarInfo(member)  # addfile keeps the name as given (add() strips "/")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ArtifactError, match="refused unsafe member"):
        ArtifactStore(tmp_path / "state").ingest(tarball)
    assert not (tmp_path / "state" / "escape.txt").exists()


def test_link_outside_the_tree_is_refused(tmp_path: Path) -> None:
    tarball = tmp_path / "link.tar"
    with tarfile.open(tarball, "w") as tar:
        info = tarfile.TarInfo("passwd")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ArtifactError, match="refused unsafe member"):
        ArtifactStore(tmp_path / "state").ingest(tarball)


def test_one_controller_at_a_time(tmp_path: Path) -> None:
    lock = ControllerLock(tmp_path / "controller.lock")
    lock.acquire()
    code = ("import sys; from pathlib import Path; from entrega.store.database import "
            "ControllerLock; ControllerLock(Path(sys.argv[1])).acquire()")
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "controller.lock")],
                           capture_output=True, text=True)
    assert other.returncode != 0 and "ControllerLocked" in other.stderr
    with pytest.raises(ControllerLocked, match="another entrega server"):
        ControllerLock(tmp_path / "controller.lock").acquire()
    lock.release()
    second = ControllerLock(tmp_path / "controller.lock")
    second.acquire()
    second.release()


def test_a_starting_server_leaves_the_uploads_of_a_running_one_in_its_state_dir(
        tmp_path: Path) -> None:
    """Two servers of one PostgreSQL store on one machine and file (``--listen``) share a
    state directory: the one starting sweeps what dead processes left, not what the
    other one has in flight."""
    store = ArtifactStore(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        store.staging_root.mkdir(parents=True)
        running = store.staging_root / f"upload-{other.pid}-abc"
        running.mkdir()
        gone = store.staging_root / f"upload-{dead.pid}-def"
        gone.mkdir()
        ours = store.new_staging_dir("tree-")  # our own pid, at start: a leftover
        assert store.sweep_staging() == 2
        assert running.exists() and not gone.exists() and not ours.exists()
    finally:
        other.kill()
        other.wait()


def test_servers_sharing_an_artifacts_dir_sweep_only_their_own_uploads(
        tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    first = ArtifactStore(shared, server="host-a")
    second = ArtifactStore(shared, server="host-b")
    in_flight = first.new_staging_dir("upload-")
    (in_flight / "body").write_bytes(b"x" * 10)
    left_over = second.new_staging_dir("tree-")
    assert second.sweep_staging() == 1 and not left_over.exists()
    assert (in_flight / "body").exists()  # the first server's upload goes on
    # What one received, the other reads: one content-addressed tree for both.
    digest, path = first.ingest(make_tree(tmp_path / "v1", {"app.py": "print(1)\n"}))
    assert second.verify(digest) == path
    assert second.commit(second.stage(tmp_path / "v1")) == (path, False)


@pytest.mark.parametrize(("artifacts", "expected"), [
    ("", "{base}/.entrega"),
    ("artifacts: {dir: /srv/shared/entrega}\n", "/srv/shared/entrega"),
    ("artifacts: {dir: ../shared}\n", "{parent}/shared"),
], ids=["default-state-dir", "absolute", "relative-to-the-file"])
def test_artifacts_dir_names_where_release_bytes_live(tmp_path: Path, artifacts: str,
                                                      expected: str) -> None:
    path = tmp_path / "app" / "entrega.yaml"
    path.parent.mkdir()
    path.write_text("app: shop\nrun: {command: x}\nenvironments:\n  - name: production\n"
                    "    router: {kind: embedded, listen: '127.0.0.1:18080'}\n" + artifacts)
    config = load_config(path)
    assert config.artifacts_path == Path(expected.format(base=path.parent, parent=tmp_path))
    store = artifact_store_for(config)
    assert store.root == config.artifacts_path
    assert (store.server is None) == (artifacts == "")
