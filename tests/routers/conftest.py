"""Real backends (tests/routers/backend.py processes) and real router processes (embedded,
and HAProxy: its fixture fails, never skips, when haproxy is missing)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from entrega.net import Endpoint, free_port
from entrega.routers.base import CohortRule, Routes
from entrega.routers.embedded import EmbeddedRouter
from entrega.routers.haproxy import HaproxyRouter
from entrega.waiting import wait_until

BACKEND_SCRIPT = Path(__file__).with_name("backend.py")


@dataclass
class Backend:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port, self.name)

    def connections(self) -> int:
        return int(httpx.get(f"http://127.0.0.1:{self.port}/stats").json()["connections"])

    async def sleeping(self) -> int:
        """Requests this backend has read whole and holds in ``/slow`` right now."""
        async with httpx.AsyncClient() as c:
            return int((await c.get(f"http://127.0.0.1:{self.port}/stats")).json()["sleeping"])


def start_backend(name: str) -> Backend:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(BACKEND_SCRIPT), name, str(port)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the backend prints "ready" once it listens
    assert line.strip() == b"ready", f"backend {name} did not start: {line!r}"
    return Backend(name, port, proc)


@pytest.fixture(scope="session")
def backends() -> Iterator[dict[str, Backend]]:
    started = {name: start_backend(name) for name in ("v1-a", "v1-b", "v2", "v3")}
    yield started
    for backend in started.values():
        backend.proc.terminate()
    for backend in started.values():
        backend.proc.wait(10)


def make_routes(backends: dict[str, Backend], weights: dict[str, int], *,
                cohort: CohortRule | None = None, preview: str | None = None,
                releases: tuple[str, ...] = ("v1", "v2", "v3")) -> Routes:
    """Release v1 = instances v1-a and v1-b; v2 and v3 one instance each."""
    eps = {"v1": (backends["v1-a"].endpoint, backends["v1-b"].endpoint),
           "v2": (backends["v2"].endpoint,), "v3": (backends["v3"].endpoint,)}
    return Routes(backends={r: eps[r] for r in releases}, weights=weights, cohort=cohort,
                  preview=preview)


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0,
                   what: str = "condition") -> None:
    if not await wait_until(predicate, timeout_s=timeout_s):
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def reload_haproxy(router: HaproxyRouter) -> None:
    """Reload HAProxy as an operator would (SIGUSR2 to its master) and return once a new
    worker serves."""
    worker = (await router.api.info())["Pid"]
    master = router.pid()
    assert master is not None
    os.kill(master, signal.SIGUSR2)

    async def reloaded() -> bool:
        return (await router.api.info()).get("Pid") not in (None, worker)

    await wait_for(reloaded, timeout_s=20, what="a new HAProxy worker")


async def worker_pids(router: EmbeddedRouter) -> list[int]:
    """The pids of the worker processes serving traffic (``router.pid()`` is their
    supervisor's, which never touches a client's bytes)."""
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(
            uds=str(router.socket_path)), base_url="http://router") as control:
        workers = (await control.get("/health")).json()["workers"]
    return list(workers["pids"])


def _kill(router: EmbeddedRouter) -> None:
    pid = router.pid()
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


RouterFactory = Callable[..., Awaitable[EmbeddedRouter]]


@pytest.fixture
async def make_router(tmp_path: Path) -> AsyncIterator[RouterFactory]:
    made: list[EmbeddedRouter] = []

    async def make(name: str = "r", *, preview: bool = False, **options: Any) -> EmbeddedRouter:
        router = EmbeddedRouter(
            name=name, listen=f"127.0.0.1:{free_port()}",
            preview_listen=f"127.0.0.1:{free_port()}" if preview else None,
            state_dir=tmp_path, app="shop", **options)
        made.append(router)
        await router.ensure_running()
        return router

    yield make
    for router in made:
        try:
            await asyncio.wait_for(router.shutdown(), 15)
        except Exception:
            _kill(router)
        await router.close()


@pytest.fixture
async def router(make_router: RouterFactory) -> EmbeddedRouter:
    return await make_router()


@pytest.fixture
async def client(router: EmbeddedRouter) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://{router.listen}", timeout=30) as c:
        yield c


HaproxyFactory = Callable[..., Awaitable[HaproxyRouter]]


@pytest.fixture
async def make_haproxy(tmp_path: Path) -> AsyncIterator[HaproxyFactory]:
    binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    assert binary, "haproxy is not installed: run scripts/install-system-deps.sh"
    made: list[HaproxyRouter] = []

    async def make(name: str = "h", **options: object) -> HaproxyRouter:
        options.setdefault("preview_listen", None)
        router = HaproxyRouter(name=name, listen=f"127.0.0.1:{free_port()}",
                               state_dir=tmp_path, app="shop", binary=binary,
                               **options)  # type: ignore[arg-type]
        made.append(router)
        await router.ensure_running()
        return router

    yield make
    for router in made:
        await router.shutdown()
