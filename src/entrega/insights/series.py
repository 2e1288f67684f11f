"""From the collector's cumulative samples to a release's traffic over its life (pure).

Samples are cumulative router counters (see ``store.models.ReleaseSample``). Consecutive
samples of one (environment, version) give an *interval*: the requests, errors and
latency histogram between them. A sample whose router started at another time, or whose
counters went down, starts afresh: its counters are then the whole interval (what came
before a router restart and after the last sample is lost, never invented). The first
sample of a series counts everything since its router started: the router counts per
release, so that is all this release's traffic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from entrega.analysis.window import histogram_percentile


@dataclass(frozen=True)
class Sample:
    time: float
    router_started_at: float
    requests: int
    errors: int
    latency_buckets: tuple[int, ...]
    weight: int | None = None


@dataclass(frozen=True)
class Interval:
    start: float
    end: float
    requests: int
    errors: int
    latency_buckets: tuple[int, ...]


@dataclass(frozen=True)
class Totals:
    requests: int = 0
    errors: int = 0
    latency_buckets: tuple[int, ...] = ()
    first_seen: float | None = None
    last_seen: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def percentile_ms(self, q: float) -> float | None:
        return histogram_percentile(self.latency_buckets, q)


@dataclass(frozen=True)
class Point:
    """One bin of a time series (counts are fractional: an interval spanning several bins
    is spread over them in proportion to its overlap)."""

    time: float
    requests: float
    errors: float
    rps: float
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


def _restarted(prev: Sample, cur: Sample) -> bool:
    if cur.router_started_at != prev.router_started_at:
        return True
    if cur.requests < prev.requests or cur.errors < prev.errors:
        return True
    return len(cur.latency_buckets) == len(prev.latency_buckets) and any(
        a < b for a, b in zip(cur.latency_buckets, prev.latency_buckets, strict=True))


def compute_intervals(samples: Sequence[Sample], *,
                      not_before: float | None = None) -> list[Interval]:
    """Intervals between consecutive samples (sorted by time), restarts handled.

    ``not_before``: when the release could first have had traffic (its first rollout);
    an interval reaching back to its router's start begins there instead, so its
    requests are not spread over a time the release did not run."""
    intervals: list[Interval] = []
    prev: Sample | None = None
    for cur in sorted(samples, key=lambda s: s.time):
        if prev is None or _restarted(prev, cur):
            start = cur.router_started_at if prev is None or \
                cur.router_started_at > prev.time else prev.time
            if not_before is not None:
                start = max(start, not_before)
            intervals.append(Interval(min(start, cur.time), cur.time, cur.requests, cur.errors,
                                      cur.latency_buckets))
        else:
            buckets = cur.latency_buckets
            if len(prev.latency_buckets) == len(buckets):
                buckets = tuple(a - b for a, b in zip(buckets, prev.latency_buckets,
                                                      strict=True))
            intervals.append(Interval(prev.time, cur.time, cur.requests - prev.requests,
                                      cur.errors - prev.errors, buckets))
        prev = cur
    return [i for i in intervals if i.requests or i.errors]


def _add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    if not a:
        return b
    if not b:
        return a
    if len(a) != len(b):  # bucket layout changed between router versions: keep the newer
        return b
    return tuple(x + y for x, y in zip(a, b, strict=True))


def compute_totals(intervals: Sequence[Interval]) -> Totals:
    requests = errors = 0
    buckets: tuple[int, ...] = ()
    for i in intervals:
        requests += i.requests
        errors += i.errors
        buckets = _add(buckets, i.latency_buckets)
    return Totals(requests, errors, buckets,
                  min((i.start for i in intervals), default=None),
                  max((i.end for i in intervals), default=None))


def compute_series(intervals: Sequence[Interval], *, start: float, end: float,
                   bins: int = 60) -> list[Point]:
    """``bins`` equal bins over [start, end]; each interval's requests, errors and latency
    histogram are spread over the bins it overlaps, in proportion to the overlap (an
    interval of zero length counts in the bin of its end)."""
    if end <= start or bins < 1:
        return []
    width = (end - start) / bins
    requests = [0.0] * bins
    errors = [0.0] * bins
    buckets: list[list[float]] = [[] for _ in range(bins)]
    for i in intervals:
        lo, hi = max(i.start, start), min(i.end, end)
        if hi < lo or (hi == lo and not start <= i.end <= end):
            continue
        first = min(bins - 1, int((lo - start) / width))
        last = min(bins - 1, int((hi - start) / width))
        span = i.end - i.start
        for slot in range(first, last + 1):
            b0 = start + slot * width
            overlap = min(hi, b0 + width) - max(lo, b0)
            share = overlap / span if span > 0 else 1.0
            if share <= 0 and span > 0:
                continue
            requests[slot] += i.requests * share
            errors[slot] += i.errors * share
            if not buckets[slot]:
                buckets[slot] = [0.0] * len(i.latency_buckets)
            if len(buckets[slot]) == len(i.latency_buckets):
                for k, count in enumerate(i.latency_buckets):
                    buckets[slot][k] += count * share
    points = []
    for n in range(bins):
        hist = tuple(buckets[n])
        points.append(Point(
            time=start + (n + 0.5) * width, requests=requests[n], errors=errors[n],
            rps=requests[n] / width,
            error_rate=errors[n] / requests[n] if requests[n] > 1e-9 else None,
            p50_ms=histogram_percentile(hist, 0.5),  # type: ignore[arg-type]
            p95_ms=histogram_percentile(hist, 0.95),  # type: ignore[arg-type]
            p99_ms=histogram_percentile(hist, 0.99)))  # type: ignore[arg-type]
    return points


def compute_time_at_weight(traffic: Sequence[tuple[float, dict[str, int]]], version: str,
                           *, now: float) -> dict[int, float]:
    """Seconds the release spent at each weight > 0, from one environment's ``traffic``
    events (time, weights) in time order; the last table holds until ``now``."""
    spent: dict[int, float] = {}
    ordered = sorted(traffic, key=lambda t: t[0])
    for n, (at, weights) in enumerate(ordered):
        weight = int(weights.get(version, 0))
        until = ordered[n + 1][0] if n + 1 < len(ordered) else now
        if weight > 0 and until > at:
            spent[weight] = spent.get(weight, 0.0) + (until - at)
    return dict(sorted(spent.items()))
