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
from typing import Any

from entrega.dataplane.http.metrics import (
    COUNTER_LATENCY_SUM,
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

_READ_ATTEMPTS = 5


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

    def read(self) -> SharedCounters | None:
        """Every release the worker counts in the region; None once closed."""
        words, floats = self._words, self._floats
        if words is None or floats is None:
            return None
        if words[0] != REGION_MAGIC:
            return {}  # the worker has not attached yet: it counted nothing
        releases: SharedCounters = {}
        for slot in range(int(words[1])):
            start = REGION_HEADER_WORDS + slot * SLOT_WORDS
            found = _read_slot(words, floats, start)
            if found is not None:
                version, counters = found
                releases[version] = counters
        return releases


def _read_slot(words: memoryview, floats: memoryview[float],
               start: int) -> tuple[str, dict[str, Any]] | None:
    """A slot's release and counters, read consistently; None when free (or when the
    worker kept reassigning it while we read, which only a dead worker's half-assigned
    slot does: it had counted nothing there)."""
    for _ in range(_READ_ATTEMPTS):
        generation = words[start + SLOT_GENERATION]
        if generation & 1:
            continue
        length = words[start + SLOT_NAME_LENGTH]
        if length == 0:
            return None
        name = words[start + SLOT_NAME:start + SLOT_COUNTERS].tobytes()[:length]
        counters = words[start + SLOT_COUNTERS:start + SLOT_WORDS].tolist()
        latency_sum = floats[start + SLOT_COUNTERS + COUNTER_LATENCY_SUM]
        if words[start + SLOT_GENERATION] == generation:
            return name.decode(errors="replace"), counters_dict(counters, latency_sum)
    return None
