"""Fixtures for target tests: real releases of the shop example, real supervised processes.

Every target made through ``make_target`` is torn down at the end of the test: all its
releases are stopped (so no process outlives the test, even when it fails) and it is closed.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from entrega.targets.base import HealthCheck, ReleaseRef
from entrega.targets.local import LocalTarget

SHOP_APP = Path(__file__).resolve().parents[2] / "examples" / "shop" / "app.py"
PYTHON = shlex.quote(sys.executable)

#: Fast probing so tests reach thresholds in a fraction of a second.
FAST_HEALTH = HealthCheck(path="/healthz", interval_s=0.05, timeout_s=1.0,
                          healthy_threshold=2, unhealthy_threshold=2)

MakeRelease = Callable[..., ReleaseRef]
MakeTarget = Callable[..., LocalTarget]


@pytest.fixture
def make_release(tmp_path: Path) -> MakeRelease:
    """A release directory holding the shop app (or ``source``) and a VERSION file."""

    def make(version: str, *, source: str | None = None, write_version: bool = True,
             files: dict[str, str] | None = None) -> ReleaseRef:
        path = tmp_path / "releases" / version
        path.mkdir(parents=True)
        if source is None:
            shutil.copy(SHOP_APP, path / "app.py")
        else:
            (path / "app.py").write_text(source)
        if write_version:
            (path / "VERSION").write_text(version + "\n")
        for name, text in (files or {}).items():
            (path / name).write_text(text)
        return ReleaseRef(app="shop", version=version, digest="sha256:" + "0" * 64, path=path)

    return make


@pytest.fixture
async def make_target(tmp_path: Path) -> AsyncIterator[MakeTarget]:
    targets: list[LocalTarget] = []

    def make(**overrides: object) -> LocalTarget:
        options: dict[str, object] = {
            "app": "shop", "environment": "staging", "command": f"{PYTHON} app.py",
            "env": {}, "instances": 1, "health": FAST_HEALTH, "state_dir": tmp_path / "state",
        }
        options.update(overrides)
        target = LocalTarget(**options)  # type: ignore[arg-type]
        targets.append(target)
        return target

    yield make
    for target in targets:
        for version in {state.version for state in await target.observe() if state.alive}:
            await target.stop(release=ReleaseRef("shop", version, "", tmp_path), drain_s=0.5)
        await target.close()
