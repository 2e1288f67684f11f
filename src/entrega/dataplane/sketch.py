"""A mergeable latency sketch with bounded relative error (pure, standard library).

Why. The analysis judges quantiles and tails over a whole window: every request of the
step, not the most recent ring of 2,048. A router keeps, per release, a count per
logarithmic bucket, cumulative like its request counters, so a window is the difference
of two snapshots (``minus``), the workers' sketches add up (``merge``), and its size does
not grow with traffic: a few hundred buckets cover 10 us to 10 min.

The buckets (DDSketch's scheme). With ``GAMMA = (1 + a) / (1 - a)`` and ``a`` = 1%,
bucket ``i`` holds the latencies in ``(GAMMA**(i-1), GAMMA**i]`` ms. Reporting a bucket
as ``2 * GAMMA**i / (GAMMA + 1)`` is within ``a`` (1%) of every value in it, so any
quantile read from the sketch is within 1% of the true sample quantile. Latencies at or
below :data:`MIN_MS` share the lowest bucket.

The wire form is a list of ``[index, count]`` pairs with nonzero counts, sorted by index:
JSON-friendly, and a few hundred pairs at most.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from typing import Any

#: The relative accuracy of every value read from a sketch.
RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
INV_LN_GAMMA = 1.0 / math.log(GAMMA)
#: Latencies at or below this (ms) are counted in the lowest bucket.
MIN_MS = 0.01
MIN_INDEX = math.ceil(math.log(MIN_MS) * INV_LN_GAMMA)
#: The highest bucket whose value is a finite float (about 1e306 ms): the wire refuses
#: indices outside MIN_INDEX..MAX_INDEX, which no router can produce and no quantile
#: could be read from.
MAX_INDEX = math.floor(math.log(sys.float_info.max / 2) * INV_LN_GAMMA)


def bucket_index(ms: float) -> int:
    """The bucket of a latency in ms; the hot path inlines this same formula."""
    if ms <= MIN_MS:
        return MIN_INDEX
    return math.ceil(math.log(ms) * INV_LN_GAMMA)


def bucket_value(index: int) -> float:
    """The value reported for bucket ``index``: within 1% of all it holds."""
    return 2.0 * GAMMA ** index / (GAMMA + 1.0)


def bucket_upper(index: int) -> float:
    """The largest latency bucket ``index`` holds."""
    return GAMMA ** index


class LatencySketch:
    """Counts per log bucket. Mutable while a router fills it; judges treat it as a value."""

    __slots__ = ("counts", "total")

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self.counts: dict[int, int] = {i: n for i, n in (counts or {}).items() if n}
        self.total = sum(self.counts.values())

    # -- filling and combining ---------------------------------------------------------

    def add(self, ms: float, count: int = 1) -> None:
        i = bucket_index(ms)
        self.counts[i] = self.counts.get(i, 0) + count
        self.total += count

    def merge(self, other: LatencySketch) -> LatencySketch:
        """The sketch of both sets of requests (workers, hosts, routers)."""
        counts = dict(self.counts)
        for i, n in other.counts.items():
            counts[i] = counts.get(i, 0) + n
        return LatencySketch(counts)

    def minus(self, baseline: LatencySketch) -> LatencySketch | None:
        """This cumulative sketch since ``baseline``: a window's requests. ``None`` when a
        bucket went down (the series restarted in between: no window can be computed)."""
        counts = dict(self.counts)
        for i, n in baseline.counts.items():
            left = counts.get(i, 0) - n
            if left < 0:
                return None
            counts[i] = left
        return LatencySketch(counts)

    # -- reading -----------------------------------------------------------------------

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) in ms, within 1% of the sample's; None when empty.

        The rank is ``ceil(q * total)`` (the nearest-rank definition): the value that at
        least a share ``q`` of the requests are at or below."""
        if self.total == 0:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return bucket_value(i)
        return bucket_value(max(self.counts))  # not reached: seen ends at total

    def rank_value(self, rank: int) -> float | None:
        """The value of the rank-th smallest request (1-based), clamped to the sample."""
        if self.total == 0:
            return None
        rank = min(max(1, rank), self.total)
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return bucket_value(i)
        return bucket_value(max(self.counts))

    def count_above(self, ms: float, *, inclusive: bool = False) -> int:
        """Requests surely slower than ``ms`` (buckets entirely above it); with
        ``inclusive``, also those of the bucket holding ``ms`` (possibly slower)."""
        edge = bucket_index(ms)
        if inclusive:
            return sum(n for i, n in self.counts.items() if i >= edge)
        return sum(n for i, n in self.counts.items() if i > edge)

    def mean(self) -> float | None:
        if self.total == 0:
            return None
        return sum(bucket_value(i) * n for i, n in self.counts.items()) / self.total

    # -- the wire ----------------------------------------------------------------------

    def to_wire(self) -> list[list[int]]:
        return [[i, self.counts[i]] for i in sorted(self.counts) if self.counts[i]]

    @classmethod
    def from_wire(cls, pairs: Iterable[Iterable[int]] | None) -> LatencySketch:
        """Read the wire form; raises ``ValueError`` on anything but a list of integer
        ``[index, count]`` pairs with indices in the sketch's range and nonnegative counts
        (a snapshot from a damaged or foreign source). The message says what was wrong."""
        if pairs is None:
            return cls()
        if not _is_sequence(pairs):
            raise ValueError(f"a latency sketch is a list of [index, count] pairs, "
                             f"not {_shown(pairs)}")
        counts: dict[int, int] = {}
        for pair in pairs:
            items = tuple(pair) if _is_sequence(pair) else ()
            if len(items) != 2:
                raise ValueError(f"sketch bucket {_shown(pair)}: expected an [index, count] "
                                 "pair")
            index, count = items
            if isinstance(index, bool) or isinstance(count, bool) or \
                    not isinstance(index, int) or not isinstance(count, int) or count < 0:
                raise ValueError(f"sketch bucket {_shown(pair)}: expected [index, count] "
                                 "integers, the count not negative")
            if not MIN_INDEX <= index <= MAX_INDEX:
                raise ValueError(f"sketch bucket {_shown(pair)}: the index is outside "
                                 f"{MIN_INDEX}..{MAX_INDEX}")
            counts[index] = counts.get(index, 0) + count
        return cls(counts)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """Lets a pydantic ``TypeAdapter`` (the controller's codec of a router's metrics)
        read the wire form into a sketch and write it back. pydantic is imported only when
        asked: the router process, which never validates, does not load it."""
        from pydantic_core import core_schema

        def read(value: Any) -> LatencySketch:
            return value if isinstance(value, LatencySketch) else cls.from_wire(value)

        return core_schema.no_info_plain_validator_function(
            read, serialization=core_schema.plain_serializer_function_ser_schema(
                lambda sketch: sketch.to_wire()))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        pair = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
        return {"type": "array", "items": pair,
                "description": "[bucket index, count] pairs, sorted by index"}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LatencySketch) and self.counts == other.counts

    def __repr__(self) -> str:
        return f"LatencySketch(total={self.total}, buckets={len(self.counts)})"


def _is_sequence(value: object) -> bool:
    return isinstance(value, list | tuple)


def _shown(value: object) -> str:
    """A value as an error message quotes it: short, whatever it is."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
