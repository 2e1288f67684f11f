"""The host agent's podman runtime, through its command line (``hostctl``) as a controller
drives it over SSH, against real podman: a release's image loaded from its artifact,
two containers started, observed, adopted by a start that knows nothing of them, a
crashing container explained in its own words, a stop that drains; and the image id
read from an archive, by a table.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from entrega.dataplane.instances.containers import IMAGE_ARCHIVE, image_id_of
from tests.fleet.podman import (
    CRASH,
    STUBBORN,
    build_release,
    podman,
    remove_containers,
    remove_image,
    require_podman,
)

pytestmark = [pytest.mark.real]

HOSTCTL = "entrega.dataplane.instances.hostctl"
ADDRESS = "127.0.0.1"


def hostctl(operation: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One operation, as one command: what the ssh target runs on a host."""
    done = subprocess.run([sys.executable, "-m", HOSTCTL, operation],
                          input=json.dumps(request), capture_output=True, text=True,
                          timeout=180, check=False)
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def where(tmp_path: Path) -> Iterator[dict[str, Any]]:
    require_podman()
    state_dir = (tmp_path / "state").resolve()
    yield {"app": "shop", "environment": "production", "state_dir": str(state_dir),
           "address": ADDRESS, "runtime": "podman"}
    remove_containers(f"entrega.home={state_dir}")


def start_request(where: dict[str, Any], release: Path, version: str,
                  instances: int = 2) -> dict[str, Any]:
    return {**where, "version": version, "path": str(release), "command": "unused",
            "env": {"GREETING": "hola"}, "instances": instances}


