"""Releases onto real sshd hosts by content: sent once, checked on the host, unpacked
within the limits, repaired after an interruption, pruned."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from entrega.config import ArtifactsConfig
from entrega.errors import ArtifactError
from entrega.releases.artifacts import tree_digest
from entrega.targets.ssh import prune_releases, sync_release
from entrega.targets.ssh.remote import call_hostside
from entrega.targets.ssh.transfer import release_path, releases_path
from tests.fleet.conftest import fleet_of
from tests.fleet.hosts import TestFleet

pytestmark = pytest.mark.real

APP = "shop"


def make_tree(root: Path, text: str = "print('v1')\n") -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "app.py").write_text(text)
    (root / "bin" / "run").write_text("#!/bin/sh\nexec python3 app.py\n")
    (root / "bin" / "run").chmod(0o755)
    (root / "current").symlink_to("app.py")
    return root


def tarball_of(entries: dict[str, bytes], path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


async def test_a_release_is_sent_once_and_lands_whole(test_fleet: TestFleet,
                                                      tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "v1")
    digest = tree_digest(tree)
    async with fleet_of(test_fleet) as fleet:
        first = await fleet.each(lambda h: sync_release(
            fleet, h, app=APP, version="v1", digest=digest, source=tree))
        assert all(o.ok for o in first), [str(o.error) for o in first]
        assert all(o.value and o.value.sent_bytes > 0 and not o.value.already_present
                   for o in first)
        again = await fleet.each(lambda h: sync_release(
            fleet, h, app=APP, version="v1", digest=digest, source=tree))
        assert [(o.value.sent_bytes, o.value.already_present) for o in again if o.value] \
            == [(0, True)] * 3
    for host in test_fleet.hosts:
        landed = Path(release_path(fleet.host(host.name), APP, "v1"))
        assert landed.is_dir() and (landed / "bin" / "run").stat().st_mode & 0o111
        assert os.readlink(landed / "current") == "app.py"
        assert (landed / ".entrega-release").read_text().strip() == digest
        (landed / ".entrega-release").unlink()  # the tree without our marker is the release's
        assert tree_digest(landed) == digest
        assert sorted(p.name for p in landed.parent.iterdir()) == [".lock-v1", "v1"]


@pytest.mark.parametrize("likely_absent", [True, False], ids=["offered", "probed"])
async def test_a_release_offered_in_one_command_is_sent_once_then_refused_politely(
        test_fleet: TestFleet, tmp_path: Path, likely_absent: bool) -> None:
    """Offered (``likely_absent``): one command a sync, answering before any byte goes;
    probed: a probe, then a receive only when the host lacks the release."""
    tree = make_tree(tmp_path / "v1")
    digest = tree_digest(tree)
    other = make_tree(tmp_path / "other", text="print('other')\n")
    async with fleet_of(test_fleet) as fleet:
        host = fleet.hosts[0]
        commands: list[str] = []
        run, streaming = fleet.run, fleet.run_streaming

        async def counted_run(*args: object, **kwargs: object) -> object:
            commands.append("run")
            return await run(*args, **kwargs)  # type: ignore[arg-type]

        async def counted_streaming(*args: object, **kwargs: object) -> object:
            commands.append("streaming")
            return await streaming(*args, **kwargs)  # type: ignore[arg-type]

        fleet.run, fleet.run_streaming = counted_run, counted_streaming  # type: ignore[method-assign, assignment]

        def sync(source: Path) -> object:
            return sync_release(fleet, host, app=APP, version="v1", digest=digest,
                                source=source, likely_absent=likely_absent)

        first = await sync(tree)
        assert (first.sent_bytes > 0, first.already_present) == (True, False)  # type: ignore[attr-defined]
        again = await sync(tree)
        assert (again.sent_bytes, again.already_present) == (0, True)  # type: ignore[attr-defined]
        with pytest.raises(ArtifactError, match="already has release v1 of shop with "
                                                "other content"):
            await sync_release(fleet, host, app=APP, version="v1", digest=tree_digest(other),
                               source=other, likely_absent=likely_absent)
        assert commands == (["streaming"] * 3 if likely_absent
                            else ["run", "streaming", "run", "run"])
    landed = Path(release_path(host, APP, "v1"))
    assert (landed / ".entrega-release").read_text().strip() == digest


async def test_a_tarball_whose_content_is_not_the_release_is_refused(
        test_fleet: TestFleet, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "v1")
    digest = tree_digest(tree)
    (tree / "app.py").write_text("print('tampered')\n")  # after the digest was taken
    async with fleet_of(test_fleet) as fleet:
        host = fleet.hosts[0]
        with pytest.raises(ArtifactError) as refused:
            await sync_release(fleet, host, app=APP, version="v1", digest=digest, source=tree)
    text = str(refused.value)
    assert "host1" in text and "corrupted" in text and digest[:23] in text
    assert "Error" not in text and str(tmp_path) not in text
    releases = Path(releases_path(host, APP))
    assert [p.name for p in releases.iterdir()] == [".lock-v1"]  # no release, no leftovers


async def test_a_transfer_cut_short_is_detected_on_the_host(test_fleet: TestFleet,
                                                            tmp_path: Path) -> None:
    """The sha256 of what arrived is checked before anything is unpacked: a stream that
    stops early (the sender died mid-artifact) leaves no release."""
    tarball = tarball_of({"app.py": os.urandom(300_000)}, tmp_path / "a.tar.gz")
    whole = tarball.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    async with fleet_of(test_fleet) as fleet:
        host = fleet.hosts[1]
        with pytest.raises(ArtifactError, match=r"host2 .*: the bytes that arrived differ"):
            await call_hostside(fleet, host, {
                "op": "receive", "base_dir": host.base_dir, "app": APP, "version": "v1",
                "digest": "sha256:" + "0" * 64, "limits": ArtifactsConfig().model_dump(),
                "stream_sha256": hashlib.sha256(whole).hexdigest()}, stdin_file=cut)
    assert [p.name for p in Path(releases_path(host, APP)).iterdir()] == [".lock-v1"]


@pytest.mark.parametrize(("entries", "limits", "problem"), [
    ({"../escape.txt": b"out"}, ArtifactsConfig(), "refused unsafe member '../escape.txt'"),
    ({"/etc/evil": b"x"}, ArtifactsConfig(), "refused unsafe member '/etc/evil'"),
    ({f"f{i}": b"x" for i in range(5)}, ArtifactsConfig(max_members=3),
     "more than 3 members (artifacts.max_members)"),
    ({"big": b"\0" * 3_000_000}, ArtifactsConfig(max_unpacked_bytes=2_000_000),
     "more than 2000000 bytes (artifacts.max_unpacked_bytes)"),
    ({"bomb": b"\0" * 8_000_000}, ArtifactsConfig(max_compression_ratio=2),
     "artifacts.max_compression_ratio"),
], ids=["dot-dot-escape", "absolute", "members", "bytes", "ratio"])
async def test_unsafe_or_oversized_tarballs_are_refused_on_the_host(
        test_fleet: TestFleet, tmp_path: Path, entries: dict[str, bytes],
        limits: ArtifactsConfig, problem: str) -> None:
    tarball = tarball_of(entries, tmp_path / "bad.tar.gz")
    async with fleet_of(test_fleet) as fleet:
        host = fleet.hosts[2]
        with pytest.raises(ArtifactError) as refused:
            await sync_release(fleet, host, app=APP, version="v1",
                               digest="sha256:" + "1" * 64, source=tarball, limits=limits)
    assert "host3" in str(refused.value) and problem in str(refused.value)
    releases = Path(releases_path(host, APP))
    assert [p.name for p in releases.iterdir()] == [".lock-v1"]
    assert not (releases.parent / "escape.txt").exists()


async def test_an_interrupted_sync_is_repaired_by_the_next(test_fleet: TestFleet,
                                                           tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "v2", "print('v2')\n")
    digest = tree_digest(tree)
    async with fleet_of(test_fleet) as fleet:
        host = fleet.hosts[0]
        releases = Path(releases_path(host, APP))
        # What a sync cut mid-unpack leaves: the received bytes, a half-unpacked tree.
        (releases / ".partial-v2" / "bin").mkdir(parents=True)
        (releases / ".partial-v2" / "app.py").write_text("print('half')")
        (releases / ".partial-v2.tar").write_bytes(b"\x1f\x8b half a tarball")
        result = await sync_release(fleet, host, app=APP, version="v2", digest=digest,
                                    source=tree)
    assert result.sent_bytes > 0 and not result.already_present
    assert sorted(p.name for p in releases.iterdir()) == [".lock-v2", "v2"]
    assert (releases / "v2" / "app.py").read_text() == "print('v2')\n"


async def test_the_same_version_with_other_content_is_refused(test_fleet: TestFleet,
                                                              tmp_path: Path) -> None:
    one, other = make_tree(tmp_path / "a"), make_tree(tmp_path / "b", "print('b')\n")
    async with fleet_of(test_fleet) as fleet:
        host = fleet.hosts[0]
        await sync_release(fleet, host, app=APP, version="v1", digest=tree_digest(one),
                           source=one)
        with pytest.raises(ArtifactError, match="already has release v1 of shop with other"):
            await sync_release(fleet, host, app=APP, version="v1",
                               digest=tree_digest(other), source=other)


async def test_old_releases_beyond_keep_are_pruned(test_fleet: TestFleet,
                                                   tmp_path: Path) -> None:
    async with fleet_of(test_fleet) as fleet:
        host = fleet.hosts[0]
        releases = Path(releases_path(host, APP))
        for n in range(1, 5):
            tree = make_tree(tmp_path / f"v{n}", f"print({n})\n")
            await sync_release(fleet, host, app=APP, version=f"v{n}",
                               digest=tree_digest(tree), source=tree)
            marker = releases / f"v{n}" / ".entrega-release"
            os.utime(marker, (1_000_000 + n, 1_000_000 + n))  # install order, exactly
        # A receive of v4 cut after its rename, before it removed its received bytes.
        (releases / ".partial-v4.tar").write_bytes(b"left behind")
        removed = await prune_releases(fleet, host, app=APP, keep=2, protect={"v1"})
        assert sorted(removed) == ["v2"]
        assert sorted(p.name for p in releases.iterdir() if not p.name.startswith(".")) \
            == ["v1", "v3", "v4"]
        assert not (releases / ".partial-v4.tar").exists()
        assert await prune_releases(fleet, host, app=APP, keep=2, protect={"v1"}) == []
