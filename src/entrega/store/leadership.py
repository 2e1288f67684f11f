"""Leader election among servers sharing one PostgreSQL store, with fencing.

Any number of ``entrega server`` processes may point at one PostgreSQL database. One
leads: it reconciles, acts on the data plane and writes; the others serve reads and wait.
Nothing here is home-made consensus; PostgreSQL decides:

- **The lock.** The leader holds ``pg_try_advisory_lock`` on a session of its own. The
  database frees it when that session ends: at once when the process dies (its socket
  closes), and after ``lease_s`` when the process stops talking (a SIGSTOP, a long pause,
  a network cut): the lock session runs with ``idle_session_timeout = lease_s``, and the
  leader renews it with a round trip every ``lease_s / 6``. The leader's other sessions
  run with ``idle_in_transaction_session_timeout = lease_s``, so a leader paused inside a
  transaction cannot hold the new leader back either.
- **The epoch.** Right after taking the lock, the new leader increments the one row of
  ``leadership`` (migration 0006) and keeps the number. Every transaction of the leader
  that writes first reads that row ``FOR SHARE`` (:meth:`Election.fence`) and gives up
  unless the epoch is still its own. A new leader's increment waits for those share locks,
  and a fenced transaction that waited reads the new epoch: a write either commits before
  the new leader leads, or not at all.
- **The lease, on the leader's side.** A leader holds the lead only while its last
  successful renewal is younger than ``lease_s / 2`` by its own monotonic clock
  (:meth:`Election.holds`). A leader that wakes from a pause sees it before it acts on
  anything (routers, instances), and before the database has even ended its session: it
  steps down (``server.py``).

What this does not protect against is written in the README ("Running two servers"): a
pause between the last check of the lease and a call to a router or a host (a window of
microseconds); clocks do not matter (durations only, each on one machine).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from entrega.errors import NotLeader, StoreError
from entrega.store.database import CONNECT_TIMEOUT_S, driver_message

log = logging.getLogger("entrega.leadership")

#: The advisory lock's key: "entr" in ASCII. Another application using advisory locks in
#: the same database would have to pick another.
LOCK_KEY = 0x656E7472

#: Default lease (s): a dead leader's lock is freed at once, a paused one's after this.
LEASE_S = 3.0


@dataclass(frozen=True)
class Leader:
    """Who leads, as the ``leadership`` row says (epoch 0: nobody has led yet)."""

    epoch: int
    holder: str | None
    address: str | None
    since: float | None

    def to_dict(self) -> dict[str, object] | None:
        """As ``GET /api/v1/leader`` shows it (None: nobody has led yet)."""
        if not self.epoch:
            return None
        return {"holder": self.holder, "address": self.address, "epoch": self.epoch,
                "since": self.since}


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def short_timeouts(engine: Engine, lease_s: float) -> None:
    """The leader's pooled sessions: a transaction left idle longer than the lease (its
    process paused inside it) is ended by the database, and its share lock on the
    leadership row with it."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET idle_in_transaction_session_timeout = {_milliseconds(lease_s)}")
        cursor.close()
        dbapi_connection.commit()


