"""Opening the store: engine, migrations, the single-controller lock, sessions.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit survives a crash of the
process (kill -9) and readers never block the writer. Durability across a power cut
would need ``synchronous=FULL``; entrega's state is repaired by reconciliation anyway.

PostgreSQL (``postgresql+psycopg://``) is the store several servers share: the same
models and the same Alembic migrations, nothing SQLite-only in the queries. Its URL
carries a password, so a message about the store names it with the password masked, and
the driver's errors are translated here into what failed and where (never the driver's
class names): a wrong URL, a missing driver, a database that does not answer.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from entrega.config import STORE_URL_FORMS
from entrega.errors import ControllerLocked, StoreError
from entrega.store.models import Event

_MIGRATIONS = str(Path(__file__).parent / "migrations")

#: The drivers behind the URL forms of the configuration (config.STORE_URL_FORMS).
_DRIVERS = {"sqlite": "sqlite", "sqlite+pysqlite": "sqlite",
            "postgresql+psycopg": "postgresql"}

#: The advisory lock servers starting at once on one PostgreSQL take around migrating
#: ("mig" in ASCII): one migrates, the others find the schema up to date.
MIGRATION_LOCK_KEY = 0x6D6967

#: How long opening a PostgreSQL connection may take (s): libpq waits forever by default,
#: and a server whose database host is unreachable must say so, not hang at start.
CONNECT_TIMEOUT_S = 10


def masked_url(url: str) -> str:
    """``url`` as it may appear in a message or a log: the password replaced by ``***``.
    Pure; works on strings that are not valid URLs too (what a user mistyped)."""
    return re.sub(r"(://[^/:@]*:)[^/]*@", r"\1***@", url)


def _parse(url: str) -> URL:
    hint = "store.url must be " + " or ".join(STORE_URL_FORMS)
    try:
        parsed = make_url(url)
    except ArgumentError:
        # Not shown: what is not a URL cannot be masked reliably (a password in it).
        raise StoreError("the store URL is not a database URL", hint=hint) from None
    if parsed.drivername not in _DRIVERS:
        raise StoreError(f"the store URL {masked_url(url)!r} names {parsed.drivername!r}, "
                         "which entrega does not run on", hint=hint)
    return parsed


def driver_message(exc: SQLAlchemyError) -> str:
    """The database's own words for what failed (first line), without the driver's class
    names or SQLAlchemy's background link."""
    said = str(getattr(exc, "orig", None) or exc).strip()
    text = said.splitlines()[0] if said else "no reason"
    return text.removeprefix("connection failed: ")


#: A pooled PostgreSQL connection idle for longer than this is pinged before use.
PING_IDLE_S = 1.0


def _checked_in(_dbapi_connection: Any, record: Any) -> None:
    record.info["checked_in"] = time.monotonic()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _refuse_writes(*args: Any) -> None:
    """A read session (``Store.read``) that writes: a bug, never a fenced write."""
    state = args[0]
    if isinstance(state, Session) or state.is_insert or state.is_update or state.is_delete:
        raise RuntimeError("a write in a read session (Store.read): use Store.session")


def shared_store(url: str) -> bool:
    """True for a store several servers may share (PostgreSQL): they elect a leader."""
    return _DRIVERS[_parse(url).drivername] == "postgresql"


