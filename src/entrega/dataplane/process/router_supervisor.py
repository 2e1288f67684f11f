"""Every embedded router: one supervisor process holding the sockets, worker processes
serving on them.

Why a supervisor even for ``--workers 1``: the data plane heals itself without the
controller. The supervisor binds the listeners (data, preview) and never closes them
while it runs, so when a worker dies (``kill -9``, OOM, a bug) new connections wait in
the kernel's backlog instead of being refused, and a replacement worker takes them on the
same sockets. Only the requests in flight in the dead worker fail. Its own work is kept
small, so that it does not die itself: it holds sockets, starts and restarts workers,
relays the control API to them and sums their counters; it never touches a client's
bytes.

Sockets. listeners.py binds them (a probe without SO_REUSEPORT, so a port held by anyone
fails at once, then one SO_REUSEPORT socket per worker *slot*). A slot is a worker
position: its sockets outlive the processes that fill it.

A spare. Starting a Python process (interpreter, imports, proxy) takes a few hundred
milliseconds, far more than connections should wait in a backlog. So the supervisor keeps
one *spare* worker started: it has inherited every slot's sockets, built its proxy and
answers its link, but accepts nothing. When a worker dies, the spare is given the dead
worker's slot and the route table (``start``, link.py) and accepts within milliseconds;
then a new spare is started in the background. Two deaths at once: the second slot gets a
freshly started worker. The first workers are started the same way (every worker begins
as a spare and is given a slot), and the first spare once they all serve.

Restarts are immediate for the first few and paused after that (restarts.py: a crash loop
must not burn a core), recorded in :class:`RestartLog` and served in ``GET /metrics``
(``"restarts"``), so the controller records them in ``history``. The supervisor logs each
one with the milliseconds from the death to the replacement accepting.

Routes. ``PUT /routes`` is validated and persisted once (admin/control.py), then pushed to
every worker over its private link (link.py) under one lock, and answered 200 when all
running workers applied it. A worker is given a slot under that lock, with the
supervisor's table, and begins accepting only after applying it: no worker ever serves
an older table than the last one answered 200 (nor an empty one when a table was saved),
and connections that queued meanwhile are served with the table, not a 503. A worker that
dies during a push is not waited for: it serves nothing, and its replacement starts with
the new table.

Metrics. Each worker keeps its counters in a region of memory the supervisor shares
(counter_memory.py), given at launch. ``GET /metrics`` and Prometheus scrapes read every
worker's region, ask every worker for its ring of recent latencies and its requests in
flight, and serve the sum (worker_metrics.py), with ``started_at`` the supervisor's. When a
worker dies its region is read a last time and its counters stay in the sum: a restart
never makes a total go back, and no request a dead worker answered is missing from it.

Supervision. A worker that does not answer its link within ``CALL_TIMEOUT_S`` is wedged:
it is killed and replaced like a dead one. SIGTERM, SIGINT or ``POST /shutdown`` stop the
supervisor: it closes its copies of the sockets, sends SIGTERM to every worker and the
spare (each drains for up to ``--drain-s``), waits for them and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from entrega.dataplane.admin.control import control_in_use
from entrega.dataplane.process.counter_memory import CounterMemory
from entrega.dataplane.process.lifecycle import (
    EXIT_USAGE,
    close_control,
    load_last_routes,
    open_control,
    start_metrics,
)
from entrega.dataplane.process.link import (
    MAX_LINE_BYTES,
    Message,
    WorkerLink,
)
from entrega.dataplane.process.listeners import BUSY_PORT_NOTICE, bind_shared, close_all
from entrega.dataplane.process.restarts import CrashGuard, RestartLog, describe_exit
from entrega.dataplane.process.worker_metrics import SummedMetrics, WorkerLedger, overlay
from entrega.dataplane.reports import DataPlaneRestart
from entrega.dataplane.routes import Routes
from entrega.errors import (
    LinkClosed,
    RoutesNotApplied,
    StartupFailed,
    WorkerDidNotStart,
    WorkerRefused,
)

log = logging.getLogger("entrega.router")

#: a worker's event loop answers its link between two callbacks; seconds without an
#: answer mean it is stuck, not busy
CALL_TIMEOUT_S = 5.0
#: a new worker must import, build its proxy and answer within this (as the controller
#: allows a whole router to start)
START_TIMEOUT_S = 15.0
#: beyond --drain-s, how long exiting may take before a worker is killed
EXIT_GRACE_S = 5.0


@dataclass(eq=False)
class WorkerProcess:
    """One worker process, from its launch (a spare: it answers its link, accepts
    nothing) to its exit."""

    proc: asyncio.subprocess.Process
    link: WorkerLink
    #: unique per process started, so a late metrics answer of a dead worker is not
    #: mistaken for its replacement's
    worker_id: int
    #: where it keeps its counters; read after it died, then closed
    counters: CounterMemory
    #: why the supervisor killed it, when it did (its exit is then no surprise)
    killed_because: str | None = None

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    def kill(self, because: str) -> None:
        self.killed_because = because
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


@dataclass
class WorkerSlot:
    """One worker position: its sockets outlive the processes that fill it."""

    index: int
    sockets: list[tuple[socket.socket, bool]]  # (listening socket, is the preview listener)
    #: the process serving the slot (None while it is being replaced)
    worker: WorkerProcess | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.worker is not None and self.worker.running

    def describe(self) -> str:
        return f"worker {self.index} (pid {self.worker.proc.pid if self.worker else '-'})"

    def fds(self, *, preview: bool) -> list[int]:
        return [sock.fileno() for sock, is_preview in self.sockets if is_preview is preview]


class Supervisor:
    """The data plane behind the control API: the workers, the spare, their restarts."""

    def __init__(self, slots: list[WorkerSlot], *, worker_argv: list[str],
                 routes: Routes | None) -> None:
        self.slots = slots
        self.worker_argv = worker_argv
        #: the route table every worker serves; the one in routes.json
        self.table = routes
        self.started_at = time.time()
        self.ledger = WorkerLedger()
        self.restarts = RestartLog()
        self.guard = CrashGuard()
        self.stopping = False
        #: a started worker waiting for a slot (None while one is being started)
        self.spare: WorkerProcess | None = None
        #: every worker process not yet exited, spare and starting ones included
        self.processes: set[WorkerProcess] = set()
        self._routes_lock = asyncio.Lock()
        self._launched = 0
        self._spare_pending = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> int | None:
        """Start every worker, then the spare; None when all serve, else the exit code
        to exit with."""
        results = await asyncio.gather(*(self._fill(slot) for slot in self.slots),
                                       return_exceptions=True)
        failed = [(slot, r) for slot, r in zip(self.slots, results, strict=True)
                  if isinstance(r, BaseException)]
        for slot, exc in failed:
            log.error("worker %d did not start: %s", slot.index, exc)
        if failed:
            await self.stop(drain_s=0)
            return EXIT_USAGE
        self._prepare_spare()
        return None

    async def stop(self, *, drain_s: float) -> None:
        """Every worker drains for up to ``drain_s`` and exits; then the sockets close."""
        self.stopping = True
        # No restarts from here on; a worker being started is signalled below.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Ours first: a listening socket stays open (and queues connections) while any
        # process holds it; the workers' copies close when they stop accepting.
        close_all([[sock for sock, _ in slot.sockets] for slot in self.slots])
        running = [worker for worker in self.processes if worker.running]
        for worker in running:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(w.proc.wait() for w in running)),
                                   drain_s + EXIT_GRACE_S)
        except TimeoutError:
            for worker in running:
                if worker.running:
                    log.warning("worker pid %d still running after the drain; killing it",
                                worker.proc.pid)
                    worker.kill("still running after the drain")
                    await worker.proc.wait()
        for worker in running:
            worker.link.close()

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        """A background task of the supervisor's, cancelled by ``stop``."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _launch(self) -> WorkerProcess:
        """A new worker process holding every slot's sockets, answering its link, accepting
        nothing yet. Raises WorkerDidNotStart."""
        ours, theirs = socket.socketpair()
        fds = [sock.fileno() for slot in self.slots for sock, _ in slot.sockets]
        self._launched += 1
        worker_id = self._launched
        try:
            counters = CounterMemory()
        except OSError:
            ours.close()
            theirs.close()
            raise
        assert counters.fd is not None
        argv = [*self.worker_argv, "--worker-id", str(worker_id),
                "--link-fd", str(theirs.fileno()), "--listen-fds", ",".join(map(str, fds)),
                "--counters-fd", str(counters.fd)]
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "entrega.dataplane.router", *argv,
                stdin=subprocess.DEVNULL, pass_fds=[theirs.fileno(), counters.fd, *fds])
        except OSError as exc:
            ours.close()
            counters.close()
            raise WorkerDidNotStart(f"cannot run {sys.executable}: {exc}") from None
        finally:
            theirs.close()
            counters.handed_over()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=MAX_LINE_BYTES)
        worker = WorkerProcess(proc, WorkerLink(reader, writer), worker_id, counters)
        self.processes.add(worker)
        self._run(self._watch(worker))
        try:
            await worker.link.call("status", timeout_s=START_TIMEOUT_S)
        except (LinkClosed, WorkerRefused) as exc:
            with contextlib.suppress(TimeoutError):  # the link breaks first, then it exits
                await asyncio.wait_for(proc.wait(), 1.0)
            if proc.returncode is not None:
                raise WorkerDidNotStart(f"pid {proc.pid} {describe_exit(proc.returncode)} "
                                        "while starting") from None
            worker.kill("did not answer its supervisor while starting")
            raise WorkerDidNotStart(f"pid {proc.pid} did not answer within "
                                    f"{START_TIMEOUT_S:g} s ({exc})") from None
        except BaseException:
            worker.kill("the supervisor stopped while it started")
            raise
        return worker

    async def _fill(self, slot: WorkerSlot) -> WorkerProcess:
        """Give ``slot`` a worker (the spare if one is ready, else a new process) and the
        route table; return once it accepts. Raises WorkerDidNotStart."""
        worker, self.spare = self.spare, None
        if worker is None or not worker.running:
            worker = await self._launch()
        try:
            async with self._routes_lock:
                routes = self.table.to_dict() if self.table is not None else None
                await worker.link.call(
                    "start", timeout_s=CALL_TIMEOUT_S, slot=slot.index, routes=routes,
                    listen_fds=slot.fds(preview=False), preview_fds=slot.fds(preview=True))
                slot.worker = worker
        except (LinkClosed, WorkerRefused) as exc:
            worker.kill("did not start serving")
            raise WorkerDidNotStart(f"pid {worker.proc.pid} did not start serving: {exc}"
                                    ) from None
        except BaseException:
            worker.kill("the supervisor stopped while it started")
            raise
        return worker

    def _prepare_spare(self, pause_s: float = 0.0) -> None:
        if not self.stopping and self.spare is None and not self._spare_pending:
            self._spare_pending = True
            self._run(self._start_spare(pause_s))

    async def _start_spare(self, pause_s: float) -> None:
        try:
            await asyncio.sleep(pause_s)
            while not self.stopping:
                try:
                    self.spare = await self._launch()
                    return
                except (WorkerDidNotStart, OSError) as exc:  # OSError: out of fds, memory
                    log.error("a spare worker did not start: %s", exc)
                    await asyncio.sleep(self.guard.record_death(now=time.monotonic()))
        finally:
            self._spare_pending = False

    async def _watch(self, worker: WorkerProcess) -> None:
        code = await worker.proc.wait()
        died_at = time.monotonic()
        self.processes.discard(worker)
        worker.link.close()
        # Everything it counted, up to its last request: it can write no more.
        self.ledger.worker_died(worker.worker_id, worker.counters.read(final=True))
        worker.counters.close()
        if self.stopping:
            return
        reason = worker.killed_because or describe_exit(code)
        if worker is self.spare:
            self.spare = None
            log.warning("spare worker (pid %d) %s; starting another", worker.proc.pid, reason)
            self._prepare_spare(self.guard.record_death(now=died_at))
            return
        slot = next((s for s in self.slots if s.worker is worker), None)
        if slot is None:
            return  # it was starting: whoever started it sees the failure
        slot.worker = None
        self.restarts.record(DataPlaneRestart(what=f"router worker {slot.index}",
                                              at=time.time(), reason=reason))
        pause_s = self.guard.record_death(now=died_at)
        log.warning("worker %d (pid %d) %s; restarting it%s", slot.index, worker.proc.pid,
                    reason, f" in {pause_s:.1f} s (crash loop)" if pause_s else "")
        await asyncio.sleep(pause_s)
        while not self.stopping:
            try:
                await self._fill(slot)
                break
            except (WorkerDidNotStart, OSError) as exc:  # the slot must be filled again
                log.error("worker %d did not start: %s", slot.index, exc)
                await asyncio.sleep(self.guard.record_death(now=time.monotonic()))
        else:
            return
        log.info("%s serving, %.0f ms after its predecessor died", slot.describe(),
                 (time.monotonic() - died_at) * 1000)
        self._prepare_spare()

    # -- asking the workers ------------------------------------------------------------------

    async def _ask(self, slot: WorkerSlot, op: str, **fields: object) -> Message | None:
        """The worker's answer; None when it is not serving (starting, dead, or stuck:
        then it is killed and its watcher restarts it). WorkerRefused passes through."""
        worker = slot.worker
        if worker is None or not worker.running:
            return None
        try:
            return await worker.link.call(op, timeout_s=CALL_TIMEOUT_S, **fields)
        except LinkClosed as exc:
            if not exc.timed_out:
                # Most often the worker died and its link's end-of-file came before its
                # exit status: let the watcher tell why.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(worker.proc.wait()), 1.0)
            if worker.running and not self.stopping:
                log.warning("%s does not answer its supervisor (%s); killing it",
                            slot.describe(), exc)
                worker.kill(f"did not answer its supervisor within {CALL_TIMEOUT_S:g} s"
                            if exc.timed_out else "broke its link to the supervisor")
            return None

    async def _ask_all(self, op: str, **fields: object) -> list[Message | None]:
        return list(await asyncio.gather(*(self._ask(s, op, **fields) for s in self.slots)))

    # -- control.DataPlane -------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        pids = [slot.worker.proc.pid for slot in self.slots if slot.worker and slot.ready]
        spare = self.spare.proc.pid if self.spare is not None and self.spare.running else None
        return {"workers": {"count": len(self.slots), "pids": pids, "spare": spare}}

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
        workers = [slot.worker for slot in self.slots]
        answers = await self._ask_all("metrics")
        for slot, worker, answer in zip(self.slots, workers, answers, strict=True):
            if worker is None:
                continue
            # None once it died (its watcher retired what it counted): nothing to add
            shared = worker.counters.read()
            if shared is None:
                continue
            # an answer from another process now filling the slot is not this one's
            answered = answer["releases"] if answer is not None and slot.worker is worker \
                else {}
            self.ledger.observe(worker.worker_id, overlay(shared, answered))
        return {"started_at": self.started_at, "releases": self.ledger.total(),
                "restarts": self.restarts.to_list()}

    async def connections(self) -> int:
        return sum((status or {}).get("connections", 0)
                   for status in await self._ask_all("status"))

    async def counters(self) -> SummedMetrics:
        """For the Prometheus listener: the same sums as ``GET /metrics``."""
        data = await self.metrics()
        releases = data["releases"]
        assert isinstance(releases, dict)
        return SummedMetrics.from_dict(self.started_at, releases)