def wait_for(predicate: Any, *, timeout_s: float = 30, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def answers(port: int, path: str) -> str | None:
    try:
        response = httpx.get(f"http://{ADDRESS}:{port}{path}", timeout=2, trust_env=False)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def test_two_containers_started_observed_adopted_and_stopped_with_drain(
        where: dict[str, Any], tmp_path: Path) -> None:
    release = build_release(tmp_path, "v1")
    image_id = image_id_of(release / IMAGE_ARCHIVE)
    assert image_id is not None
    try:
        code, answer = hostctl("start", start_request(where, release, "v1"))
        assert code == 0, answer
        endpoints = answer["endpoints"]
        assert [(e["host"], e["instance"]) for e in endpoints] == [(ADDRESS, "0"),
                                                                    (ADDRESS, "1")]
        ports = [e["port"] for e in endpoints]
        assert len(set(ports)) == 2
        # The image was loaded from the artifact (the test removed it after saving).
        podman("image", "exists", image_id)
        for port in ports:
            assert wait_for(lambda p=port: answers(p, "/VERSION"), what="v1 answers") == "v1"

        code, observed = hostctl("observe", where)
        assert code == 0, observed
        running = {(o["version"], o["instance"], o["port"], o["status"], o["alive"])
                   for o in observed["instances"]}
        assert running == {("v1", "0", ports[0], "running", True),
                           ("v1", "1", ports[1], "running", True)}
        pids = {o["instance"]: o["pid"] for o in observed["instances"]}
        assert all(isinstance(pid, int) and pid > 0 for pid in pids.values())
        ids = set(podman("ps", "--quiet", "--no-trunc", "--filter",
                         f"label=entrega.home={where['state_dir']}").split())
        assert len(ids) == 2
        env = podman("exec", sorted(ids)[0], "/bin/busybox", "env")
        assert "GREETING=hola" in env and f"HOST={ADDRESS}" in env
        assert "ENTREGA_VERSION=v1" in env

        # A controller that forgot everything starts again: it adopts what runs.
        code, again = hostctl("start", start_request(where, release, "v1"))
        assert code == 0, again
        assert again["endpoints"] == endpoints
        code, observed = hostctl("observe", {**where, "version": "v1"})
        assert {o["instance"]: o["pid"] for o in observed["instances"]} == pids
        assert set(podman("ps", "--quiet", "--no-trunc", "--filter",
                          f"label=entrega.home={where['state_dir']}").split()) == ids

        # The app leaves on SIGTERM: the stop takes that, not the 10 s drain allowed.
        began = time.monotonic()
        code, stopped = hostctl("stop", {**where, "version": "v1", "drain_s": 10})
        assert code == 0, stopped
        assert sorted(stopped["stopped"]) == ["0", "1"]
        assert time.monotonic() - began < 8
        assert hostctl("observe", where) == (0, {"instances": []})
        assert all(answers(port, "/healthz") is None for port in ports)
        assert hostctl("stop", {**where, "version": "v1", "drain_s": 10}) == \
            (0, {"stopped": []})
    finally:
        remove_containers(f"entrega.home={where['state_dir']}")
        remove_image(image_id)


def test_a_container_left_exited_is_started_again_on_its_port(
        where: dict[str, Any], tmp_path: Path) -> None:
    """As after a reboot without podman's systemd unit: the container exists, exited."""
    release = build_release(tmp_path, "v1")
    image_id = image_id_of(release / IMAGE_ARCHIVE)
    assert image_id is not None
    try:
        code, answer = hostctl("start", start_request(where, release, "v1", instances=1))
        assert code == 0, answer
        port = answer["endpoints"][0]["port"]
        container = podman("ps", "--quiet", "--no-trunc", "--filter",
                           f"label=entrega.home={where['state_dir']}").strip()
        podman("stop", "--time", "5", container)
        assert answers(port, "/healthz") is None

        code, again = hostctl("start", start_request(where, release, "v1", instances=1))
        assert code == 0, again
        assert again["endpoints"] == answer["endpoints"]
        assert wait_for(lambda: answers(port, "/VERSION"), what="v1 back") == "v1"
        assert podman("ps", "--quiet", "--no-trunc", "--filter",
                      f"label=entrega.home={where['state_dir']}").strip() == container
    finally:
        remove_containers(f"entrega.home={where['state_dir']}")
        remove_image(image_id)


def test_an_app_that_ignores_sigterm_gets_the_drain_then_is_killed(
        where: dict[str, Any], tmp_path: Path) -> None:
    release = build_release(tmp_path, "v1", script=STUBBORN)
    image_id = image_id_of(release / IMAGE_ARCHIVE)
    assert image_id is not None
    try:
        code, answer = hostctl("start", start_request(where, release, "v1", instances=1))
        assert code == 0, answer
        port = answer["endpoints"][0]["port"]
        assert wait_for(lambda: answers(port, "/VERSION"), what="v1 answers") == "v1"
        began = time.monotonic()
        code, stopped = hostctl("stop", {**where, "version": "v1", "drain_s": 3})
        took_s = time.monotonic() - began
        assert code == 0, stopped
        assert stopped["stopped"] == ["0"]
        # It was given the whole drain, then killed (podman SIGKILLs at its end).
        assert 3 <= took_s < 3 + 10, took_s
        assert answers(port, "/healthz") is None
        assert hostctl("observe", where) == (0, {"instances": []})
    finally:
        remove_containers(f"entrega.home={where['state_dir']}")
        remove_image(image_id)


def test_a_crashing_container_is_restarted_and_explained_in_its_own_words(
        where: dict[str, Any], tmp_path: Path) -> None:
    release = build_release(tmp_path, "v1", script=CRASH)
    image_id = image_id_of(release / IMAGE_ARCHIVE)
    assert image_id is not None
    try:
        code, answer = hostctl("start", start_request(where, release, "v1", instances=1))
        assert code == 0, answer

        def crashed_twice() -> dict[str, Any] | None:
            code, explained = hostctl("explain", {**where, "version": "v1"})
            assert code == 0, explained
            reports = explained["instances"]
            return reports[0] if reports and reports[0]["exits"] >= 2 else None

        report = wait_for(crashed_twice, what="two exits")
        assert report["instance"] == "0" and report["restarts"] >= 1
        assert "restarted" in report["note"]
        assert "shop: cannot reach the database" in report["stderr"]
        code, stopped = hostctl("stop", {**where, "version": "v1", "drain_s": 1})
        assert code == 0, stopped
        assert hostctl("observe", where) == (0, {"instances": []})
    finally:
        remove_containers(f"entrega.home={where['state_dir']}")
        remove_image(image_id)


def test_a_restarted_container_still_tells_its_last_exit_code(
        where: dict[str, Any], tmp_path: Path) -> None:
    # podman clears State.ExitCode when it restarts a container: while the app runs
    # again, its last exit code must still be told (a crash loop's message quotes it).
    release = build_release(tmp_path, "v1", script=CRASH.replace("exit 4", "sleep 3; exit 4"))
    image_id = image_id_of(release / IMAGE_ARCHIVE)
    assert image_id is not None
    try:
        code, answer = hostctl("start", start_request(where, release, "v1", instances=1))
        assert code == 0, answer

        def running_again() -> dict[str, Any] | None:
            code, explained = hostctl("explain", {**where, "version": "v1"})
            assert code == 0, explained
            reports = explained["instances"]
            return reports[0] if reports and reports[0]["restarts"] >= 1 \
                and "has been restarted" in reports[0]["note"] else None

        report = wait_for(running_again, what="a restart, running again")
        assert report["last_exit_code"] == 4
    finally:
        remove_containers(f"entrega.home={where['state_dir']}")
        remove_image(image_id)


def test_a_release_without_an_image_is_refused_in_words(where: dict[str, Any],
                                                         tmp_path: Path) -> None:
    release = tmp_path / "artifacts" / "v1"
    release.mkdir(parents=True)
    (release / "app.py").write_text("print('a process release')\n")
    code, answer = hostctl("start", start_request(where, release, "v1"))
    assert code == 1
    assert answer["error"] == ("cannot start shop v1 in production with podman: its "
                               "artifact has no image.tar")
    assert "podman save --format oci-archive" in answer["hint"]

    (release / IMAGE_ARCHIVE).write_text("not a tar")
    code, answer = hostctl("start", start_request(where, release, "v1"))
    assert code == 1
    assert "is not an OCI or docker image archive" in answer["error"]


def test_an_unknown_runtime_is_a_bad_request(where: dict[str, Any]) -> None:
    code, answer = hostctl("observe", {**where, "runtime": "docker"})
    assert code == 2
    assert answer["error"] == "field 'runtime': expected one of process, podman, got 'docker'"


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


CONFIG = "sha256:" + "c" * 64
MANIFEST = "sha256:" + "a" * 64


def _index(*manifests: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m}
        for m in manifests]}).encode()