class Store:
    """A handle on the database. ``with store.session() as s:`` commits on success."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: The URL as messages and logs show it (no password).
        self.where = masked_url(url)
        parsed = _parse(url)
        options: dict[str, Any] = {}
        if _DRIVERS[parsed.drivername] == "sqlite":
            if parsed.database:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        else:
            options = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
        try:
            self.engine: Engine = create_engine(parsed, **options)
        except ImportError:
            raise StoreError(f"the store {self.where} is PostgreSQL, and its driver "
                             "(psycopg 3) is not installed",
                             hint="pip install 'entrega[postgres]'") from None
        except SQLAlchemyError:
            raise StoreError(f"cannot open the store {self.where}",
                             hint="store.url must be " + " or ".join(STORE_URL_FORMS)) from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            event.listen(self.engine, "checkin", _checked_in)
            event.listen(self.engine, "checkout", self._ping_if_idle)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # A read of one statement needs no transaction of its own: on PostgreSQL it runs
        # in autocommit, without the BEGIN and COMMIT round trips (a third of a read's
        # time; a thousand rollouts read every few seconds: bench/scale.py). SQLite's
        # driver begins no transaction for a SELECT anyway.
        self._reads = self._sessions
        if self.engine.dialect.name != "sqlite":
            self._reads = sessionmaker(
                self.engine.execution_options(isolation_level="AUTOCOMMIT"),
                expire_on_commit=False)
            event.listen(self._reads, "do_orm_execute", _refuse_writes)
            event.listen(self._reads, "before_flush", _refuse_writes)
        #: Set on a server that leads others (store/leadership.py): called before the
        #: first write of every transaction, it raises NotLeader unless this server still
        #: leads, and returns the leader's epoch (each event is stamped with it).
        self.fence: Callable[[Session], int] | None = None
        event.listen(self._sessions, "before_flush", self._before_flush)
        event.listen(self._sessions, "do_orm_execute", self._before_statement)
        event.listen(self._sessions, "after_transaction_end", self._forget_fence)

    def _ping_if_idle(self, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        """A pooled connection idle for over ``PING_IDLE_S`` is pinged before use: a
        database restarted under a running server costs a reconnect, not a failed pass
        per pooled connection. One in use a moment ago is not (SQLAlchemy's pre_ping
        pinged every checkout: a round trip more per transaction, a third of the time
        of a thousand rollouts checked every second, ``bench/scale.py``); should the
        database go away right after it, the error invalidates the whole pool at once."""
        checked_in = record.info.pop("checked_in", None)
        if checked_in is None or time.monotonic() - checked_in < PING_IDLE_S:
            return
        try:
            ok = self.engine.dialect.do_ping(dbapi_connection)
        except Exception:  # noqa: BLE001 - any failure of the ping means a dead connection
            ok = False
        if not ok:
            raise DisconnectionError("the pooled connection no longer answers")

    @property
    def shared(self) -> bool:
        """True on a database several servers may share (PostgreSQL)."""
        return self.engine.dialect.name == "postgresql"

    def _fenced(self, session: Session) -> int | None:
        if self.fence is None:
            return None
        if "epoch" not in session.info:
            session.info["epoch"] = self.fence(session)
        return int(session.info["epoch"])

    def _before_flush(self, session: Session, _context: Any, _instances: Any) -> None:
        epoch = self._fenced(session)
        if epoch is not None:
            for row in session.new:
                if isinstance(row, Event):
                    row.epoch = epoch

    def _before_statement(self, state: Any) -> None:
        # Bulk UPDATE / DELETE / INSERT statements write without a flush.
        if state.is_insert or state.is_update or state.is_delete:
            self._fenced(state.session)

    @staticmethod
    def _forget_fence(session: Session, transaction: Any) -> None:
        if transaction.parent is None:
            session.info.pop("epoch", None)

    def migrate(self) -> None:
        """Bring the schema to the latest revision (idempotent)."""
        config = AlembicConfig()
        config.set_main_option("script_location", _MIGRATIONS)
        with self.connect() as connection:
            try:
                with connection.begin():
                    if self.shared:  # servers starting together: one migrates at a time
                        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                           {"key": MIGRATION_LOCK_KEY})
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
            except DBAPIError as exc:
                raise StoreError(f"cannot migrate the store {self.where}: "
                                 f"{driver_message(exc)}") from None

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection of the pool; a database that does not answer (down, wrong host or
        port, refused credentials, no such database) is a StoreError saying so."""
        try:
            connection = self.engine.connect()
        except DBAPIError as exc:
            raise StoreError(f"cannot reach the store {self.where}: {driver_message(exc)}",
                             hint="check store.url, and that the database is up and "
                             "accepts this server's connections") from None
        with connection:
            yield connection

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for one SELECT (several would each see their own snapshot on
        PostgreSQL); it must not write, and nothing fences it."""
        with self._reads() as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()


class ControllerLock:
    """An exclusive lock file: one controller owns a store at a time.

    flock is released by the kernel when the process dies, so kill -9 never leaves a
    stale lock behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, shared: bool = False) -> None:
        """``shared``: servers of one PostgreSQL store (the election decides which one
        leads) hold it together; `entrega down` still cannot take it from them."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ControllerLocked(
                f"another entrega server (pid {holder}) owns {self.path.parent}",
                hint="stop it first, or point this one at another state_dir",
            ) from None
        if not shared:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
