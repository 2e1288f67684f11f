"""HAProxy's runtime API (the admin stats socket): one command per connection.

Non-interactive mode: write one line, read the answer until HAProxy closes. Several
commands go in one line separated by ``;`` (their answers are concatenated). Arguments
are escaped with a backslash before spaces, ``;`` and backslashes, as the CLI expects.

The socket is this machine's by default. An HAProxy on a fleet host is reached through
an ``exchange`` (one request's bytes in, everything answered until the close out, None
when nothing listens): the SSH connection's stream-local forwarding, so no admin port is
ever open on the network and every command is the same as on one machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from entrega.errors import RouterError, RouterUnreachable

#: One exchange with a unix socket elsewhere: the request's bytes -> all that was answered
#: until the socket closed, or None when nothing listens there.
Exchange = Callable[[bytes], Awaitable[bytes | None]]

_ESCAPE = str.maketrans({"\\": "\\\\", " ": "\\ ", ";": "\\;"})


def arg(value: str) -> str:
    return value.translate(_ESCAPE)


class RuntimeApi:
    def __init__(self, socket: Path, *, timeout_s: float = 10.0, router: str = "",
                 exchange: Exchange | None = None) -> None:
        self.socket = socket
        self.timeout_s = timeout_s
        self.router = router
        self.exchange = exchange

    async def run(self, line: str) -> str:
        """The answer to ``line``; RouterUnreachable when nothing answers on the socket."""
        if self.exchange is not None:
            answer = await self.exchange(line.encode() + b"\n")
            if answer is None:
                raise RouterUnreachable(f"haproxy router {self.router!r} does not answer on "
                                        f"{self.socket}")
            return answer.decode(errors="replace")
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_unix_connection(str(self.socket))
                try:
                    writer.write(line.encode() + b"\n")
                    await writer.drain()
                    data = await reader.read(-1)
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            raise RouterUnreachable(
                f"haproxy router {self.router!r} does not answer on {self.socket}: "
                f"{exc or 'no answer in time'}") from exc
        return data.decode(errors="replace")

    async def check(self, line: str) -> str:
        """Like ``run`` for commands that answer nothing (or a blank line) on success."""
        answer = await self.run(line)
        if answer.strip():
            raise RouterError(f"haproxy router {self.router!r}: {line.split(';')[0][:80]!r}: "
                              f"{answer.strip()}")
        return answer

    async def info(self) -> dict[str, str]:
        out = {}
        for line in (await self.run("show info")).splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

    async def show_map(self, file: Path) -> list[tuple[str, str]]:
        """(key, value) entries of a map (``show map``), in order."""
        out = []
        for line in (await self.run(f"show map {arg(str(file))}")).splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0].startswith("0x"):
                out.append((parts[1], parts[2]))
        return out

    async def show_acl(self, file: Path) -> list[str]:
        out = []
        for line in (await self.run(f"show acl {arg(str(file))}")).splitlines():
            parts = line.split(" ", 1)
            if len(parts) == 2 and parts[0].startswith("0x"):
                out.append(parts[1])
        return out

    async def table(self, line: str, *, skip: int = 0) -> list[dict[str, str]]:
        """Rows of a ``# name name ...`` headed answer (``show servers state``, ``show stat``)."""
        lines = [x for x in (await self.run(line)).splitlines()[skip:] if x.strip()]
        if not lines or not lines[0].startswith("#"):
            return []
        sep = "," if line.startswith("show stat") else " "
        header = lines[0].lstrip("# ").split(sep)
        return [dict(zip(header, row.split(sep), strict=False)) for row in lines[1:]]

    async def replace(self, kind: str, file: Path, entries: list[str]) -> None:
        """Replace a whole map or ACL atomically: ``prepare``, ``add`` each, ``commit``."""
        answer = (await self.run(f"prepare {kind} {arg(str(file))}")).strip()
        version = answer.rsplit(" ", 1)[-1]
        if not version.isdigit():
            raise RouterError(f"haproxy router {self.router!r}: prepare {kind} {file.name}: "
                              f"{answer}")
        batch: list[str] = []
        for entry in entries:
            batch.append(f"add {kind} @{version} {arg(str(file))} {entry}")
            if len(batch) == 50:
                await self.check(";".join(batch))
                batch = []
        if batch:
            await self.check(";".join(batch))
        await self.check(f"commit {kind} @{version} {arg(str(file))}")
