"""A server's role among servers sharing one PostgreSQL store: leader or standby.

Every server serves the API from the start. A standby answers reads and refuses writes
with the leader's address (``api/leader.py``), and campaigns for the lead every
``CAMPAIGN_INTERVAL_S``. The server that wins fences the store's writes with its epoch,
starts every app's controller (each adopts the running data plane: routers, instances and
host agents never stopped serving) and the group coordinator, then renews its lease.

A leader that cannot renew in time (its session ended, another epoch in the row, a
renewal that hangs, a pause that outlived the lease) steps down the way Kubernetes
controllers do: it stops acting at once, stops its controllers, and ends the process
(:class:`SteppedDown`), for its supervisor (systemd, a container runtime) to start it
again as a standby. Its in-memory view of rollouts is of an epoch that is over; starting
clean is what makes "nothing done twice" easy to hold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from entrega.errors import EntregaError, NotLeader, SteppedDown
from entrega.store.database import Store
from entrega.store.leadership import Election, Leader, short_timeouts

if TYPE_CHECKING:
    from entrega.plane import ControlPlane

log = logging.getLogger("entrega.leader")

#: How often a standby tries to take the lead (s): a dead leader's lock is free at once,
#: so this bounds the takeover after a kill -9 (plus the controllers' start).
CAMPAIGN_INTERVAL_S = 0.5


class LeaderRole:
    """Leads the plane while the election says so (see the module docstring)."""

    def __init__(self, plane: ControlPlane, store: Store, election: Election) -> None:
        self.plane = plane
        self.store = store
        self.election = election
        # A leader paused inside a fenced transaction holds the leadership row FOR SHARE,
        # and the next leader's epoch increment waits for it: the database must end such
        # a transaction after the lease. The pool's connections so far (the migrations')
        # were opened without the setting: they are closed, the next ones get it.
        short_timeouts(store.engine, election.lease_s)
        store.engine.dispose()
        #: when this server took the lead (time.time()), None while it is a standby
        self.leading_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self.stepped_down: SteppedDown | None = None

    @property
    def leads(self) -> bool:
        return self.leading_since is not None and self.election.holds()

    def as_leader(self) -> Leader:
        """This server as the ``leadership`` row says of it while it leads (no query)."""
        election = self.election
        return Leader(election.epoch or 0, election.identity, election.address,
                      self.leading_since)

    async def leader(self) -> Leader:
        return await asyncio.to_thread(self.election.leader)

    def not_leader(self, leader: Leader | None) -> NotLeader:
        """What a standby answers a write with."""
        if leader is not None and leader.epoch and leader.address:
            return NotLeader(f"this server is a standby; the leader ({leader.holder}, epoch "
                             f"{leader.epoch}) is at {leader.address}",
                             leader=leader.address, hint="send writes there (the CLI follows)")
        return NotLeader("no server leads at this moment (a takeover is in progress)",
                         hint="try again in a few seconds")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="entrega-leadership")

    async def wait_ended(self) -> None:
        """Returns when this server stepped down (the server then exits)."""
        await self._ended.wait()

    async def stop(self) -> None:
        """A clean shutdown: stop the controllers, then give the lead up at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.leading_since is not None:
            self.leading_since = None
            await self.plane.stop()
        await asyncio.to_thread(self.election.close)

    async def _run(self) -> None:
        while not await self._campaign():
            await asyncio.sleep(CAMPAIGN_INTERVAL_S)
        self.election.start_renewing()
        started = time.monotonic()
        self.leading_since = time.time()
        self.store.fence = self.election.fence
        self.plane.may_act(lambda: self.leads)
        lost = asyncio.create_task(self._until_lost())
        try:
            await self.plane.start()
            log.info("leading: every app's controller started in %.2f s (epoch %s)",
                     time.monotonic() - started, self.election.epoch)
            why = await lost
        except EntregaError as exc:  # adopting the data plane failed: another may do better
            why = f"starting the controllers failed: {exc}"
        finally:
            lost.cancel()
        self.leading_since = None
        log.error("stepping down: %s", why)
        self.stepped_down = SteppedDown(f"this server lost the lead: {why}",
                                        hint="it exits; started again, it is a standby")
        try:
            await self.plane.stop()
        finally:
            self._ended.set()

    async def _campaign(self) -> bool:
        # Whatever goes wrong in one campaign, a standby must campaign again: a task that
        # ended on an exception would leave this server a standby for good, silently.
        try:
            return await asyncio.to_thread(self.election.campaign)
        except Exception:  # noqa: BLE001 - logged with its stack, retried
            log.exception("campaign for the lead failed; trying again")
            return False

    async def _until_lost(self) -> str:
        """Returns why, once the lease is no longer held (the renewals run in a thread of
        the election's; this only looks)."""
        while True:
            await asyncio.sleep(self.election.renew_interval_s)
            if self.election.holds():
                continue
            if self.election.epoch is None:
                return "the database ended this server's session, or another server leads"
            return (f"the lease ran out: no renewal for over {self.election.lease_s / 2:g} s "
                    "(a pause, or the database does not answer)")