@pytest.mark.parametrize(("members", "expected"), [
    ({"index.json": _index(MANIFEST),
      "blobs/sha256/" + "a" * 64: json.dumps({"config": {"digest": CONFIG}}).encode()}, CONFIG),
    ({"manifest.json": json.dumps([{"Config": "c" * 64 + ".json"}]).encode()}, CONFIG),
    ({"manifest.json": json.dumps([{"Config": "blobs/sha256/" + "c" * 64}]).encode()}, CONFIG),
    ({"index.json": _index(MANIFEST, MANIFEST)}, None),
    ({"index.json": _index(MANIFEST)}, None),
    ({"index.json": b"{not json"}, None),
    ({"manifest.json": json.dumps([{"Config": "../etc/passwd"}]).encode()}, None),
    ({"app.py": b"print()"}, None),
], ids=["oci", "docker-save", "docker-oci-layout", "two-images", "manifest-missing",
        "broken-index", "config-not-a-digest", "not-an-image"])
def test_the_image_id_is_read_from_the_archive(tmp_path: Path, members: dict[str, bytes],
                                               expected: str | None) -> None:
    assert image_id_of(_tar(tmp_path / "image.tar", members)) == expected


def test_an_archive_that_is_no_tar_has_no_image_id(tmp_path: Path) -> None:
    (tmp_path / "image.tar").write_text("not a tar")
    assert image_id_of(tmp_path / "image.tar") is None
    assert image_id_of(tmp_path / "missing.tar") is None
