"""Where a server is reached, from its ``server.listen``: one helper (net.py) for the
CLI, the routers' feedback and the verification checks, by table; wildcard addresses are
reached on loopback, IPv6 hosts are bracketed (the routers' control-plane URL was
``http://::1:7070`` for an IPv6 listen before)."""

from __future__ import annotations

import socket

import pytest

from entrega.cli.client import server_url
from entrega.errors import EntregaError
from entrega.net import local_url
from entrega.server import server_url as advertised_url


@pytest.mark.parametrize(("listen", "url"), [
    ("127.0.0.1:7070", "http://127.0.0.1:7070"),
    ("0.0.0.0:7070", "http://127.0.0.1:7070"),
    ("[::]:7070", "http://127.0.0.1:7070"),
    ("[::1]:7070", "http://[::1]:7070"),
    ("127.0.1.2:80", "http://127.0.1.2:80"),
])
def test_a_local_process_reaches_the_listen_address(listen: str, url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert local_url(listen) == url
    monkeypatch.delenv("ENTREGA_SERVER", raising=False)
    assert server_url(listen) == url


def test_a_listen_that_is_no_address_is_an_error_naming_the_field(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENTREGA_SERVER", raising=False)
    with pytest.raises(EntregaError, match="server.listen: expected HOST:PORT"):
        server_url("localhost")


@pytest.mark.parametrize(("host", "url"), [
    ("127.0.1.3", "http://127.0.1.3:7070"),
    ("::1", "http://[::1]:7070"),
    ("0.0.0.0", f"http://{socket.gethostname()}:7070"),  # other servers: by name
    ("::", f"http://{socket.gethostname()}:7070"),
])
def test_the_address_a_leader_advertises_to_other_servers(host: str, url: str) -> None:
    assert advertised_url(host, 7070) == url
