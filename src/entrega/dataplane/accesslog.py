"""HAProxy's per-request log lines, turned into the embedded router's per-release counters.

Why. HAProxy 2.6 keeps per-server counts and a moving average of response times, but no
latency of single requests: nothing a quantile or a rank test can be computed from. Its
per-request log has them, so HAProxy sends one line per finished request to the log sink
(``logsink.py``), which keeps, per release, exactly what the embedded router keeps in its
data path (``http/metrics.py``: requests, 5xx, the fixed buckets, the ring of recent
latencies) plus a :class:`~entrega.dataplane.sketch.LatencySketch`. The controller then
judges both router kinds on the same numbers.

The line (:data:`LOG_FORMAT`, written into haproxy.cfg by ``routers/haproxy/render.py``)::

    entrega1 <release> <backend> <status> <Ta ms> <latency us>

- ``<release>`` is the release HAProxy chose for the request (``txn.release``; ``-`` when
  none was: such requests belong to no release and are not counted).
- ``<latency us>`` is the time from the end of the request head (``txn.t0``, set by the
  first ``http-request`` rule) to the log line, which HAProxy emits after the last byte of
  the response: the interval the embedded router measures, in microseconds (HAProxy's own
  timers, ``%Ta``, count whole milliseconds: too coarse for requests that take less).
  When it is missing or negative (the wall clock stepped back), ``%Ta`` is used instead.
- ``<status>`` is ``-1`` when the client left before any answer; it counts as status 0,
  as in the embedded router.

Every counter is cumulative since the sink started; the sink's ``started_at`` names the
series, so a restart of the sink is seen as a restart by the windows.
"""

from __future__ import annotations

from dataclasses import dataclass

from entrega.dataplane.http.metrics import ReleaseStats
from entrega.dataplane.sketch import LatencySketch

#: The tag of entrega's log lines (and its version: a new layout gets a new tag).
TAG = "entrega1"
#: HAProxy's log-format of one request; the release names HAProxy accepts contain no
#: space (render.check_version), so the fields split on spaces.
LOG_FORMAT = (f"{TAG} %[var(txn.release)] %b %ST %Ta %[date(0,us),sub(txn.t0)]")
#: The variable the first ``http-request`` rule of a frontend sets (microseconds).
START_RULE = "http-request set-var(txn.t0) date(0,us)"

#: Releases kept beyond this many are forgotten, least recently served first, so a sink
#: living through hundreds of releases stays small (as the embedded router does).
MAX_RELEASES_KEPT = 64


@dataclass(frozen=True)
class Finished:
    """One request as its log line tells it."""

    release: str
    status: int
    latency_ms: float


def parse_line(line: bytes) -> Finished | None:
    """The request of one log line; None for anything else (HAProxy's own notices, a
    request that reached no release, a damaged line)."""
    parts = line.split()
    if len(parts) != 6 or parts[0] != TAG.encode() or parts[1] == b"-":
        return None
    try:
        release = parts[1].decode()
        status = int(parts[3])
        ta_ms = int(parts[4])
        micros = int(parts[5]) if parts[5] != b"-" else -1
    except (UnicodeDecodeError, ValueError):
        return None
    latency_ms = micros / 1000.0 if micros >= 0 else float(max(ta_ms, 0))
    return Finished(release, max(status, 0), latency_ms)


class ReleaseCounters:
    """The embedded router's counters of one release, plus its latency sketch."""

    __slots__ = ("stats", "sketch")

    def __init__(self) -> None:
        self.stats = ReleaseStats()
        self.sketch = LatencySketch()

    def record(self, status: int, latency_ms: float) -> None:
        self.stats.record(status, latency_ms)
        self.sketch.add(latency_ms)

    def to_dict(self) -> dict[str, object]:
        out = self.stats.to_dict()
        del out["inflight"]  # HAProxy knows requests in flight; a log line comes after
        out["latency_sketch"] = self.sketch.to_wire()
        return out


class AccessLogCounters:
    """Counters by release, filled from log lines; ``lines`` and ``ignored`` count every
    line received and those that were not a request of a release."""

    def __init__(self) -> None:
        self.releases: dict[str, ReleaseCounters] = {}
        self.lines = 0
        self.ignored = 0

    def feed(self, line: bytes) -> None:
        self.lines += 1
        request = parse_line(line)
        if request is None:
            self.ignored += 1
            return
        counters = self.releases.pop(request.release, None)
        if counters is None:
            counters = ReleaseCounters()
            if len(self.releases) >= MAX_RELEASES_KEPT:
                del self.releases[next(iter(self.releases))]
        # re-inserted last: the dict's order is the order releases were last served
        self.releases[request.release] = counters
        counters.record(request.status, request.latency_ms)

    def to_dict(self) -> dict[str, object]:
        return {"lines": self.lines, "ignored": self.ignored,
                "releases": {v: c.to_dict() for v, c in self.releases.items()}}
