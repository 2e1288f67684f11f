"""A server whose configured webhook secret variable is unset or empty says so at start,
and stays closed: signed webhooks are refused (there is nothing to check them with) and
unsigned uploads are refused as when the secret is set, instead of the empty variable
silently turning the configured check off."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Deployment, serving

pytestmark = pytest.mark.real

VARIABLE = "ENTREGA_TEST_MISSING_SECRET"


@pytest.fixture(params=["empty", "not set"])
def variable_state(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def deployment(variable_state: str, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    if variable_state == "empty":
        monkeypatch.setenv(VARIABLE, "")
    else:
        monkeypatch.delenv(VARIABLE, raising=False)
    dep = Deployment(tmp_path)
    dep.config.write_text(dep.config.read_text().replace(
        "run:\n", f"auth: {{webhook_secret_env: {VARIABLE}}}\nrun:\n", 1))
    yield from serving(dep)


def upload(dep: Deployment, *, secret: str | None) -> httpx.Response:
    with httpx.Client(base_url=dep.api, timeout=30) as client:
        request = client.build_request(
            "POST", "/api/v1/releases", data={"version": "v1"},
            files={"artifact": ("v1.tar.gz", b"not even a tarball", "application/gzip")})
        body = request.read()
        if secret is not None:
            mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            request.headers["X-Entrega-Signature-256"] = f"sha256={mac}"
        return client.send(request)


def test_the_server_warns_and_refuses_uploads(deployment: Deployment,
                                              variable_state: str) -> None:
    dep = deployment
    warnings = [entry for line in dep.server_log().splitlines() if line.startswith("{")
                and (entry := json.loads(line))["level"] == "warning"]
    assert any(f"auth.webhook_secret_env names {VARIABLE}, which is "
               f"{variable_state} in the server's environment: signed webhooks are refused "
               "(401)" in w["message"] for w in warnings), dep.server_log()

    signed = upload(dep, secret="")
    assert signed.status_code == 401, signed.text
    assert "no webhook secret to check it with" in signed.json()["error"]
    assert VARIABLE not in signed.text  # the variable's name is for the log, not for callers

    unsigned = upload(dep, secret=None)
    assert unsigned.status_code == 401, unsigned.text
    assert "not signed" in unsigned.json()["error"]

    releases = httpx.get(f"{dep.api}/api/v1/releases", timeout=10)
    assert releases.status_code == 200 and releases.json() == []
