"""``entrega server``: the API and the reconcile loop in one asyncio process.

Start-up order matters for crash recovery: take the store's lock (one controller at a
time), migrate, adopt the running data plane (routers, instances), then serve. Shutdown
stops the loop and the API only; routers and instances keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import uvicorn

from entrega.api.app import create_app
from entrega.config import Config
from entrega.controller.loop import Controller
from entrega.net import parse_address
from entrega.releases.artifacts import ArtifactStore
from entrega.service import Service
from entrega.store.database import ControllerLock, Store
from entrega.store.repository import Repository

log = logging.getLogger("entrega.server")


def build_service(config: Config) -> tuple[Service, Store]:
    store = Store(config.store_url)
    store.migrate()
    repo = Repository(store)
    artifacts = ArtifactStore(config.state_path, config.artifacts)
    controller = Controller(config, repo, artifacts)
    return Service(config, repo, artifacts, controller), store


async def serve(config: Config) -> None:
    lock = ControllerLock(config.state_path / "controller.lock")
    lock.acquire()
    service, store = build_service(config)
    # Uploads and unpacked trees a crash or a kill left in flight: nobody else writes
    # there while we hold the lock.
    swept = service.artifacts.sweep_staging()
    if swept:
        log.info("removed %d unfinished upload(s) from an earlier run", swept)
    await service.controller.start()
    host, port = parse_address(config.server.listen)
    server = uvicorn.Server(uvicorn.Config(create_app(service), host=host, port=port,
                                           log_level="warning", access_log=False,
                                           lifespan="off"))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    # Our handlers, not uvicorn's: uvicorn re-raises the signal after serving, which would
    # kill the process before the controller is stopped cleanly.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    log.info("entrega server for %s on %s", config.app, config.server.listen)
    try:
        await server.serve()
    finally:
        await service.controller.stop()
        store.close()
        lock.release()


def run_server(config: Config) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
