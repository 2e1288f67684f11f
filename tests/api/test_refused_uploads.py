"""Item 4: stage, check, then commit. A refused request (409, 413, 400, 401, any error)
leaves the artifact store, the release links and the staging area as they were."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from entrega.releases.artifacts import ArtifactStore
from tests.api.bombs import gzip_bomb
from tests.api.conftest import Api, multipart, sign, tarball

GOOD = tarball({"app.py": b"print('v1')\n"})
OTHER = tarball({"app.py": b"print('other bytes')\n"})


def _unsafe() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    return out.getvalue()


def _chunked(body: bytes) -> object:
    def chunks() -> object:
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]
    return chunks()


REFUSALS: dict[str, tuple[int, Callable[[Api], object]]] = {
    # The same version with other bytes: the bytes of the refused build are not kept.
    "conflict": (409, lambda api: api.upload("v1", OTHER)),
    "decompression-bomb": (413, lambda api: api.upload("v2", gzip_bomb(256 << 20))),
    "body-over-limit": (413, lambda api: api.upload("v2", b"x" * (300 << 10))),
    "body-over-limit-chunked": (413, lambda api: api.client.post(
        "/api/v1/releases", content=_chunked(multipart({"version": "v2"}, b"x" * (300 << 10))[0]),
        headers={"Content-Type": multipart({}, b"")[1], "Authorization": api.deployer()[
            "Authorization"]})),
    "not-a-tarball": (400, lambda api: api.upload("v2", b"this is not a tarball" * 100)),
    "unsafe-member": (400, lambda api: api.upload("v2", _unsafe())),
    "bad-version": (400, lambda api: api.upload("../x", GOOD)),
    "no-artifact-part": (400, lambda api: api.client.post(
        "/api/v1/releases", data={"version": "v2"}, headers=api.deployer())),
    "truncated-form": (400, lambda api: api.client.post(
        "/api/v1/releases", content=(body := multipart({"version": "v2"}, GOOD)[0][:-30]),
        headers={"Content-Type": multipart({}, b"")[1], "X-Entrega-Signature-256": sign(body)})),
    "bad-signature": (401, lambda api: api.upload("v2", GOOD, signature="sha256=" + "0" * 64)),
    "unsigned-no-token": (401, lambda api: api.client.post(
        "/api/v1/releases", content=multipart({"version": "v2"}, GOOD)[0],
        headers={"Content-Type": multipart({}, b"")[1]})),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_refused_upload_leaves_the_store_unchanged(make_api: Callable[..., Api],
                                                     case: str) -> None:
    api = make_api(auth_extra="  max_body_bytes: 262144")
    assert api.upload("v1", GOOD).status_code == 201
    before = api.stored()
    status, send = REFUSALS[case]
    response = send(api)
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert api.stored() == before
    assert not list((api.state / "artifacts" / ".staging").iterdir())
    assert [r.version for r in api.service.repo.releases("shop")] == ["v1"]
    body = response.text  # type: ignore[attr-defined]
    assert str(api.root) not in body and "Error" not in body.split('"hint"')[0]


def test_a_large_json_body_is_refused_before_it_is_parsed(api: Api) -> None:
    before = api.stored()
    response = api.post_json("/api/v1/releases",
                             b'{"version": "v2", "artifact": "' + b"a" * (2 << 20) + b'"}')
    assert response.status_code == 413 and "JSON body" in response.json()["error"]
    assert api.stored() == before


def test_the_same_bytes_again_store_nothing_new(api: Api) -> None:
    assert api.upload("v1", GOOD).status_code == 201
    before = api.stored()
    again = api.upload("v1", GOOD)
    assert again.status_code == 200 and again.json()["created"] is False
    assert api.stored() == before


def test_staging_left_by_a_crash_is_swept(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    body = store.new_staging_dir("upload-") / "body"
    body.write_bytes(b"x" * 1000)
    (tmp_path / "uploads" / "upload-old").mkdir(parents=True)
    (tmp_path / "uploads" / "upload-old" / "body").write_bytes(b"y")
    kept = tmp_path / "artifacts" / ("0" * 64)
    kept.mkdir()
    assert store.sweep_staging() == 2
    assert not list(store.staging_root.iterdir()) and not list((tmp_path / "uploads").iterdir())
    assert kept.is_dir()
