"""Whole deliveries with the store on PostgreSQL (``store.url: postgresql+psycopg://``): a
real server, router, app processes and traffic, as on SQLite; kill -9 of the server in the
middle of a canary, the next server finishes it; and a second server on the same database
and the same ``artifacts.dir`` deploys a release the first one received."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from entrega.config import load_config
from entrega.releases.artifacts import artifact_store_for
from tests.e2e.conftest import Deployment, Users, wait_for

pytestmark = [pytest.mark.real, pytest.mark.slow]

CANARY = """\
      canary:
        steps:
          - weight: 20
          - pause: {duration_s: 2}
          - analysis: {duration_s: 4, metrics: [error-rate]}
          - weight: 60
          - pause: {}
          - weight: 100
"""


def on_postgres(dep: Deployment, store_url: str, artifacts_dir: Path | None = None
                ) -> Deployment:
    """``dep`` with its store on PostgreSQL (and its release bytes in ``artifacts_dir``)."""
    extra = f"store: {{url: {json.dumps(store_url)}}}\n"
    if artifacts_dir is not None:
        extra += f"artifacts: {{dir: {json.dumps(str(artifacts_dir))}}}\n"
    dep.config.write_text(dep.config.read_text() + extra)
    return dep


def rollouts_in(store_url: str) -> list[tuple[str, str]]:
    """(version, phase) of every rollout, read from PostgreSQL itself."""
    with psycopg.connect(store_url.replace("postgresql+psycopg://", "postgresql://")) as db:
        return [(str(v), str(p)) for v, p in
                db.execute("SELECT version, phase FROM rollouts ORDER BY id").fetchall()]


@pytest.fixture
def deployments() -> Iterator[list[Deployment]]:
    made: list[Deployment] = []
    yield made
    for dep in made:
        dep.stop()


def test_a_delivery_on_postgresql_is_promoted_then_restored(
        tmp_path: Path, postgres_url: str, deployments: list[Deployment]) -> None:
    dep = on_postgres(Deployment(tmp_path / "a"), postgres_url)
    deployments.append(dep)
    dep.start_server()
    v1 = dep.deploy("v1")
    dep.wait_phase(v1["id"], {"succeeded"})
    with Users(dep.router_url) as users:
        rollout = dep.deploy("v2")
        paused = dep.wait_phase(rollout["id"], {"paused"})
        assert paused["weights"] == {"v1": 80, "v2": 20}
        dep.cli("promote")
        dep.wait_phase(rollout["id"], {"succeeded"})
        wait_for(lambda: dep.served_by() == {"v2": 20}, what="v2 to serve everything")
        assert "back to v1" in dep.cli("rollback", "--to", "v1").stdout
        wait_for(lambda: dep.status()["current"] == "v1", what="v1 to be current again")
        wait_for(lambda: dep.served_by() == {"v1": 20}, what="v1 to serve everything")
        wait_for(lambda: users.by_release["v1"] > 20, what="users back on v1")
    assert users.failures == []
    assert users.by_release["v2"] > 0
    # The state is in PostgreSQL, and only there.
    versions = [v for v, _ in rollouts_in(postgres_url)]
    assert versions == ["v1", "v2", "v1"]
    assert [p for _, p in rollouts_in(postgres_url)] == ["succeeded"] * 3
    assert not (dep.root / ".entrega" / "state.db").exists()
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://")) as db:
        purposes = [p for (p,) in db.execute("SELECT purpose FROM rollouts ORDER BY id")]
    assert purposes == ["deploy", "deploy", "rollback"]
    assert "promoted" in [e["kind"] for e in dep.cli_json("history", "--limit", "500")]


@pytest.mark.parametrize("kill_in", ["analysis", "paused"])
def test_kill_9_mid_rollout_the_next_server_finishes_it(
        tmp_path: Path, postgres_url: str, deployments: list[Deployment], kill_in: str) -> None:
    dep = on_postgres(Deployment(tmp_path / "a", CANARY), postgres_url)
    deployments.append(dep)
    dep.start_server()
    v1 = dep.deploy("v1")
    dep.wait_phase(v1["id"], {"succeeded"})
    stable_pids = sorted(dep.instance_pids()["v1"])
    with Users(dep.router_url) as users:
        rid = dep.deploy("v2")["id"]
        if kill_in == "analysis":
            wait_for(lambda: dep.rollout_by_id(rid)["analysis"] is not None,
                     what="the analysis step")
        else:
            dep.wait_phase(rid, {"paused"})
        before = dep.rollout_by_id(rid)
        dep.kill_server()
        served = users.total
        wait_for(lambda: users.total > served + 60, what="traffic while the controller is down")

        dep.start_server()
        adopted = [e for e in dep.cli_json("history", "--limit", "500")
                   if e["kind"] == "adopted"]
        assert len(adopted) == 1, adopted
        assert sorted(i["pid"] for i in adopted[0]["data"]["instances"]["v1"]) == stable_pids
        assert dep.rollout_by_id(rid)["step_index"] >= before["step_index"]
        dep.wait_phase(rid, {"paused"}, timeout_s=40)
        assert dep.rollout_by_id(rid)["weights"] == {"v1": 40, "v2": 60}
        dep.cli("promote")
        assert dep.wait_phase(rid, {"succeeded"})["weights"] == {"v2": 100}
        wait_for(lambda: "v1" not in dep.instance_pids(), what="v1 to be stopped")
    assert users.failures == []
    assert users.by_release["v1"] > 0 and users.by_release["v2"] > 0
    history = dep.cli_json("history", "--limit", "500")
    assert len([e for e in history if e["kind"] == "step"
                and "receives 60%" in e["message"]]) == 1
    assert rollouts_in(postgres_url) == [("v1", "succeeded"), ("v2", "succeeded")]


def dead_pid() -> int:
    """The pid of a process that has ended."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    return ended.pid


