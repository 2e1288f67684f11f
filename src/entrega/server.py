"""``entrega server``: the API and the reconcile loop in one asyncio process.

Start-up order matters for crash recovery: take the store's lock (one controller at a
time), migrate, adopt the running data plane (routers, instances), then serve. Shutdown
stops the loop and the API only; routers and instances keep running.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from entrega.api.app import create_app
from entrega.api.http import http_server
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
    server = http_server(create_app(service), host=host, port=port,
                         header_timeout_s=config.server.header_timeout_s)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
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
