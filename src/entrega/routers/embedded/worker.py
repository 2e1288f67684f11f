"""One worker of a multi-worker router: an ordinary :class:`Proxy` on inherited sockets.

The supervisor (supervisor.py) starts it with ``--worker-index I --link-fd L
--listen-fds A[,B] [--preview-fds C]``: the listening sockets are already bound (shared
with the other workers through SO_REUSEPORT) and the link is its only control channel
(link.py). The worker has no control socket, pidfile or state file of its own.

It begins accepting only after the supervisor's ``start`` message has given it the route
table, under the same lock that serializes ``PUT /routes``: so a worker that starts or
restarts never serves an older table than the one the last ``PUT`` answered 200 for
(the table the supervisor holds is the one in routes.json; it is persisted first).

It drains (stop accepting, let requests in flight finish for up to ``--drain-s``, exit 0)
on the supervisor's ``drain``, on SIGTERM, and when the link reaches end-of-file because
the supervisor died. SIGINT is ignored: Ctrl-C in a terminal reaches the whole process
group, and the supervisor orders the drain itself.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import socket

from entrega.routers.base import Routes
from entrega.routers.embedded import proof
from entrega.routers.embedded.lifecycle import EXIT_USAGE
from entrega.routers.embedded.link import MAX_LINE_BYTES, Message, serve_link
from entrega.routers.embedded.proxy import Proxy, ProxySettings

log = logging.getLogger("entrega.router")


class Worker:
    def __init__(self, proxy: Proxy, listening: list[tuple[socket.socket, bool]],
                 stop: asyncio.Event) -> None:
        self.proxy = proxy
        self.listening = listening
        self.stop = stop
        self.servers: list[asyncio.AbstractServer] = []

    async def handle(self, request: Message) -> Message:
        proxy = self.proxy
        op = request.get("op")
        if op == "start":
            if request.get("routes") is not None:
                proxy.apply(Routes.from_dict(request["routes"]))
            if not self.servers:
                await self._accept()
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

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        for sock, preview in self.listening:
            self.servers.append(await loop.create_server(
                self.proxy.protocol_factory(preview=preview), sock=sock, backlog=4096))


async def run_worker(args: argparse.Namespace, settings: ProxySettings) -> int:
    loop = asyncio.get_running_loop()
    try:
        proxy = Proxy(settings, app=args.app, control_plane_url=args.control_plane_url,
                      control_plane_key=proof.read_key(args.control_plane_key_file))
    except ValueError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_USAGE
    listening = [(socket.socket(fileno=int(fd)), False) for fd in args.listen_fds.split(",")]
    if args.preview_fds:
        listening += [(socket.socket(fileno=int(fd)), True)
                      for fd in args.preview_fds.split(",")]
    stop = asyncio.Event()
    worker = Worker(proxy, listening, stop)
    reader, writer = await asyncio.open_unix_connection(
        sock=socket.socket(fileno=args.link_fd), limit=MAX_LINE_BYTES)
    link = loop.create_task(serve_link(reader, writer, worker.handle))
    link.add_done_callback(lambda _: stop.set())  # supervisor gone: drain, do not linger
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sweeper = loop.create_task(proxy.sweep_forever())
    gc.freeze()  # as the single-process router: see __main__.py
    gc.set_threshold(20_000, 50, 50)

    await stop.wait()
    for server in worker.servers:
        server.close()  # closes our copy of the listening sockets
    if not worker.servers:
        for sock, _ in listening:
            sock.close()
    if proxy.clients:
        log.info("draining: %d client connections open", len(proxy.clients))
    left = await proxy.drain(args.drain_s)
    if left:
        log.warning("drain deadline: closed %d connections still busy", left)
    sweeper.cancel()
    link.cancel()
    writer.close()
    return 0
