"""``--workers N`` (N > 1): one supervisor process, N worker processes sharing the port.

The supervisor binds the data listeners (listeners.py: a probe without SO_REUSEPORT, so
a port held by anyone fails at once, then one SO_REUSEPORT socket per worker), starts the
workers (worker.py) on them, and serves the one public control socket and the Prometheus
listener itself. The controller sees one router: same control API, same pidfile (the
supervisor's pid), ``/health`` adds ``workers``.

Routes. ``PUT /routes`` is validated and persisted once (control.py), then pushed to
every worker over its private link (link.py) under one lock, and answered 200 when all
running workers applied it. A worker that starts or restarts takes that lock and gets the
supervisor's table before it accepts a connection, so no worker serves a table older than
the last one answered 200. A worker that dies during a push is not waited for: it serves
nothing, and its replacement starts with the new table.

Metrics. ``GET /metrics`` and Prometheus scrapes ask every worker and serve the sum
(worker_metrics.py), with ``started_at`` the supervisor's: the counters of a worker that
died stay in the sum, so a restart never makes a total go back.

Supervision. A worker that exits is logged and restarted on the same sockets (kept open
by the supervisor, so connections queued on them wait instead of being reset), after a
second's pause if it lived less than a second. One that does not answer its link within
``CALL_TIMEOUT_S`` is wedged: it is killed and restarted. SIGTERM, SIGINT or ``POST
/shutdown`` stop the supervisor: it closes its copies of the sockets, sends SIGTERM to
every worker (each drains for up to ``--drain-s`` as a single router does), waits for them
and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from entrega.routers.base import Routes
from entrega.routers.embedded.control import RoutesNotApplied, control_in_use
from entrega.routers.embedded.lifecycle import (
    EXIT_USAGE,
    StartupFailed,
    close_control,
    load_last_routes,
    open_control,
    start_metrics,
)
from entrega.routers.embedded.link import (
    MAX_LINE_BYTES,
    LinkClosed,
    Message,
    WorkerLink,
    WorkerRefused,
)
from entrega.routers.embedded.listeners import bind_shared, close_all
from entrega.routers.embedded.worker_metrics import SummedMetrics, WorkerLedger

log = logging.getLogger("entrega.router")

#: a worker's event loop answers its link between two callbacks; seconds without an
#: answer mean it is stuck, not busy
CALL_TIMEOUT_S = 5.0
#: a new worker must import, build its proxy and answer within this (as the controller
#: allows a whole router to start)
START_TIMEOUT_S = 15.0
#: a worker that lived less than this before dying is restarted only after this pause,
#: so a worker that cannot start does not burn a core
RESTART_PAUSE_S = 1.0
#: beyond --drain-s, how long exiting may take before a worker is killed
EXIT_GRACE_S = 5.0


@dataclass
class WorkerSlot:
    """One worker position: its sockets outlive the processes that fill it."""

    index: int
    sockets: list[tuple[socket.socket, bool]]  # (listening socket, is the preview listener)
    proc: asyncio.subprocess.Process | None = None
    link: WorkerLink | None = None
    #: unique per process started, so a late metrics answer of a dead worker is not
    #: mistaken for its replacement's
    worker_id: int = 0
    ready: bool = False
    spawned_at: float = 0.0
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def describe(self) -> str:
        return f"worker {self.index} (pid {self.proc.pid if self.proc else '-'})"


class Supervisor:
    """The data plane behind the control API when it is N worker processes."""

    def __init__(self, slots: list[WorkerSlot], *, worker_argv: list[str],
                 routes: Routes | None) -> None:
        self.slots = slots
        self.worker_argv = worker_argv
        #: the route table every worker serves; the one in routes.json
        self.table = routes
        self.started_at = time.time()
        self.ledger = WorkerLedger()
        self.stopping = False
        self._routes_lock = asyncio.Lock()
        self._spawned = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int | None:
        """Start every worker; None when all serve, else the exit code to exit with."""
        results = await asyncio.gather(*(self._spawn(slot) for slot in self.slots),
                                       return_exceptions=True)
        failed = [(slot, r) for slot, r in zip(self.slots, results, strict=True)
                  if isinstance(r, BaseException)]
        for slot, exc in failed:
            code = await _exit_code(slot)
            log.error("%s did not start (%s%s)", slot.describe(), exc,
                      f"; exited with code {code}" if code is not None else "")
        if failed:
            await self.stop(drain_s=0)
            return EXIT_USAGE
        for slot in self.slots:
            slot.watcher = asyncio.get_running_loop().create_task(self._supervise(slot))
        return None

    async def stop(self, *, drain_s: float) -> None:
        """Every worker drains for up to ``drain_s`` and exits; then the sockets close."""
        self.stopping = True
        # No restarts from here on; a worker a watcher was starting is signalled below.
        watchers = [slot.watcher for slot in self.slots if slot.watcher is not None]
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        # Ours first: a listening socket stays open (and queues connections) while any
        # process holds it; the workers' copies close when they stop accepting.
        close_all([[sock for sock, _ in slot.sockets] for slot in self.slots])
        running = [slot for slot in self.slots if slot.running]
        for slot in running:
            assert slot.proc is not None
            with contextlib.suppress(ProcessLookupError):
                slot.proc.send_signal(signal.SIGTERM)
        waits = [slot.proc.wait() for slot in running if slot.proc is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), drain_s + EXIT_GRACE_S)
        except TimeoutError:
            for slot in self.slots:
                if slot.running:
                    log.warning("%s still running after the drain; killing it",
                                slot.describe())
                    assert slot.proc is not None
                    slot.proc.kill()
                    await slot.proc.wait()
        for slot in self.slots:
            if slot.link is not None:
                slot.link.close()

    async def _spawn(self, slot: WorkerSlot) -> None:
        """Start a process in ``slot``; return once it accepts, with the current table."""
        slot.ready = False
        slot.spawned_at = time.monotonic()
        ours, theirs = socket.socketpair()
        listen = [str(s.fileno()) for s, preview in slot.sockets if not preview]
        preview = [str(s.fileno()) for s, preview in slot.sockets if preview]
        argv = [*self.worker_argv, "--worker-index", str(slot.index),
                "--link-fd", str(theirs.fileno()), "--listen-fds", ",".join(listen)]
        if preview:
            argv += ["--preview-fds", ",".join(preview)]
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "entrega.routers.embedded", *argv,
                stdin=subprocess.DEVNULL,
                pass_fds=[theirs.fileno(), *(s.fileno() for s, _ in slot.sockets)])
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._spawned += 1
        slot.worker_id = self._spawned
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=MAX_LINE_BYTES)
        slot.link = link = WorkerLink(reader, writer)
        # Wait for it to come up outside the lock, so a starting worker never holds up
        # a PUT /routes; then take the table and begin accepting inside it.
        await link.call("status", timeout_s=START_TIMEOUT_S)
        async with self._routes_lock:
            routes = self.table.to_dict() if self.table is not None else None
            await link.call("start", timeout_s=CALL_TIMEOUT_S, routes=routes)
            slot.ready = True

    async def _supervise(self, slot: WorkerSlot) -> None:
        while True:
            assert slot.proc is not None
            code = await slot.proc.wait()
            slot.ready = False
            if slot.link is not None:
                slot.link.close()
            self.ledger.worker_died(slot.worker_id)
            if self.stopping:
                return
            lived_s = time.monotonic() - slot.spawned_at
            log.warning("%s exited with code %s after %.1f s; restarting it",
                        slot.describe(), code, lived_s)
            if lived_s < RESTART_PAUSE_S:
                await asyncio.sleep(RESTART_PAUSE_S)
            if self.stopping:
                return
            try:
                await self._spawn(slot)
            except (OSError, LinkClosed, WorkerRefused) as exc:
                log.error("%s did not start: %s", slot.describe(), exc)
                if slot.running:
                    assert slot.proc is not None
                    slot.proc.kill()
                continue
            log.info("%s serving", slot.describe())

    # -- asking the workers ------------------------------------------------------------------

    async def _ask(self, slot: WorkerSlot, op: str, **fields: object) -> Message | None:
        """The worker's answer; None when it is not serving (starting, dead, or stuck:
        then it is killed and its watcher restarts it). WorkerRefused passes through."""
        link = slot.link
        if not slot.ready or link is None:
            return None
        try:
            return await link.call(op, timeout_s=CALL_TIMEOUT_S, **fields)
        except LinkClosed as exc:
            if slot.running and not self.stopping:
                log.warning("%s does not answer its supervisor (%s); killing it",
                            slot.describe(), exc)
                assert slot.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    slot.proc.kill()
            return None

    async def _ask_all(self, op: str, **fields: object) -> list[Message | None]:
        return list(await asyncio.gather(*(self._ask(s, op, **fields) for s in self.slots)))

    # -- control.DataPlane -------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        pids = [slot.proc.pid for slot in self.slots if slot.running and slot.proc]
        return {"workers": {"count": len(self.slots), "pids": pids}}

    async def routes(self) -> dict[str, object]:
        data = (self.table or Routes()).to_dict()
        draining: dict[str, int] = {}
        for status in await self._ask_all("status"):
            for version, inflight in (status or {}).get("draining", {}).items():
                draining[version] = draining.get(version, 0) + inflight
        data["draining"] = draining
        return data

    async def apply(self, routes: Routes) -> None:
        async with self._routes_lock:
            self.table = routes
            answers = await asyncio.gather(
                *(self._ask(slot, "apply", routes=routes.to_dict()) for slot in self.slots),
                return_exceptions=True)
        refused = [f"{slot.describe()}: {answer}"
                   for slot, answer in zip(self.slots, answers, strict=True)
                   if isinstance(answer, BaseException)]
        if refused:
            raise RoutesNotApplied("; ".join(refused))

    async def metrics(self) -> dict[str, object]:
        ids = [slot.worker_id for slot in self.slots]
        for worker_id, answer in zip(ids, await self._ask_all("metrics"), strict=True):
            if answer is not None:
                self.ledger.observe(worker_id, answer["releases"])
        return {"started_at": self.started_at, "releases": self.ledger.total()}

    async def connections(self) -> int:
        return sum((status or {}).get("connections", 0)
                   for status in await self._ask_all("status"))

    async def counters(self) -> SummedMetrics:
        """For the Prometheus listener: the same sums as ``GET /metrics``."""
        data = await self.metrics()
        releases = data["releases"]
        assert isinstance(releases, dict)
        return SummedMetrics.from_dict(self.started_at, releases)


async def _exit_code(slot: WorkerSlot) -> int | None:
    if slot.proc is None:
        return None
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(slot.proc.wait(), 1.0)
    return None


async def run_supervisor(args: argparse.Namespace, worker_argv: list[str]) -> int:
    """The multi-worker counterpart of ``__main__.run``, in the same startup order: data
    listeners, routes, workers, control socket, pidfile."""
    control_path = args.control
    if control_in_use(control_path):
        log.error("cannot start: another router answers on control socket %s", control_path)
        return EXIT_USAGE
    shared: dict[bool, list[list[socket.socket]]] = {}
    for address, preview in ((args.listen, False), (args.preview_listen, True)):
        if not address:
            continue
        try:
            shared[preview] = bind_shared(address, args.workers)
        except (ValueError, OSError) as exc:
            log.error("cannot listen on %s: %s", address, getattr(exc, "strerror", None) or exc)
            for groups in shared.values():
                close_all(groups)
            return EXIT_USAGE
    slots = [WorkerSlot(i, [(s, False) for s in shared[False][i]]
                        + [(s, True) for s in (shared[True][i] if True in shared else [])])
             for i in range(args.workers)]

    state_path = Path(args.state)
    supervisor = Supervisor(slots, worker_argv=worker_argv,
                            routes=load_last_routes(state_path))
    try:
        servers = await start_metrics(args.metrics_listen, supervisor.counters)
    except StartupFailed as exc:
        log.error("%s", exc)
        close_all([[sock for sock, _ in slot.sockets] for slot in slots])
        return EXIT_USAGE

    code = await supervisor.start()
    if code is not None:
        for server in servers:
            server.close()
        return code

    stop = asyncio.Event()
    control_server = await open_control(args, supervisor, state_path=state_path, stop=stop)
    pids = ", ".join(str(slot.proc.pid) for slot in slots if slot.proc)
    log.info("router pid %d listening on %s%s with %d workers (pids %s), control %s",
             os.getpid(), args.listen,
             f", preview {args.preview_listen}" if args.preview_listen else "",
             len(slots), pids, control_path)

    await stop.wait()
    log.info("draining: %d workers", sum(slot.running for slot in slots))
    for server in servers:
        server.close()
    await supervisor.stop(drain_s=args.drain_s)
    close_control(args, control_server)
    return 0
