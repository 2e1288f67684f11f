"""Unpacking an artifact within bounds: total bytes, member count, compression ratio.

A tarball's members declare their sizes in headers that come before their bytes, so the
bounds are checked on each header, before the member is written: a 1 MB gzip that would
become 1 GiB is refused after reading a few hundred bytes of it, and nothing it named is
left half-written beyond what the bounds allow. The decompressed stream itself is also
counted, so headers that carry data of their own (pax records, long names) cannot grow
past the same bounds inside tarfile.

The archive is read as a stream (``r|``) through our own decompressor, never seeked, and
the "data" extraction filter keeps every member inside the destination. Errors name the
artifact by the label the caller gives (never a server path) and the offending member.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from entrega.config import ArtifactsConfig
from entrega.errors import ArtifactError, PayloadTooLarge

#: The first MiB of unpacked bytes is not held to the ratio: a small tarball of a few
#: zero-padded files compresses very well and is harmless.
RATIO_ALLOWANCE_BYTES = 1 << 20
#: A tar header and the padding after a member (512 + up to 511 bytes).
TAR_OVERHEAD_PER_MEMBER = 1024

COPY_BLOCK_BYTES = 1 << 20

_LIMITS_HINT = "or raise artifacts.max_unpacked_bytes / max_members / max_compression_ratio"

_FILTER_REASONS = {
    tarfile.AbsolutePathError: "an absolute path",
    tarfile.OutsideDestinationError: "outside the artifact",
    tarfile.SpecialFileError: "a device or special file",
    tarfile.AbsoluteLinkError: "a link to an absolute path",
    tarfile.LinkOutsideDestinationError: "a link leaving the artifact",
}


@dataclass(frozen=True)
class UnpackBudget:
    """What an artifact of ``compressed_bytes`` may unpack to under ``limits`` (None: not
    compressed, a directory; the ratio does not apply)."""

    limits: ArtifactsConfig
    compressed_bytes: int | None

    @property
    def max_bytes(self) -> int:
        if self.compressed_bytes is None:
            return self.limits.max_unpacked_bytes
        by_ratio = int(self.limits.max_compression_ratio * self.compressed_bytes) \
            + RATIO_ALLOWANCE_BYTES
        return min(self.limits.max_unpacked_bytes, by_ratio)

    def judge(self, *, members: int, unpacked_bytes: int) -> str | None:
        """Pure: why ``members`` members of ``unpacked_bytes`` in total are refused, or
        None when they fit."""
        limits = self.limits
        if members > limits.max_members:
            return f"it has more than {limits.max_members} members (artifacts.max_members)"
        if unpacked_bytes > limits.max_unpacked_bytes:
            return (f"it unpacks to more than {limits.max_unpacked_bytes} bytes "
                    "(artifacts.max_unpacked_bytes)")
        if unpacked_bytes > self.max_bytes:
            return (f"it unpacks to more than {limits.max_compression_ratio:g} times its "
                    f"{self.compressed_bytes} compressed bytes "
                    "(artifacts.max_compression_ratio): a decompression bomb?")
        return None

    def max_stream_bytes(self, members: int) -> int:
        """Bytes of decompressed tar stream that ``members`` members may take, headers,
        padding and the two closing blocks included."""
        return self.max_bytes + TAR_OVERHEAD_PER_MEMBER * (members + 1) + 2 * 512 \
            + tarfile.RECORDSIZE


def refuse(label: str, problem: str) -> PayloadTooLarge:
    return PayloadTooLarge(f"{label} was refused: {problem}",
                           hint=f"make the artifact smaller ({_LIMITS_HINT} in entrega.yaml)")


class _CountingReader:
    """A file-like read() that refuses to decompress past the budget's stream bytes."""

    def __init__(self, raw: IO[bytes], budget: UnpackBudget, label: str) -> None:
        self.raw = raw
        self.budget = budget
        self.label = label
        self.members = 0
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        cap = self.budget.max_stream_bytes(self.members)
        room = cap - self.total
        if size < 0 or size > room + 1:
            size = room + 1  # one byte past the cap tells "over" from "exactly at"
        data = self.raw.read(size)
        self.total += len(data)
        if self.total > cap:
            raise refuse(self.label, self.budget.judge(members=self.members,
                                                       unpacked_bytes=self.total)
                         or f"it unpacks to more than {cap} bytes of tar stream")
        return data


