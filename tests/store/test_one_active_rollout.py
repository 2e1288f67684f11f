"""One rollout in progress per environment: the store forbids a second one (a partial
unique index), the service decides under the environment's lock, and the migration that
adds the index upgrades a store that already holds data (duplicates included)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from entrega.config import load_config
from entrega.errors import RolloutInProgress
from entrega.rollouts.model import state_from_dict
from entrega.server import build_service
from entrega.service import Service
from entrega.store import Store
from entrega.store.database import _MIGRATIONS
from entrega.store.repository import Repository
from entrega.views import DeployStarted
from entrega.waiting import wait_until

CONFIG = """\
app: shop
server: {listen: "127.0.0.1:7998"}
run:
  command: "python app.py"
environments:
  - name: production
    router: {kind: embedded, listen: "127.0.0.1:18090"}
"""

INSERT = text(
    "INSERT INTO rollouts (app, environment, version, from_version, strategy, phase, spec, "
    "state, created_at, updated_at, finished_at, created_by, reason, purpose) VALUES "
    "(:app, :env, :version, NULL, 'direct', :phase, '{}', :state, 0, 0, NULL, 'test', '', "
    "'deploy')")


def _upgrade(store: Store, revision: str) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", _MIGRATIONS)
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _insert(store: Store, version: str, phase: str, env: str = "production") -> None:
    with store.engine.begin() as connection:
        connection.execute(INSERT, {"app": "shop", "env": env, "version": version,
                                    "phase": phase, "state": f'{{"phase": "{phase}"}}'})


@pytest.fixture
def store(store: Store) -> Store:
    Repository(store).sync_app("shop", ["staging", "production"])
    return store


def test_a_direct_insert_of_a_second_active_rollout_violates_the_index(store: Store) -> None:
    _insert(store, "v1", "succeeded")
    _insert(store, "v2", "progressing")
    _insert(store, "v3", "rolled_back")  # any number of finished ones
    _insert(store, "v9", "progressing", env="staging")  # another environment is its own
    with pytest.raises(IntegrityError):
        _insert(store, "v4", "pending")
    indexes = {i["name"]: i for i in inspect(store.engine).get_indexes("rollouts")}
    assert indexes["uq_rollouts_one_active"]["unique"]


def test_the_repository_refuses_a_second_active_rollout(store: Store) -> None:
    repo = Repository(store)
    state = {"phase": "pending"}
    first = repo.create_rollout(app="shop", environment="production", version="v1",
                                from_version=None, strategy="direct", spec={}, state=state,
                                actor="ci", reason="")
    with pytest.raises(RolloutInProgress, match="production already has a rollout"):
        repo.create_rollout(app="shop", environment="production", version="v2",
                            from_version=None, strategy="direct", spec={}, state=state,
                            actor="ci", reason="")
    # Nothing of the refused rollout was written, not even its event.
    assert [r.version for r in repo.rollouts("shop")] == ["v1"]
    assert [e.version for e in repo.events("shop") if e.kind == "rollout"] == ["v1"]
    repo.save_transition(first.id, state={"phase": "succeeded"}, phase="succeeded",
                         events=[], actor="controller")
    repo.create_rollout(app="shop", environment="production", version="v2",
                        from_version="v1", strategy="direct", spec={}, state=state,
                        actor="ci", reason="")


def test_the_migration_upgrades_a_store_with_data_and_duplicates(store_url: str) -> None:
    store = Store(store_url)
    _upgrade(store, "0003")
    with store.engine.begin() as connection:
        connection.execute(text("INSERT INTO apps (name, created_at) VALUES ('shop', 0)"))
    _insert(store, "v1", "succeeded")
    _insert(store, "v2", "verifying")   # the one the controller was driving (oldest)
    _insert(store, "v3", "pending")     # the duplicate the race let in
    _insert(store, "v4", "progressing", env="staging")

    store.migrate()

    repo = Repository(store)
    phases = {r.version: (r.phase, r.state["phase"]) for r in repo.rollouts("shop")}
    assert phases == {"v1": ("succeeded", "succeeded"), "v2": ("verifying", "verifying"),
                      "v3": ("failed", "failed"), "v4": ("progressing", "progressing")}
    ended = next(r for r in repo.rollouts("shop") if r.version == "v3")
    assert ended.finished_at is not None
    assert "rollout 2 was already in progress" in ended.state["message"]
    events = [e for e in repo.events("shop") if e.version == "v3"]
    assert [e.kind for e in events] == ["failed"]
    assert repo.active_rollout("shop", "production").version == "v2"  # type: ignore[union-attr]
    with pytest.raises(IntegrityError):
        _insert(store, "v5", "pending")


def _service(tmp_path: Path, store_url: str) -> Service:
    path = tmp_path / "entrega.yaml"
    path.write_text(CONFIG + f"store: {{url: {store_url!r}}}\n")
    service, _store = build_service(load_config(path))
    repo = service.repo
    repo.sync_app("shop", ["production"])
    for version in ("v0", "v1", "v2"):
        repo.add_release(app="shop", version=version, digest="sha256:" + "0" * 64,
                         artifact_path=str(tmp_path / version), meta={}, actor="ci")
    # v1 replaced v0: what `rollback` restores by default.
    done = repo.create_rollout(app="shop", environment="production", version="v1",
                               from_version="v0", strategy="direct", spec={},
                               state={"phase": "succeeded"}, actor="ci", reason="")
    repo.save_transition(done.id, state={"phase": "succeeded"}, phase="succeeded",
                         events=[], actor="controller", current_version="v1",
                         set_current=True)
    return service


async def test_a_rollback_racing_a_deploy_never_makes_two_rollouts(tmp_path: Path,
                                                                   store_url: str) -> None:
    service = _service(tmp_path, store_url)
    lock = service.controller.locks["production"]
    # A reconcile pass of production holds the lock while both commands arrive.
    await lock.acquire()
    deploy = asyncio.create_task(service.deploy(environment="production", version="v2",
                                                actor="ci"))
    rollback = asyncio.create_task(service.rollback(environment="production", actor="ops"))
    # both are waiting for the pass to end
    assert await wait_until(lambda: len(lock._waiters or ()) >= 2, timeout_s=5,
                            interval_s=0.01), "the commands did not wait for the lock"
    lock.release()
    deployed, rolled_back = await asyncio.gather(deploy, rollback)

    active = [r for r in service.repo.rollouts("shop") if r.phase not in
              ("succeeded", "rolled_back", "failed")]
    assert [r.version for r in active] == ["v2"]
    # The rollback saw the deploy's rollout under the lock and aborted it.
    assert isinstance(deployed, DeployStarted)
    assert rolled_back.id == deployed.rollout.id == active[0].id
    assert state_from_dict(service.repo.rollout(active[0].id).state).abort_requested  # type: ignore[union-attr]


async def test_deploys_racing_each_other_queue_behind_one_rollout(tmp_path: Path,
                                                                  store_url: str) -> None:
    service = _service(tmp_path, store_url)
    results = await asyncio.gather(*(
        service.deploy(environment="production", version=v, actor="ci")
        for v in ("v2", "v0", "v2")), return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)]
    started = [r for r in results if isinstance(r, DeployStarted)]
    assert len(started) == 1
    assert service.repo.active_rollout("shop", "production") is not None
