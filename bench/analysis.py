"""How fast and how right canary analysis is: entrega's judges against Flagger and Kayenta.

    python -m bench.analysis            # the table (500 runs per scenario, a few minutes)
    python -m bench.analysis --json     # the same as one JSON object
    python -m bench.analysis --quick    # a smoke test (seconds)

The simulation, per run (request level, 15 minutes, one check per second):

- Poisson arrivals: the canary takes 10% of traffic (``--canary-rps`` 1, 10 or 100 req/s),
  stable the other 90% (9x the canary's rate).
- Errors: 0.5% of stable's requests fail. Canary and stable share the noise: an AR(1) on
  the log of the error rate (per-second correlation 0.95, sd 0.3) and bursts (one every
  5 minutes on average, 10 s long on average) that triple both error rates.
- Latency: lognormal (median 40 ms, sigma 0.6), scaled by the same shared noise (half its
  log amplitude) and doubled in bursts. Latencies are kept on a log grid of step
  ln(1.2)/8 (2.3%), so ``max_ratio`` 1.2 is exactly 8 bins; the latency scenarios shift the
  canary by a whole number of bins (+10% -> x1.095, +50% -> x1.507, reported in
  ``settings``).
- The router's ring of 2048 recent latencies per release is modelled: the latency judge
  sees the most recent common time span of both rings (whole seconds).

Scenarios: healthy, canary error rate x2 / x5 / x10, canary latency +10% / +50%; at each
canary rate. Judges, on the same traces:

- ``entrega``: the default judges (``DEFAULT_METRICS``): ``sequential`` on error counts (the
  judge's own decision function, called on every simulated check) and ``mann-whitney`` on
  latencies (the judge's own p-value function on U statistics computed from the binned
  samples; with bins, ties are midranked as scipy does). Rollback on the first failed check.
- ``flagger_10s`` / ``flagger_60s``: every interval, canary success rate >= 99% and p99
  <= 500 ms over that interval; rollback at the 5th failed check (``threshold: 5``).
- ``kayenta``: per-minute points (canary and stable error rate and p95), a one-sided
  Mann-Whitney test at 1% per metric over all points so far, checked every minute from
  the third; rollback on the first metric found higher.

``false_rollback_rate`` is the worst, over canary rates, of the share of healthy runs
rolled back within 15 minutes (``false_rollback_rate_by_rps`` has each). For the others,
``detection_rate`` is the share rolled back and ``median_detect_s`` the median time to
rollback over all runs (null when half or more were never rolled back).
``floor_s`` is Wald's floor for the error scenarios: ln(99) / KL(p_canary || p_stable) /
canary_rps, the expected time of an SPRT that knows both rates at 1% error probabilities;
``ratio_to_floor`` is ``median_detect_s / floor_s``. The latency +10% scenario is within
entrega's default ``max_ratio`` (1.2): rolling it back is not wanted there.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from entrega.analysis.judges.mann_whitney import MIN_TEST_SAMPLES, compute_p_greater
from entrega.analysis.judges.sequential import SequentialRule, decide_sequential
from entrega.config import DEFAULT_METRICS

#: the judge's own p-value (standard library, scalar) over arrays of runs
p_greater = np.vectorize(compute_p_greater, otypes=[float])

BASE_ERROR_RATE = 0.005
STABLE_PER_CANARY = 9  # the canary at 10% of traffic
RING = 2048  # the embedded router's ring of recent latencies per release
LATENCY_MEDIAN_MS = 40.0
LATENCY_SIGMA = 0.6
BIN = math.log(1.2) / 8
NOISE_PHI, NOISE_SD = 0.95, 0.3
BURST_START_PER_S, BURST_MEAN_S = 1 / 300, 10.0
BURST_ERRORS, BURST_LATENCY = 3.0, 2.0
FLAGGER_SUCCESS, FLAGGER_P99_MS, FLAGGER_THRESHOLD = 0.99, 500.0, 5
KAYENTA_INTERVAL_S, KAYENTA_ALPHA, KAYENTA_MIN_POINTS = 60, 0.01, 3

SCENARIOS: dict[str, tuple[float, float]] = {  # name -> (error multiplier, latency factor)
    "healthy": (1.0, 1.0),
    "errors_x2": (2.0, 1.0),
    "errors_x5": (5.0, 1.0),
    "errors_x10": (10.0, 1.0),
    "latency_+10%": (1.0, 1.1),
    "latency_+50%": (1.0, 1.5),
}
JUDGES = ("entrega", "flagger_60s", "flagger_10s", "kayenta")


@dataclass
class Settings:
    runs: int = 500
    duration_s: int = 900
    rps: tuple[int, ...] = (1, 10, 100)
    seed: int = 20240604
    extra: dict[str, Any] = field(default_factory=dict)


# -- the shared noise ----------------------------------------------------------------------

def simulate_noise(rng: np.random.Generator, runs: int, seconds: int,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per run and second: the log-noise (AR(1)) and whether a burst is on."""
    x = np.empty((runs, seconds))
    x[:, 0] = rng.standard_normal(runs) * NOISE_SD
    steps = rng.standard_normal((runs, seconds)) * NOISE_SD * math.sqrt(1 - NOISE_PHI ** 2)
    for t in range(1, seconds):
        x[:, t] = NOISE_PHI * x[:, t - 1] + steps[:, t]
    burst = np.zeros((runs, seconds), dtype=bool)
    starts = np.argwhere(rng.random((runs, seconds)) < BURST_START_PER_S)
    lengths = rng.geometric(1 / BURST_MEAN_S, len(starts))
    for (run, start), length in zip(starts, lengths, strict=True):
        burst[run, start:start + length] = True
    return x, burst


