"""`entrega down` in process: stops the app's data plane (tests/cli/test_server.py stops a
real router with it), and refuses while a server holds the store (it would start
everything again)."""

from __future__ import annotations

from entrega.store.database import ControllerLock
from tests.cli.conftest import ApiServer, invoke


def test_down_with_nothing_running_is_a_no_op(api: ApiServer) -> None:
    result = invoke(api, ["down"])
    assert result.exit_code == 0, result.output
    # idempotent: the router is asked to stop whether or not it runs; no instance was
    assert result.stdout.split("\n") == ["stopped router production", ""]


def test_down_refuses_while_a_server_owns_the_store(api: ApiServer) -> None:
    lock = ControllerLock(api.service.config.state_path / "controller.lock")
    lock.acquire()
    try:
        result = invoke(api, ["down"])
    finally:
        lock.release()
    assert result.exit_code == 1
    assert str(result.exception).startswith("another entrega server (pid ")
