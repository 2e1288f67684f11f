"""A router replaced by one on new settings (a reloaded entrega.yaml,
controller/reload.py ``replace_router``), on both kinds, under load: the new address serves
the live table before the old one stops accepting, and no request fails."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections import Counter
from pathlib import Path

import httpx
import pytest

from entrega.config import EmbeddedRouterConfig, HaproxyRouterConfig, RouterConfig
from entrega.controller.reload import replace_router
from entrega.net import free_port
from entrega.routers.base import Router
from entrega.routers.embedded import EmbeddedRouter
from entrega.routers.haproxy import HaproxyRouter
from tests.routers.conftest import (
    Backend,
    HaproxyFactory,
    RouterFactory,
    make_routes,
    wait_for,
)

pytestmark = pytest.mark.real


class MovingLoad:
    """Requests one after another to the old address, then to the new one as soon as it
    accepts a connection (a health-checking load balancer would do the same).

    Between "the new address does not accept yet" and the next connection to the old one,
    the new router may start and the old one close (HAProxy's reload does exactly that, in
    that order). A load balancer retries a refused connection on another server, and so
    does this load, once, on the new address at once: the router kept its promise (the new
    address served before the old one closed) when that retry is accepted. A gap between
    the two (neither accepting) fails the retry, and is counted as a failure."""

    def __init__(self, old: str, new: str) -> None:
        self.url, self.new = f"http://{old}", f"http://{new}"
        self.by_address: Counter[str] = Counter()
        self.failures: list[str] = []
        #: connections the old address refused that the new one then served
        self.retried_on_new = 0
        #: requests sent again after a kept-alive connection closed before any answer
        self.retried_closed = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while not self._stop.is_set():
                if self.url != self.new and await _accepts(self.new):
                    self.url = self.new
                url = self.url
                try:
                    response = await client.get(url + "/")
                except httpx.ConnectError as exc:
                    if url == self.new:
                        self.failures.append(f"{url}: {type(exc).__name__}: {exc}")
                        continue
                    self.url, self.retried_on_new = self.new, self.retried_on_new + 1
                    url = self.url
                    again = await self._again(client, url, f"{exc} on the old address")
                    if again is None:
                        continue
                    response = again
                except httpx.RemoteProtocolError as exc:
                    # A kept-alive connection closed by the server before any answer (an
                    # HAProxy worker's soft stop closes its idle ones): browsers and curl
                    # send the request again on a new connection (RFC 9112, 9.3.1), and
                    # so does this load, once; a second failure counts.
                    self.retried_closed += 1
                    again = await self._again(client, url, str(exc))
                    if again is None:
                        continue
                    response = again
                except httpx.HTTPError as exc:
                    self.failures.append(f"{url}: {type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{url}: {response.status_code}")
                self.by_address[url] += 1
                await asyncio.sleep(0.005)

    async def _again(self, client: httpx.AsyncClient, url: str, after: str
                     ) -> httpx.Response | None:
        """The one retry of a request; None (and a failure counted) when it fails too."""
        try:
            return await client.get(url + "/")
        except httpx.ConnectError as exc:
            if url == self.new:
                self.failures.append(f"{url} (after {after}): {type(exc).__name__}: {exc}")
                return None
            # The old address closed its kept-alive connection and then its listener
            # (HAProxy's soft stop does both at once): refused, so on to the new one,
            # as for any refused connection.
            self.url, self.retried_on_new = self.new, self.retried_on_new + 1
            return await self._again(client, self.url, f"{after}, then {exc} on the old address")
        except httpx.HTTPError as exc:
            self.failures.append(f"{url} (after {after}): {type(exc).__name__}: {exc}")
            return None

    def stop(self) -> None:
        self._stop.set()


async def _accepts(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with contextlib.suppress(OSError):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.close()
        return True
    return False


async def _make(kind: str, make_router: RouterFactory, make_haproxy: HaproxyFactory,
                tmp_path: Path) -> tuple[Router, Router, RouterConfig, RouterConfig]:
    """A running router of ``kind`` and its successor (same name, a new address)."""
    new_listen = f"127.0.0.1:{free_port()}"
    if kind == "embedded":
        old = await make_router("change")
        new: Router = EmbeddedRouter(name="change", listen=new_listen, preview_listen=None,
                                     state_dir=tmp_path, app="shop")
        return (old, new, EmbeddedRouterConfig(listen=old.listen),
                EmbeddedRouterConfig(listen=new_listen))
    binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin") or "haproxy"
    haproxy = await make_haproxy("change")
    new = HaproxyRouter(name="change", listen=new_listen, preview_listen=None,
                        state_dir=tmp_path, app="shop", binary=binary)
    return (haproxy, new, HaproxyRouterConfig(listen=haproxy.listen, binary=binary),
            HaproxyRouterConfig(listen=new_listen, binary=binary))


@pytest.mark.parametrize("kind", ["embedded", "haproxy"])
async def test_a_new_address_takes_over_under_load_with_no_failed_request(
        kind: str, make_router: RouterFactory, make_haproxy: HaproxyFactory,
        backends: dict[str, Backend], tmp_path: Path) -> None:
    old, new, old_config, new_config = await _make(kind, make_router, make_haproxy, tmp_path)
    routes = make_routes(backends, {"v1": 80, "v2": 20}, releases=("v1", "v2"))
    await old.set_routes(routes)
    load = MovingLoad(old_config.listen, new_config.listen)
    task = asyncio.create_task(load.run())
    try:
        await wait_for(lambda: _more_than(load, 50), what="traffic before the change")
        retiring = await replace_router(old, new, old_config=old_config,
                                        new_config=new_config)
        if retiring is not None:
            await retiring.shutdown()
        await wait_for(lambda: _refuses(old_config.listen), what="the old address to close")
        served = load.by_address[load.new]
        await wait_for(lambda: _more_than(load, served + 50, load.new),
                       what="traffic on the new address")
        assert (await new.get_routes()).same_table(routes)
    finally:
        load.stop()
        await task
        await new.shutdown()
        await new.close()
    assert load.failures == []
    assert load.by_address[f"http://{old_config.listen}"] > 50


async def _more_than(load: MovingLoad, n: int, url: str | None = None) -> bool:
    return (load.by_address[url] if url else sum(load.by_address.values())) > n


async def _refuses(address: str) -> bool:
    return not await _accepts(f"http://{address}")



async def test_a_router_of_the_other_kind_left_by_an_earlier_configuration_is_retired(
        make_router: RouterFactory, backends: dict[str, Backend], tmp_path: Path) -> None:
    """``router.kind`` changed across a restart of the server: the old kind still runs on
    the port, which both kinds bind with SO_REUSEPORT, so the new one would share its
    traffic with a router nobody updates. Starting the new kind drains the old one, under
    load with no failed request, in both directions."""
    binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin") or "haproxy"
    embedded = await make_router("switch")
    routes = make_routes(backends, {"v1": 100}, releases=("v1",))
    await embedded.set_routes(routes)
    load = MovingLoad(embedded.listen, embedded.listen)
    task = asyncio.create_task(load.run())
    haproxy = HaproxyRouter(name="switch", listen=embedded.listen, preview_listen=None,
                            state_dir=tmp_path, app="shop", binary=binary)
    try:
        await wait_for(lambda: _more_than(load, 20), what="traffic before the change")
        old = embedded.pid()
        await haproxy.ensure_running()
        await haproxy.set_routes(routes)
        assert old is not None
        await wait_for(lambda: _exited(old), what="the embedded router to exit")
        served = sum(load.by_address.values())
        await wait_for(lambda: _more_than(load, served + 20), what="traffic through HAProxy")
        assert load.failures == [], "embedded -> HAProxy"

        # and back to the embedded router: HAProxy and its log sink are retired
        master = haproxy.pid()
        sink = int((haproxy.dir / "logsink.pid").read_text())
        again = EmbeddedRouter(name="switch", listen=embedded.listen, preview_listen=None,
                               state_dir=tmp_path, app="shop")
        await again.ensure_running()
        await again.set_routes(routes)
        assert master is not None
        await wait_for(lambda: _exited(master), what="HAProxy to exit")
        await wait_for(lambda: _exited(sink), what="its log sink to exit")
        served = sum(load.by_address.values())
        await wait_for(lambda: _more_than(load, served + 20), what="traffic through it")
    finally:
        load.stop()
        await task
        await haproxy.shutdown()
    assert load.failures == []


async def _exited(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.split(") ")[1].startswith("Z")  # a zombie has exited
