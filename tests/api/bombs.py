"""Hostile artifacts made in an instant: decompression bombs as real gzip files."""

from __future__ import annotations

import gzip
import io
import tarfile


def gzip_bomb(unpacked_bytes: int) -> bytes:
    """A .tar.gz of one file of zeros: about 1 KB per MiB it unpacks to (1 GiB from about
    1 MB). Built from gzip members, one per MiB of zeros, which gzip readers concatenate,
    so it costs nothing to make."""
    info = tarfile.TarInfo("zeros.bin")
    info.size = unpacked_bytes
    info.mode = 0o644
    zeros = gzip.compress(bytes(1 << 20), compresslevel=9, mtime=0)
    parts = [gzip.compress(info.tobuf(format=tarfile.PAX_FORMAT), mtime=0)]
    parts += [zeros] * (unpacked_bytes >> 20)
    parts.append(gzip.compress(bytes(unpacked_bytes % (1 << 20)) + bytes(2 * 512 +
                               (-unpacked_bytes % 512)), mtime=0))
    return b"".join(parts)


def many_members(count: int) -> bytes:
    """A .tar.gz of ``count`` empty files."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for i in range(count):
            info = tarfile.TarInfo(f"f{i}")
            tar.addfile(info, io.BytesIO(b""))
    return out.getvalue()


def pax_bomb(record_bytes: int) -> bytes:
    """A .tar.gz whose first pax header carries ``record_bytes`` of data: tarfile reads a
    pax header whole into memory, before any member."""
    value = "x" * record_bytes
    info = tarfile.TarInfo("f")
    info.pax_headers = {"comment": value}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b""))
    return out.getvalue()