def _decompressed(path: Path) -> IO[bytes]:
    with path.open("rb") as f:
        head = f.read(6)
    if head.startswith(b"\x1f\x8b"):
        return cast(IO[bytes], gzip.GzipFile(filename=path, mode="rb"))
    if head.startswith(b"BZh"):
        return bz2.BZ2File(path, "rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(path, "rb")
    return path.open("rb")


def unpack_tarball(tarball: Path, into: Path, *, limits: ArtifactsConfig,
                   label: str = "the artifact") -> None:
    """Extract ``tarball`` (plain, gzip, bzip2 or xz) into the existing directory ``into``,
    refusing it (413) as soon as a header shows it goes past ``limits`` and (400) on any
    member that is absolute, leaves the tree or is a device. Blocking: run it in a worker
    thread. On an error ``into`` holds a partial tree the caller deletes."""
    try:
        budget = UnpackBudget(limits, tarball.stat().st_size)
        raw = _decompressed(tarball)
        reader = _CountingReader(raw, budget, label)
        with raw, tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
            # Members are copied in blocks of this size; tarfile's 16 KiB means a Python
            # loop turn (and a GIL hand-off the event loop waits on) every 16 KiB.
            tar.copybufsize = COPY_BLOCK_BYTES
            tar.extractall(into, members=_checked(tar, reader, budget, label),
                           filter="data")
    except tarfile.FilterError as exc:
        reason = next((text for kind, text in _FILTER_REASONS.items()
                       if isinstance(exc, kind)), "unsafe")
        raise ArtifactError(f"{label}: refused unsafe member {exc.tarinfo.name!r} ({reason})") \
            from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise ArtifactError(f"{label} is not a readable tarball ({_reason(exc)})") from None
    except OSError as exc:
        raise ArtifactError(f"{label} could not be unpacked ({_reason(exc)})") from None


def _checked(tar: tarfile.TarFile, reader: _CountingReader, budget: UnpackBudget,
             label: str) -> Iterator[tarfile.TarInfo]:
    members = unpacked = 0
    for member in tar:
        members += 1
        unpacked += max(member.size, 0) if member.isreg() else 0
        reader.members = members
        # The "data" filter would quietly strip a leading "/"; an artifact that names
        # absolute paths is a mistake or an attack either way.
        if member.name.startswith("/") or ".." in Path(member.name).parts:
            raise ArtifactError(f"{label}: refused unsafe member {member.name!r} "
                                "(absolute or outside the artifact)")
        problem = budget.judge(members=members, unpacked_bytes=unpacked)
        if problem:
            raise refuse(label, problem)
        yield member


def check_tree(root: Path, *, limits: ArtifactsConfig, label: str) -> None:
    """The same bounds for a directory artifact (an allowed server-side path), from its
    listing, before it is copied. The ratio does not apply: nothing is compressed."""
    budget = UnpackBudget(limits, None)
    members = unpacked = 0
    for _dir, dirs, files in os.walk(root):
        for name in files:
            members += 1
            try:
                info = (Path(_dir) / name).lstat()
            except OSError:
                continue
            unpacked += info.st_size
        members += len(dirs)
        problem = budget.judge(members=members, unpacked_bytes=unpacked)
        if problem:
            raise refuse(label, problem)


def _reason(exc: BaseException) -> str:
    """The cause without a server path: an OSError's strerror, a tar error's text."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc).split(":")[0].strip() or "corrupt data"
    return text[:120]
