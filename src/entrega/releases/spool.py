"""Writing a stream of bytes to a file without blocking the event loop.

Request bodies and downloads arrive as many small chunks on the event loop. Writing and
hashing each one there is cheap, but 256 MiB of them adds up to seconds the API and the
reconcile loop would not answer; so chunks are gathered into blocks of ``BLOCK_BYTES``
and each block is written (and fed to the HMAC, if any) in a worker thread. hashlib and
file writes release the GIL, so the loop keeps running meanwhile.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread

#: Big enough that a thread hop per block costs nothing next to the write; small enough
#: that the buffer held per upload stays modest.
BLOCK_BYTES = 1 << 20


class Spool:
    """An append-only file at ``path``, counted and optionally HMAC'd as it is written.

    Use ``async with``: leaving it flushes and closes the file (also on an error, after
    which the caller deletes the file). Worker threads finish their block before a
    cancelled request goes on, so nothing writes after the caller cleaned up."""

    def __init__(self, path: Path, *, mac: hmac.HMAC | None = None) -> None:
        self.path = path
        self.mac = mac
        self.size = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._file: BinaryIO | None = None

    async def __aenter__(self) -> Spool:
        self._file = await anyio.to_thread.run_sync(self.path.open, "wb")
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                await self._flush()
        finally:
            if self._file is not None:
                self._file.close()

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= BLOCK_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        block = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        await anyio.to_thread.run_sync(self._write_block, block)

    def _write_block(self, block: bytes) -> None:
        assert self._file is not None
        if self.mac is not None:
            self.mac.update(block)
        self._file.write(block)
