"""An in-process entrega API (real store, service and artifact store, no controller loop)
driven by FastAPI's TestClient, and helpers to build artifacts and sign webhooks."""

from __future__ import annotations

import hashlib
import hmac
import io
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from entrega.api.app import create_app
from entrega.config import load_config
from entrega.server import build_service
from entrega.service import Service
from tests.api.delivery import Delivery, make_delivery
from tests.insights.stack import Stack, make_stack

SECRET = "uploads-secret"
DEPLOYER_TOKEN = "ent_deployer_token"

CONFIG = """\
app: shop
server: {{listen: "127.0.0.1:7999"}}
run:
  command: "python app.py"
environments:
  - name: production
    router: {{kind: embedded, listen: "127.0.0.1:18080"}}
auth:
  webhook_secret_env: ENTREGA_TEST_UPLOADS_SECRET
  tokens:
    deployer: {{role: deployer, sha256: {deployer}}}
{auth_extra}
{extra}
"""


@dataclass
class Api:
    root: Path
    service: Service
    client: TestClient

    @property
    def state(self) -> Path:
        return self.service.config.state_path

    def stored(self) -> dict[str, int]:
        """Every file and link under the state directory that holds bytes of artifacts
        (the store, release links, staging, old upload spools), with its size."""
        found: dict[str, int] = {}
        for area in ("artifacts", "releases", "uploads"):
            base = self.state / area
            if base.exists():
                for path in base.rglob("*"):
                    found[str(path.relative_to(self.state))] = path.lstat().st_size
        return {k: v for k, v in found.items() if k != "artifacts/.staging"}

    def upload(self, version: str, artifact: bytes, *, signed: bool = True,
               signature: str | None = None, deploy: bool = False,
               fields: dict[str, str] | None = None) -> Any:
        body, content_type = multipart({"version": version,
                                        "deploy": "true" if deploy else "false",
                                        **(fields or {})}, artifact)
        headers = {"Content-Type": content_type}
        if signed:
            headers["X-Entrega-Signature-256"] = signature or sign(body)
        else:
            headers["Authorization"] = f"Bearer {DEPLOYER_TOKEN}"
        return self.client.post("/api/v1/releases", content=body, headers=headers)

    def post_json(self, path: str, data: bytes) -> Any:
        return self.client.post(path, content=data,
                                headers={"Content-Type": "application/json",
                                         "X-Entrega-Signature-256": sign(data)})

    def deployer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {DEPLOYER_TOKEN}"}


def sign(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def multipart(fields: dict[str, str], artifact: bytes,
              filename: str = "build.tar.gz") -> tuple[bytes, str]:
    boundary = "entregatestboundary"
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                  f"{value}\r\n".encode())
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; '
              f'filename="{filename}"\r\nContent-Type: application/gzip\r\n\r\n'.encode())
    out.write(artifact)
    out.write(f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def tarball(files: dict[str, bytes], mode: str = "w:gz") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def make_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Api]]:
    monkeypatch.setenv("ENTREGA_TEST_UPLOADS_SECRET", SECRET)
    made: list[TestClient] = []

    def make(extra: str = "", auth_extra: str = "", name: str = "app") -> Api:
        root = tmp_path / name
        root.mkdir()
        (root / "entrega.yaml").write_text(CONFIG.format(
            deployer=hashlib.sha256(DEPLOYER_TOKEN.encode()).hexdigest(),
            auth_extra=auth_extra, extra=extra))
        config = load_config(root / "entrega.yaml")
        service, _store = build_service(config)
        service.repo.sync_app(config.app, [e.name for e in config.environments])
        client = TestClient(create_app(service), raise_server_exceptions=False)
        made.append(client)
        return Api(root, service, client)

    yield make
    for client in made:
        client.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    return make_stack(tmp_path)


@pytest.fixture
def delivery(tmp_path: Path) -> Iterator[Delivery]:
    made = make_delivery(tmp_path)
    with made.client:
        yield made
