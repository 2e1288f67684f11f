"""What the control plane's tests share: a release of one app deployed in process, and
where a rollout stands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from entrega.plane import ControlPlane
from entrega.views import DeployStarted


async def deploy(plane: ControlPlane, app: str, version: str, *, source: Path,
                 behaviour: dict[str, Any] | None = None) -> int:
    """Release ``version`` of ``app`` (``source`` as its app.py, ``behaviour`` as its
    behaviour.json) and deploy it to production; the rollout's id."""
    service = plane.service(app)
    path = service.config.base_dir / "artifacts" / app / version
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, path / "app.py")
    (path / "VERSION").write_text(version)
    if behaviour is not None:
        (path / "behaviour.json").write_text(json.dumps(behaviour))
    await service.create_release(version=version, artifact=path, meta={}, actor="ci")
    started = await service.deploy(environment="production", version=version, actor="ci")
    assert isinstance(started, DeployStarted)
    return started.rollout.id


def phase(plane: ControlPlane, app: str, rid: int) -> str:
    row = plane.service(app).repo.rollout(rid)
    assert row is not None
    return row.phase