def test_a_second_server_deploys_a_release_the_first_received(
        tmp_path: Path, postgres_url: str, deployments: list[Deployment]) -> None:
    shared = tmp_path / "shared-artifacts"
    first = on_postgres(Deployment(tmp_path / "first"), postgres_url, shared)
    deployments.append(first)
    first.start_server()
    first.cli("release", "create", "v1", "--artifact", str(first.artifact("v1")),
              "--no-deploy")
    first.stop()
    # Only the shared directory holds the bytes: the first server's own files are gone.
    [stored] = [p for p in (shared / "artifacts").iterdir() if not p.name.startswith(".")]
    assert (stored / "VERSION").read_text() == "v1"
    assert not (first.root / ".entrega" / "artifacts").exists()
    shutil.rmtree(first.root / "artifacts")  # the build's own copy: not where a deploy reads

    second = on_postgres(Deployment(tmp_path / "second"), postgres_url, shared)
    deployments.append(second)
    # An upload of the first server in flight, and one the second left by a crash: the
    # starting second server sweeps its own only.
    # (A crash's leftover is named with a pid that no longer runs; "theirs" carries this
    # test's pid, a process that runs, as the first server's would.)
    theirs = artifact_store_for(load_config(first.config)).new_staging_dir("upload-")
    ours_store = artifact_store_for(load_config(second.config))
    ours = ours_store.staging_root / f"upload-{dead_pid()}-crashed"
    ours.mkdir(parents=True)
    second.start_server()
    assert theirs.is_dir() and not ours.exists()
    rollout = json.loads(second.cli("deploy", "v1", "--json").stdout)
    second.wait_phase(rollout["id"], {"succeeded"})
    wait_for(lambda: second.served_by() == {"v1": 20}, what="v1 served by the second server")
    assert not (second.root / ".entrega" / "artifacts").exists()
    assert rollouts_in(postgres_url) == [("v1", "succeeded")]
