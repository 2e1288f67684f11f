"""The CLI's upload (what `deploy --artifact` and `release create` send), in process: a
directory is packed and uploaded, a tarball is sent as it is, and the server stores the
bytes it received (it is handed no path)."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest

from entrega.cli.artifact import upload_release
from entrega.cli.client import Client
from entrega.errors import EntregaError
from tests.api.conftest import DEPLOYER_TOKEN, Api


def _client(api: Api, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setenv("ENTREGA_TOKEN", DEPLOYER_TOKEN)
    client = Client("http://testserver")
    client._http = api.client  # the same httpx.Client API, served in process
    api.client.headers["Authorization"] = f"Bearer {DEPLOYER_TOKEN}"
    return client


def test_a_directory_is_packed_and_uploaded(api: Api, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    build = tmp_path / "build"
    (build / "lib").mkdir(parents=True)
    (build / "app.py").write_text("print('v1')\n")
    (build / "lib" / "data.txt").write_text("data")
    (build / "__pycache__").mkdir()
    (build / "__pycache__" / "app.pyc").write_bytes(b"junk")
    answer = upload_release(_client(api, monkeypatch), "v1", build, deploy=False,
                            fields={"commit_sha": "abc"})
    assert answer["created"] is True
    stored = api.service.artifacts.path_for(answer["digest"])
    assert (stored / "app.py").read_text() == "print('v1')\n"
    assert (stored / "lib" / "data.txt").read_text() == "data"
    assert not (stored / "__pycache__").exists()
    release = api.service.release("v1")
    assert release.meta["commit_sha"] == "abc" and release.meta.get("author")
    # Moving the directory away changes nothing: the server keeps the bytes, not a path.
    shutil.rmtree(build)
    assert api.service.artifacts.verify(answer["digest"]) == stored


def test_a_tarball_is_sent_as_it_is(api: Api, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "app.py").write_text("print('v2')\n")
    tarball = tmp_path / "build.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "app.py", arcname="app.py")
    answer = upload_release(_client(api, monkeypatch), "v2", tarball, deploy=False)
    stored = api.service.artifacts.path_for(answer["digest"])
    assert (stored / "app.py").read_text() == "print('v2')\n"


def test_a_missing_artifact_is_a_clear_error(api: Api, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EntregaError, match="does not exist"):
        upload_release(_client(api, monkeypatch), "v3", tmp_path / "nope", deploy=False)
