"""Per-release traffic counters of the embedded router.

Everything here is cumulative since the router process started (``started_at``): the
controller takes differences between two snapshots (see ``reports.ReleaseMetrics``).
Recording one request is O(1): a scan of the fixed bucket bounds from the lowest (most
requests take under a millisecond, so it usually stops at the first), a few integer
additions, each result also stored to its 8-byte word, one store into a preallocated
ring, and one logarithm for the latency sketch's bucket. The ring is a list rather than
an ``array``: the mypyc build (setup.py) stores into a list natively.

Where the counters live. A worker's counters must outlive it: when it is killed (``kill
-9``, OOM) everything it counted is still part of the router's totals. So each counter is
also a word in memory its supervisor shares (``process/counter_memory.py`` maps it; the
supervisor reads it on every ``GET /metrics`` and once more after the worker died). Each
is one aligned 8-byte word, written by one store, so a reader never sees half of one. A
release's counters are read as one snapshot: ``record`` stores ``COUNTER_BEGUN`` first and
``COUNTER_REQUESTS`` last, both the new request count, so a reader that reads
``COUNTER_REQUESTS``, then the counters, then ``COUNTER_BEGUN``, and finds them equal, read
no request half recorded (a seqlock whose sequence is the request count). Only a ``kill
-9`` landing inside ``record`` itself (a fraction of a microsecond) leaves one request
half recorded for good: ``COUNTER_REQUESTS`` then does not count it, some of the other
counters may. (The snapshot relies on another core seeing the stores in program order,
as x86-64 guarantees; on a weakly ordered CPU a live read may rarely mix two requests'
counters. What a dead worker leaves is exact everywhere: all its stores are visible.)
The latency sum is a float64 word; the sketch is a fixed array of one word per bucket
from ``MIN_INDEX`` (10 us) to the bucket of a day (:data:`SKETCH_TOP_INDEX`; a longer
request counts in that top bucket).
``ReleaseStats()`` without shared memory (the control-plane route, HAProxy's log sink,
tests) stores to a private buffer of the same layout. The ring of recent latencies and
``inflight`` are not shared: they are for display and for the live worker's answers, and
die with it.

A region (``MetricsRegistry(region)``) is a header and ``slots`` release slots:

- header: :data:`REGION_MAGIC`, the number of slots, the words per slot, a spare word;
- slot: a generation word (odd while the worker (re)assigns the slot: a reader skips or
  retries it), the length of the release's name (0: free), the name (UTF-8, up to
  :data:`MAX_NAME_BYTES`), then the counters (``COUNTER_*`` offsets).

The sketch (``dataplane/sketch.py``) is what the analysis judges: every request of a
window, within 1%, as the difference of two snapshots. The fixed buckets feed Prometheus
and the insights; the ring (recent latencies) is for display. Its bucket formula is
``sketch.bucket_index`` written out here: a call into the uncompiled sketch module would
cost more than the formula itself.
"""

from __future__ import annotations

import math
import time
from typing import Final

from entrega.dataplane.reports import LATENCY_BUCKETS_MS
from entrega.dataplane.sketch import INV_LN_GAMMA, MIN_INDEX, MIN_MS

#: Size of the ring of recent latencies; a power of two so the slot is ``total & MASK``.
SAMPLES_RING_SIZE: Final = 2048
_MASK: Final = SAMPLES_RING_SIZE - 1
_BOUNDS: Final = tuple(float(bound) for bound in LATENCY_BUCKETS_MS)
_LAST: Final = len(LATENCY_BUCKETS_MS)  # the +inf bucket
_SKETCH_MIN_MS: Final = MIN_MS
_SKETCH_MIN_INDEX: Final = MIN_INDEX
_SKETCH_INV_LN_GAMMA: Final = INV_LN_GAMMA

#: Stats of releases no longer routed (and with nothing in flight) are forgotten beyond
#: this many releases, so a router living through hundreds of releases stays small.
MAX_RELEASES_KEPT = 64

# -- the layout of a worker's counters in shared memory (8-byte words) --------------------

#: The highest sketch bucket kept: that of a day (longer requests count in it).
SKETCH_TOP_INDEX: Final = math.ceil(math.log(86_400_000.0) * INV_LN_GAMMA)
SKETCH_WORDS: Final = SKETCH_TOP_INDEX - MIN_INDEX + 1
#: counters of one release, as word offsets from the start of its counters
COUNTER_REQUESTS: Final = 0
COUNTER_ERRORS_5XX: Final = 1
COUNTER_LATENCY_SUM: Final = 2  # a float64
#: requests whose recording has begun: stored first, ``COUNTER_REQUESTS`` last
COUNTER_BEGUN: Final = 3
COUNTER_BUCKETS: Final = 4
COUNTER_SKETCH: Final = COUNTER_BUCKETS + _LAST + 1
COUNTER_WORDS: Final = COUNTER_SKETCH + SKETCH_WORDS

