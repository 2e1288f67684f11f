"""Item 6: the API never reads a server-side path or fetches a URL it is handed, unless
``auth.artifact_sources`` allows it; when it refuses, the answer is the same whatever the
location (no oracle for files or ports), and never shows a server path."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from entrega.releases.sources import judge_path, judge_url
from tests.api.conftest import Api, tarball

ARTIFACT = tarball({"app.py": b"print('served')\n"})


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server on loopback serving ``/builds/app.tar.gz`` and a redirect."""
    (tmp_path / "www" / "builds").mkdir(parents=True)
    (tmp_path / "www" / "builds" / "app.tar.gz").write_bytes(ARTIFACT)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path / "www"), **kwargs)  # type: ignore[arg-type]

        def do_GET(self) -> None:
            if self.path == "/builds/moved.tar.gz":
                self.send_response(302)
                self.send_header("Location", "/secret/app.tar.gz")
                self.end_headers()
                return
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _locations(api: Api, open_url: str) -> dict[str, str]:
    secret = api.root / "secret"
    secret.mkdir(exist_ok=True)
    (secret / "id_rsa").write_text("PRIVATE")
    return {
        "existing-dir": str(secret),
        "existing-file": str(secret / "id_rsa"),
        "missing": str(api.root / "no-such-thing"),
        "state-dir": str(api.state),
        "relative": "build",
        "file-url": f"file://{secret}",
        "open-port": f"{open_url}/builds/app.tar.gz",
        "closed-port": f"http://127.0.0.1:{_closed_port()}/x.tar.gz",
    }


def test_webhook_and_deploy_refuse_every_location_alike(api: Api, file_server: str) -> None:
    before = api.stored()
    answers = set()
    for name, location in _locations(api, file_server).items():
        webhook = api.post_json("/api/v1/releases",
                                json.dumps({"version": "v1", "artifact": location}).encode())
        deploy = api.client.post("/api/v1/environments/production/deploy",
                                 json={"version": "v1", "artifact": location},
                                 headers=api.deployer())
        for response in (webhook, deploy):
            assert response.status_code == 400, (name, response.text)
            assert str(api.root) not in response.text, name
            answers.add(response.text)
    assert len(answers) == 1, answers  # one answer whatever the location: no oracle
    assert "uploaded bytes" in answers.pop()
    assert api.stored() == before
    assert api.service.repo.release("shop", "v1") is None


ALLOW = """\
  artifact_sources:
    paths: [builds]
    urls: ["{url}/builds/"]
"""


@pytest.fixture
def allowing(make_api: Callable[..., Api], file_server: str) -> Api:
    api = make_api(auth_extra=ALLOW.format(url=file_server))
    build = api.root / "builds" / "v1"
    build.mkdir(parents=True)
    (build / "app.py").write_text("print('v1')\n")
    return api


def test_an_allowed_path_creates_the_release(allowing: Api) -> None:
    response = allowing.client.post("/api/v1/environments/production/deploy",
                                    json={"version": "v1", "artifact":
                                          str(allowing.root / "builds" / "v1")},
                                    headers=allowing.deployer())
    assert response.status_code == 201, response.text
    stored = allowing.service.artifacts.path_for(allowing.service.release("v1").digest)
    assert (stored / "app.py").read_text() == "print('v1')\n"


def test_an_allowed_url_is_downloaded(allowing: Api, file_server: str) -> None:
    body = json.dumps({"version": "v1", "artifact": f"{file_server}/builds/app.tar.gz",
                       "deploy": False}).encode()
    response = allowing.post_json("/api/v1/releases", body)
    assert response.status_code == 201, response.text
    stored = allowing.service.artifacts.path_for(response.json()["digest"])
    assert (stored / "app.py").read_text() == "print('served')\n"
    assert not list((allowing.state / "artifacts" / ".staging").iterdir())


@pytest.mark.parametrize("where", ["state-dir", "state-db", "parent-of-state", "outside",
                                   "dotdot-escape", "symlink-out", "other-port", "redirect"])
def test_outside_the_allowlist_is_refused(allowing: Api, file_server: str,
                                          where: str) -> None:
    builds = allowing.root / "builds"
    (builds / "out").symlink_to(allowing.root)
    # The state directory is never a source, even when an allowed directory holds it.
    state_link = builds / "state"
    state_link.symlink_to(allowing.state)
    location = {
        "state-dir": str(state_link),
        "state-db": str(state_link / "state.db"),
        "parent-of-state": str(allowing.root),
        "outside": "/etc",
        "dotdot-escape": str(builds / ".." / "entrega.yaml"),
        "symlink-out": str(builds / "out" / "entrega.yaml"),
        "other-port": f"http://127.0.0.1:{_closed_port()}/builds/app.tar.gz",
        "redirect": f"{file_server}/builds/moved.tar.gz",
    }[where]
    before = allowing.stored()
    response = allowing.client.post("/api/v1/environments/production/deploy",
                                    json={"version": "v1", "artifact": location},
                                    headers=allowing.deployer())
    assert response.status_code == 400, response.text
    assert str(allowing.state) not in response.text
    if where != "redirect":
        assert "uploaded bytes" in response.json()["error"]
    assert allowing.stored() == before


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://a.example/builds/x.tgz", True),
        ("https://a.example/builds/", True),
        ("https://a.example:443/builds/x.tgz", True),
        ("https://A.EXAMPLE/builds/x.tgz", True),
        ("http://a.example/builds/x.tgz", False),
        ("https://a.example:8443/builds/x.tgz", False),
        ("https://a.example.evil/builds/x.tgz", False),
        ("https://a.example@evil.example/builds/x.tgz", False),
        ("https://evil.example@a.example/builds/x.tgz", False),
        ("https://a.example/buildsx/y.tgz", False),
        ("https://a.example/builds/../secret", False),
        ("https://a.example/builds/%2e%2e/secret", False),
        ("https://a.example:99999/builds/x", False),
        ("ftp://a.example/builds/x", False),
    ])
def test_judge_url(url: str, allowed: bool) -> None:
    assert judge_url(url, allowed=["https://a.example/builds/"]) is allowed


@pytest.mark.parametrize(
    ("candidate", "state_dir", "allowed"),
    [
        ("/srv/builds/v1", "/var/lib/entrega", True),
        ("/srv/builds", "/var/lib/entrega", True),
        ("/srv/buildsx", "/var/lib/entrega", False),
        ("/srv", "/var/lib/entrega", False),
        ("/srv/builds/v1", "/srv/builds/state", True),
        ("/srv/builds/state", "/srv/builds/state", False),
        ("/srv/builds/state/artifacts", "/srv/builds/state", False),
        ("/srv/builds", "/srv/builds/state", False),  # copying it would copy the state
    ])
def test_judge_path(candidate: str, state_dir: str, allowed: bool) -> None:
    verdict = judge_path(Path(candidate), allowed=[Path("/srv/builds")],
                         state_dir=Path(state_dir))
    assert verdict is allowed
