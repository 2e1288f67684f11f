"""The fleet's connections: one multiplexed SSH connection per host, reused, reconnected.

Every remote step of the ssh target goes through :class:`Fleet`. It keeps at most one
asyncssh connection per host and opens sessions (commands) on it, so a rollout that runs a
hundred commands on a host pays for one key exchange; a connection found closed, or one
whose command timed out (the host may be gone), is dropped and the next call reconnects.

Trust is never blind: the host key must be in the configured ``known_hosts`` file, under
the host's address and port. A host missing from it or presenting another key is refused
with :class:`~entrega.errors.HostKeyRefused`, which says which of the two it is and names
the file; an operator re-scans the host on purpose, entrega never does.

Nothing waits without a bound. Connecting (TCP, key exchange, login) has
``connect_timeout_s``; every command has ``command_timeout_s`` (a streamed upload: per
chunk, so a large artifact on a slow link is not cut while a silent host still is). A host
that stops answering becomes a :class:`~entrega.errors.TargetUnreachable` naming it.
Work across hosts runs in parallel, at most ``max_parallel`` hosts at a time
(:meth:`Fleet.each`). asyncssh's exceptions are translated here, in :meth:`Fleet.reaching`, and
nowhere else: callers and users only ever see entrega's errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import asyncssh

from entrega.errors import EntregaError, HostKeyRefused, TargetError, TargetUnreachable

T = TypeVar("T")

# asyncssh logs every session and command at INFO: with the instances observed every 2 s,
# that would be most of a server's log. Its warnings and errors still show.
logging.getLogger("asyncssh").setLevel(logging.WARNING)

#: Bytes read from a local file and written to a remote command's stdin at a time.
STREAM_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class Host:
    """One machine of the fleet, as entrega reaches it."""

    #: How the host is called in messages and results (the address unless given).
    name: str
    address: str
    port: int = 22
    user: str = "root"
    #: Where entrega keeps its files on the host (``<base_dir>/<app>/releases/...``).
    base_dir: str = "/srv/entrega"

    def __str__(self) -> str:
        if self.name == self.address:
            return f"host {self.address}:{self.port}"
        return f"host {self.name} ({self.address}:{self.port})"


@dataclass(frozen=True)
class FleetSettings:
    """How every host of a fleet is reached."""

    #: OpenSSH known_hosts file; the only source of trust in host keys.
    known_hosts: Path
    #: The client's private key; None: ~/.ssh's default keys (never the ssh agent's).
    identity_file: Path | None = None
    connect_timeout_s: float = 10.0
    command_timeout_s: float = 60.0
    max_parallel: int = 10
    #: How the known_hosts file is named in errors (as the config wrote it).
    known_hosts_label: str | None = None


@dataclass(frozen=True)
class CommandResult:
    """What one remote command did: its exit status and its output, as bytes."""

    host: str
    exit_status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def stderr_text(self, limit: int = 500) -> str:
        return self.stderr.decode(errors="replace").strip()[-limit:]


@dataclass(frozen=True)
class HostOutcome(Generic[T]):
    """The result of one host's share of :meth:`Fleet.each`: a value or the error."""

    host: Host
    value: T | None = None
    error: EntregaError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class Fleet:
    """The hosts of one environment and their pooled connections.

    Use it as an async context manager (or call :meth:`close`): connections are closed
    on the way out. Safe to share between tasks: connecting to a host is serialised per
    host, and an SSH connection carries many sessions at once.
    """

    def __init__(self, hosts: Sequence[Host], settings: FleetSettings) -> None:
        names = [h.name for h in hosts]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise TargetError(f"host names must be unique in a fleet, repeated: {repeated}")
        self.hosts = tuple(hosts)
        self.settings = settings
        self._connections: dict[str, asyncssh.SSHClientConnection] = {}
        self._connecting: dict[str, asyncio.Lock] = {h.name: asyncio.Lock() for h in hosts}
        self._parallel = asyncio.Semaphore(settings.max_parallel)

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise TargetError(f"no host named {name!r} in this fleet",
                          hint=f"hosts are {', '.join(h.name for h in self.hosts)}")

    # -- connections ---------------------------------------------------------------------

    async def connect(self, host: Host) -> asyncssh.SSHClientConnection:
        """The host's connection, opened (host key verified, logged in) if there is none
        or the one there was has closed. Idempotent."""
        return (await self._connect(host))[0]

    async def _connect(self, host: Host) -> tuple[asyncssh.SSHClientConnection, bool]:
        """The host's connection and whether it was opened just now."""
        async with self._connecting[host.name]:
            conn = self._connections.get(host.name)
            if conn is not None and not conn.is_closed():
                return conn, False
            self._connections.pop(host.name, None)
            self._check_local_files(host)
            with self.reaching(host, "connecting"):
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    conn = await asyncssh.connect(
                        host.address, port=host.port, username=host.user,
                        known_hosts=str(self.settings.known_hosts),
                        client_keys=[str(self.settings.identity_file)]
                        if self.settings.identity_file else (),
                        # ~/.ssh/config and an agent would make a host reachable here and
                        # not on the controller's machine; what entrega.yaml says is all
                        config=None, agent_path=None,
                        connect_timeout=self.settings.connect_timeout_s,
                        login_timeout=self.settings.connect_timeout_s,
                        # notice a host that vanished while the connection sat idle
                        keepalive_interval=max(self.settings.connect_timeout_s, 5.0),
                        keepalive_count_max=3)
            self._connections[host.name] = conn
            return conn, True

    async def _start(self, host: Host, command: str, timeout_s: float, doing: str) \
            -> asyncssh.SSHClientProcess[bytes]:
        """``command`` started in a new session on the host's connection. A pooled
        connection found dead only now (the host restarted while it sat idle) is replaced
        once: the command had not started, so starting it again is safe."""
        while True:
            conn, fresh = await self._connect(host)
            try:
                async with asyncio.timeout(timeout_s):
                    return await conn.create_process(command, encoding=None)
            except (asyncssh.Error, OSError):
                if fresh:
                    with self.reaching(host, doing, timeout_s=timeout_s):
                        raise
                self.drop(host, conn)
            except TimeoutError:
                with self.reaching(host, doing, timeout_s=timeout_s):
                    raise

    def drop(self, host: Host, conn: asyncssh.SSHClientConnection | None = None) -> None:
        """Forget the host's connection (broken or timed out; ``conn``: only if it is
        still that one, not a newer one another task opened): the next call reconnects.
        Aborted, not closed: a host that stopped answering would never finish a close."""
        current = self._connections.get(host.name)
        dead = conn if conn is not None else current
        if dead is None:
            return
        if current is dead:
            del self._connections[host.name]
        dead.abort()

    async def close(self) -> None:
        """Close every connection; the fleet can still be used (it reconnects)."""
        conns = list(self._connections.values())
        self._connections.clear()
        for conn in conns:
            conn.close()

        async def closed(conn: asyncssh.SSHClientConnection) -> None:
            with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
                async with asyncio.timeout(self.settings.connect_timeout_s):
                    await conn.wait_closed()

        await asyncio.gather(*(closed(c) for c in conns))

    # -- commands ------------------------------------------------------------------------

    async def run(self, host: Host, command: str, *, stdin: bytes | None = None,
                  timeout_s: float | None = None) -> CommandResult:
        """Run ``command`` (a shell line) on ``host`` and wait for it, at most
        ``timeout_s`` (default ``command_timeout_s``). A non-zero exit status is a result,
        not an error; an unreachable or silent host raises TargetUnreachable."""
        timeout_s = self.settings.command_timeout_s if timeout_s is None else timeout_s
        doing = "running a command"
        process = await self._start(host, command, timeout_s, doing)
        with self.reaching(host, doing, timeout_s=timeout_s):
            async with asyncio.timeout(timeout_s):
                if stdin:
                    process.stdin.write(stdin)
                process.stdin.write_eof()
                done = await process.wait(check=False)
        return _result(host, done)

    async def start_process(self, host: Host, command: str, *, timeout_s: float | None = None,
                            doing: str = "starting a command") \
            -> asyncssh.SSHClientProcess[bytes]:
        """``command`` started on ``host`` and left running, for a caller that talks to it
        on its stdin and stdout for long (the resident host agent). It ends with its
        channel: when the caller closes it, or the connection is dropped or closed."""
        timeout_s = self.settings.command_timeout_s if timeout_s is None else timeout_s
        return await self._start(host, command, timeout_s, doing)

    async def run_streaming(self, host: Host, command: str, source: Path, *,
                            send_if: Callable[[bytes], bool] | None = None) -> \
            tuple[CommandResult, int]:
        """Run ``command`` with the bytes of the local file ``source`` on its stdin,
        streamed in chunks (never all in memory); returns the result and the bytes sent.
        ``send_if``: the command first says whether it wants them, in one line of its
        stdout (part of the result's stdout too) that ``send_if`` reads. Each chunk, that
        line, and the wait for the exit, has ``command_timeout_s``."""
        timeout_s = self.settings.command_timeout_s
        doing = "sending an artifact"
        process = await self._start(host, command, timeout_s, doing)
        sent = 0
        first = b""
        with self.reaching(host, doing, timeout_s=timeout_s):
            if send_if is not None:
                async with asyncio.timeout(timeout_s):
                    first = await process.stdout.readline()
                if not send_if(first):
                    process.stdin.write_eof()
                    async with asyncio.timeout(timeout_s):
                        done = await process.wait(check=False)
                    return _result(host, done, first), sent
            try:
                async for chunk in _chunks(source):
                    async with asyncio.timeout(timeout_s):
                        process.stdin.write(chunk)
                        await process.stdin.drain()
                    sent += len(chunk)
                process.stdin.write_eof()
            except (BrokenPipeError, ConnectionResetError, asyncssh.Error):
                # The command stopped reading (it refused the bytes): its exit status
                # and stderr below say why.
                pass
            async with asyncio.timeout(timeout_s):
                done = await process.wait(check=False)
        return _result(host, done, first), sent

    async def unix_exchange(self, host: Host, path: str, request: bytes, *,
                            timeout_s: float | None = None) -> bytes | None:
        """Send ``request`` to the unix socket ``path`` on ``host`` through the host's
        pooled connection (direct stream-local forwarding: nothing listens on the network
        for it) and return all it answers until it closes the stream, within ``timeout_s``
        (default ``command_timeout_s``). None: nothing listens at ``path``. An unreachable
        host raises TargetUnreachable; a host whose sshd forbids such forwarding,
        TargetError saying which setting allows it."""
        timeout_s = self.settings.command_timeout_s if timeout_s is None else timeout_s
        doing = "reaching a unix socket"
        conn, fresh = await self._connect(host)
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(timeout_s):
                    reader, writer = await conn.open_unix_connection(path)
                break
            except asyncssh.ChannelOpenError as exc:
                if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                    raise TargetError(
                        f"{host} refuses to forward a unix socket over SSH ({exc.reason})",
                        hint="allow it in the host's sshd_config: AllowStreamLocalForwarding "
                             "yes (and no DisableForwarding)") from None
                return None
            except (asyncssh.Error, OSError, TimeoutError):
                if fresh or attempt == 2:
                    with self.reaching(host, doing, timeout_s=timeout_s):
                        raise
                # a pooled connection found dead only now: nothing was sent, so once more
                self.drop(host, conn)
                conn, fresh = await self._connect(host)
        with self.reaching(host, doing, timeout_s=timeout_s):
            try:
                async with asyncio.timeout(timeout_s):
                    writer.write(request)
                    writer.write_eof()
                    return await reader.read()
            finally:
                writer.close()

    async def each(self, work: Callable[[Host], Awaitable[T]],
                   hosts: Sequence[Host] | None = None) -> list[HostOutcome[T]]:
        """``work(host)`` for every host (default: all), in parallel, at most
        ``max_parallel`` at a time; one outcome per host, in the hosts' order. An
        entrega error on one host is that host's outcome and never stops the others."""

        async def one(host: Host) -> HostOutcome[T]:
            async with self._parallel:
                try:
                    return HostOutcome(host, value=await work(host))
                except EntregaError as exc:
                    return HostOutcome(host, error=exc)

        return list(await asyncio.gather(*(one(h) for h in (hosts or self.hosts))))

    # -- errors --------------------------------------------------------------------------

    @contextlib.contextmanager
    def reaching(self, host: Host, doing: str, *, timeout_s: float | None = None) \
            -> Iterator[None]:
        """Translate what asyncssh and the socket layer raise into entrega's errors, each
        naming the host; a connection that failed mid-command is dropped."""
        try:
            yield
        except asyncssh.HostKeyNotVerifiable:
            raise self._host_key_refused(host) from None
        except asyncssh.PermissionDenied:
            raise TargetError(
                f"{host} refused the login of user {host.user!r}",
                hint="is the public key of identity_file in the user's authorized_keys?") \
                from None
        except TimeoutError:
            self.drop(host)
            limit = timeout_s if timeout_s is not None else self.settings.connect_timeout_s
            setting = "command_timeout_s" if timeout_s is not None else "connect_timeout_s"
            raise TargetUnreachable(f"{host} did not answer within {limit:g} s while {doing}",
                                    hint=f"is the host up? if it is only slow, raise {setting}") \
                from None
        except asyncssh.KeyImportError:
            raise TargetError(f"the identity_file for {host} is not a private key "
                              "entrega can read (without a passphrase)") from None
        except asyncssh.Error as exc:
            self.drop(host)
            raise TargetUnreachable(f"{host}: the connection failed while {doing} "
                                    f"({exc.reason or 'disconnected'})") from None
        except OSError as exc:
            self.drop(host)
            why = (exc.strerror or "network error").lower()
            raise TargetUnreachable(f"cannot reach {host} while {doing}: {why}",
                                    hint="is its sshd running and the address right?") \
                from None

    def _check_local_files(self, host: Host) -> None:
        """The controller's own files, checked before the network: a missing known_hosts
        must not read as an unreachable host."""
        label = self.settings.known_hosts_label or str(self.settings.known_hosts)
        if not os.access(self.settings.known_hosts, os.R_OK):
            raise HostKeyRefused(f"cannot verify {host}: the known_hosts file {label} "
                                 "does not exist or cannot be read",
                                 hint="write it with the hosts' keys (ssh-keyscan, checked "
                                      "out of band)")
        identity = self.settings.identity_file
        if identity is not None and not os.access(identity, os.R_OK):
            raise TargetError(f"cannot log in to {host}: the identity_file does not exist "
                              "or cannot be read")

    def _host_key_refused(self, host: Host) -> HostKeyRefused:
        label = self.settings.known_hosts_label or str(self.settings.known_hosts)
        try:
            known = asyncssh.read_known_hosts(str(self.settings.known_hosts))
            listed = bool(known.match(host.address, host.address, host.port)[0])
        except (OSError, ValueError, asyncssh.Error):
            return HostKeyRefused(f"{host}: its key cannot be verified: the known_hosts file "
                                  f"{label} cannot be read")
        entry = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
        if listed:
            return HostKeyRefused(
                f"{host} presented a host key that differs from the one in {label}: "
                "the host was reinstalled, or someone is in between",
                hint=f"if the change is expected, check the new key out of band and put it "
                     f"in the {entry} line of {label}")
        return HostKeyRefused(
            f"{host} is not listed in the known_hosts file {label}",
            hint=f"add its key as an {entry} line, checked out of band: ssh-keyscan "
                 f"-p {host.port} {host.address}")


def _result(host: Host, done: asyncssh.SSHCompletedProcess, read: bytes = b"") \
        -> CommandResult:
    """``read``: what was read of its stdout before it ended (comes first)."""
    def as_bytes(out: object) -> bytes:
        if isinstance(out, bytes):
            return out
        return str(out or "").encode()

    # No exit status: the session was cut (by a signal); count it as a failure.
    status = done.exit_status if done.exit_status is not None else 255
    return CommandResult(host=host.name, exit_status=status,
                         stdout=read + as_bytes(done.stdout), stderr=as_bytes(done.stderr))


async def _chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, STREAM_CHUNK_BYTES):
            yield chunk
