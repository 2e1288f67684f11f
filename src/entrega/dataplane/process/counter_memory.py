"""A worker's counters in memory its supervisor shares, so that they outlive the worker.

Why. A worker counts every request it answers (``http/metrics.py``). If those counts lived
only in the worker, a ``kill -9`` (or the OOM killer) would take with it everything it
counted since the supervisor last asked, and the router's totals would miss requests that
were answered. So the supervisor gives each worker process, at launch, a region of memory
(an anonymous file: ``memfd_create`` where there is one, an unlinked temporary file
elsewhere) whose descriptor the worker inherits (``--counters-fd``) and maps; the worker's
:class:`~entrega.dataplane.http.metrics.MetricsRegistry` keeps its counters in it. The
supervisor maps the same pages and reads them on every ``GET /metrics``, and a last time
after the worker died, which is exact: nothing the worker counted is lost.

The layout (header, release slots, one aligned 8-byte word per counter) is in
``http/metrics.py``, next to the code that writes it. A slot being (re)assigned has an odd
generation word; a reader retries it, and takes a slot's name and counters only when the
generation was the same, and even, before and after.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import time
from typing import Any

from entrega.dataplane.http.metrics import (
    COUNTER_BEGUN,
    COUNTER_LATENCY_SUM,
    COUNTER_REQUESTS,
    REGION_HEADER_WORDS,
    REGION_MAGIC,
    SLOT_COUNTERS,
    SLOT_GENERATION,
    SLOT_NAME,
    SLOT_NAME_LENGTH,
    SLOT_WORDS,
    counters_dict,
    region_bytes,
)

#: release version -> the counter fields of ``ReleaseStats.to_dict()``
SharedCounters = dict[str, dict[str, Any]]

#: copies of a slot tried at once, then after a pause each (a worker preempted in the
#: middle of ``record`` holds the slot inconsistent until the scheduler runs it again)
_QUICK_ATTEMPTS = 5
_PATIENT_ATTEMPTS = 20
_PAUSE_S = 0.00025


def _anonymous_file(size: int) -> int:
    """A descriptor of ``size`` zero bytes of memory no path names."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("entrega-router-counters", os.MFD_CLOEXEC)
    else:  # no memfd (macOS): the same, as a file unlinked at once
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    os.ftruncate(fd, size)
    return fd


def attach(fd: int) -> memoryview:
    """The worker's side: the region behind the inherited ``fd``, as 8-byte words. The
    mapping stays open as long as the view (the registry keeps it for the process's life)."""
    region = mmap.mmap(fd, os.fstat(fd).st_size)
    os.close(fd)  # the mapping holds its own reference to the memory
    return memoryview(region).cast("q")


class CounterMemory:
    """The supervisor's side: the region of one worker process."""

    def __init__(self) -> None:
        size = region_bytes()
        #: to pass to the worker (``pass_fds``); closed by ``handed_over``
        self.fd: int | None = _anonymous_file(size)
        self._map: mmap.mmap | None = mmap.mmap(self.fd, size)
        self._words: memoryview | None = memoryview(self._map).cast("q")
        self._floats: memoryview[float] | None = memoryview(self._map).cast("d")

    def handed_over(self) -> None:
        """The worker has its copy of the descriptor (or will never get one)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        self.handed_over()
        for view in (self._words, self._floats):
            if view is not None:
                view.release()
        self._words = self._floats = None
        if self._map is not None:
            self._map.close()
            self._map = None

    def read(self, *, final: bool = False) -> SharedCounters | None:
        """Every release the worker counts in the region; None once closed. ``final``:
        the worker is dead, nothing will change (no point waiting for a consistent copy)."""
        words, floats = self._words, self._floats
        if words is None or floats is None:
            return None
        if words[0] != REGION_MAGIC:
            return {}  # the worker has not attached yet: it counted nothing
        releases: SharedCounters = {}
        for slot in range(int(words[1])):
            start = REGION_HEADER_WORDS + slot * SLOT_WORDS
            found = _read_slot(words, floats, start,
                               attempts=1 if final else _QUICK_ATTEMPTS + _PATIENT_ATTEMPTS)
            if found is not None:
                version, counters = found
                releases[version] = counters
        return releases


def _read_slot(words: memoryview, floats: memoryview[float], start: int, *,
               attempts: int) -> tuple[str, dict[str, Any]] | None:
    """A slot's release and counters, as one snapshot; None when the slot is free (or
    when it was being reassigned at every try: only a dead worker leaves a slot so, and
    it had counted nothing there).

    A consistent copy has the same even generation before and after, and its request
    count (stored last by ``record``) equal to the count of requests begun (stored first)
    read after the copy. A copy is one ``memcpy`` (a microsecond; a worker records one
    request in tens of them), so a busy worker rarely makes it retry, but one preempted
    in the middle of ``record`` does until it runs again: the tries after the first few
    pause (5 ms in all). Then (and for a dead worker at once) the slot is read word by
    word: each an aligned 8-byte load, never half of a store, but the one request being
    recorded may be in some counters and not in others."""
    counters_at = start + SLOT_COUNTERS
    for attempt in range(attempts - 1):
        if attempt >= _QUICK_ATTEMPTS:
            time.sleep(_PAUSE_S)
        generation = words[start + SLOT_GENERATION]
        if generation & 1:
            continue
        done = words[counters_at + COUNTER_REQUESTS]
        copy = words[start:start + SLOT_WORDS].tobytes()
        if words[counters_at + COUNTER_BEGUN] != done or \
                words[start + SLOT_GENERATION] != generation:
            continue
        slot = memoryview(copy).cast("q").tolist()
        latency_sum = memoryview(copy).cast("d")[SLOT_COUNTERS + COUNTER_LATENCY_SUM]
        return _release(copy, slot, latency_sum)
    for _ in range(_QUICK_ATTEMPTS):
        generation = words[start + SLOT_GENERATION]
        if generation & 1:
            continue
        slot = words[start:start + SLOT_WORDS].tolist()
        latency_sum = floats[counters_at + COUNTER_LATENCY_SUM]
        name = words[start:start + SLOT_COUNTERS].tobytes()
        if words[start + SLOT_GENERATION] == generation:
            return _release(name, slot, latency_sum)
    return None


def _release(head: bytes, slot: list[int],
             latency_sum: float) -> tuple[str, dict[str, Any]] | None:
    """A slot's copy -> its release and counters (None: free)."""
    length = slot[SLOT_NAME_LENGTH]
    if length == 0:
        return None
    name = head[SLOT_NAME * 8:SLOT_NAME * 8 + length]
    return name.decode(errors="replace"), counters_dict(slot[SLOT_COUNTERS:], latency_sum)
