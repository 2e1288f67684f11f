"""HAProxy names two unix sockets in its config, its runtime API and the log sink's
listener, and refuses either path past 97 bytes ("too long (max 97)"), ten fewer than
AF_UNIX takes: a state directory deep enough gets both under /tmp, named by a hash."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from entrega.routers.haproxy.router import runtime_socket_path
from entrega.routers.haproxy.sink import HAPROXY_MAX_SOCKET_PATH, log_socket_path


@pytest.mark.parametrize("depth", [20, 88, 89, 95, 120])
def test_haproxy_s_sockets_fit_its_limit_however_deep_the_state_directory(depth: int) -> None:
    router_dir = Path("/") / ("d" * (depth - 1))
    for socket_path in (runtime_socket_path, log_socket_path):
        path = socket_path(router_dir)
        assert len(os.fsencode(path)) <= HAPROXY_MAX_SOCKET_PATH, path
        assert socket_path(router_dir) == path  # a restarted controller finds it again


def test_a_short_state_directory_keeps_its_sockets_inside() -> None:
    assert log_socket_path(Path("/srv/r")) == Path("/srv/r/logs.sock")