#: A router killed with -9 leaves its workers behind for a moment: they close their
#: listeners as soon as their link to it ends (milliseconds), then drain. A router started
#: in that moment on the same address tries a busy port again for this long before it
#: gives up; a port held by another program still fails, a little later.
BUSY_PORT_GRACE_S = 3.0


async def _bind_when_free(address: str, workers: int, *,
                          join: bool = False) -> list[list[socket.socket]]:
    deadline = time.monotonic() + BUSY_PORT_GRACE_S
    told = False
    while True:
        try:
            return bind_shared(address, workers, join=join)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            if not told:
                log.info("%s %s for up to %g s", address, BUSY_PORT_NOTICE, BUSY_PORT_GRACE_S)
                told = True
        await asyncio.sleep(0.05)


async def run_supervisor(args: argparse.Namespace, worker_argv: list[str]) -> int:
    """The router process, in this startup order: data listeners, routes, Prometheus
    listener, workers, control socket, pidfile (lifecycle.py)."""
    control_path = args.control
    if control_in_use(control_path):
        log.error("cannot start: another router answers on control socket %s", control_path)
        return EXIT_USAGE
    shared: dict[bool, list[list[socket.socket]]] = {}
    for address, preview in ((args.listen, False), (args.preview_listen, True)):
        if not address:
            continue
        try:
            shared[preview] = await _bind_when_free(address, args.workers,
                                                    join=args.join_listeners)
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
        servers = await start_metrics(args.metrics_listen, supervisor.counters,
                                      busy_grace_s=BUSY_PORT_GRACE_S)
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
    pids = ", ".join(str(slot.worker.proc.pid) for slot in slots if slot.worker)
    log.info("router pid %d listening on %s%s with %d worker(s) (pids %s), control %s",
             os.getpid(), args.listen,
             f", preview {args.preview_listen}" if args.preview_listen else "",
             len(slots), pids, control_path)

    await stop.wait()
    log.info("draining: %d workers", sum(slot.ready for slot in slots))
    for server in servers:
        server.close()
    await supervisor.stop(drain_s=args.drain_s)
    close_control(args, control_server)
    return 0
