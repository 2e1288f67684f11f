"""The part of the ssh target that runs ON a host: sent as the text of ``python3 -c``.

A fleet host has Python 3 and nothing of entrega, so this module imports only the
standard library and is never imported by the controller: :mod:`.remote` reads its source
and sends it with each call. It takes one JSON argument (``{"op": ..., ...}``) and prints
one JSON object; an expected refusal exits 2 with ``{"error": "..."}`` (a sentence for the
user, naming versions and members, never a path of the host).

Releases live at ``<base_dir>/<app>/releases/<version>``. The invariants, for a
controller that may be restarted between any two steps:

- a release directory exists only complete: bytes are received into ``.partial-<version>.tar``,
  checked (the sha256 of the bytes sent, then the content digest of the unpacked tree, the
  same as the controller's ``tree_digest``), unpacked into ``.partial-<version>/`` and
  renamed into place, with the marker file holding the release's digest written before the
  rename. Whatever an interruption left under ``.partial-<version>*`` is removed by the
  next receive of that version;
- one receive or prune of a version at a time (``flock`` on ``.lock-<version>``);
- unpacking keeps the controller's limits (total bytes, members, compression ratio) and
  refuses absolute paths, ``..``, links leaving the tree and device files.
"""

from __future__ import annotations  # annotations are for mypy; a host needs Python 3.9+

import bz2
import fcntl
import gzip
import hashlib
import json
import lzma
import os
import platform
import shutil
import stat
import sys
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

Args = dict[str, Any]

MARKER = ".entrega-release"
PARTIAL = ".partial-"
PRUNING = ".pruning-"
BLOCK = 1 << 20
#: As the controller's unpack.py: the first MiB is not held to the ratio; a member's
#: header and padding take up to this much of the tar stream.
RATIO_ALLOWANCE_BYTES = 1 << 20
TAR_OVERHEAD_PER_MEMBER = 1024


class Refused(Exception):
    """An expected refusal; its text is the user's sentence."""


def releases_dir(args: Args) -> Path:
    return Path(args["base_dir"]) / args["app"] / "releases"


def read_marker(release: Path) -> str | None:
    try:
        return (release / MARKER).read_text().strip()
    except OSError:
        return None


def probe(args: Args) -> Args:
    release = releases_dir(args) / args["version"]
    if not release.is_dir():
        return {"state": "absent"}
    marker = read_marker(release)
    if marker is None:
        return {"state": "unmarked"}
    if marker != args["digest"]:
        return {"state": "other", "digest": marker}
    return {"state": "present"}


def lock(releases: Path, version: str) -> IO[str]:
    handle = open(releases / (".lock-" + version), "a")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def receive(args: Args) -> Args:
    releases = releases_dir(args)
    releases.mkdir(parents=True, exist_ok=True)
    version = args["version"]
    with lock(releases, version):
        found = probe(args)
        if args.get("ask_first"):
            # The sender waits for this line before sending any byte: one command does
            # what a probe and a receive did, and a host that has the release gets none.
            print(json.dumps(found), flush=True)
            if found["state"] != "absent":
                return found
        elif found["state"] != "absent":
            sys.stdin.buffer.read()  # the sender is already writing; the answer says why
            return found
        tarball = releases / (PARTIAL + version + ".tar")
        tree = releases / (PARTIAL + version)
        for leftover in (tarball, tree):
            remove(leftover)  # an interrupted receive of this version
        try:
            received = write_stdin(tarball)
            if received["sha256"] != args["stream_sha256"]:
                raise Refused(
                    f"the bytes that arrived differ from the bytes sent (sha256 "
                    f"{received['sha256'][:16]}, sent {args['stream_sha256'][:16]}, "
                    f"{received['bytes']} bytes arrived): the transfer was corrupted or cut")
            tree.mkdir()
            unpack(tarball, tree, args["limits"])
            digest = tree_digest(tree)
            if digest != args["digest"]:
                raise Refused(f"the unpacked release has digest {digest[:23]}, not the "
                              f"release's {args['digest'][:23]}: the artifact is corrupted")
            (tree / MARKER).write_text(args["digest"] + "\n")
            sync_dir(tree)
            os.rename(tree, releases / version)
            sync_dir(releases)
        finally:
            remove(tarball)
            remove(tree)
        return {"state": "installed", "bytes": received["bytes"]}


