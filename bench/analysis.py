"""How fast and how right canary analysis is: entrega's judges against Flagger and Kayenta.

    python -m bench.analysis            # the table (500 runs per scenario, several minutes)
    python -m bench.analysis --json     # the same as one JSON object
    python -m bench.analysis --quick    # a smoke test (seconds)

The simulation, per run (request level, 15 minutes, one check per second):

- Poisson arrivals: the canary takes on average 10% of traffic (``--canary-rps`` 1, 10 or
  100 req/s), stable the other 90% (9x the canary's average rate).
- Errors: 0.5% of stable's requests fail. Canary and stable share the noise: an AR(1) on
  the log of the error rate (per-second correlation 0.95, sd 0.3) and bursts (one every
  5 minutes on average, 10 s long on average) that triple both error rates.
- Latency: lognormal (median 40 ms, sigma 0.6), scaled by the same shared noise (half its
  log amplitude) and doubled in bursts.
- Drift: traffic drifts over the run as real traffic does. Both releases' error rate and
  latency rise and fall together (a slow wave of random period 5-15 minutes: errors
  x0.6 to x1.65, latency x0.86 to x1.16), and the canary's share of traffic drifts (another
  wave: the canary's rate between 0.5x and 1.5x its average, stable's unchanged).
- Latencies are counted in the routers' sketch buckets (``dataplane/sketch.py``, 2% wide):
  a second of requests is a sketch, and a window is the sum of its seconds' sketches,
  every request of it, as the routers give it. The scenarios shift the canary by whole
  buckets (x1.3 -> x1.296, reported in ``settings``).

Scenarios, at each canary rate: healthy; canary error rate x2 / x4 / x5 / x10; every
canary request +10% / +50% / x1.3 slower; the slowest 5% of canary requests 3x slower
(``latency_tail5x3``: p95 x1.26, p99 x1.8); 2% of canary requests 10x slower
(``latency_tail2x10``: p99 x4.4). Judges, on the same traces:

- ``entrega``: the default analysis (``DEFAULT_ANALYSIS``: error-rate, latency-p95,
  latency-p99) with the judges' own decision functions, called on every simulated check
  (``decide_sequential`` on the counts; ``decide_quantile`` on evidence computed from the
  window's sketch as ``compute_quantile_evidence`` does). Rollback on the first failed
  check of any metric.
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

The ``step`` block replays the rollout's analysis step with the README defaults (30 s,
checked every second, ``failure_limit`` 0, ``inconclusive_limit`` 2) on the first 90 s of
the same traces: ``rolled_back`` at the first failed check of any metric, ``passed`` when
every metric passes at the end of the step (30 s) or of an extension (60 s, 90 s),
``paused`` otherwise; rates of entrega's judges only (the others have no pass).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from entrega.analysis.evaluate import quantile_rule
from entrega.analysis.judges.mann_whitney import compute_p_greater
from entrega.analysis.judges.quantile import (
    PASS_ALTERNATIVES,
    TAIL_ALTERNATIVES,
    QuantileEvidence,
    QuantileRule,
    compute_confidence_ranks,
    compute_log_ratio,
    decide_quantile,
)
from entrega.analysis.judges.sequential import SequentialRule, decide_sequential
from entrega.config import DEFAULT_ANALYSIS, DEFAULT_METRICS, MetricConfig
from entrega.dataplane.sketch import GAMMA, bucket_index, bucket_value

BASE_ERROR_RATE = 0.005
STABLE_PER_CANARY = 9  # the canary at 10% of traffic on average
LATENCY_MEDIAN_MS = 40.0
LATENCY_SIGMA = 0.6
BIN = math.log(GAMMA)  # one sketch bucket
NOISE_PHI, NOISE_SD = 0.95, 0.3
BURST_START_PER_S, BURST_MEAN_S = 1 / 300, 10.0
BURST_ERRORS, BURST_LATENCY = 3.0, 2.0
#: the drift: log amplitude of the shared wave on errors and latency, of the canary share
DRIFT_ERRORS, DRIFT_LATENCY, DRIFT_SHARE = 0.5, 0.15, 0.5
DRIFT_PERIOD_S = (300, 900)
FLAGGER_SUCCESS, FLAGGER_P99_MS, FLAGGER_THRESHOLD = 0.99, 500.0, 5
KAYENTA_INTERVAL_S, KAYENTA_ALPHA, KAYENTA_MIN_POINTS = 60, 0.01, 3
STEP_S, STEP_LOOKS = 30, 3  # the README's analysis step: 30 s, inconclusive_limit 2

#: name -> (error multiplier, latency change, drift); a latency change is ("scale", factor)
#: for every request, or ("tail", share, factor) for the slowest ``share`` of requests. The
#: first scenarios keep the first benchmark's noise model (no drift) so their figures stay
#: comparable; the ones added with the quantile judge drift.
SCENARIOS: dict[str, tuple[float, tuple[Any, ...], bool]] = {
    "healthy": (1.0, ("scale", 1.0), False),
    "errors_x2": (2.0, ("scale", 1.0), False),
    "errors_x5": (5.0, ("scale", 1.0), False),
    "errors_x10": (10.0, ("scale", 1.0), False),
    "latency_+10%": (1.0, ("scale", 1.1), False),
    "latency_+50%": (1.0, ("scale", 1.5), False),
    "healthy_drift": (1.0, ("scale", 1.0), True),
    "errors_x4": (4.0, ("scale", 1.0), True),
    "latency_x1.3": (1.0, ("scale", 1.3), True),
    "latency_tail5x3": (1.0, ("tail", 0.05, 3.0), True),
    "latency_tail2x10": (1.0, ("tail", 0.02, 10.0), True),
}
HEALTHY = ("healthy", "healthy_drift")
#: the step block's keys and the scenario each replays (healthy: with drift)
STEP_SCENARIOS = {"healthy@10rps": "healthy_drift@10rps", "healthy@1rps": "healthy_drift@1rps",
                  "errors_x4@10rps": "errors_x4@10rps", "errors_x4@1rps": "errors_x4@1rps",
                  "latency_tail5x3@10rps": "latency_tail5x3@10rps"}
JUDGES = ("entrega", "flagger_60s", "flagger_10s", "kayenta")
#: verdict codes of the per-check arrays
INCONCLUSIVE, PASS, FAIL = 0, 1, 2


@dataclass
class Settings:
    runs: int = 500
    duration_s: int = 900
    rps: tuple[int, ...] = (1, 10, 100)
    seed: int = 20240604
    extra: dict[str, Any] = field(default_factory=dict)


# -- the shared noise and the drift --------------------------------------------------------

@dataclass
class Noise:
    x: np.ndarray  # (runs, seconds) AR(1) log-noise
    burst: np.ndarray  # (runs, seconds) bool
    wave: np.ndarray  # (runs, seconds) shared drift in [-1, 1]
    share: np.ndarray  # (runs, seconds) canary rate / its average


def _wave(rng: np.random.Generator, runs: int, seconds: int) -> np.ndarray:
    period = rng.uniform(*DRIFT_PERIOD_S, runs)[:, None]
    phase = rng.uniform(0, 2 * math.pi, runs)[:, None]
    return np.asarray(np.sin(2 * math.pi * np.arange(seconds)[None, :] / period + phase))


def simulate_noise(rng: np.random.Generator, runs: int, seconds: int) -> Noise:
    """Per run and second: the log-noise (AR(1)), bursts, the drift and the canary share."""
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
    wave = _wave(rng, runs, seconds)
    share = np.exp(DRIFT_SHARE * _wave(rng, runs, seconds))
    share /= share.mean(axis=1, keepdims=True)  # the canary's average rate is as named
    return Noise(x, burst, wave, share)


# -- errors --------------------------------------------------------------------------------

@dataclass
class ErrorTrace:
    canary_requests: np.ndarray  # (runs, seconds) per second
    canary_errors: np.ndarray
    stable_requests: np.ndarray
    stable_errors: np.ndarray


def simulate_errors(rng: np.random.Generator, noise: Noise, canary_rps: float,
                    multiplier: float) -> ErrorTrace:
    shared = np.exp(noise.x + DRIFT_ERRORS * noise.wave) * np.where(noise.burst,
                                                                     BURST_ERRORS, 1.0)
    nc = rng.poisson(canary_rps * noise.share)
    ns = rng.poisson(canary_rps * STABLE_PER_CANARY, noise.x.shape)
    ec = rng.binomial(nc, np.minimum(1.0, BASE_ERROR_RATE * multiplier * shared))
    es = rng.binomial(ns, np.minimum(1.0, BASE_ERROR_RATE * shared))
    return ErrorTrace(nc, ec, ns, es)


def sequential_rule(cfg: MetricConfig) -> SequentialRule:
    return SequentialRule(max_ratio=cfg.max_ratio or 1.0, max_increase=cfg.max_increase or 0.0,
                          alpha=cfg.alpha, min_requests=cfg.min_requests,
                          pass_ratio=cfg.pass_ratio or SequentialRule.pass_ratio,
                          pass_rate=cfg.pass_rate, beta=cfg.beta)


def entrega_error_verdicts(trace: ErrorTrace, rule: SequentialRule, step_s: int,
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(first failed check in s, inf: never; per-check verdict codes of the first
    ``step_s`` seconds) of the sequential judge, called on every check."""
    cum = [np.cumsum(a, axis=1).tolist() for a in (trace.canary_errors, trace.canary_requests,
                                                     trace.stable_errors, trace.stable_requests)]
    runs, seconds = trace.canary_requests.shape
    first = np.full(runs, np.inf)
    codes = np.zeros((runs, step_s), dtype=np.int8)
    code = {"fail": FAIL, "pass": PASS}
    for run in range(runs):
        kc, nc, ks, ns = (c[run] for c in cum)
        for t in range(seconds):
            verdict = decide_sequential(rule, kc[t], nc[t], ks[t], ns[t])[0]
            if t < step_s:
                codes[run, t] = code.get(verdict, INCONCLUSIVE)
            if verdict == "fail":
                first[run] = t + 1
                codes[run, t + 1:] = FAIL
                break
    return first, codes


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


