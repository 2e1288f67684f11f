"""Another app's evidence (pure): a metric with ``app: web`` judges web's router while
this app's canary runs, so a release that breaks its callers is caught where the damage
shows (its own answers may all be 200s in a shape nobody can read).

The other app does not split its traffic for this rollout: there is no canary side and
stable side in its router. Its numbers are judged against themselves: its counts *during*
the analysis window (the canary side of the judges) against its counts over a stretch of
the same length just *before the window* (the stable side), every release of that
environment summed (callers see the whole app, whatever it is rolling out itself).

Why before the window and not before the canary first took traffic: the window's
baseline row is the one place that survives a controller restart, and both snapshots of
the "before" stretch are taken when the window begins (the controller keeps a short
history of the other app's snapshots for that, ``controller/peers.py``), so a restarted
controller judges the same two stretches. The price, said plainly: an analysis step that
follows a weight step compares against a stretch in which the canary already had the
previous weight, so it asks "did the callers get worse as the canary grew". The usual
canary (a small weight, then the analysis) is judged against callers the canary had
barely touched. A history shorter than the step (a controller started moments ago) gives
a shorter "before" stretch, and ``before_s`` says how long it was; no history at all, or
no request in the "before" stretch, is ``no-data`` like any metric without data (and no
request during the window is what the judges call too little data).

The baseline row holds, under ``peers``, one record per other app's environment::

    {"web/production": {"before": <snapshot>, "start": <snapshot>, "before_s": 30.0}}

where ``before`` was taken ``before_s`` seconds before ``start`` (the window's start).
Windows are differences of snapshots of monotonic series, as for this app's own router.
"""

from __future__ import annotations

from typing import Any

from entrega.analysis.providers.builtin import release_metrics, router_restarted
from entrega.analysis.window import WindowCounts, compute_window

#: Where a window's baseline keeps the other apps' snapshots.
PEERS = "peers"


def peer_key(app: str, environment: str) -> str:
    """How one other app's environment is named in a baseline (``web/production``)."""
    return f"{app}/{environment}"


def compute_app_window(baseline: dict[str, Any], latest: dict[str, Any]) -> WindowCounts:
    """Every release of one router summed over a window (baseline -> latest).

    Each release's window is its own difference (a release new in the window counts
    whole, one the router dropped counts nothing), then the windows are added: summing
    the snapshots first would see a dropped release as counters that went down."""
    restarted = router_restarted(baseline, latest)
    windows = [compute_window(release_metrics(baseline, version),
                              release_metrics(latest, version), router_restarted=restarted)
               for version in sorted(latest.get("releases", {}))]
    return sum_windows(windows)


def sum_windows(windows: list[WindowCounts]) -> WindowCounts:
    """The windows of several releases as one. The ring of recent latencies is dropped:
    rings of different releases do not interleave in time (judges of another app read
    the sketch, or else the histogram)."""
    if not windows:
        return WindowCounts(0, 0, ())
    width = max(len(w.latency_buckets) for w in windows)
    buckets = [0] * width
    for w in windows:
        if len(w.latency_buckets) == width:
            buckets = [a + b for a, b in zip(buckets, w.latency_buckets, strict=True)]
    sketches = [w.sketch for w in windows]
    sketch = None
    if all(s is not None for s in sketches):
        for s in sketches:
            assert s is not None
            sketch = s if sketch is None else sketch.merge(s)
    return WindowCounts(sum(w.requests for w in windows), sum(w.errors for w in windows),
                        tuple(buckets), samples_window=sum(w.samples_window for w in windows),
                        sketch=sketch)


def compute_peer_windows(record: dict[str, Any] | None, latest: dict[str, Any] | None, *,
                         duration_s: float = 0.0,
                         ) -> tuple[WindowCounts, WindowCounts] | str:
    """(during, before) of another app's environment, or why there is no data.

    ``record`` is the window's ``peers`` entry (``before``, ``start``, ``before_s``);
    ``latest`` the other app's snapshot now; ``duration_s`` how long the window has run."""
    if record is None or record.get("start") is None:
        return "its router did not answer when the window began"
    if latest is None:
        return "its router does not answer"
    if record.get("before") is None:
        return "no snapshot of it before the window (the controller had only just started)"
    before_s = float(record.get("before_s") or 0.0)
    if before_s <= 0:
        return "no stretch before the window to compare with"
    during = compute_app_window(record["start"], latest)
    before = compute_app_window(record["before"], record["start"])
    if before.requests == 0:
        # nothing to compare with: judging the window alone would be a different test
        return f"no request to it in the {before_s:.0f} s before the window"
    return (_lasting(during, duration_s), _lasting(before, before_s))


def _lasting(window: WindowCounts, duration_s: float) -> WindowCounts:
    return WindowCounts(window.requests, window.errors, window.latency_buckets,
                        samples_window=window.samples_window, duration_s=duration_s,
                        sketch=window.sketch)
