"""`entrega server` in process: it serves until SIGTERM (then `entrega down` stops what it
started), an invalid entrega.yaml stops it before anything starts, and a second server on
the same store is refused."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from entrega.cli.main import app
from entrega.net import free_port
from entrega.store.database import ControllerLock
from tests.cli.conftest import CONFIG, ApiServer, invoke


@pytest.fixture(autouse=True)
def logging_restored() -> Iterator[None]:
    """`server` sets up the process's logging (JSON to stderr) first: undo it, so the
    tests after these keep pytest's log capture."""
    root, quiet = logging.getLogger(), logging.getLogger("httpx")
    handlers, level, quiet_level = root.handlers[:], root.level, quiet.level
    converter = logging.Formatter.converter
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    quiet.setLevel(quiet_level)
    logging.Formatter.converter = converter


def test_server_refuses_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "entrega.yaml"
    path.write_text("app: shop\nenvironments: []\n")
    result = CliRunner().invoke(app, ["server", "-c", str(path)])
    assert result.exit_code == 1
    assert str(result.exception).startswith(f"{path}")
    assert not (tmp_path / ".entrega" / "controller.lock").exists()


def test_a_second_server_on_the_same_store_is_refused(api: ApiServer) -> None:
    lock = ControllerLock(api.service.config.state_path / "controller.lock")
    lock.acquire()
    try:
        result = invoke(api, ["server"])
    finally:
        lock.release()
    assert result.exit_code == 1
    assert str(result.exception).startswith("another entrega server (pid ")


@pytest.mark.real
def test_server_serves_until_sigterm_and_down_stops_its_router(tmp_path: Path) -> None:
    """The real thing in process: `entrega server` takes the store, starts the router,
    answers /healthz and stops on SIGTERM (its own handler: the router keeps running, as
    the data plane outlives the controller); `entrega down` then stops the router."""
    port, router = free_port(), free_port()
    path = tmp_path / "entrega.yaml"
    path.write_text(CONFIG.format(port=port, router=router))
    url = f"http://127.0.0.1:{port}"
    answered: list[dict[str, object]] = []

    def stop_when_served() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                answered.append(httpx.get(f"{url}/healthz", timeout=2).json())
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        # SIGTERM only once the server's own handler is there (else it would end pytest)
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
            os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_when_served, daemon=True)
    stopper.start()
    try:
        served = CliRunner().invoke(app, ["server", "-c", str(path)])
        stopper.join(10)
        assert served.exit_code == 0, served.output
        assert answered == [{"ok": True, "app": "shop", "passes": answered[0]["passes"],
                             "apps": ["shop"]}]
        # the data plane outlives the controller: the router still answers
        assert httpx.get(f"http://127.0.0.1:{router}/", timeout=5).status_code >= 200
    finally:
        down = CliRunner().invoke(app, ["down", "-c", str(path)])
    assert down.exit_code == 0, down.output
    assert "stopped router production" in down.stdout.replace("\n", " ")