# -- latency: the grid of sketch buckets ---------------------------------------------------

@dataclass(frozen=True)
class Grid:
    """The simulated buckets: bin ``k`` is sketch bucket ``first_index + k``."""

    first_index: int
    bins: int
    base: np.ndarray  # probabilities of the unshifted lognormal over offsets 0..len-1
    max_noise_shift: int

    def values_ms(self) -> np.ndarray:
        return np.array([bucket_value(self.first_index + k) for k in range(self.bins)])


def make_grid(max_scenario_shift: int) -> Grid:
    """Sketch buckets wide enough for the base lognormal (+-4.5 sigma), the shared noise
    either way and the largest scenario shift."""
    half = 4.5 * LATENCY_SIGMA
    noise_span = math.log(BURST_LATENCY) + 4 * NOISE_SD * 0.5 + DRIFT_LATENCY
    max_noise_shift = math.ceil(noise_span / BIN)
    base_first = bucket_index(LATENCY_MEDIAN_MS * math.exp(-half))
    base_last = bucket_index(LATENCY_MEDIAN_MS * math.exp(half))
    # bucket i holds (GAMMA**(i-1), GAMMA**i]: the lower tail goes to the first bucket
    upper = np.arange(base_first, base_last + 1) * BIN - math.log(LATENCY_MEDIAN_MS)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(upper / (LATENCY_SIGMA * math.sqrt(2))))
    probs = np.diff(np.concatenate([[0.0], cdf]))
    probs /= probs.sum()
    bins = len(probs) + 2 * max_noise_shift + max_scenario_shift + 2
    return Grid(base_first - max_noise_shift, bins, probs, max_noise_shift)


