"""Waiting for a condition with a deadline: the one poll loop of entrega and its tests.

Much of what entrega waits for has no event to wait on: a process that writes a pidfile or
a state file, a socket that starts answering, a pid that disappears, a router that has
drained a release. So it polls: check, and if the condition does not hold yet and the
deadline has not passed, sleep ``interval_s`` and check again. Written once here, so that
every waiter agrees on the details that are easy to get wrong:

- the condition is checked at least once, even with ``timeout_s`` 0, and the wait gives
  up only after a check that ended past the deadline (a slow check eats no last chance);
- the clock is monotonic (the event loop's in :func:`wait_until`, ``time.monotonic`` in
  :func:`wait_until_sync`), so a wall-clock jump neither ends a wait early nor stretches it;
- the result is the condition's own truthy value (a state read, a health answer), or
  None when the deadline passed: the caller says what timed out, in its words;
- an exception of the condition ends the wait at once: "the process exited while
  starting" is an answer, not something to wait out.

The default interval (20 ms) suits what is polled: tiny local files and sockets. Waits
over a network pass a longer one.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

#: How often a condition is re-checked by default (s): what is polled is local and cheap.
POLL_INTERVAL_S = 0.02


@overload
async def wait_until(condition: Callable[[], Awaitable[T]], *, timeout_s: float,
                     interval_s: float = ...) -> T | None: ...
@overload
async def wait_until(condition: Callable[[], T], *, timeout_s: float,
                     interval_s: float = ...) -> T | None: ...


async def wait_until(condition: Callable[[], Any], *, timeout_s: float,
                     interval_s: float = POLL_INTERVAL_S) -> Any:
    """Check ``condition`` (plain or async) until it returns something truthy, and return
    that; None once ``timeout_s`` seconds have passed without it. Never blocks the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(interval_s)


def wait_until_sync(condition: Callable[[], T], *, timeout_s: float,
                    interval_s: float = POLL_INTERVAL_S) -> T | None:
    """:func:`wait_until` for a thread that may block (tests, benchmarks, a CLI command)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)


async def wait_event(event: asyncio.Event, *, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passed; True if it was set.

    Not ``asyncio.wait_for(event.wait(), ...)``: on Python 3.11 that swallows a
    cancellation which arrives in the same loop turn as the event (CPython gh-86296), so a
    loop sleeping in it can survive the ``cancel()`` meant to stop it. ``asyncio.timeout``
    lets the cancellation through."""
    try:
        async with asyncio.timeout(max(0.0, timeout_s)):
            await event.wait()
    except TimeoutError:
        return False
    return True


#: How long a cancelled task gets before it is cancelled again (s).
RECANCEL_INTERVAL_S = 1.0


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has ended, whatever it raised.

    It is cancelled again every :data:`RECANCEL_INTERVAL_S` until it ends: a single
    cancellation can be swallowed by library code (``asyncio.wait_for`` on 3.11, see
    :func:`wait_event`), and a stop that waits on such a task would wait forever. The
    caller's own cancellation still propagates."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_INTERVAL_S)
    if not task.cancelled():
        task.exception()  # retrieved: its failure was the stop's reason, not news
