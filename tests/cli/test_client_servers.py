"""The CLI's client names several servers (``ENTREGA_SERVER=http://a,http://b``): one that
refuses the connection is skipped, one that took the request and then failed is not (the
request may have been done), and the one that answered is asked first from then on.

Real sockets on loopback: a small HTTP server answering JSON, an address nobody listens
on, and a server that accepts and never answers.
"""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from entrega.cli.client import Client, server_url
from entrega.errors import EntregaError, ServerUnreachable
from entrega.net import free_port


class Answering(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        data = json.dumps({"path": self.path, "port": self.server.server_address[1],
                           "received": len(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def live() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent() -> Iterator[str]:
    """Accepts connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def dead() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nobody listens: the connection is refused


def test_a_refused_server_is_skipped_and_the_one_that_answered_is_asked_first(
        live: str) -> None:
    down = dead()
    client = Client(f"{down}, {live}/")
    assert client.get("/api/v1/status")["path"] == "/api/v1/status"
    assert client.base_url == live and client.servers == [live, down]
    assert client.get("/api/v1/status")["port"] == int(live.rsplit(":", 1)[1])


def test_an_upload_sent_again_to_the_next_server_starts_from_its_first_byte(
        live: str) -> None:
    artifact = io.BytesIO(b"x" * 10_000)
    artifact.read(4_000)  # as if the refused attempt had consumed some of it
    client = Client(f"{dead()},{live}")
    answer = client.request("POST", "/api/v1/releases",
                            files={"artifact": ("a.tar.gz", artifact)})
    assert answer["received"] > 10_000  # the whole file, in its multipart envelope


def test_every_server_refusing_names_them_all() -> None:
    first, second = dead(), dead()
    with pytest.raises(ServerUnreachable) as refused:
        Client(f"{first},{second}").get("/api/v1/status")
    assert first in refused.value.message and second in refused.value.message


def test_a_server_that_took_the_request_and_did_not_answer_is_not_skipped(
        silent: str, live: str) -> None:
    client = Client(f"{silent},{live}", timeout_s=0.5)
    with pytest.raises(ServerUnreachable) as timed_out:
        client.post("/api/v1/promote")
    assert "did not answer" in timed_out.value.message and silent in timed_out.value.message
    assert client.base_url == silent  # the write may have been done there: not sent twice


def test_the_server_list_comes_from_entrega_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTREGA_SERVER", " http://a:7070/ ,http://b:7070,")
    assert server_url(None) == "http://a:7070,http://b:7070"
    assert Client(server_url(None)).servers == ["http://a:7070", "http://b:7070"]
    with pytest.raises(EntregaError, match="no server address"):
        Client(" , ")