# -- errors --------------------------------------------------------------------------------

@dataclass
class ErrorTrace:
    canary_requests: np.ndarray  # (runs, seconds) per second
    canary_errors: np.ndarray
    stable_requests: np.ndarray
    stable_errors: np.ndarray


def simulate_errors(rng: np.random.Generator, noise: tuple[np.ndarray, np.ndarray],
                    canary_rps: float, multiplier: float) -> ErrorTrace:
    x, burst = noise
    shared = np.exp(x) * np.where(burst, BURST_ERRORS, 1.0)
    nc = rng.poisson(canary_rps, x.shape)
    ns = rng.poisson(canary_rps * STABLE_PER_CANARY, x.shape)
    ec = rng.binomial(nc, np.minimum(1.0, BASE_ERROR_RATE * multiplier * shared))
    es = rng.binomial(ns, np.minimum(1.0, BASE_ERROR_RATE * shared))
    return ErrorTrace(nc, ec, ns, es)


def entrega_errors_first_fail(trace: ErrorTrace, rule: SequentialRule) -> np.ndarray:
    """Seconds to the first failed check of the sequential judge (inf: never)."""
    cum = [np.cumsum(a, axis=1).tolist() for a in (trace.canary_errors, trace.canary_requests,
                                                     trace.stable_errors, trace.stable_requests)]
    runs, seconds = trace.canary_requests.shape
    first = np.full(runs, np.inf)
    for run in range(runs):
        kc, nc, ks, ns = (c[run] for c in cum)
        for t in range(seconds):
            if decide_sequential(rule, kc[t], nc[t], ks[t], ns[t])[0] == "fail":
                first[run] = t + 1
                break
    return first


def per_interval(a: np.ndarray, interval: int) -> np.ndarray:
    runs, seconds = a.shape
    whole = seconds // interval
    return a[:, :whole * interval].reshape(runs, whole, interval).sum(axis=2)


def flagger_error_fails(trace: ErrorTrace, interval: int) -> np.ndarray:
    """(runs, intervals): the interval's canary success rate is below 99% (or no data)."""
    n = per_interval(trace.canary_requests, interval)
    e = per_interval(trace.canary_errors, interval)
    with np.errstate(divide="ignore", invalid="ignore"):
        success = np.where(n > 0, 1 - e / np.maximum(n, 1), 0.0)
    return success < FLAGGER_SUCCESS


