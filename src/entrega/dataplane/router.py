"""``python -m entrega.dataplane.router``: run one router.

Every router is a supervisor process (process/router_supervisor.py) and ``--workers`` worker
processes (process/worker.py, default 1) serving on sockets the supervisor holds, so a
dead worker is replaced on the same sockets without the controller and without refusing
a connection.
The supervisor re-runs this module with the worker's private options (``--worker-id``,
``--link-fd``, ``--listen-fds``: inherited file descriptors).

Startup order makes ``/health`` a readiness signal: the data listeners are bound first
(a busy port exits at once with code 2 and a message naming the address), then the last
routes are loaded, the workers start with them, then the control socket answers, then
the pidfile is written. SIGTERM, SIGINT and ``POST /shutdown`` drain: stop accepting,
close idle connections, let requests in flight finish for up to ``--drain-s``, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from typing import Any

from entrega.dataplane import build
from entrega.dataplane.http.proxy import ProxySettings
from entrega.dataplane.process.router_supervisor import run_supervisor
from entrega.dataplane.process.worker import run_worker

log = logging.getLogger("entrega.router")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m entrega.dataplane.router",
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
                   help="worker processes sharing the listeners (SO_REUSEPORT) under one "
                        "supervisor, which replaces a dead one at once")
    p.add_argument("--join-listeners", action="store_true",
                   help="share --listen and --preview-listen with the running router this "
                        "one replaces (SO_REUSEPORT, same user) instead of waiting for them "
                        "to be free: given by the controller when a changed configuration "
                        "restarts a router")
    # Given by the supervisor to its workers only.
    p.add_argument("--worker-id", type=int, help=argparse.SUPPRESS)
    p.add_argument("--link-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--listen-fds", help=argparse.SUPPRESS)
    p.add_argument("--counters-fd", type=int, help=argparse.SUPPRESS)
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
    who = "" if args.worker_id is None else f" worker pid {os.getpid()}"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s entrega-router{who} %(levelname)s %(message)s")
    main_coro: Coroutine[Any, Any, int]
    if args.worker_id is not None:
        main_coro = run_worker(args, settings_from(args))
    else:
        _log_build()
        main_coro = run_supervisor(args, worker_argv=argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(main_coro)
    return uvloop.run(main_coro)


if __name__ == "__main__":
    sys.exit(main())
