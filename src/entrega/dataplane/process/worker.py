"""One worker of the router: an ordinary :class:`Proxy` on sockets the supervisor holds.

The supervisor (router_supervisor.py) starts it with ``--worker-id I --link-fd L --listen-fds
A,B,... --counters-fd C``: every listening socket of every worker slot, already bound and
listening (shared through SO_REUSEPORT), the link, its only control channel (link.py), and
the memory it keeps its counters in, which the supervisor reads too (counter_memory.py), so
they outlive this process. The worker has no control socket, pidfile or state file of its
own.

It starts as a *spare*: the interpreter, the imports and the proxy are ready, and it
answers its link, but it accepts nothing. The supervisor's ``start`` message names its
slot's sockets (it closes its copies of the others) and gives it the route table; it
applies the table, then begins accepting. ``start`` is sent under the same lock that
serializes ``PUT /routes``, so a worker never serves an older table than the one the last
``PUT`` answered 200 for (the table the supervisor holds is the one in routes.json; it is
persisted first), and no connection is answered before the table is there.

It drains (stop accepting, let requests in flight finish for up to ``--drain-s``, exit 0)
on the supervisor's ``drain``, on SIGTERM, and when the link reaches end-of-file because
the supervisor died. SIGINT is ignored: Ctrl-C in a terminal reaches the whole process
group, and the supervisor orders the drain itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket

from entrega.dataplane import proof
from entrega.dataplane.http.proxy import Proxy, ProxySettings
from entrega.dataplane.process.counter_memory import attach
from entrega.dataplane.process.lifecycle import EXIT_USAGE
from entrega.dataplane.process.link import MAX_LINE_BYTES, Message, serve_link
from entrega.dataplane.process.listeners import BACKLOG
from entrega.dataplane.routes import Routes

log = logging.getLogger("entrega.router")


class Worker:
    def __init__(self, proxy: Proxy, inherited_fds: list[int], stop: asyncio.Event) -> None:
        self.proxy = proxy
        #: every listening socket of every slot, until ``start`` picks this worker's
        self.inherited_fds = inherited_fds
        self.stop = stop
        self.servers: list[asyncio.AbstractServer] = []

    async def handle(self, request: Message) -> Message:
        proxy = self.proxy
        op = request.get("op")
        if op == "start":
            if not self.servers:
                await self._start(request)
            return {"ok": True, "pid": os.getpid()}
        if op == "apply":
            proxy.apply(Routes.from_dict(request["routes"]))  # ValueError -> error answer
            return {"ok": True}
        if op == "status":
            return {"ok": True, "draining": proxy.draining(), "connections": len(proxy.clients)}
        if op == "metrics":
            return {"ok": True, **proxy.metrics.to_dict()}
        if op == "drain":
            self.stop.set()
            return {"ok": True}
        return {"error": f"unknown op {op!r}"}

    async def _start(self, request: Message) -> None:
        """Apply the table, keep this slot's sockets, then accept on them."""
        listen = [int(fd) for fd in request["listen_fds"]]
        preview = [int(fd) for fd in request["preview_fds"]]
        if request.get("routes") is not None:
            self.proxy.apply(Routes.from_dict(request["routes"]))
        mine = set(listen) | set(preview)
        for fd in self.inherited_fds:
            if fd not in mine:
                os.close(fd)  # another slot's: the supervisor holds it
        self.inherited_fds = []
        log.info("serving as worker %s", request.get("slot"))
        loop = asyncio.get_running_loop()
        for fds, is_preview in ((listen, False), (preview, True)):
            for fd in fds:
                self.servers.append(await loop.create_server(
                    self.proxy.protocol_factory(preview=is_preview),
                    sock=socket.socket(fileno=fd), backlog=BACKLOG))

    def close_spare_sockets(self) -> None:
        for fd in self.inherited_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.inherited_fds = []


async def run_worker(args: argparse.Namespace, settings: ProxySettings) -> int:
    loop = asyncio.get_running_loop()
    try:
        region = attach(args.counters_fd) if args.counters_fd is not None else None
        proxy = Proxy(settings, app=args.app, control_plane_url=args.control_plane_url,
                      control_plane_key=proof.read_key(args.control_plane_key_file),
                      counters=region)
    except OSError as exc:
        log.error("cannot start: the counters' shared memory: %s", exc.strerror or exc)
        return EXIT_USAGE
    except ValueError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_USAGE
    inherited = [int(fd) for fd in args.listen_fds.split(",") if fd]
    stop = asyncio.Event()
    worker = Worker(proxy, inherited, stop)
    reader, writer = await asyncio.open_unix_connection(
        sock=socket.socket(fileno=args.link_fd), limit=MAX_LINE_BYTES)
    link = loop.create_task(serve_link(reader, writer, worker.handle))
    link.add_done_callback(lambda _: stop.set())  # supervisor gone: drain, do not linger
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sweeper = loop.create_task(proxy.sweep_forever())
    # Objects made so far live for the whole process; keep the collector off them, and
    # collect young objects less often (an exchange frees itself by refcount anyway).
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)

    await stop.wait()
    for server in worker.servers:
        server.close()  # closes our copy of the listening sockets
    worker.close_spare_sockets()
    if proxy.clients:
        log.info("draining: %d client connections open", len(proxy.clients))
    left = await proxy.drain(args.drain_s)
    if left:
        log.warning("drain deadline: closed %d connections still busy", left)
    sweeper.cancel()
    link.cancel()
    writer.close()
    return 0