def canary_probs(grid: Grid, change: tuple[Any, ...]) -> np.ndarray:
    """The canary's distribution over offsets: the base one with the scenario's change."""
    out = np.zeros(len(grid.base) + scenario_shift(change))
    if change[0] == "scale":
        shift = round(math.log(change[1]) / BIN)
        out[shift:shift + len(grid.base)] = grid.base
        return out
    _, share, factor = change
    shift = round(math.log(factor) / BIN)
    cdf = np.cumsum(grid.base)
    slow = cdf > 1 - share  # the slowest share of requests (whole buckets)
    out[:len(grid.base)] = np.where(slow, 0.0, grid.base)
    out[shift:shift + len(grid.base)] += np.where(slow, grid.base, 0.0)
    return out


def scenario_shift(change: tuple[Any, ...]) -> int:
    factor = change[1] if change[0] == "scale" else change[2]
    return max(0, round(math.log(factor) / BIN))


# -- latency: entrega's quantile judge over the window's sketch ----------------------------

class QuantileJudge:
    """``compute_quantile_evidence`` for many runs at once, over grid histograms (each row
    a window's sketch); the verdict is the judge's own ``decide_quantile``."""

    def __init__(self, rule: QuantileRule, grid: Grid) -> None:
        self.rule = rule
        self.grid = grid
        values = grid.values_ms()
        self.log_values = np.log(values)
        # the first grid bin whose requests are surely above max_ratio x a bin's value
        # (count_above: buckets after the threshold's own) and possibly at or above it
        # (count_above inclusive: from the threshold's own bucket)
        fail_index = np.array([bucket_index(rule.max_ratio * v) for v in values])
        pass_index = np.array([bucket_index((rule.pass_ratio or rule.max_ratio) * v / GAMMA)
                               for v in values])
        self.fail_from = np.clip(fail_index + 1 - grid.first_index, 0, grid.bins)
        self.pass_from = np.clip(pass_index - grid.first_index, 0, grid.bins)
        self.log_ratio = np.vectorize(compute_log_ratio, otypes=[float], excluded={2, 3})
        self.p_greater = np.vectorize(compute_p_greater, otypes=[float])

    def _rank_bin(self, cum: np.ndarray, rank: np.ndarray) -> np.ndarray:
        return np.argmax(cum >= rank[:, None], axis=1)

    def _count_from(self, cum_c: np.ndarray, total_c: np.ndarray,
                    start: np.ndarray) -> np.ndarray:
        before = np.where(start > 0, np.take_along_axis(
            cum_c, np.maximum(start - 1, 0)[:, None], axis=1)[:, 0], 0)
        return total_c - before

    def verdicts(self, canary: np.ndarray, stable: np.ndarray) -> np.ndarray:
        """Verdict codes per row (INCONCLUSIVE, PASS, FAIL)."""
        rule, q = self.rule, self.rule.quantile
        m, n = canary.sum(axis=1), stable.sum(axis=1)
        out = np.zeros(len(m), dtype=np.int8)
        live = (m > 0) & (n > 0)
        if not live.any():
            return out
        c, s, m, n = canary[live], stable[live], m[live], n[live]
        cum_c, cum_s = np.cumsum(c, axis=1), np.cumsum(s, axis=1)
        ranks = [compute_confidence_ranks(int(k), q) for k in n]
        low = self._rank_bin(cum_s, np.array([r[0] for r in ranks]))
        high = self._rank_bin(cum_s, np.array([r[1] for r in ranks]))
        above_fail = self._count_from(cum_c, m, self.fail_from[high])
        above_pass = self._count_from(cum_c, m, self.pass_from[low])
        log_tail = self.log_ratio(above_fail, m, 1 - q, TAIL_ALTERNATIVES)
        log_pass = self.log_ratio(above_pass, m, 1 - q, PASS_ALTERNATIVES)
        canary_q = self._rank_bin(cum_c, np.maximum(1, np.ceil(q * m)))
        stable_q = self._rank_bin(cum_s, np.maximum(1, np.ceil(q * n)))
        below = cum_s - s
        u = (c * (below + 0.5 * s)).sum(axis=1)
        pooled = (c + s).astype(float)
        ties = (pooled ** 3 - pooled).sum(axis=1)
        p_location = self.p_greater(u, m, n, ties)
        ratio = np.exp((c * self.log_values).sum(axis=1) / m
                       - (s * self.log_values).sum(axis=1) / n)
        values = self.grid.values_ms()
        codes = []
        for i in range(len(m)):
            evidence = QuantileEvidence(
                int(m[i]), int(n[i]), float(values[canary_q[i]]), float(values[stable_q[i]]),
                int(above_fail[i]), float(log_tail[i]), int(above_pass[i]), float(log_pass[i]),
                float(p_location[i]), float(ratio[i]), None, None)
            verdict = decide_quantile(rule, evidence)[0]
            codes.append(FAIL if verdict == "fail" else PASS if verdict == "pass"
                         else INCONCLUSIVE)
        out[live] = codes
        return out


