"""`entrega analysis explain ROLLOUT` in process: each window, each metric's verdict with
the test's numbers in words, and the judge's settings."""

from __future__ import annotations

import json

from entrega.rollouts.model import Phase
from tests.cli.conftest import ApiServer, invoke

JUDGED = {"verdict": "fail", "metrics": [
    {"metric": "error-rate", "verdict": "fail", "reason": "canary 5.0% vs stable 0.1%",
     "canary": 0.05, "stable": 0.001, "critical": True,
     "details": {"test": "mixture SPRT on pooled error counts (conditional binomial)",
                 "canary_requests": 200, "stable_requests": 1800, "canary_errors": 10,
                 "stable_errors": 2, "log_evidence": 9.5, "fail_at": 4.605, "alpha": 0.01,
                 "max_ratio": 1.0, "max_increase": 0.002}}]}


def test_explain_shows_why_the_analysis_failed(api: ApiServer) -> None:
    api.release("v1")
    invoke(api, ["deploy", "v1"])
    row = api.rollout()
    run = api.service.repo.begin_analysis_run(rollout_id=row.id, window=1,
                                              metrics=["error-rate"], baseline={})
    api.service.repo.record_analysis(run.id, verdict="fail", result=JUDGED)
    api.play(row, [(Phase.ROLLED_BACK, "analysis failed: error-rate", [])])

    result = invoke(api, ["analysis", "explain", str(row.id)])

    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "rollout 1: ∅ → v1 in production: rolled_back — analysis failed" in text
    assert "window 1 (step, from" in text and "latest check): fail" in text
    assert "error-rate  fail" in text and "canary 5.0% vs stable 0.1%" in text
    assert "10 of 12 errors were the canary's" in " ".join(text.split())  # (wrapped)
    assert "error-rate  provider=builtin, judge=sequential" in text
    data = json.loads(invoke(api, ["analysis", "explain", "1", "--json"]).stdout)
    assert data["windows"][0]["result"] == JUDGED


def test_explain_a_rollout_without_analysis(api: ApiServer) -> None:
    api.release("v1")
    invoke(api, ["deploy", "v1"])
    result = invoke(api, ["analysis", "explain", "1"])
    assert result.exit_code == 0, result.output
    assert "no analysis ran in this rollout" in result.stdout


def test_explain_an_unknown_rollout(api: ApiServer) -> None:
    result = invoke(api, ["analysis", "explain", "42"])
    assert result.exit_code == 1
    assert str(result.exception) == "no rollout 42"


RATED = {"verdict": "fail", "metrics": [
    {"metric": "feedback", "verdict": "fail",
     "reason": "canary's share of low ratings is above stable's, with evidence 300:1, fails "
               "at 100:1: canary 60% low (12 of 20 ratings), stable 5% (3 of 60 ratings)",
     "canary": 0.6, "stable": 0.05, "critical": True,
     "details": {"test": "mixture SPRT on pooled low-rating counts (conditional binomial)",
                 "low_ratings": "1 or 2 (of 5)", "canary_ratings": 20, "canary_low": 12,
                 "stable_ratings": 60, "stable_low": 3, "log_evidence": 5.7,
                 "fail_at": 4.605, "alpha": 0.01, "max_ratio": 1.0, "max_increase": 0.05}}]}


def test_explain_speaks_of_ratings_for_the_feedback_metric(api: ApiServer) -> None:
    api.release("v1")
    invoke(api, ["deploy", "v1"])
    row = api.rollout()
    run = api.service.repo.begin_analysis_run(rollout_id=row.id, window=1,
                                              metrics=["feedback"], baseline={})
    api.service.repo.record_analysis(run.id, verdict="fail", result=RATED)
    api.play(row, [(Phase.ROLLED_BACK, "analysis failed: feedback", [])])

    result = invoke(api, ["analysis", "explain", str(row.id)])

    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "feedback fail (critical)" in text
    assert ("20 canary and 60 stable ratings, so if the canary were no worse a low rating "
            "(1-2) would be the canary's with probability 0.250. 12 of 15 low ratings were "
            "the canary's: the evidence that it is worse is 299:1") in text
    assert "request" not in text.split("how the environment judges")[0]
    assert "feedback provider=builtin, measure=feedback, judge=sequential" in text