class Election:
    """This server's part in the election: campaign, renew, fence, resign.

    Every method but :meth:`holds` blocks on the database: the server calls them in a
    worker thread. ``identity`` names this server in the row and in logs; ``address`` is
    where its API answers (standbys send clients there).
    """

    def __init__(self, url: str, *, identity: str, address: str,
                 lease_s: float = LEASE_S) -> None:
        self.url = url
        self.identity = identity
        self.address = address
        self.lease_s = lease_s
        #: how often the leader renews its lease
        self.renew_interval_s = lease_s / 6
        try:
            # A database that does not answer must fail a campaign, not hang it forever.
            self._engine = create_engine(url, poolclass=NullPool,
                                         connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
        except (SQLAlchemyError, ImportError) as exc:
            raise StoreError(f"cannot open the store for the election: {exc}") from exc
        self._lock_session: Connection | None = None
        #: the epoch this server leads in; None while it does not lead
        self.epoch: int | None = None
        self._renewed_at = -math.inf
        self._renewing: threading.Thread | None = None
        self._stop_renewing = threading.Event()

    # -- the leader's side -------------------------------------------------------------------

    def campaign(self) -> bool:
        """Try once to become leader; True when this server now leads."""
        if self.epoch is not None:
            return True
        try:
            session = self._session()
            got = session.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                  {"key": LOCK_KEY}).scalar()
            if not got:
                return False
            # Only now: a standby's session waits idle between campaigns.
            session.execute(text(
                f"SET idle_session_timeout = {_milliseconds(self.lease_s)}"))
            epoch = session.execute(
                text("UPDATE leadership SET epoch = epoch + 1, holder = :holder, "
                     "address = :address, since = :since WHERE id = 1 RETURNING epoch"),
                {"holder": self.identity, "address": self.address, "since": time.time()},
            ).scalar_one()
        except SQLAlchemyError as exc:
            self._drop_session()
            log.warning("campaign for the lead failed: %s", driver_message(exc))
            return False
        self.epoch = int(epoch)
        self._renewed_at = time.monotonic()
        log.info("%s leads (epoch %d)", self.identity, self.epoch)
        return True

    def renew(self) -> bool:
        """One round trip on the lock's session; False (and the lead given up) when the
        session is gone or another server's epoch is in the row."""
        if self.epoch is None or self._lock_session is None:
            return False
        started = time.monotonic()
        try:
            epoch = self._lock_session.execute(
                text("SELECT epoch FROM leadership WHERE id = 1")).scalar_one()
        except SQLAlchemyError as exc:
            self._lose(f"its session with the database ended ({driver_message(exc)})")
            return False
        if epoch != self.epoch:
            self._lose(f"epoch {epoch} was taken by another server")
            return False
        # The time the round trip started: a renewal that took long counts from before.
        self._renewed_at = started
        return True

    def start_renewing(self) -> None:
        """Renew from a thread of its own: an event loop busy for a second (a slow
        adoption, a large response) is not a pause and must not cost the lead, while a
        paused process stops this thread too."""
        self._stop_renewing.clear()
        self._renewing = threading.Thread(target=self._renew_loop, name="entrega-lease",
                                          daemon=True)
        self._renewing.start()

    def _renew_loop(self) -> None:
        while not self._stop_renewing.wait(self.renew_interval_s):
            if not self.renew():
                return

    def holds(self) -> bool:
        """True while this server leads and its lease is fresh (no database call)."""
        return self.epoch is not None \
            and time.monotonic() - self._renewed_at < self.lease_s / 2

    def fence(self, session: Session) -> int:
        """Before the first write of a transaction: the epoch, read ``FOR SHARE``, must
        still be this server's. Returns it (events are stamped with it)."""
        if not self.holds():
            raise NotLeader("this server does not lead any more (its lease ran out); "
                            "the write was not made")
        epoch = session.execute(
            text("SELECT epoch FROM leadership WHERE id = 1 FOR SHARE")).scalar_one()
        if epoch != self.epoch:
            raise NotLeader(f"another server leads now (epoch {epoch}, this server had "
                            f"{self.epoch}); the write was not made")
        return int(epoch)

    def resign(self) -> None:
        """Give the lead up at once (a clean shutdown): the next server takes over without
        waiting for the lease."""
        self._stop_renewing.set()
        if self._renewing is not None and self._renewing is not threading.current_thread():
            self._renewing.join(timeout=self.lease_s)
            self._renewing = None
        if self._lock_session is not None and self.epoch is not None:
            try:
                self._lock_session.execute(text("SELECT pg_advisory_unlock(:key)"),
                                           {"key": LOCK_KEY})
            except SQLAlchemyError:
                pass  # the session is ending anyway, and the lock with it
        self.epoch = None
        self._drop_session()

    def close(self) -> None:
        self.resign()
        self._engine.dispose()

    # -- everyone's side ---------------------------------------------------------------------

    def leader(self) -> Leader:
        """Who the row says leads (a standby's answer to a write)."""
        try:
            with self._engine.connect() as connection:
                row = connection.execute(text(
                    "SELECT epoch, holder, address, since FROM leadership WHERE id = 1")).one()
        except SQLAlchemyError as exc:
            raise StoreError("cannot read who leads from the store: "
                             f"{driver_message(exc)}") from exc
        return Leader(int(row.epoch), row.holder, row.address, row.since)

    # -- the lock's session ------------------------------------------------------------------

    def _session(self) -> Connection:
        if self._lock_session is None:
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            connection.execute(text(f"SET statement_timeout = {_milliseconds(self.lease_s)}"))
            self._lock_session = connection
        return self._lock_session

    def _drop_session(self) -> None:
        if self._lock_session is not None:
            try:
                self._lock_session.close()
            except SQLAlchemyError:
                pass
            self._lock_session = None

    def _lose(self, why: str) -> None:
        log.error("%s lost the lead of epoch %s: %s", self.identity, self.epoch, why)
        self.epoch = None
        self._drop_session()