# -- latency: one scenario's traces --------------------------------------------------------

@dataclass
class LatencyResult:
    entrega_first_fail: np.ndarray  # (runs,)
    entrega_step: np.ndarray  # (latency metrics, runs, step seconds) verdict codes
    flagger_fails: dict[int, np.ndarray]  # interval -> (runs, intervals) p99 too high
    kayenta_canary_p95: np.ndarray  # (runs, minutes)
    kayenta_stable_p95: np.ndarray


def _hist_quantile_ms(h: np.ndarray, q: float, values: np.ndarray) -> np.ndarray:
    total = h.sum(axis=-1)
    idx = np.argmax(np.cumsum(h, axis=-1) >= (q * total)[..., None], axis=-1)
    return np.where(total > 0, values[idx], np.nan)


def latency_metrics() -> dict[str, QuantileRule]:
    """The default analysis' latency metrics, as the judge sees them."""
    out = {}
    for name in DEFAULT_ANALYSIS:
        cfg = DEFAULT_METRICS[name]
        measure = cfg.measure or name
        if measure.startswith("latency-p"):
            out[name] = quantile_rule(cfg, int(measure.removeprefix("latency-p")) / 100)
    return out


def simulate_latency(rng: np.random.Generator, noise: Noise, grid: Grid, canary_rps: float,
                     change: tuple[Any, ...], step_s: int) -> LatencyResult:
    runs, seconds = noise.x.shape
    judges = [QuantileJudge(rule, grid) for rule in latency_metrics().values()]
    values = grid.values_ms()
    base_c = canary_probs(grid, change)
    shifts = np.rint((0.5 * noise.x + DRIFT_LATENCY * noise.wave
                      + np.where(noise.burst, math.log(BURST_LATENCY), 0.0)) / BIN)
    shifts = np.clip(shifts.astype(int) + grid.max_noise_shift, 0, 2 * grid.max_noise_shift)
    stable_rps = canary_rps * STABLE_PER_CANARY
    win_c = np.zeros((runs, grid.bins), dtype=np.int64)
    win_s = np.zeros_like(win_c)
    rows = np.arange(runs)[:, None]
    first = np.full(runs, np.inf)
    step = np.zeros((len(judges), runs, step_s), dtype=np.int8)
    intervals = (10, 60)
    acc = {i: np.zeros((runs, grid.bins), dtype=np.int64) for i in intervals}
    flagger = {i: np.zeros((runs, seconds // i), dtype=bool) for i in intervals}
    kay_s_acc = np.zeros((runs, grid.bins), dtype=np.int64)
    minutes = seconds // KAYENTA_INTERVAL_S
    kay_c = np.full((runs, minutes), np.nan)
    kay_s = np.full((runs, minutes), np.nan)
    cols_c = np.arange(len(base_c))[None, :]
    cols_s = np.arange(len(grid.base))[None, :]
    for t in range(seconds):
        hc = np.zeros((runs, grid.bins), dtype=np.int64)
        hs = np.zeros_like(hc)
        shift = shifts[:, t][:, None]
        lam_c = (canary_rps * noise.share[:, t])[:, None] * base_c[None, :]
        hc[rows, shift + cols_c] = rng.poisson(lam_c)
        hs[rows, shift + cols_s] = rng.poisson(stable_rps * grid.base, (runs, len(grid.base)))
        win_c += hc
        win_s += hs
        live = np.isinf(first)
        if t < step_s:
            live[:] = True  # the step block needs every check of its first seconds
        if live.any():
            codes = np.stack([j.verdicts(win_c[live], win_s[live]) for j in judges])
            failed = (codes == FAIL).any(axis=0)
            idx = np.flatnonzero(live)
            newly = idx[failed & np.isinf(first[idx])]
            first[newly] = t + 1
            if t < step_s:
                step[:, idx, t] = codes
        for i in intervals:
            acc[i] += hc
            if (t + 1) % i == 0:
                total = acc[i].sum(axis=1)
                p99 = _hist_quantile_ms(acc[i], 0.99, values)
                flagger[i][:, (t + 1) // i - 1] = (total == 0) | (p99 > FLAGGER_P99_MS)
                if i == KAYENTA_INTERVAL_S:
                    kay_c[:, (t + 1) // i - 1] = _hist_quantile_ms(acc[i], 0.95, values)
                acc[i][:] = 0
        kay_s_acc += hs
        if (t + 1) % KAYENTA_INTERVAL_S == 0:
            kay_s[:, (t + 1) // KAYENTA_INTERVAL_S - 1] = _hist_quantile_ms(kay_s_acc, 0.95,
                                                                            values)
            kay_s_acc[:] = 0
    return LatencyResult(first, step, flagger, kay_c, kay_s)


# -- Kayenta -------------------------------------------------------------------------------

def kayenta_first_fail(points_c: list[np.ndarray], points_s: list[np.ndarray]) -> np.ndarray:
    """Seconds to the first minute at which any metric's canary points are significantly
    higher than stable's (one-sided Mann-Whitney over all points so far)."""
    p_greater = np.vectorize(compute_p_greater, otypes=[float])
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


def replay_step(codes: np.ndarray) -> dict[str, float]:
    """Outcome rates of the analysis step from per-check verdict codes (metrics, runs,
    90 s), as ``rollouts/canary.py`` decides: any failed check rolls back; at the end of
    the step or of an extension it passes when every metric has passed at some check of
    the window (``passed_on_evidence``)."""
    metrics, runs, seconds = codes.shape
    outcome = np.full(runs, -1)  # -1 undecided, 0 passed, 1 paused, 2 rolled back
    passed = np.zeros((metrics, runs), dtype=bool)
    for t in range(seconds):
        undecided = outcome < 0
        outcome[undecided & (codes[:, :, t] == FAIL).any(axis=0)] = 2
        passed |= codes[:, :, t] == PASS
        if (t + 1) % STEP_S == 0:
            undecided = outcome < 0
            outcome[undecided & passed.all(axis=0)] = 0
    outcome[outcome < 0] = 1
    return {"passed": float(np.mean(outcome == 0)), "paused": float(np.mean(outcome == 1)),
            "rolled_back": float(np.mean(outcome == 2))}


def run_rps(settings: Settings, canary_rps: int, rng: np.random.Generator,
            progress: Callable[[str], None]) -> tuple[dict[str, dict[str, np.ndarray]],
                                                      dict[str, dict[str, float]]]:
    """First-rollback times (inf: never) per scenario and judge at one canary rate, and
    the step outcomes of the scenarios the step block replays."""
    runs, seconds = settings.runs, settings.duration_s
    step_s = min(seconds, STEP_S * STEP_LOOKS)
    drifting = simulate_noise(rng, runs, seconds)
    steady = Noise(drifting.x, drifting.burst, np.zeros_like(drifting.wave),
                   np.ones_like(drifting.share))
    rule = sequential_rule(DEFAULT_METRICS["error-rate"])
    grid = make_grid(max(scenario_shift(change) for _, change, _ in SCENARIOS.values()))
    errors: dict[tuple[float, bool], tuple[ErrorTrace, np.ndarray, np.ndarray]] = {}
    latency: dict[tuple[tuple[Any, ...], bool], LatencyResult] = {}
    out: dict[str, dict[str, np.ndarray]] = {}
    steps: dict[str, dict[str, float]] = {}
    for name, (multiplier, change, drift) in SCENARIOS.items():
        progress(f"{name}@{canary_rps}rps")
        noise = drifting if drift else steady
        # Common random numbers: an error scenario reuses the healthy latency traces and
        # a latency scenario the healthy error traces.
        if (multiplier, drift) not in errors:
            trace = simulate_errors(np.random.default_rng(rng.integers(2**63)), noise,
                                    canary_rps, multiplier)
            errors[multiplier, drift] = (trace, *entrega_error_verdicts(trace, rule, step_s))
        if (change, drift) not in latency:
            latency[change, drift] = simulate_latency(
                np.random.default_rng(rng.integers(2**63)), noise, grid, canary_rps, change,
                step_s)
        (err, err_first, err_step), lat = errors[multiplier, drift], latency[change, drift]
        entrega = np.minimum(err_first, lat.entrega_first_fail)
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
        key = f"{name}@{canary_rps}rps"
        if key in STEP_SCENARIOS.values() and step_s == STEP_S * STEP_LOOKS:
            steps[key] = replay_step(np.concatenate([err_step[None], lat.entrega_step]))
    return out, steps


def summarise(times: dict[int, dict[str, dict[str, np.ndarray]]], settings: Settings,
              ) -> dict[str, Any]:
    judges: dict[str, Any] = {}
    for judge in JUDGES:
        by_rps = {f"{rps}rps": float(np.mean(np.isfinite(times[rps]["healthy"][judge])))
                  for rps in settings.rps}
        drift_by_rps = {f"{rps}rps": float(np.mean(np.isfinite(
            times[rps]["healthy_drift"][judge]))) for rps in settings.rps}
        detection: dict[str, float] = {}
        median: dict[str, float | None] = {}
        floor: dict[str, float] = {}
        ratio: dict[str, float | None] = {}
        for name, (multiplier, _, _) in SCENARIOS.items():
            if name in HEALTHY:
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
            "false_rollback_rate_drift": max(drift_by_rps.values()),
            "false_rollback_rate_drift_by_rps": drift_by_rps,
            "detection_rate": detection,
            "median_detect_s": median,
            "floor_s": floor,
            "ratio_to_floor": ratio,
        }
    return judges


def check_targets(result: dict[str, Any]) -> dict[str, bool]:
    """The issue's targets, each true or false (``targets`` in the JSON)."""
    e = result["judges"]["entrega"]
    det, med, ratio = e["detection_rate"], e["median_detect_s"], e["ratio_to_floor"]

    def at_most(value: float | None, bound: float) -> bool:
        return value is not None and value <= bound

    targets = {
        "false_rollbacks_at_most_1pct": e["false_rollback_rate"] <= 0.01,
        "false_rollbacks_with_drift_at_most_1pct": e["false_rollback_rate_drift"] <= 0.01,
        "errors_x5@10rps_at_most_1.5x_floor": at_most(ratio.get("errors_x5@10rps"), 1.5),
        "errors_x5_x10@10_100rps_at_most_2x_floor": all(
            at_most(ratio.get(f"{s}@{r}rps"), 2.0) for s in ("errors_x5", "errors_x10")
            for r in (10, 100) if f"{s}@{r}rps" in ratio),
        "latency_x1.3@10rps_detected_99pct_median_15s": (
            det.get("latency_x1.3@10rps", 0) >= 0.99 and at_most(
                med.get("latency_x1.3@10rps"), 15)),
        "latency_x1.3@100rps_detected_99pct": det.get("latency_x1.3@100rps", 0) >= 0.99,
        "latency_tail5x3@10rps_detected_95pct_median_120s": (
            det.get("latency_tail5x3@10rps", 0) >= 0.95 and at_most(
                med.get("latency_tail5x3@10rps"), 120)),
        "latency_tail2x10@10rps_detected_95pct": det.get("latency_tail2x10@10rps", 0) >= 0.95,
    }
    step = result.get("step") or {}
    if step:
        bad = [v for k, v in step.items() if k.startswith(("errors_x4", "latency_tail"))]
        targets["step_bad_canary_passes_at_most_1pct"] = all(v["passed"] <= 0.01 for v in bad)
        healthy = step.get("healthy@10rps")
        if healthy:
            targets["step_healthy@10rps_passes_90pct_pauses_5pct"] = (
                healthy["passed"] >= 0.9 and healthy["paused"] <= 0.05)
    return targets


def run(settings: Settings, progress: Callable[[str], None] = lambda _: None,
        ) -> dict[str, Any]:
    rng = np.random.default_rng(settings.seed)
    started = time.monotonic()
    times: dict[int, dict[str, dict[str, np.ndarray]]] = {}
    steps: dict[str, dict[str, float]] = {}
    for rps in settings.rps:
        times[rps], step = run_rps(settings, rps, rng, progress)
        steps.update(step)
    result: dict[str, Any] = {
        "judges": summarise(times, settings),
        "step": {key: steps[source] for key, source in STEP_SCENARIOS.items()
                 if source in steps},
        "settings": {
            "runs_per_scenario": settings.runs, "duration_s": settings.duration_s,
            "check_every_s": 1, "canary_rps": list(settings.rps),
            "stable_rps_per_canary_rps": STABLE_PER_CANARY,
            "base_error_rate": BASE_ERROR_RATE, "seed": settings.seed,
            "drift": {"errors_log_amplitude": DRIFT_ERRORS,
                      "latency_log_amplitude": DRIFT_LATENCY,
                      "canary_share_log_amplitude": DRIFT_SHARE,
                      "period_s": list(DRIFT_PERIOD_S)},
            "latency_factors_simulated": {
                name: round(math.exp(scenario_shift(change) * BIN), 3)
                for name, (_, change, _) in SCENARIOS.items() if scenario_shift(change)},
            "drifting_scenarios": [name for name, (*_, drift) in SCENARIOS.items() if drift],
            "step": {"duration_s": STEP_S, "inconclusive_limit": STEP_LOOKS - 1,
                     "failure_limit": 0, "metrics": list(DEFAULT_ANALYSIS)},
            "elapsed_s": round(time.monotonic() - started, 1),
            **settings.extra,
        },
    }
    result["targets"] = check_targets(result)
    return result


def render_table(result: dict[str, Any]) -> str:
    judges = result["judges"]
    keys = list(judges["entrega"]["detection_rate"])
    lines = []
    head = f"{'scenario':<26}{'floor':>8}" + "".join(f"{j:>22}" for j in JUDGES)
    lines.append(head)
    lines.append(f"{'healthy: false rollbacks':<34}" + "".join(
        f"{judges[j]['false_rollback_rate']:>22.1%}" for j in JUDGES))
    lines.append(f"{'healthy, drifting: false rollbacks':<34}" + "".join(
        f"{judges[j]['false_rollback_rate_drift']:>22.1%}" for j in JUDGES))
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
        lines.append(f"{key:<26}{floor_s:>8}" + "".join(cells))
    if result.get("step"):
        lines.append("")
        lines.append(f"{'analysis step (30 s, 2 extensions)':<36}{'passed':>8}{'paused':>8}"
                     f"{'rolled back':>13}")
        for key, v in result["step"].items():
            lines.append(f"{key:<36}{v['passed']:>8.1%}{v['paused']:>8.1%}"
                         f"{v['rolled_back']:>13.1%}")
    s = result["settings"]
    lines.append("")
    lines.append(f"cells: detection rate, median time to rollback (x Wald's floor); "
                 f"{s['runs_per_scenario']} runs of {s['duration_s']}s per scenario, "
                 f"stable at {s['stable_rps_per_canary_rps']}x the canary's rate, with "
                 f"drift; {s['elapsed_s']}s")
    missed = [name for name, ok in result.get("targets", {}).items() if not ok]
    lines.append("targets: " + ("all met" if not missed else "missed " + ", ".join(missed)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=None, help="runs per scenario (500)")
    parser.add_argument("--duration-s", type=int, default=None, help="canary length (900)")
    parser.add_argument("--rps", type=str, default=None,
                        help="canary rates, comma-separated (1,10,100)")
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
    if args.rps:
        settings.rps = tuple(int(r) for r in args.rps.split(","))
    settings.extra = {"command": "python -m bench.analysis " + " ".join(
        argv if argv is not None else sys.argv[1:])}

    def progress(what: str) -> None:
        print(f"  {what}", file=sys.stderr, flush=True)

    result = run(settings, progress)
    print(json.dumps(result, indent=2) if args.json else render_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
