"""The start and the end of the router process that owns the control socket, the
supervisor (``supervisor.run_supervisor``): the steps that do not depend on how traffic
is served, kept apart from the supervision itself.

Start: data listeners (each caller its own way), the last routes (``load_last_routes``),
the Prometheus listener (``start_metrics``), then the control socket, the signal handlers
and the pidfile (``open_control``): once the pidfile exists, ``/health`` answers. Stop:
``close_control`` after the drain removes the socket and the pidfile last, each only if it
is still this router's: a successor started beside a retiring router (a changed
configuration, controller/reload.py) has taken both paths by then.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from entrega.dataplane.admin.control import ControlServer, DataPlane
from entrega.dataplane.admin.exposition import MetricsServer, RouterCounters
from entrega.dataplane.admin.state import load_routes
from entrega.dataplane.process.listeners import BUSY_PORT_NOTICE
from entrega.dataplane.routes import Routes
from entrega.errors import StartupFailed
from entrega.net import parse_address
from entrega.runner.pidfile import remove_pidfile, write_pidfile

log = logging.getLogger("entrega.router")

#: exit code of a router that cannot start (busy port, bad address, bad option)
EXIT_USAGE = 2
#: control socket path -> inode of the socket this process bound there
_bound_sockets: dict[str, int] = {}


def load_last_routes(state_path: Path) -> Routes | None:
    """The table persisted by the last ``PUT /routes``, if any is there and valid; an
    unreadable or invalid one is logged and ignored (the router starts with no routes,
    and the controller sends them again)."""
    try:
        routes = load_routes(state_path)
    except ValueError as exc:
        log.error("ignoring unreadable routes in %s: %s; starting with no routes",
                  state_path, exc)
        return None
    if routes is None:
        return None
    try:
        routes.validate()
    except ValueError as exc:
        log.error("ignoring invalid routes in %s: %s", state_path, exc)
        return None
    return routes


async def start_metrics(address: str | None,
                        counters: Callable[[], Awaitable[RouterCounters]], *,
                        busy_grace_s: float = 0.0) -> list[asyncio.AbstractServer]:
    """The Prometheus listener on ``address`` (none when it is unset); a busy address is
    tried again for ``busy_grace_s``, as the data listeners are."""
    if not address:
        return []
    deadline = time.monotonic() + busy_grace_s
    told = False
    while True:
        try:
            host, port = parse_address(address)
            return [await MetricsServer(counters).start(host, port)]
        except (ValueError, OSError) as exc:
            busy = isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE
            if not busy or time.monotonic() > deadline:
                raise StartupFailed(f"cannot listen on {address} (metrics): "
                                    f"{getattr(exc, 'strerror', None) or exc}") from None
            if not told:
                log.info("%s %s for up to %g s", address, BUSY_PORT_NOTICE, busy_grace_s)
                told = True
        await asyncio.sleep(0.05)


async def open_control(args: argparse.Namespace, plane: DataPlane, *, state_path: Path,
                       stop: asyncio.Event) -> ControlServer:
    """Serve the control API, stop on SIGTERM/SIGINT, then write the pidfile."""
    info: dict[str, object] = {"listen": args.listen, "preview_listen": args.preview_listen,
                               "app": args.app, "metrics_listen": args.metrics_listen,
                               "control_plane_url": args.control_plane_url}
    control = ControlServer(plane, state_path=state_path, info=info, on_shutdown=stop.set)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.control)  # stale: the caller checked that nothing answers on it
    await control.start(args.control)
    # Remembered so that the stop removes this socket only: a successor started beside
    # this router (the controller renamed our socket out of its way) owns the path then.
    _bound_sockets[args.control] = os.stat(args.control).st_ino
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if args.pidfile:
        write_pidfile(Path(args.pidfile))
    return control


def close_control(args: argparse.Namespace, control: ControlServer) -> None:
    """Stop the control API (its open connections too) and remove its socket, and the
    pidfile if it is still ours."""
    control.close()
    with contextlib.suppress(FileNotFoundError):
        if os.stat(args.control).st_ino == _bound_sockets.pop(args.control, None):
            os.unlink(args.control)
    if args.pidfile:
        remove_pidfile(Path(args.pidfile))
    log.info("stopped")
