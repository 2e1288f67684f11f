"""The router's hot path runs compiled (mypyc, setup.py) unless asked not to."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from entrega.dataplane import build

pytestmark = pytest.mark.real


def origin_of_proxy(pure: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != build.PURE_ENV}
    if pure:
        env[build.PURE_ENV] = "1"
    done = subprocess.run(
        [sys.executable, "-c", "import entrega.dataplane.http.proxy as p; print(p.__file__)"],
        env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_installed_router_is_compiled() -> None:
    # what `pip install` (make install) gives on a machine with a C compiler
    compiled = origin_of_proxy(pure=False)
    if not compiled.endswith(".so"):
        pytest.skip(f"the router is not compiled here ({compiled}): ENTREGA_COMPILE=0, or "
                    "no C compiler at install")
    assert build.stale_modules() == []


def test_pure_python_on_request() -> None:
    assert origin_of_proxy(pure=True).endswith("proxy.py")


def test_this_run_imports_what_it_asked_for() -> None:
    compiled = build.compiled_modules()
    if build.pure_python_requested():
        assert compiled == []
    elif origin_of_proxy(pure=False).endswith(".so"):
        assert compiled == list(build.HOT_PATH)
