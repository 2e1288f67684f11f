"""Stopping an app's whole data plane: every instance, then every router.

The data plane outlives the controller by design, so ending it is an explicit act
(`entrega down`), done only while no controller owns the store.
"""

from __future__ import annotations

from entrega.config import Config
from entrega.controller.runtime import build_runtime
from entrega.targets.base import ReleaseRef


async def stop_data_plane(config: Config, *, drain_s: float | None = None) -> list[str]:
    """Stop all instances and routers of the app; returns what was stopped."""
    stopped: list[str] = []
    for env in config.environments:
        rt = build_runtime(config, env)
        # Routers first: no new request reaches an instance that is about to stop.
        await rt.router.shutdown()
        stopped.append(f"router {env.name}")
        versions = {i.version for i in await rt.target.observe() if i.alive}
        for version in sorted(versions):
            ref = ReleaseRef(app=config.app, version=version, digest="",
                             path=config.artifacts_path / "releases" / config.app / version)
            await rt.target.stop(release=ref, drain_s=config.run.drain_s
                                 if drain_s is None else drain_s)
            stopped.append(f"{version} in {env.name}")
        await rt.target.close()
        await rt.router.close()
    return stopped
