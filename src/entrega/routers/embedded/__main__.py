"""``python -m entrega.routers.embedded``: run one router process.

Startup order makes ``/health`` a readiness signal: the data listeners are bound first
(a busy port exits at once with code 2 and a message naming the address), then the last
routes are loaded, then the control socket answers, then the pidfile is written.
SIGTERM, SIGINT and ``POST /shutdown`` drain: stop accepting, close idle connections,
let requests in flight finish for up to ``--drain-s``, exit 0.
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
import sys
from pathlib import Path

from entrega.net import parse_address
from entrega.routers.embedded.control import ControlServer
from entrega.routers.embedded.exposition import MetricsServer
from entrega.routers.embedded.proxy import Proxy, ProxySettings
from entrega.routers.embedded.state import load_routes

log = logging.getLogger("entrega.router")

EXIT_USAGE = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m entrega.routers.embedded",
                                description="entrega's embedded HTTP router (data plane).")
    p.add_argument("--listen", required=True, help="HOST:PORT for traffic")
    p.add_argument("--preview-listen", help="HOST:PORT sending everything to routes.preview")
    p.add_argument("--control", required=True, help="unix socket path of the control API")
    p.add_argument("--state", required=True, help="JSON file holding the last routes")
    p.add_argument("--pidfile")
    p.add_argument("--app", default="", help="app name (cohort user hashing)")
    p.add_argument("--metrics-listen",
                   help="HOST:PORT serving GET /metrics in the Prometheus text format")
    p.add_argument("--control-plane-url",
                   help="http://HOST:PORT of entrega's server: requests under /.entrega/ "
                        "(user feedback) are forwarded there")
    d = ProxySettings()
    p.add_argument("--upstream-timeout-s", type=float, default=d.upstream_timeout_s)
    p.add_argument("--connect-timeout-s", type=float, default=d.connect_timeout_s)
    p.add_argument("--header-timeout-s", type=float, default=d.header_timeout_s)
    p.add_argument("--idle-timeout-s", type=float, default=d.client_idle_timeout_s)
    p.add_argument("--upstream-idle-timeout-s", type=float, default=d.upstream_idle_timeout_s)
    p.add_argument("--max-header-bytes", type=int, default=d.max_header_bytes)
    p.add_argument("--drain-s", type=float, default=10.0,
                   help="how long requests in flight may take to finish on shutdown")
    return p.parse_args(argv)


def _control_in_use(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
        return True


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    settings = ProxySettings(
        upstream_timeout_s=args.upstream_timeout_s, connect_timeout_s=args.connect_timeout_s,
        header_timeout_s=args.header_timeout_s, client_idle_timeout_s=args.idle_timeout_s,
        upstream_idle_timeout_s=args.upstream_idle_timeout_s,
        max_header_bytes=args.max_header_bytes)
    try:
        proxy = Proxy(settings, app=args.app, control_plane_url=args.control_plane_url)
    except ValueError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_USAGE
    control_path = args.control
    if _control_in_use(control_path):
        log.error("cannot start: another router answers on control socket %s", control_path)
        return EXIT_USAGE

    servers: list[asyncio.AbstractServer] = []
    for address, preview in ((args.listen, False), (args.preview_listen, True)):
        if not address:
            continue
        try:
            host, port = parse_address(address)
            servers.append(await loop.create_server(
                proxy.protocol_factory(preview=preview), host, port, backlog=4096,
                reuse_address=True))
        except ValueError as exc:
            log.error("cannot listen on %s: %s", address, exc)
            return EXIT_USAGE
        except OSError as exc:
            log.error("cannot listen on %s: %s", address, exc.strerror or exc)
            return EXIT_USAGE
    if args.metrics_listen:
        try:
            host, port = parse_address(args.metrics_listen)
            servers.append(await MetricsServer(proxy.metrics).start(host, port))
        except (ValueError, OSError) as exc:
            log.error("cannot listen on %s (metrics): %s", args.metrics_listen,
                      getattr(exc, "strerror", None) or exc)
            return EXIT_USAGE

    state_path = Path(args.state)
    try:
        routes = load_routes(state_path)
    except ValueError as exc:
        log.error("ignoring unreadable routes in %s: %s; starting with no routes",
                  state_path, exc)
        routes = None
    if routes is not None:
        try:
            proxy.apply(routes)
        except ValueError as exc:
            log.error("ignoring invalid routes in %s: %s", state_path, exc)

    stop = asyncio.Event()
    info: dict[str, object] = {"listen": args.listen, "preview_listen": args.preview_listen,
                               "app": args.app, "metrics_listen": args.metrics_listen,
                               "control_plane_url": args.control_plane_url}
    control = ControlServer(proxy, state_path=state_path, info=info, on_shutdown=stop.set)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(control_path)  # stale: nothing answered on it
    control_server = await control.start(control_path)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if args.pidfile:
        Path(args.pidfile).write_text(f"{os.getpid()}\n")
    sweeper = loop.create_task(proxy.sweep_forever())
    # Objects made so far live for the whole process; keep the collector off them, and
    # collect young objects less often (an exchange frees itself by refcount anyway).
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)
    log.info("router pid %d listening on %s%s, control %s", os.getpid(), args.listen,
             f", preview {args.preview_listen}" if args.preview_listen else "", control_path)

    await stop.wait()
    log.info("draining: %d client connections open", len(proxy.clients))
    for server in servers:
        server.close()
    left = await proxy.drain(args.drain_s)
    if left:
        log.warning("drain deadline: closed %d connections still busy", left)
    sweeper.cancel()
    control_server.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(control_path)
    if args.pidfile:
        with contextlib.suppress(OSError):
            if Path(args.pidfile).read_text().strip() == str(os.getpid()):
                os.unlink(args.pidfile)
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s entrega-router %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(run(args))
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
