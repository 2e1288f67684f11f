"""``wait_until``: the one poll loop (sync and async)."""

from __future__ import annotations

import asyncio
import time

import pytest

from entrega.waiting import wait_until, wait_until_sync


async def test_returns_the_conditions_value_once_it_holds() -> None:
    calls = []

    def third_time() -> str | None:
        calls.append(1)
        return "ready" if len(calls) == 3 else None

    assert await wait_until(third_time, timeout_s=5, interval_s=0.001) == "ready"
    assert len(calls) == 3


async def test_an_async_condition_is_awaited() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await wait_until(answer, timeout_s=1) == 42


async def test_none_after_the_deadline_and_checked_at_least_once() -> None:
    calls = []
    started = time.monotonic()
    assert await wait_until(lambda: calls.append(1), timeout_s=0.1, interval_s=0.01) is None
    assert 0.1 <= time.monotonic() - started < 2
    assert len(calls) >= 2
    calls.clear()
    assert await wait_until(lambda: calls.append(1), timeout_s=0) is None
    assert calls == [1]


async def test_an_exception_of_the_condition_ends_the_wait() -> None:
    def exited() -> bool:
        raise RuntimeError("exited with code 2 while starting")

    with pytest.raises(RuntimeError, match="code 2"):
        await wait_until(exited, timeout_s=30)


def test_sync_variant() -> None:
    deadline = time.monotonic() + 0.05
    assert wait_until_sync(lambda: time.monotonic() > deadline, timeout_s=5,
                           interval_s=0.005) is True
    assert wait_until_sync(lambda: 0, timeout_s=0.05, interval_s=0.01) is None
