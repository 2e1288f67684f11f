"""``python -m entrega.routers.embedded``: run one router process.

Startup order makes ``/health`` a readiness signal: the data listeners are bound first
(a busy port exits at once with code 2 and a message naming the address), then the last
routes are loaded, then the control socket answers, then the pidfile is written.
SIGTERM, SIGINT and ``POST /shutdown`` drain: stop accepting, close idle connections,
let requests in flight finish for up to ``--drain-s``, exit 0.

``--workers N`` with N > 1 runs a supervisor instead (supervisor.py), which starts N
workers sharing the port with SO_REUSEPORT; it re-runs this module with the worker's
private options (``--worker-index`` and inherited file descriptors, worker.py). With the
default of 1, nothing of that is involved: the process below is the whole router.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from entrega.net import parse_address
from entrega.routers.embedded import build, proof
from entrega.routers.embedded.control import ProxyPlane, control_in_use
from entrega.routers.embedded.exposition import RouterCounters
from entrega.routers.embedded.lifecycle import (
    EXIT_USAGE,
    StartupFailed,
    close_control,
    load_last_routes,
    open_control,
    start_metrics,
)
from entrega.routers.embedded.proxy import Proxy, ProxySettings
from entrega.routers.embedded.supervisor import run_supervisor
from entrega.routers.embedded.worker import run_worker

log = logging.getLogger("entrega.router")


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
    p.add_argument("--control-plane-key-file",
                   help="file holding the key that proves to entrega's server that a "
                        "request came through this router (its X-Forwarded-For is believed)")
    d = ProxySettings()
    p.add_argument("--upstream-timeout-s", type=float, default=d.upstream_timeout_s)
    p.add_argument("--connect-timeout-s", type=float, default=d.connect_timeout_s)
    p.add_argument("--header-timeout-s", type=float, default=d.header_timeout_s)
    p.add_argument("--idle-timeout-s", type=float, default=d.client_idle_timeout_s)
    p.add_argument("--upstream-idle-timeout-s", type=float, default=d.upstream_idle_timeout_s)
    p.add_argument("--max-header-bytes", type=int, default=d.max_header_bytes)
    p.add_argument("--drain-s", type=float, default=10.0,
                   help="how long requests in flight may take to finish on shutdown")
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="processes sharing the listeners (SO_REUSEPORT) under one "
                        "supervisor; 1: a single process")
    # Given by the supervisor to its workers only.
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    p.add_argument("--link-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--listen-fds", help=argparse.SUPPRESS)
    p.add_argument("--preview-fds", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def settings_from(args: argparse.Namespace) -> ProxySettings:
    return ProxySettings(
        upstream_timeout_s=args.upstream_timeout_s, connect_timeout_s=args.connect_timeout_s,
        header_timeout_s=args.header_timeout_s, client_idle_timeout_s=args.idle_timeout_s,
        upstream_idle_timeout_s=args.upstream_idle_timeout_s,
        max_header_bytes=args.max_header_bytes)


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    settings = settings_from(args)
    try:
        proxy = Proxy(settings, app=args.app, control_plane_url=args.control_plane_url,
                      control_plane_key=proof.read_key(args.control_plane_key_file))
    except ValueError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_USAGE
    control_path = args.control
    if control_in_use(control_path):
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
    try:
        servers += await start_metrics(args.metrics_listen, _counters_of(proxy))
    except StartupFailed as exc:
        log.error("%s", exc)
        return EXIT_USAGE

    state_path = Path(args.state)
    routes = load_last_routes(state_path)
    if routes is not None:
        proxy.apply(routes)

    stop = asyncio.Event()
    control_server = await open_control(args, ProxyPlane(proxy), state_path=state_path,
                                        stop=stop)
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
    close_control(args, control_server)
    return 0


def _counters_of(proxy: Proxy) -> Callable[[], Awaitable[RouterCounters]]:
    async def counters() -> RouterCounters:
        return proxy.metrics

    return counters


def _log_build() -> None:
    stale = build.stale_modules()
    if stale:
        log.warning("the compiled router is older than its sources (%s): its old code runs. "
                    "Rebuild with `make install` (or pip install -e . again), or set "
                    "%s=1 to run the sources", ", ".join(stale), build.PURE_ENV)
    log.info("router build: %s", "compiled (mypyc)" if build.compiled_modules()
             else "pure Python")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    who = "" if args.worker_index is None else f" worker {args.worker_index}"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s entrega-router{who} %(levelname)s %(message)s")
    if args.worker_index is None:
        _log_build()
    if args.worker_index is not None:
        main_coro = run_worker(args, settings_from(args))
    elif args.workers > 1:
        main_coro = run_supervisor(args, worker_argv=argv)
    else:
        main_coro = run(args)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(main_coro)
    return uvloop.run(main_coro)


if __name__ == "__main__":
    sys.exit(main())