#: "entrega1" read as a little-endian word: a region written by this layout
REGION_MAGIC: Final = 0x3161676572746E65
REGION_HEADER_WORDS: Final = 4
#: the longest release name kept in shared memory (a longer one counts in private memory)
MAX_NAME_BYTES: Final = 256
SLOT_GENERATION: Final = 0
SLOT_NAME_LENGTH: Final = 1
SLOT_NAME: Final = 2
SLOT_COUNTERS: Final = SLOT_NAME + MAX_NAME_BYTES // 8
SLOT_WORDS: Final = SLOT_COUNTERS + COUNTER_WORDS
#: release slots per worker: every release it may keep, plus the releases a route change
#: adds before ``forget_old`` runs
REGION_SLOTS: Final = MAX_RELEASES_KEPT + 16


def region_bytes(slots: int = REGION_SLOTS) -> int:
    return (REGION_HEADER_WORDS + slots * SLOT_WORDS) * 8


def private_counters() -> memoryview:
    """One release's counter words in memory of this process only."""
    return memoryview(bytearray(COUNTER_WORDS * 8)).cast("q")


class ReleaseStats:
    """Counters of one release; mutated only by the event loop thread.

    Each counter is kept twice: as a native attribute, which the worker reads and
    increments (fast in the mypyc build), and as its word in ``counters``, which it only
    stores to (one store per counter; a read of the shared word would cost as much
    again), so that the supervisor has them if the worker dies."""

    __slots__ = ("requests", "errors_5xx", "buckets", "latency_sum_ms", "inflight",
                 "samples_total", "_ring", "_sketch", "_words", "_floats")

    def __init__(self, counters: memoryview | None = None) -> None:
        self.requests = 0
        self.errors_5xx = 0
        self.buckets = [0] * (len(_BOUNDS) + 1)
        self.latency_sum_ms = 0.0
        self.inflight = 0
        self.samples_total = 0
        self._ring = [0.0] * SAMPLES_RING_SIZE
        #: requests per sketch bucket, from ``MIN_INDEX`` to ``SKETCH_TOP_INDEX``
        self._sketch = [0] * SKETCH_WORDS
        #: ``COUNTER_WORDS`` 8-byte words (format ``q``), shared or private, zero at first
        self._words: memoryview = counters if counters is not None else private_counters()
        #: the same memory read as float64 words, for the latency sum
        self._floats: memoryview[float] = self._words.cast("B").cast("d")

    def record(self, status: int, latency_ms: float) -> None:
        """Count one finished request (``status`` 0: the client left before any answer)."""
        words = self._words
        requests = self.requests + 1
        self.requests = requests
        words[COUNTER_BEGUN] = requests
        if status >= 500:
            errors = self.errors_5xx + 1
            self.errors_5xx = errors
            words[COUNTER_ERRORS_5XX] = errors
        # a latency equal to a bound falls in that bound's bucket (Prometheus' ``le``)
        bucket = _LAST
        for i, bound in enumerate(_BOUNDS):
            if latency_ms <= bound:
                bucket = i
                break
        buckets = self.buckets
        count = buckets[bucket] + 1
        buckets[bucket] = count
        words[COUNTER_BUCKETS + bucket] = count
        latency_sum = self.latency_sum_ms + latency_ms
        self.latency_sum_ms = latency_sum
        self._floats[COUNTER_LATENCY_SUM] = latency_sum
        total = self.samples_total
        self._ring[total & _MASK] = latency_ms
        self.samples_total = total + 1
        if latency_ms <= _SKETCH_MIN_MS:
            offset = 0
        else:
            offset = math.ceil(math.log(latency_ms) * _SKETCH_INV_LN_GAMMA) - _SKETCH_MIN_INDEX
            if offset >= SKETCH_WORDS:
                offset = SKETCH_WORDS - 1
        sketch = self._sketch
        count = sketch[offset] + 1
        sketch[offset] = count
        words[COUNTER_SKETCH + offset] = count
        words[COUNTER_REQUESTS] = requests  # last: this request is counted everywhere

    @property
    def sketch(self) -> dict[int, int]:
        """bucket index -> requests (``LatencySketch.counts``), cumulative"""
        return {_SKETCH_MIN_INDEX + offset: count
                for offset, count in enumerate(self._sketch) if count}

    def samples_ms(self) -> list[float]:
        """The ring's contents, oldest first (newest last)."""
        total = self.samples_total
        if total <= SAMPLES_RING_SIZE:
            return self._ring[:total]
        start = total & _MASK
        return self._ring[start:] + self._ring[:start]

    def to_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "errors_5xx": self.errors_5xx,
            "latency_buckets": list(self.buckets),
            "latency_sum_ms": round(self.latency_sum_ms, 3),
            "inflight": self.inflight,
            "samples_ms": [round(s, 3) for s in self.samples_ms()],
            "samples_total": self.samples_total,
            "latency_sketch": [[i, n] for i, n in sorted(self.sketch.items())],
        }


