"""``entrega server``: the API and the reconcile loop in one asyncio process.

Start-up order matters for crash recovery: take the store's lock (one controller at a
time), migrate, adopt the running data plane (routers, instances), then serve. On a
PostgreSQL store several servers may run: each serves the API at once, and the one that
wins the election (plane/leader.py) adopts the data plane and reconciles. Shutdown
stops the loop and the API only; routers and instances keep running. SIGHUP reloads the
configuration file (controller/reload.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

from entrega.api.app import create_app
from entrega.api.http import http_server
from entrega.config import Config
from entrega.config.apps import AppsConfig
from entrega.controller.loop import Controller
from entrega.errors import EntregaError
from entrega.net import WILDCARD_HOSTS, http_url, parse_address
from entrega.plane import ControlPlane, build_plane
from entrega.plane.leader import LeaderRole
from entrega.releases.artifacts import artifact_store_for
from entrega.service import Service
from entrega.store.database import ControllerLock, Store, shared_store
from entrega.store.leadership import Election
from entrega.store.repository import Repository

log = logging.getLogger("entrega.server")


def build_service(config: Config, *, config_file: Path | None = None
                  ) -> tuple[Service, Store]:
    store = Store(config.store_url)
    store.migrate()
    repo = Repository(store)
    artifacts = artifact_store_for(config)
    controller = Controller(config, repo, artifacts)
    return Service(config, repo, artifacts, controller, config_file=config_file), store


def reload_on_sighup(service: Service) -> None:
    """SIGHUP reloads entrega.yaml, as it does for nginx or HAProxy; the outcome goes to
    the log and the history (a refused file names its line there)."""
    try:
        outcome = service.reload_config(actor="SIGHUP")
    except EntregaError as exc:
        log.error("configuration reload (SIGHUP) refused, the running configuration "
                  "stays: %s", exc)
        return
    log.info("configuration reloaded (SIGHUP): %s", outcome.message)


def reload_all_on_sighup(plane: ControlPlane) -> None:
    for service in plane:
        reload_on_sighup(service)


async def serve(apps: AppsConfig | Config, *, config_file: Path | None = None,
                listen: str | None = None) -> None:
    """Serve until SIGTERM/SIGINT. ``listen`` overrides ``server.listen`` (a second server
    of a PostgreSQL store on the same machine and file). Raises :class:`SteppedDown` when
    this server led others and lost the lead."""
    if isinstance(apps, Config):
        apps = AppsConfig((apps,))
    config = apps.first  # server, store and auth are the same for every app
    listen = listen or config.server.listen
    # Several servers may share a PostgreSQL store (one leads: plane/leader.py); SQLite is
    # one server's, held by an exclusive lock. Either way the lock file keeps `entrega
    # down` from stopping a data plane some server runs.
    lock = ControllerLock(config.state_path / "controller.lock")
    lock.acquire(shared=shared_store(config.store_url))
    plane, store = build_plane(apps, config_file=config_file)
    # Uploads and unpacked trees a crash or a kill left in flight: nobody else writes
    # there while we hold the lock (in a shared artifacts.dir, our own staging only). Apps
    # of one file may name their own artifacts.dir: each staging directory once.
    swept = sum(artifacts.sweep_staging() for artifacts in
                {s.artifacts.staging_root: s.artifacts for s in plane}.values())
    if swept:
        log.info("removed %d unfinished upload(s) from an earlier run", swept)
    role: LeaderRole | None = None
    if store.shared:
        host, port = parse_address(listen)
        election = Election(store.url, identity=f"{socket.gethostname()}:{os.getpid()}",
                            address=server_url(host, port), lease_s=config.server.lease_s)
        role = LeaderRole(plane, store, election)
        plane.role = role
        role.start()
    else:
        await plane.start()
    host, port = parse_address(listen)
    server = http_server(create_app(plane), host=host, port=port,
                         header_timeout_s=config.server.header_timeout_s)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    loop.add_signal_handler(signal.SIGHUP, reload_all_on_sighup, plane)
    log.info("entrega server for %s on %s%s", ", ".join(plane.names), listen,
             " (standby until it leads)" if role else "")
    serving = asyncio.create_task(server.serve(), name="entrega-http")
    stepped_down = asyncio.create_task(role.wait_ended()) if role else None
    try:
        await asyncio.wait([t for t in (serving, stepped_down) if t],
                           return_when=asyncio.FIRST_COMPLETED)
        if stepped_down is not None and stepped_down.done():
            server.should_exit = True
            await serving
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        if stepped_down is not None:
            stepped_down.cancel()
        if role is not None:
            await role.stop()
        else:
            await plane.stop()
        store.close()
        lock.release()
    if role is not None and role.stepped_down is not None:
        raise role.stepped_down


def server_url(host: str, port: int) -> str:
    """How another process reaches a server listening on ``host:port``."""
    return http_url(socket.gethostname() if host in WILDCARD_HOSTS else host, port)


def run_server(apps: AppsConfig | Config, *, config_file: Path | None = None,
               listen: str | None = None) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(apps, config_file=config_file, listen=listen))
    else:
        uvloop.run(serve(apps, config_file=config_file, listen=listen))
