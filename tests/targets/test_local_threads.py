"""An environment's blocking host work runs on its own threads (targets/local.py).

A stop waits for its instances' drain (30 s is a common setting) in a thread. On asyncio's
shared pool (six threads on two cores) six apps draining at once held every thread, and
every other app's pass waited behind them to read a state file. Here eight environments
are stuck in a stop that does not return, and a ninth still reads its instances.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from entrega.targets.base import ReleaseRef
from tests.targets.conftest import MakeTarget


class StuckAgent:
    """A host agent whose stop blocks until released (an app that takes long to drain)."""

    def __init__(self, release: threading.Event, entered: threading.Semaphore) -> None:
        self.release = release
        self.entered = entered

    def stop(self, version: str, *, drain_s: float) -> None:
        self.entered.release()
        self.release.wait()

    def observe(self, version: str | None = None) -> list[object]:
        return []


async def test_stops_draining_in_eight_environments_do_not_hold_up_a_ninth(
        make_target: MakeTarget, tmp_path: Path) -> None:
    release, entered = threading.Event(), threading.Semaphore(0)
    draining = []
    for i in range(8):
        target = make_target(environment=f"env{i}", state_dir=tmp_path / f"state{i}")
        target.agent = StuckAgent(release, entered)  # type: ignore[assignment]
        draining.append(asyncio.create_task(target.stop(
            release=ReleaseRef("shop", "1.0.0", "", tmp_path), drain_s=30)))
    ninth = make_target(environment="ninth", state_dir=tmp_path / "state-ninth")
    try:
        # A guard, not a measure: on a shared pool of six threads two of the stops never
        # start, and the ninth environment's read waits until a stop returns: never.
        async with asyncio.timeout(30):
            for _ in draining:  # every stop is blocking a thread of its own now
                while not entered.acquire(blocking=False):
                    await asyncio.sleep(0.01)
            assert await ninth.observe() == []
        assert not any(task.done() for task in draining)
    finally:
        release.set()
        await asyncio.gather(*draining)