def sketch_counts(words: list[int]) -> dict[int, int]:
    """The sketch of one release's counter words: bucket index -> requests."""
    sketch: dict[int, int] = {}
    for offset in range(SKETCH_WORDS):
        count = words[COUNTER_SKETCH + offset]
        if count:
            sketch[MIN_INDEX + offset] = count
    return sketch


def counters_dict(words: list[int], latency_sum_ms: float) -> dict[str, object]:
    """The fields of ``ReleaseStats.to_dict()`` that live in the counter words (all but
    ``inflight`` and ``samples_ms``); ``samples_total`` is the request count, as every
    request is one sample."""
    requests = words[COUNTER_REQUESTS]
    return {
        "requests": requests,
        "errors_5xx": words[COUNTER_ERRORS_5XX],
        "latency_buckets": words[COUNTER_BUCKETS:COUNTER_SKETCH],
        "latency_sum_ms": round(latency_sum_ms, 3),
        "samples_total": requests,
        "latency_sketch": [[i, n] for i, n in sorted(sketch_counts(words).items())],
    }


class MetricsRegistry:
    """Stats by release version, created on first use and kept across route changes;
    their counters in ``region`` (shared with the supervisor) when given."""

    def __init__(self, region: memoryview | None = None) -> None:
        self.started_at = time.time()
        self.releases: dict[str, ReleaseStats] = {}
        #: the whole region as 8-byte words (format ``q``), or None: private counters
        self.region = region
        #: version -> its slot in the region
        self.slots: dict[str, int] = {}
        if region is not None:
            slots = (len(region) - REGION_HEADER_WORDS) // SLOT_WORDS
            region[1] = slots
            region[2] = SLOT_WORDS
            region[0] = REGION_MAGIC  # last: a reader trusts the header from here on

    def for_release(self, version: str) -> ReleaseStats:
        stats = self.releases.get(version)
        if stats is None:
            stats = self.releases[version] = ReleaseStats(self._claim_slot(version))
        return stats

    def _claim_slot(self, version: str) -> memoryview | None:
        """A free slot of the region, named ``version``, its counters zero; None without
        a region, a free slot or a name that fits (the release then counts privately)."""
        region = self.region
        name = version.encode()
        if region is None or len(name) > MAX_NAME_BYTES:
            return None
        taken = set(self.slots.values())
        slots = int(region[1])
        for slot in range(slots):
            if slot not in taken:
                break
        else:
            return None
        start = REGION_HEADER_WORDS + slot * SLOT_WORDS
        generation = int(region[start + SLOT_GENERATION]) | 1  # odd: being assigned
        region[start + SLOT_GENERATION] = generation
        padded = name + bytes(MAX_NAME_BYTES - len(name))
        region[start + SLOT_NAME:start + SLOT_COUNTERS] = memoryview(padded).cast("q")
        counters = region[start + SLOT_COUNTERS:start + SLOT_WORDS]
        counters[:] = memoryview(bytes(COUNTER_WORDS * 8)).cast("q")
        region[start + SLOT_NAME_LENGTH] = len(name)
        region[start + SLOT_GENERATION] = generation + 1  # even: stable
        self.slots[version] = slot
        return counters

    def _free_slot(self, version: str) -> None:
        region = self.region
        slot = self.slots.pop(version, None)
        if region is None or slot is None:
            return
        start = REGION_HEADER_WORDS + slot * SLOT_WORDS
        generation = int(region[start + SLOT_GENERATION]) | 1
        region[start + SLOT_GENERATION] = generation
        region[start + SLOT_NAME_LENGTH] = 0
        region[start + SLOT_GENERATION] = generation + 1

    def forget_old(self, routed: set[str]) -> None:
        """Drop the oldest unrouted, idle releases beyond ``MAX_RELEASES_KEPT``."""
        excess = len(self.releases) - MAX_RELEASES_KEPT
        if excess <= 0:
            return
        for version in list(self.releases):  # insertion order: oldest first
            if excess <= 0:
                break
            if version not in routed and self.releases[version].inflight == 0:
                del self.releases[version]
                self._free_slot(version)
                excess -= 1

    def to_dict(self) -> dict[str, object]:
        return {
            "started_at": self.started_at,
            "releases": {v: s.to_dict() for v, s in self.releases.items()},
        }
