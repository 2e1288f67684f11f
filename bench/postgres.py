"""A throwaway PostgreSQL for the tests and the benchmarks: started, used, deleted.

    with running_postgres() as cluster:
        url = cluster.create_database("one_test")   # postgresql+psycopg://...

The store's PostgreSQL form (``store.url: postgresql+psycopg://...``) is tested against a
real server, Debian's PostgreSQL 15 (scripts/install-system-deps.sh installs it), never a
fake: ``initdb`` into a temporary directory, ``postgres`` on 127.0.0.1 on a free port with
its unix socket inside that directory (so it never meets the machine's own cluster or
another engineer's), one database per user of it, and at the end the server stopped and the
directory deleted.

initdb and postgres refuse to run as root. Tests run as root on the CI machines, so there
the server runs as the ``postgres`` system user the Debian package creates, and the
directory is handed to that user; as anyone else it runs as the caller.

The cluster is tuned for throwaway data: no fsync and no synchronous commit (a crash of the
machine loses the cluster anyway, it is deleted at the end). ``durable=True`` keeps
PostgreSQL's defaults, for a benchmark that must measure real commits.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Where Debian puts the server's programs; ENTREGA_PG_BIN overrides it (another version).
PG_BIN = Path(os.environ.get("ENTREGA_PG_BIN", "/usr/lib/postgresql/15/bin"))

#: The cluster's superuser (trust authentication: only loopback and the private socket).
SUPERUSER = "entrega"

#: How long a fresh cluster may take to accept connections (s): initdb + start take ~1-2 s
#: here; a loaded CI machine is slower.
START_TIMEOUT_S = 60.0


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be set up here: the message says what is missing or failed."""


@dataclass
class PostgresCluster:
    """One running throwaway cluster: its address and the databases created in it."""

    host: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    databases: list[str] = field(default_factory=list)

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` in this cluster (the store's form)."""
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name`` (a fresh, empty one) and return its URL."""
        import psycopg

        with psycopg.connect(self._dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE ``name``, closing whatever sessions are still connected to it."""
        import psycopg

        with psycopg.connect(self._dsn(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.databases:
            self.databases.remove(name)

    def _dsn(self) -> str:
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname=postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_user() -> tuple[int, int] | None:
    """The (uid, gid) to run the server as: the postgres user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "PostgreSQL refuses to run as root and there is no `postgres` user to run it "
            "as: run `bash scripts/install-system-deps.sh` (Debian's postgresql package "
            "creates it)") from None
    return entry.pw_uid, entry.pw_gid


def _run_as(user: tuple[int, int] | None) -> dict[str, object]:
    if user is None:
        return {}
    return {"user": user[0], "group": user[1], "extra_groups": []}


def _accepts_connections(host: str, port: int) -> bool:
    result = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", host, "-p", str(port),
                             "-U", SUPERUSER, "-d", "postgres"], check=False)
    return result.returncode == 0


def _start(directory: Path, user: tuple[int, int] | None,
           settings: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``postgres`` on a free port; retry on another when one was taken meanwhile."""
    log = directory / "server.log"
    for _attempt in range(5):
        port = _free_port()
        options = {"listen_addresses": "127.0.0.1", "port": str(port),
                   "unix_socket_directories": str(directory), **settings}
        command = [str(PG_BIN / "postgres"), "-D", str(directory / "data")]
        for name, value in options.items():
            command += ["-c", f"{name}={value}"]
        with open(log, "ab") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       **_run_as(user))  # type: ignore[call-overload]
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _accepts_connections("127.0.0.1", port):
                return process, port
            time.sleep(0.05)
        else:
            process.kill()
            process.wait()
            raise PostgresUnavailable(
                f"PostgreSQL did not accept connections within {START_TIMEOUT_S:.0f}s; "
                f"its log:\n{log.read_text(errors='replace')[-2000:]}")
        if "could not bind" not in log.read_text(errors="replace"):
            break
    raise PostgresUnavailable(
        f"PostgreSQL exited while starting; its log:\n{log.read_text(errors='replace')[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    # SIGINT is PostgreSQL's "fast" shutdown: sessions are cut, nothing is waited for
    # (the data is deleted right after).
    if process.poll() is None:
        process.send_signal(2)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_postgres(*, durable: bool = False,
                     settings: dict[str, str] | None = None) -> Iterator[PostgresCluster]:
    """A fresh PostgreSQL cluster on 127.0.0.1, stopped and deleted when the block ends.

    ``settings`` are extra server settings (``{"max_connections": "300"}``).
    """
    if not (PG_BIN / "initdb").exists():
        raise PostgresUnavailable(
            f"PostgreSQL's initdb is not in {PG_BIN}: run `bash scripts/install-system-deps.sh` "
            "(or set ENTREGA_PG_BIN to the bin directory of another PostgreSQL)")
    user = _server_user()
    directory = Path(tempfile.mkdtemp(prefix="entrega-pg-"))
    try:
        if user is not None:
            os.chown(directory, *user)
        initdb = subprocess.run(
            [str(PG_BIN / "initdb"), "-D", str(directory / "data"), "-U", SUPERUSER,
             "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"],
            capture_output=True, check=False, **_run_as(user))  # type: ignore[call-overload]
        if initdb.returncode != 0:
            raise PostgresUnavailable(
                "initdb failed: " + initdb.stderr.decode(errors="replace").strip()[-2000:])
        tuned = {"max_connections": "300"}
        if not durable:
            tuned |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        process, port = _start(directory, user, tuned | (settings or {}))
        try:
            yield PostgresCluster(host="127.0.0.1", port=port, directory=directory,
                                  process=process)
        finally:
            _stop(process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    # `python -m bench.postgres`: a cluster for trying things by hand, until Ctrl-C.
    with running_postgres() as cluster:
        print(cluster.create_database("entrega"), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            cluster.process.wait()
