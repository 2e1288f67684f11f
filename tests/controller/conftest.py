"""In-process controllers on real data planes: the shop app as supervised processes,
real embedded routers, a SQLite store; the test drives the controller's lifecycle."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from entrega import waiting
from entrega.config import Config, load_config
from entrega.controller.teardown import stop_data_plane
from entrega.net import free_port
from entrega.server import build_service
from entrega.service import Service

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop" / "app.py"

CONFIG = """\
app: shop
server: {{listen: "127.0.0.1:{server}"}}
run:
  command: "{python} app.py"
  health: {{path: /healthz, interval_s: 0.1, healthy_threshold: 2}}
  drain_s: 2
environments:
  - name: production
    target: {{kind: local, instances: {instances}}}
    router: {{kind: embedded, listen: "127.0.0.1:{router}", preview_listen: "127.0.0.1:{preview}"}}
    strategy:
{strategy}
    verify:
      - http: {{path: /api/products, expect_status: 200, expect_body: "moka pot", timeout_s: 1}}
"""


def write_config(root: Path, strategy: str, instances: int = 1) -> Config:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "entrega.yaml"
    path.write_text(CONFIG.format(server=free_port(), router=free_port(),
                                  preview=free_port(), python=sys.executable,
                                  strategy=strategy, instances=instances))
    return load_config(path)


def artifact(root: Path, version: str) -> Path:
    path = root / "artifacts" / version
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHOP, path / "app.py")
    (path / "VERSION").write_text(version)
    return path


async def wait_until(predicate: Callable[[], Any], timeout_s: float = 30.0,
                     what: str = "") -> Any:
    last: Any = None

    async def check() -> Any:
        nonlocal last
        last = predicate()
        if isinstance(last, Awaitable):
            last = await last
        return last

    found = await waiting.wait_until(check, timeout_s=timeout_s, interval_s=0.05)
    if found:
        return found
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Callable[..., Service]]:
    """Builds a service (store + controller, not started) for a strategy; every data
    plane they started is stopped at the end."""
    configs: list[Config] = []

    def make(strategy: str, instances: int = 1) -> Service:
        config = write_config(tmp_path / f"d{len(configs)}", strategy, instances)
        configs.append(config)
        service, _store = build_service(config)
        return service

    yield make
    for config in configs:
        await stop_data_plane(config, drain_s=1)
