"""Builders for the rollout state machine tables.

Tables read as (spec, state, observed, now) -> (phase, weights, action kinds, requeue_at).
Every test goes through the public ``entrega.rollouts.advance``: the strategy dispatch
(first release -> direct, terminal phases fixed) is part of what is tested.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from entrega.rollouts import advance
from entrega.rollouts.common import POLL_S
from entrega.rollouts.model import (
    AnalysisProgress,
    AnalysisStep,
    AnalysisVerdict,
    Observed,
    PauseStep,
    Phase,
    RolloutSpec,
    RolloutState,
    Step,
    Transition,
    WeightStep,
)

STABLE = "v1"
CANARY = "v2"
#: an arbitrary wall-clock origin; every table states times relative to it
T0 = 1_000.0

__all__ = ["CANARY", "POLL_S", "STABLE", "T0", "analysis", "bluegreen", "canary", "go",
           "kinds", "observed", "pause", "progress", "state", "summary", "verdict", "weight"]


def weight(pct: int) -> WeightStep:
    return WeightStep(pct)


def pause(duration_s: float | None = None) -> PauseStep:
    return PauseStep(duration_s)


def analysis(duration_s: float = 60.0, *, every_s: float = 5.0, failure_limit: int = 0,
             inconclusive_limit: int = 2, metrics: tuple[str, ...] = ("error-rate",),
             ) -> AnalysisStep:
    return AnalysisStep(metrics=metrics, duration_s=duration_s, check_every_s=every_s,
                        failure_limit=failure_limit, inconclusive_limit=inconclusive_limit)


def canary(*steps: Step, **kw: Any) -> RolloutSpec:
    return RolloutSpec(strategy="canary", steps=steps, **kw)


def bluegreen(**kw: Any) -> RolloutSpec:
    return RolloutSpec(strategy="blue-green", **{"verify": True, **kw})


def state(phase: Phase, *, stable: str | None = STABLE, weights: dict[str, int] | None = None,
          **kw: Any) -> RolloutState:
    """A rollout of CANARY over STABLE, by default with all traffic still on stable."""
    if weights is None:
        weights = {stable: 100} if stable else {}
    kw.setdefault("phase_started_at", T0)
    kw.setdefault("step_started_at", T0)
    return RolloutState(phase=phase, stable=stable, canary=CANARY, weights=weights, **kw)


def progress(window: int = 1, *, started_at: float = T0, next_check_at: float = T0 + 5,
             **kw: Any) -> AnalysisProgress:
    return AnalysisProgress(window=window, started_at=started_at, next_check_at=next_check_at,
                            **kw)


def verdict(result: str, window: int = 1, reason: str = "") -> AnalysisVerdict:
    return AnalysisVerdict(window=window, verdict=result, reason=reason)  # type: ignore[arg-type]


def observed(*, ready: bool = True, **kw: Any) -> Observed:
    return Observed(canary_ready=ready, **kw)


def go(spec: RolloutSpec, st: RolloutState, obs: Observed | None = None, *,
       now: float = T0) -> Transition:
    return advance(spec, st, obs if obs is not None else Observed(), now=now)


def kinds(t: Transition) -> list[str]:
    return [type(a).__name__ for a in t.actions]


def summary(t: Transition) -> tuple[Phase, dict[str, int], list[str], float | None]:
    return t.state.phase, t.state.weights, kinds(t), t.requeue_at


def with_(st: RolloutState, **kw: Any) -> RolloutState:
    return replace(st, **kw)
