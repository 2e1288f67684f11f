"""Artifacts through a real server: the API answers while a large one is stored, a client
gone mid-upload leaves nothing, leftovers of a crash are swept at start, and the CLI
uploads the bytes (the server reads no path it is handed)."""

from __future__ import annotations

import json
import socket
import tarfile
from pathlib import Path

import httpx
import pytest
from bench.upload import SECRET, make_artifact, multipart_body, sign, upload_while_polling

from tests.e2e.conftest import Deployment, wait_for

pytestmark = [pytest.mark.real]

MiB = 1 << 20


def _state_files(dep: Deployment) -> set[str]:
    state = dep.root / ".entrega"
    return {str(p.relative_to(state)) for area in ("artifacts", "releases", "uploads")
            for p in (state / area).rglob("*")} - {"artifacts/.staging"}


def test_the_api_answers_while_a_large_artifact_is_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTREGA_BENCH_SECRET", SECRET)
    dep = Deployment(tmp_path / "app")
    dep.config.write_text(dep.config.read_text().replace(
        "run:", "auth: {webhook_secret_env: ENTREGA_BENCH_SECRET}\nrun:", 1))
    artifact = make_artifact(tmp_path / "build.tar.gz", 96 * MiB)
    body, content_type = multipart_body("v1", artifact, tmp_path)
    dep.start_server()
    try:
        result = upload_while_polling(dep.api, body, content_type, sign(body, SECRET))
    finally:
        dep.stop()
    print(f"\n96 MiB upload: {result}")
    assert result["status"] == 201, result
    assert result["healthz_requests"] >= 10
    # The target is 100 ms; the bound is loose for a loaded CI machine. Before the fix
    # the server did not answer for the whole unpack (seconds).
    assert result["healthz_max_ms"] < 1000, result


def test_a_client_gone_mid_upload_leaves_nothing(deployment: Deployment) -> None:
    deployment.deploy("v1")
    before = _state_files(deployment)
    host, port = deployment.api.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(b"POST /api/v1/releases HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 50000000\r\n\r\n"
                     b'--b\r\nContent-Disposition: form-data; name="artifact"; '
                     b'filename="a.tgz"\r\n\r\n')
        for _ in range(40):  # 10 MiB, then the client vanishes
            conn.sendall(b"\0" * (256 * 1024))
        staging = deployment.root / ".entrega" / "artifacts" / ".staging"
        wait_for(lambda: any(staging.glob("upload-*/body")), 10, "the upload to be spooled")
    wait_for(lambda: _state_files(deployment) == before, 10,
             "the spooled body to be deleted")
    assert httpx.get(deployment.api + "/healthz", timeout=5).status_code == 200


def test_leftovers_of_a_crash_are_swept_at_start(tmp_path: Path) -> None:
    dep = Deployment(tmp_path / "app")
    state = dep.root / ".entrega"
    for leftover in (state / "artifacts" / ".staging" / "upload-x" / "body",
                     state / "artifacts" / ".staging" / "tree-y" / "tree" / "big.bin",
                     state / "uploads" / "upload-z" / "body"):
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b"\0" * MiB)
    dep.start_server()
    try:
        assert not list((state / "artifacts" / ".staging").iterdir())
        assert not list((state / "uploads").iterdir())
    finally:
        dep.stop()


def test_cli_deploy_uploads_the_artifact_bytes(deployment: Deployment) -> None:
    # The server allows no artifact location (the default): the CLI must send the bytes.
    rollout = deployment.deploy("v1")
    assert rollout["version"] == "v1"
    release = next(r for r in httpx.get(deployment.api + "/api/v1/releases", timeout=5).json()
                   if r["version"] == "v1")
    assert release["meta"].get("author"), release  # set by the upload form, not a path
    wait_for(lambda: deployment.served_by(n=3).get("v1") == 3, 30, "v1 to serve")
    # Naming the directory instead is refused, with no server path in the answer.
    path = str(deployment.artifact("v2"))
    refused = httpx.post(deployment.api + "/api/v1/environments/production/deploy",
                         json={"version": "v2", "artifact": path}, timeout=10)
    assert refused.status_code == 400
    assert path not in refused.text and "uploaded bytes" in refused.json()["error"]
    assert json.loads(deployment.cli("status", "--json").stdout)["environments"][0][
        "current"] == "v1"
    # `release create` uploads a directory (packed) or a tarball as it is.
    created = deployment.cli_json("release", "create", "v2", "--artifact", path,
                                  "--no-deploy", "--commit-sha", "abc123")
    assert created["created"] is True
    tarball = deployment.root / "v2.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for item in sorted(Path(path).iterdir()):
            tar.add(item, arcname=item.name)
    again = deployment.cli_json("release", "create", "v2", "--artifact", str(tarball),
                                "--no-deploy")
    assert again["created"] is False and again["digest"] == created["digest"]
