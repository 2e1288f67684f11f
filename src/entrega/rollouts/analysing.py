"""One analysis of the new release against the old on live traffic, as every strategy
runs it: a canary's ``analysis`` step, a rolling rollout's analysis between batches.

The judging semantics live here once, so a user reads the same verdicts and events
whichever strategy asked: a window is begun (the controller snapshots the router's
cumulative counters as its baseline), checked every ``check_every_s``; a failed check
beyond ``failure_limit`` fails the analysis; at the end of ``duration_s`` it passes on a
pass verdict or on every metric having reached its pass evidence during the window,
is extended ``inconclusive_limit`` times, then pauses for a human. What a failure or a
pass leads to (a canary's rollback, a rolling rollout's restore of the hosts done, the
next step or batch) is the caller's decision: :func:`advance_analysis` only says which.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from entrega.rollouts import common
from entrega.rollouts.model import (
    AnalysisProgress,
    AnalysisStep,
    AnalysisVerdict,
    BeginAnalysis,
    Observed,
    Phase,
    RolloutState,
    Transition,
)


@dataclass(frozen=True)
class AnalysisPassed:
    """The analysis passed (or a user skipped it): go on from ``state`` after ``events``."""

    state: RolloutState
    events: tuple[str, ...]


@dataclass(frozen=True)
class AnalysisFailed:
    """The analysis failed: roll back from ``state``, saying ``reason``."""

    state: RolloutState
    reason: str


AnalysisResult = Transition | AnalysisPassed | AnalysisFailed


def advance_analysis(step: AnalysisStep, state: RolloutState, observed: Observed,
                     now: float, label: str, *, index: int | None = None) -> AnalysisResult:
    """One pass of an analysis: a Transition to return as it is (begun, waiting,
    extended, paused), or whether it passed or failed. ``label`` starts every event
    ("step 2/5", "batch 1/3"); ``index`` (0-based: the step's, the batch's; default
    ``step_index``) is recorded with each final verdict for `entrega analysis explain`."""
    progress = state.analysis
    if progress is None:
        progress = AnalysisProgress(window=state.analysis_windows + 1, started_at=now,
                                    next_check_at=now + step.check_every_s)
        state = replace(state, analysis=progress, analysis_windows=progress.window,
                        message=f"{label}: analysing {', '.join(step.metrics)}")
        return Transition(state, (BeginAnalysis(progress.window, step.metrics),),
                          (f"{label}: analysis of {', '.join(step.metrics)} started",),
                          requeue_at=progress.next_check_at)

    if state.promote_requested:
        return AnalysisPassed(state, (f"{label}: analysis skipped by a user",))
    if state.phase == Phase.PAUSED:  # inconclusive: a human decides
        return Transition(state)

    verdict = observed.analysis
    if now < progress.next_check_at or verdict is None or verdict.window != progress.window:
        return Transition(state, requeue_at=max(progress.next_check_at, now + common.POLL_S))

    passed_now = {name for name, m in verdict.metrics.items()
                  if isinstance(m, dict) and m.get("verdict") == "pass"}
    progress = replace(progress, checks=progress.checks + 1, last_verdict=verdict.verdict,
                       last_reason=verdict.reason, next_check_at=now + step.check_every_s,
                       passed_metrics=tuple(sorted({*progress.passed_metrics, *passed_now})))
    record = {"window": progress.window, "verdict": verdict.verdict, "reason": verdict.reason,
              "at": now, "metrics": verdict.metrics,
              "step": state.step_index if index is None else index}

    if verdict.verdict == "fail":
        progress = replace(progress, failures=progress.failures + 1)
        state = replace(state, analysis=progress,
                        analysis_history=(*state.analysis_history, record))
        if progress.failures > step.failure_limit:
            return AnalysisFailed(state, f"analysis failed: {verdict.reason}")
        # A fresh window, so the next verdict is not the same data judged again.
        progress = replace(progress, window=state.analysis_windows + 1, started_at=now,
                           passed_metrics=())
        state = replace(state, analysis=progress, analysis_windows=progress.window)
        return Transition(state, (BeginAnalysis(progress.window, step.metrics),),
                          (f"{label}: analysis check failed ({progress.failures}/"
                           f"{step.failure_limit} allowed): {verdict.reason}",),
                          requeue_at=progress.next_check_at)

    ends_at = progress.started_at + step.duration_s * (1 + progress.extensions)
    if now < ends_at:
        state = replace(state, analysis=progress)
        return Transition(state, requeue_at=min(progress.next_check_at, ends_at))

    state = replace(state, analysis=progress,
                    analysis_history=(*state.analysis_history, record))
    if verdict.verdict == "pass":
        return AnalysisPassed(state, (f"{label}: analysis passed: {verdict.reason}",))
    if passed_on_evidence(verdict, progress.passed_metrics):
        return AnalysisPassed(state, (
            f"{label}: analysis passed: every metric reached its pass evidence in this "
            f"window ({', '.join(progress.passed_metrics)}); now: {verdict.reason}",))

    if progress.extensions < step.inconclusive_limit:
        progress = replace(progress, extensions=progress.extensions + 1)
        state = replace(state, analysis=progress)
        return Transition(state, (), (f"{label}: analysis inconclusive ({verdict.reason}); "
                                      f"watching {step.duration_s:g}s more",),
                          requeue_at=progress.next_check_at)
    state = common.enter(state, Phase.PAUSED, now,
                         f"{label}: analysis inconclusive ({verdict.reason}): "
                         "promote or abort")
    return Transition(state, (), (state.message,))


def passed_on_evidence(verdict: AnalysisVerdict, passed_metrics: tuple[str, ...]) -> bool:
    """Every critical metric has passed at some check of the window and none fails now
    (a non-critical metric informs, it never blocks)."""
    if verdict.verdict == "fail" or not verdict.metrics:
        return False
    for name, metric in verdict.metrics.items():
        if not isinstance(metric, dict):
            return False
        if metric.get("verdict") == "fail" and metric.get("critical", True):
            return False
        if metric.get("critical", True) and metric.get("verdict") != "pass" \
                and name not in passed_metrics:
            return False
    return True


#: What every analysis check moves even when nothing else does. None of it is evidence
#: (that is in the window's baseline and the router's cumulative counters, judged afresh
#: at each check, and in ``passed_metrics``/``failures``), so a store may get it late:
#: the controller writes a check that moved only these at most every few seconds
#: (``controller/loop.py``, ``STORE_WRITE_INTERVAL_S``).
CHECK_BOOKKEEPING = ("checks", "next_check_at", "last_verdict", "last_reason")


def only_bookkeeping(before: RolloutState, after: RolloutState) -> bool:
    """``after`` is ``before`` but for an analysis check's bookkeeping: a restart that
    read ``before`` back would check again at once and judge the same evidence."""
    if before.analysis is None or after.analysis is None:
        return before == after
    kept = {name: getattr(before.analysis, name) for name in CHECK_BOOKKEEPING}
    return replace(after, analysis=replace(after.analysis, **kept)) == before
