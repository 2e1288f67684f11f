"""An idle environment is not read from the store on every pass (loop.py: everything
that writes an app's rollouts, requests or current releases wakes its loop, so a pass the
clock started reuses what the last read found, for up to ``STORE_READ_INTERVAL_S``).

Before, every pass read each environment's rollout, queued requests and current release:
three queries a second per environment, a thousand environments in one server asking the
store three thousand times a second what it already knew (``bench/scale.py``). A deploy
must still be taken at once: it wakes the loop.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event

from entrega.controller.loop import STORE_READ_INTERVAL_S
from entrega.service import Service
from tests.controller.conftest import wait_until
from tests.controller.test_restart_events import DIRECT, released

pytestmark = pytest.mark.real

ENVIRONMENT_READS = re.compile(r"\bFROM (rollouts|environments|deploy_requests)\b")


async def test_an_idle_environment_is_read_once_per_interval_not_once_per_pass(
        services: Callable[[str], Service]) -> None:
    service = services(DIRECT)
    controller = service.controller
    await controller.start()
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if ENVIRONMENT_READS.search(statement):
            reads.append(statement)

    event.listen(service.repo.store.engine, "before_cursor_execute", count)
    try:
        await released(service, "v1")
        reads.clear()
        start, began = controller.passes, time.monotonic()
        # a pass every REPAIR_INTERVAL_S (1 s): four of them
        await wait_until(lambda: controller.passes >= start + 4, timeout_s=20,
                         what="four passes")
        passes, elapsed = controller.passes - start, time.monotonic() - began
        # one read of the environment (3 queries) per STORE_READ_INTERVAL_S begun, not 3
        # a pass (before: 12 or more)
        # (an interval is drawn at each read: four fifths of STORE_READ_INTERVAL_S at least)
        intervals = 1 + int(elapsed // (0.8 * STORE_READ_INTERVAL_S))
        assert len(reads) <= 3 * intervals < 3 * passes, (passes, elapsed, reads)

        # a deploy wakes the loop, which reads the store at once: v2 goes out as before
        await released(service, "v2")
        assert service.repo.environment("shop", "production").current_version == "v2"  # type: ignore[union-attr]
    finally:
        event.remove(service.repo.store.engine, "before_cursor_execute", count)
        await controller.stop()