def write_stdin(path: Path) -> Args:
    digest = hashlib.sha256()
    size = 0
    with open(path, "wb") as out:
        while True:
            chunk = sys.stdin.buffer.read(BLOCK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return {"sha256": digest.hexdigest(), "bytes": size}


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Budget:
    def __init__(self, limits: Args, compressed_bytes: int) -> None:
        self.limits = limits
        by_ratio = int(limits["max_compression_ratio"] * compressed_bytes) \
            + RATIO_ALLOWANCE_BYTES
        self.max_bytes = min(limits["max_unpacked_bytes"], by_ratio)
        self.compressed_bytes = compressed_bytes

    def judge(self, members: int, unpacked: int) -> str | None:
        limits = self.limits
        if members > limits["max_members"]:
            return f"it has more than {limits['max_members']} members (artifacts.max_members)"
        if unpacked > limits["max_unpacked_bytes"]:
            return (f"it unpacks to more than {limits['max_unpacked_bytes']} bytes "
                    "(artifacts.max_unpacked_bytes)")
        if unpacked > self.max_bytes:
            return (f"it unpacks to more than {limits['max_compression_ratio']:g} times its "
                    f"{self.compressed_bytes} compressed bytes "
                    "(artifacts.max_compression_ratio): a decompression bomb?")
        return None


class CountingReader:
    """Refuses to decompress past what the members seen so far may take."""

    def __init__(self, raw: IO[bytes], budget: Budget) -> None:
        self.raw = raw
        self.budget = budget
        self.members = 0
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        cap = self.budget.max_bytes + TAR_OVERHEAD_PER_MEMBER * (self.members + 1) \
            + 2 * 512 + tarfile.RECORDSIZE
        room = cap - self.total
        if size < 0 or size > room + 1:
            size = room + 1
        data = self.raw.read(size)
        self.total += len(data)
        if self.total > cap:
            raise Refused("the artifact was refused: "
                          + (self.budget.judge(self.members, self.total)
                             or f"it unpacks to more than {cap} bytes of tar stream"))
        return data


def decompressed(path: Path) -> IO[bytes]:
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(filename=str(path), mode="rb")  # type: ignore[return-value]
    if head.startswith(b"BZh"):
        return bz2.BZ2File(str(path), "rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(str(path), "rb")
    return open(path, "rb")


def checked(tar: tarfile.TarFile, reader: CountingReader, budget: Budget,
            into: Path) -> Iterator[tarfile.TarInfo]:
    members = unpacked = 0
    root = os.path.realpath(into)
    for member in tar:
        members += 1
        reader.members = members
        unpacked += max(member.size, 0) if member.isreg() else 0
        name = member.name
        if name.startswith("/") or ".." in Path(name).parts:
            raise Refused(f"refused unsafe member {name!r} (absolute or outside the artifact)")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise Refused(f"refused unsafe member {name!r} (a device or special file)")
        if member.issym() or member.islnk():
            base = os.path.dirname(os.path.join(root, name)) if member.issym() else root
            target = os.path.realpath(os.path.join(base, member.linkname))
            if member.linkname.startswith("/") or \
                    os.path.commonpath([root, target]) != root:
                raise Refused(f"refused unsafe member {name!r} (a link leaving the artifact)")
        problem = budget.judge(members, unpacked)
        if problem:
            raise Refused("the artifact was refused: " + problem)
        yield member


def unpack(tarball: Path, into: Path, limits: Args) -> None:
    budget = Budget(limits, tarball.stat().st_size)
    try:
        raw = decompressed(tarball)
        reader = CountingReader(raw, budget)
        with raw, tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            members = checked(tar, reader, budget, into)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, members=members, filter="data")
            else:  # Python before 3.11.4: the checks above are the filter
                tar.extractall(into, members=members)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as exc:
        if isinstance(exc, OSError) and exc.strerror:
            why = exc.strerror.lower()
        else:
            why = str(exc).split(":")[0].strip()[:120] or "corrupt data"
        raise Refused(f"the artifact is not a readable tarball ({why})") from None


def tree_digest(root: Path) -> str:
    """The controller's ``tree_digest`` (releases/artifacts.py), byte for byte."""
    outer = hashlib.sha256()
    paths = sorted((p for p in root.rglob("*") if not p.is_dir() or p.is_symlink()),
                   key=lambda p: p.relative_to(root).parts)
    for path in paths:
        rel = path.relative_to(root).as_posix()
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            entry = f"L {rel}\0{os.readlink(path)}"
        else:
            inner = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(BLOCK), b""):
                    inner.update(chunk)
            kind = "X" if info.st_mode & 0o111 else "F"
            entry = f"{kind} {rel}\0{inner.hexdigest()}"
        outer.update(entry.encode() + b"\n")
    return "sha256:" + outer.hexdigest()


def installed(releases: Path) -> list[str]:
    """Complete releases, newest install first (the marker's mtime: when it was renamed
    into place; a directory's own mtime changes with its content)."""
    found = []
    if releases.is_dir():
        for entry in releases.iterdir():
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            marker = entry / MARKER
            if marker.exists():
                found.append((marker.stat().st_mtime, entry.name))
    return [name for _mtime, name in sorted(found, reverse=True)]


def prune(args: Args) -> Args:
    releases = releases_dir(args)
    protect = set(args.get("protect", []))
    removed = []
    complete = set(installed(releases))
    for stale in (list(releases.iterdir()) if releases.is_dir() else []):
        if stale.name.startswith(PRUNING):
            remove(stale)  # a prune cut short
        elif stale.name.startswith(PARTIAL):
            # A receive cut between its rename and its clean-up: the release is complete,
            # no later receive of it will come to tidy up.
            version = stale.name[len(PARTIAL):].removesuffix(".tar")
            if version in complete:
                with lock(releases, version):
                    remove(stale)
    for name in installed(releases)[args["keep"]:]:
        if name in protect:
            continue
        with lock(releases, name):
            # Renamed first, so a half-deleted tree never looks like a complete release.
            doomed = releases / (PRUNING + name)
            os.rename(releases / name, doomed)
            remove(doomed)
            (releases / (".lock-" + name)).unlink()
        removed.append(name)
    return {"removed": removed, "kept": installed(releases)}


def inspect(args: Args) -> Args:
    base = Path(args["base_dir"])
    existing = base
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    releases = releases_dir(args)
    return {"python": platform.python_version(), "base_dir_exists": base.is_dir(),
            "free_bytes": usage.free, "releases_dir_exists": releases.is_dir(),
            "releases": installed(releases)}


OPS = {"probe": probe, "receive": receive, "prune": prune, "inspect": inspect}


def main(argv: list[str]) -> int:
    args = json.loads(argv[1])
    try:
        answer = OPS[args["op"]](args)
    except Refused as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    except OSError as exc:
        why = (exc.strerror or "I/O error").lower()
        print(json.dumps({"error": f"the host could not {args['op']}: {why}"}))
        return 2
    except Exception as exc:  # the answer must stay a sentence, never a trace
        why = str(exc).strip()[:200] or "no detail"
        print(json.dumps({"error": f"the host could not {args['op']}: unexpected failure "
                                   f"({why})"}))
        return 2
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
