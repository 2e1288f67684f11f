"""A release's bytes stay as they were received, whatever its app writes where it runs.

The app here is a common shape, not our shop: ``app.py`` imports a module of its own
(``shop.py``), so Python writes ``__pycache__/shop.cpython-*.pyc`` next to it, and it keeps
a cache file in its working directory; a verification command imports that module too.
All of it used to land in the content-addressed artifact
directory (instances ran in it), so a rollback to that release was refused: "artifact ...
was modified on disk".
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from entrega.releases.artifacts import tree_digest

from .conftest import SHOP, Deployment, serving, wait_for

pytestmark = pytest.mark.real

LAUNCHER = """\
import pathlib

import shop  # a module of the release: its bytecode is written where the app runs

pathlib.Path("cache").mkdir(exist_ok=True)
pathlib.Path("cache/started").write_text("an app's own file, written at start")
shop.main()
"""


def artifact_importing_a_module(dep: Deployment, version: str, **_: Any) -> Path:
    path = dep.root / "artifacts" / version
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHOP, path / "shop.py")
    (path / "app.py").write_text(LAUNCHER)
    (path / "VERSION").write_text(version)
    return path


def stored_artifacts(dep: Deployment) -> list[Path]:
    return sorted(p for p in (dep.root / ".entrega" / "artifacts").iterdir()
                  if not p.name.startswith("."))


#: A verification command that writes where it runs too (it imports the release's module).
WRITING_CHECK = """\
      - command: "{python} -c 'import shop, pathlib; pathlib.Path(\\"ok\\").touch()'"
"""


@pytest.fixture
def deployment_with_a_writing_check(tmp_path: Path) -> Iterator[Deployment]:
    dep = Deployment(tmp_path)
    dep.config.write_text(dep.config.read_text() + WRITING_CHECK.format(python=sys.executable))
    yield from serving(dep)


def test_rollback_to_a_release_whose_app_wrote_where_it_runs(
        deployment_with_a_writing_check: Deployment) -> None:
    dep = deployment_with_a_writing_check
    dep.artifact = lambda version, **settings: artifact_importing_a_module(  # type: ignore[method-assign]
        dep, version, **settings)
    v1 = dep.deploy("v1")
    dep.wait_phase(v1["id"], {"succeeded"})
    wait_for(lambda: dep.served_by() == {"v1": 20}, what="v1 to serve everything")
    run_dirs = list((dep.root / ".entrega" / "run" / "production" / "v1").glob("*/work"))
    assert run_dirs and all((d / "__pycache__").is_dir() and (d / "cache" / "started").exists()
                            for d in run_dirs), "the app did not write where it runs"

    v2 = dep.deploy("v2")
    dep.wait_phase(v2["id"], {"paused"})
    dep.cli("promote", "--full")
    dep.wait_phase(v2["id"], {"succeeded"})
    wait_for(lambda: not list((dep.root / ".entrega" / "run" / "production" / "v1")
                              .glob("*/work")), what="v1's working copies to go with it")

    # Every stored artifact still has the digest it is named by.
    for stored in stored_artifacts(dep):
        assert tree_digest(stored) == "sha256:" + stored.name

    out = dep.cli("rollback", "--to", "v1").stdout
    assert "back to v1" in out
    wait_for(lambda: dep.status()["current"] == "v1", what="v1 to be current again")
    wait_for(lambda: dep.served_by() == {"v1": 20}, what="v1 to serve everything again")
    assert "modified on disk" not in dep.server_log()
    verified = [e for e in dep.cli_json("history") if e["kind"] == "verified"]
    assert {e["version"] for e in verified} >= {"v1", "v2"}, "the command check never ran"