# -- latency -------------------------------------------------------------------------------

@dataclass
class LatencyResult:
    entrega_first_fail: np.ndarray  # (runs,)
    flagger_fails: dict[int, np.ndarray]  # interval -> (runs, intervals) p99 too high
    kayenta_canary_p95: np.ndarray  # (runs, minutes)
    kayenta_stable_p95: np.ndarray


def _latency_grid(factor_bins: int) -> tuple[float, int, np.ndarray]:
    """(log of bin 0's lower edge, bins, base probabilities of offsets 0..len-1)."""
    half = 4.5 * LATENCY_SIGMA
    edges = np.arange(-half, half + BIN, BIN)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(edges / (LATENCY_SIGMA * math.sqrt(2))))
    probs = np.diff(cdf)
    probs /= probs.sum()
    max_shift = int(math.ceil((math.log(BURST_LATENCY) + 4 * NOISE_SD * 0.5) / BIN))
    low = math.log(LATENCY_MEDIAN_MS) - half - 4 * NOISE_SD * 0.5
    bins = len(probs) + 2 * max_shift + factor_bins + 8 + 4
    return low, bins, probs


def _u_stat(c: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """U of c against s (histograms on the same bins), m, n and the tie term."""
    below = np.cumsum(s, axis=1) - s
    u = (c * (below + 0.5 * s)).sum(axis=1)
    t = (c + s).astype(float)
    return u, c.sum(axis=1), s.sum(axis=1), (t ** 3 - t).sum(axis=1)


def _censor(h: np.ndarray, floor_bin: np.ndarray) -> np.ndarray:
    """Move every count below ``floor_bin`` (per row) into that bin."""
    cols = np.arange(h.shape[1])[None, :]
    below = cols < floor_bin[:, None]
    out = np.where(below, 0, h)
    np.add.at(out, (np.arange(h.shape[0]), floor_bin), (h * below).sum(axis=1))
    return out


def mann_whitney_fails(canary: np.ndarray, stable: np.ndarray, ratio_bins: int,
                       quantile: float, per_test_alpha: float) -> np.ndarray:
    """Rows where entrega's mann-whitney judge fails, on binned samples."""
    shifted = np.zeros_like(stable)
    shifted[:, ratio_bins:] = stable[:, :-ratio_bins]
    u, m, n, ties = _u_stat(canary, shifted)
    p = p_greater(u, m, n, ties)
    fail = p < per_test_alpha
    pooled = canary + shifted
    total = pooled.sum(axis=1)
    rank = (2 * quantile - 1) * total
    floor_bin = np.argmax(np.cumsum(pooled, axis=1) >= rank[:, None], axis=1)
    u, m, n, ties = _u_stat(_censor(canary, floor_bin), _censor(shifted, floor_bin))
    fail |= p_greater(u, m, n, ties) < per_test_alpha
    return fail & (m >= MIN_TEST_SAMPLES) & (n >= MIN_TEST_SAMPLES)


def _hist_quantile_ms(h: np.ndarray, q: float, low: float) -> np.ndarray:
    total = h.sum(axis=-1)
    idx = np.argmax(np.cumsum(h, axis=-1) >= (q * total)[..., None], axis=-1)
    value = np.exp(low + (idx + 0.5) * BIN)
    return np.where(total > 0, value, np.nan)


def simulate_latency(rng: np.random.Generator, noise: tuple[np.ndarray, np.ndarray],
                     canary_rps: float, factor: float) -> LatencyResult:
    x, burst = noise
    runs, seconds = x.shape
    cfg = DEFAULT_METRICS["latency-p95"]
    max_ratio = cfg.max_ratio or 1.2
    ratio_bins = round(math.log(max_ratio) / BIN)
    factor_bins = round(math.log(factor) / BIN)
    quantile = 0.95
    per_test = cfg.alpha / (2 * cfg.max_checks)
    low, bins, probs = _latency_grid(factor_bins + ratio_bins)
    base_shift = int(math.ceil((math.log(BURST_LATENCY) + 4 * NOISE_SD * 0.5) / BIN))
    shifts = np.rint((0.5 * x + np.where(burst, math.log(BURST_LATENCY), 0.0)) / BIN)
    shifts = np.clip(shifts.astype(int) + base_shift, 0, 2 * base_shift)
    stable_rps = canary_rps * STABLE_PER_CANARY
    span_max = max(1, min(seconds, int(RING // stable_rps)))
    ring_c = np.zeros((span_max, runs, bins), dtype=np.int32)
    ring_s = np.zeros_like(ring_c)
    win_c = np.zeros((runs, bins), dtype=np.int64)
    win_s = np.zeros_like(win_c)
    offsets = np.arange(len(probs))[None, :]
    rows = np.arange(runs)[:, None]
    first = np.full(runs, np.inf)
    intervals = (10, 60)
    acc = {i: np.zeros((runs, bins), dtype=np.int64) for i in intervals}
    flagger = {i: np.zeros((runs, seconds // i), dtype=bool) for i in intervals}
    kay_s_acc = np.zeros((runs, bins), dtype=np.int64)
    minutes = seconds // KAYENTA_INTERVAL_S
    kay_c = np.full((runs, minutes), np.nan)
    kay_s = np.full((runs, minutes), np.nan)
    for t in range(seconds):
        hc = np.zeros((runs, bins), dtype=np.int32)
        hs = np.zeros_like(hc)
        cols = shifts[:, t][:, None] + offsets
        hc[rows, cols + factor_bins] = rng.poisson(canary_rps * probs, (runs, len(probs)))
        hs[rows, cols] = rng.poisson(stable_rps * probs, (runs, len(probs)))
        slot = t % span_max
        if t >= span_max:
            win_c -= ring_c[slot]
            win_s -= ring_s[slot]
        ring_c[slot], ring_s[slot] = hc, hs
        win_c += hc
        win_s += hs
        live = np.isinf(first)
        if live.any():
            fails = mann_whitney_fails(win_c[live], win_s[live], ratio_bins, quantile, per_test)
            idx = np.flatnonzero(live)[fails]
            first[idx] = t + 1
        for i in intervals:
            acc[i] += hc
            if (t + 1) % i == 0:
                total = acc[i].sum(axis=1)
                p99 = _hist_quantile_ms(acc[i], 0.99, low)
                flagger[i][:, (t + 1) // i - 1] = (total == 0) | (p99 > FLAGGER_P99_MS)
                if i == KAYENTA_INTERVAL_S:
                    kay_c[:, (t + 1) // i - 1] = _hist_quantile_ms(acc[i], 0.95, low)
                acc[i][:] = 0
        kay_s_acc += hs
        if (t + 1) % KAYENTA_INTERVAL_S == 0:
            kay_s[:, (t + 1) // KAYENTA_INTERVAL_S - 1] = _hist_quantile_ms(kay_s_acc, 0.95, low)
            kay_s_acc[:] = 0
    return LatencyResult(first, flagger, kay_c, kay_s)


# -- Kayenta -------------------------------------------------------------------------------

def kayenta_first_fail(points_c: list[np.ndarray], points_s: list[np.ndarray]) -> np.ndarray:
    """Seconds to the first minute at which any metric's canary points are significantly
    higher than stable's (one-sided Mann-Whitney over all points so far)."""
    runs, minutes = points_c[0].shape
    first = np.full(runs, np.inf)
    for k in range(KAYENTA_MIN_POINTS, minutes + 1):
        fail = np.zeros(runs, dtype=bool)
        for c, s in zip(points_c, points_s, strict=True):
            x, y = np.nan_to_num(c[:, :k], nan=0.0), np.nan_to_num(s[:, :k], nan=0.0)
            gt = (x[:, :, None] > y[:, None, :]).sum(axis=(1, 2))
            eq = (x[:, :, None] == y[:, None, :]).sum(axis=(1, 2))
            u = gt + 0.5 * eq
            pooled = np.concatenate([x, y], axis=1)
            srt = np.sort(pooled, axis=1)
            ties = np.zeros(runs)
            for r in range(runs):
                _, counts = np.unique(srt[r], return_counts=True)
                ties[r] = float(((counts.astype(float)) ** 3 - counts).sum())
            fail |= p_greater(u, float(k), float(k), ties) < KAYENTA_ALPHA
        first = np.where(np.isinf(first) & fail, k * KAYENTA_INTERVAL_S, first)
    return first


# -- putting it together -------------------------------------------------------------------

def flagger_first_fail(fails: np.ndarray, interval: int) -> np.ndarray:
    count = np.cumsum(fails, axis=1)
    hit = count >= FLAGGER_THRESHOLD
    return np.where(hit.any(axis=1), (np.argmax(hit, axis=1) + 1) * interval, np.inf)


def wald_floor_s(multiplier: float, canary_rps: float) -> float:
    p, q = BASE_ERROR_RATE * multiplier, BASE_ERROR_RATE
    kl = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    return math.log(99) / kl / canary_rps


def run_rps(settings: Settings, canary_rps: int, rng: np.random.Generator,
            progress: Any) -> dict[str, dict[str, np.ndarray]]:
    """First-rollback times (inf: never) per scenario and judge at one canary rate."""
    runs, seconds = settings.runs, settings.duration_s
    noise = simulate_noise(rng, runs, seconds)
    cfg = DEFAULT_METRICS["error-rate"]
    rule = SequentialRule(max_ratio=cfg.max_ratio or 1.0, max_increase=cfg.max_increase or 0.0,
                          alpha=cfg.alpha, min_requests=cfg.min_requests)
    errors: dict[float, ErrorTrace] = {}
    latency: dict[float, LatencyResult] = {}
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, (multiplier, factor) in SCENARIOS.items():
        progress(f"{name}@{canary_rps}rps")
        # Common random numbers: an error scenario reuses the healthy latency traces and
        # a latency scenario the healthy error traces.
        if multiplier not in errors:
            errors[multiplier] = simulate_errors(np.random.default_rng(rng.integers(2**63)),
                                                 noise, canary_rps, multiplier)
        if factor not in latency:
            latency[factor] = simulate_latency(np.random.default_rng(rng.integers(2**63)),
                                               noise, canary_rps, factor)
        err, lat = errors[multiplier], latency[factor]
        entrega = np.minimum(entrega_errors_first_fail(err, rule), lat.entrega_first_fail)
        result = {"entrega": entrega}
        for interval in (60, 10):
            fails = flagger_error_fails(err, interval) | lat.flagger_fails[interval]
            result[f"flagger_{interval}s"] = flagger_first_fail(fails, interval)
        minute_c = per_interval(err.canary_errors, 60) / np.maximum(
            per_interval(err.canary_requests, 60), 1)
        minute_s = per_interval(err.stable_errors, 60) / np.maximum(
            per_interval(err.stable_requests, 60), 1)
        result["kayenta"] = kayenta_first_fail([minute_c, lat.kayenta_canary_p95],
                                               [minute_s, lat.kayenta_stable_p95])
        out[name] = result
    return out


def summarise(times: dict[int, dict[str, dict[str, np.ndarray]]], settings: Settings,
              ) -> dict[str, Any]:
    judges: dict[str, Any] = {}
    for judge in JUDGES:
        by_rps = {f"{rps}rps": float(np.mean(np.isfinite(times[rps]["healthy"][judge])))
                  for rps in settings.rps}
        detection: dict[str, float] = {}
        median: dict[str, float | None] = {}
        floor: dict[str, float] = {}
        ratio: dict[str, float | None] = {}
        for name, (multiplier, _) in SCENARIOS.items():
            if name == "healthy":
                continue
            for rps in settings.rps:
                key = f"{name}@{rps}rps"
                t = times[rps][name][judge]
                detection[key] = float(np.mean(np.isfinite(t)))
                med = float(np.median(t))
                median[key] = med if math.isfinite(med) else None
                if multiplier != 1.0:
                    floor[key] = round(wald_floor_s(multiplier, rps), 2)
                    ratio[key] = (round(med / floor[key], 2) if math.isfinite(med) else None)
        judges[judge] = {
            "false_rollback_rate": max(by_rps.values()),
            "false_rollback_rate_by_rps": by_rps,
            "detection_rate": detection,
            "median_detect_s": median,
            "floor_s": floor,
            "ratio_to_floor": ratio,
        }
    return judges


def run(settings: Settings, progress: Any = lambda _: None) -> dict[str, Any]:
    rng = np.random.default_rng(settings.seed)
    started = time.monotonic()
    times = {rps: run_rps(settings, rps, rng, progress) for rps in settings.rps}
    return {
        "judges": summarise(times, settings),
        "settings": {
            "runs_per_scenario": settings.runs, "duration_s": settings.duration_s,
            "check_every_s": 1, "canary_rps": list(settings.rps),
            "stable_rps_per_canary_rps": STABLE_PER_CANARY,
            "base_error_rate": BASE_ERROR_RATE, "seed": settings.seed,
            "latency_factors_simulated": {
                name: round(math.exp(round(math.log(f) / BIN) * BIN), 3)
                for name, (_, f) in SCENARIOS.items() if f != 1.0},
            "elapsed_s": round(time.monotonic() - started, 1),
            **settings.extra,
        },
    }


def render_table(result: dict[str, Any]) -> str:
    judges = result["judges"]
    keys = list(judges["entrega"]["detection_rate"])
    lines = []
    head = f"{'scenario':<22}{'floor':>8}" + "".join(f"{j:>22}" for j in JUDGES)
    lines.append(head)
    lines.append(f"{'healthy: false rollbacks':<30}" + "".join(
        f"{judges[j]['false_rollback_rate']:>22.1%}" for j in JUDGES))
    for key in keys:
        floor = judges["entrega"]["floor_s"].get(key)
        cells = []
        for j in JUDGES:
            rate = judges[j]["detection_rate"][key]
            med = judges[j]["median_detect_s"][key]
            ratio = judges[j]["ratio_to_floor"].get(key)
            shown = "never" if med is None else f"{med:.0f}s"
            if ratio is not None:
                shown += f" ({ratio:.1f}x)"
            cells.append(f"{rate:>7.0%} {shown:>14}")
        floor_s = f"{floor:.1f}s" if floor is not None else "-"
        lines.append(f"{key:<22}{floor_s:>8}" + "".join(cells))
    s = result["settings"]
    lines.append("")
    lines.append(f"cells: detection rate, median time to rollback (x Wald's floor); "
                 f"{s['runs_per_scenario']} runs of {s['duration_s']}s per scenario, "
                 f"stable at {s['stable_rps_per_canary_rps']}x the canary's rate; "
                 f"{s['elapsed_s']}s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario (500)")
    parser.add_argument("--duration-s", type=int, default=None, help="canary length (900)")
    parser.add_argument("--seed", type=int, default=Settings.seed)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 20 runs of 180 s (numbers are not meaningful)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    settings = Settings(runs=20, duration_s=180) if args.quick else Settings()
    settings.seed = args.seed
    if args.runs is not None:
        settings.runs = args.runs
    if args.duration_s is not None:
        settings.duration_s = args.duration_s
    settings.extra = {"command": "python -m bench.analysis " + " ".join(argv or sys.argv[1:])}

    def progress(what: str) -> None:
        print(f"  {what}", file=sys.stderr, flush=True)

    result = run(settings, progress)
    print(json.dumps(result, indent=2) if args.json else render_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
